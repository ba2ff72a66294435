"""The app as the front end of the model tier (``app.py --ray-replicas N`` / ``--ray-address``).

One Gradio process keeps the UI and its queue (Ray Serve's ``GradioServer`` never starts Gradio
6's queue); every tab's task goes to the replicas (``runner.OnTier``). The engine here is built
with the same options for what the UI reads (model choices, defaults, PNG redo): it loads no
model. Gradio lets as many requests run at once as the tier takes before it answers busy, so the
UI's queue, with its positions, is where people wait. Ray is imported only by ``front_end``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from prompt_free.errors import InvalidSettingError
from prompt_free.scale.options import TierOptions


@dataclass(frozen=True)
class TierSetup:
    """The tier to start (``options``) and where: a new local cluster (``address`` None, of
    ``num_cpus``: None all) or the cluster at ``address``."""

    options: TierOptions
    address: Optional[str] = None
    num_cpus: Optional[int] = None
    attach: bool = False  # use the tier already running on the cluster (a RayService's) when there is one


def setup_of(args) -> Optional[TierSetup]:
    """The tier the parsed options ask for; None without --ray-replicas and --ray-address."""
    if args.ray_replicas is None and args.ray_address is None:
        return None
    replicas = 1 if args.ray_replicas is None else args.ray_replicas
    for name, value, low in (("--ray-replicas", replicas, 1), ("--ray-max-ongoing", args.ray_max_ongoing, 1),
                             ("--ray-max-queued", args.ray_max_queued, 0), ("--ray-cpus", args.ray_cpus, 0.01),
                             ("--ray-target-ongoing", args.ray_target_ongoing, 0.01),
                             ("--ray-gpus", 0 if args.ray_gpus is None else args.ray_gpus, 0)):
        if value < low:
            raise InvalidSettingError(f"{name} must be at least {low:g}, got {value:g}")
    if args.ray_max_replicas is not None and args.ray_max_replicas < replicas:
        raise InvalidSettingError(f"--ray-max-replicas ({args.ray_max_replicas}) is below --ray-replicas ({replicas})")
    options = TierOptions(replicas=replicas, max_replicas=args.ray_max_replicas, target_ongoing=args.ray_target_ongoing,
                          max_ongoing=args.ray_max_ongoing, max_queued=args.ray_max_queued, cpus=args.ray_cpus,
                          gpus=args.ray_gpus, max_base_models=args.max_base_models)
    return TierSetup(options, args.ray_address, attach=args.ray_address is not None and args.ray_replicas is None)


def front_end(setup: TierSetup, engine_options: Dict[str, Any]):
    """Starts (or joins) the cluster, deploys the tier and builds the app over it: (engine, demo).
    ``demo.tier`` is the ``TierClient`` the tabs call (its ``served`` counts requests by replica),
    ``demo.tier_options`` its ``TierOptions``."""
    from prompt_free.engine import Engine
    from prompt_free.extras import require

    require("serve", "--ray-replicas / --ray-address")  # without Ray: one line saying what to install
    from prompt_free.scale import tier

    from . import build_app
    from .runner import OnTier

    started = tier.attach(setup.address, setup.options) if setup.attach else None
    if started is None:
        started = tier.start(setup.options, engine_options, address=setup.address, num_cpus=setup.num_cpus)
    # the UI's engine: registry and defaults only; on the CPU so this process never takes a GPU
    engine = Engine.from_profile(**{**engine_options, "device": "cpu"})
    client = started.client(engine)
    demo = build_app(engine, runner=OnTier(client), concurrency=setup.options.capacity)
    demo.tier, demo.tier_options = client, setup.options
    return engine, demo
