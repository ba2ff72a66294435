"""The model tier on Ray Serve: replicas that each hold an ``Engine`` and run task requests.

One deployment, ``Generator``; each replica builds the engine once (the app's options), takes
one GPU on CUDA or ``cpus`` CPUs (and that many torch threads) on the CPU, and runs
``catalog.TaskRequest``s the way the in-process app does: ``spec.run`` then ``metadata.tag``.
Its ``run`` method is a generator (a streaming handle): it yields ``("progress", (i, n[, note]))``
after each step, ``("preview", Preview)`` when asked, then ``("result", (packed result,
pictures))`` (``payload``: pictures as PNG bytes with their metadata) or ``("error", exception)``
for the user's errors. The work runs in a thread under a ``CancelToken``; when Serve cancels
the call (the front end's Stop), the ``finally`` cancels the token and the engine stops before
its next step.

Routing: ``serve.multiplexed`` keyed by the request's base model, so a request goes to a replica
that ran that base model before; the engine's memory budget still decides what stays loaded.
Backpressure: ``max_ongoing_requests`` per replica, ``max_queued_requests`` per front end
(``client`` turns Serve's ``BackPressureError`` into ``TierBusyError``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from ray import serve

from .. import memory_release, settings
from ..cancel import CancelToken, cancellable
from ..errors import PromptFreeError
from ..previews import showing
from . import payload
from .options import TierOptions

log = logging.getLogger("prompt_free.tier")

APP_NAME = "prompt-free"
DEPLOYMENT = "Generator"
_DONE = ("done", None)  # compared by value: the class travels by value, this module by reference


def probe(engine) -> None:
    """Raises when ``engine`` cannot serve: no engine, or its device does not answer a tiny op."""
    if engine is None:
        raise RuntimeError("the replica has no engine")
    import torch

    if float((torch.ones(1, device=engine.device) + 1).item()) != 2.0:
        raise RuntimeError(f"the device {engine.device} computes wrong")


def generator_class(max_base_models: int):
    """The replica class (``max_base_models``: the routing keys a replica keeps, Serve's LRU)."""

    class Generator:
        def __init__(self, engine_options: Dict[str, Any], cpus: float) -> None:
            from ..engine import Engine

            _configure_threads(cpus)
            self.engine = Engine.from_profile(**engine_options)
            self.engine.set_progress_bar_config(disable=True)
            self.identity = {"replica": serve.get_replica_context().replica_id.unique_id, "pid": os.getpid()}
            log.info("replica %(replica)s (pid %(pid)d) ready", self.identity)

        @serve.multiplexed(max_num_models_per_replica=max_base_models)
        async def base_model(self, name: str) -> str:
            # a routing key only: the engine loads the model when the request needs it
            return name

        def check_health(self) -> None:
            probe(self.engine)

        def apply(self, fn, args):
            """``fn(engine, *args)``: the app's model work besides tasks (a saved embedding, a mask)."""
            return fn(self.engine, *args)

        async def run(self, request, previews: bool = False):
            key = serve.get_multiplexed_model_id()
            if key:  # a request sent without a routing key goes to any replica
                await self.base_model(key)
            loop = asyncio.get_running_loop()
            events: asyncio.Queue = asyncio.Queue()
            token = CancelToken(settings.prepare_limit())

            def emit(event) -> None:
                loop.call_soon_threadsafe(events.put_nowait, event)

            work = threading.Thread(target=_work, args=(self.engine, request, previews, token, emit),
                                    name="pfd-replica-request", daemon=True)
            work.start()
            yield ("replica", self.identity)
            try:
                while (event := await events.get()) != _DONE:
                    yield event
            finally:  # a cancelled call (Stop) ends here too: the engine stops before its next step
                token.cancel()

    return Generator


def _work(engine, request, previews: bool, token: CancelToken, emit) -> None:
    """The request in the replica's worker thread, as the app runs it in-process."""
    from ..metadata import tag

    try:
        with cancellable(token), showing((lambda p: emit(("preview", p))) if previews else None):
            result = request.run(engine, progress=lambda *step: emit(("progress", step)))
            pictures = tag(engine, result, request.spec.name, request.settings, request.call, keep_paths=False)
            emit(("result", payload.pack((result, pictures))))
    except PromptFreeError as e:
        emit(("error", e))
    except Exception as e:  # noqa: BLE001 - logged here (the replica's log), answered with its kind
        if type(e).__name__ == "OutOfMemoryError":
            emit(("error", e))
        else:
            log.exception("unexpected error in a replica running %s", request.task)
            emit(("error", RuntimeError(f"{type(e).__name__} in a model replica: {str(e)[:300]}")))
    finally:
        emit(_DONE)
        memory_release.after_request()


def _configure_threads(cpus: float) -> None:
    """One torch thread per CPU of the replica's share (``PFD_THREADS`` overrides)."""
    import torch

    n = settings.threads() or max(1, int(cpus))
    torch.set_num_threads(n)
    log.info("replica uses %d torch thread(s)", n)


@dataclass
class Tier:
    """A running tier: its options and the handle front ends call (``client.TierClient``)."""

    options: TierOptions
    handle: Any
    engine_options: Dict[str, Any] = field(default_factory=dict)

    def client(self, engine=None):
        """A ``client.TierClient`` over this tier (``engine``: a registry-only engine for the
        routing keys; None: every request under one key, as for one base model)."""
        from .client import TierClient

        return TierClient(self.handle, engine)


def start(options: TierOptions, engine_options: Dict[str, Any], address: Optional[str] = None,
          num_cpus: Optional[int] = None) -> Tier:
    """Joins the cluster at ``address`` (None: starts a local one of ``num_cpus``) and deploys the
    tier (replaces one deployed before under ``APP_NAME``); returns once every replica is up."""
    from .cluster import connect

    ray = connect(address, num_cpus)
    if address is None:  # a cluster of this machine only: replicas it cannot hold would wait forever
        _check_fits(options, ray.cluster_resources())
    serve.start(proxy_location="Disabled")  # the front end calls through handles: no HTTP proxy
    handle = serve.run(_application(options, engine_options), name=APP_NAME, route_prefix=None)
    return Tier(options, handle, dict(engine_options))


def _check_fits(options: TierOptions, resources: Dict[str, float]) -> None:
    """Refuses a tier whose first replicas need more CPUs or GPUs than the cluster has."""
    from ..errors import InvalidSettingError

    actor = options.deployment_options()["ray_actor_options"]
    for kind, per, option in (("CPU", actor.get("num_cpus", 0), "--ray-cpus"), ("GPU", actor.get("num_gpus", 0), "--ray-gpus")):
        need, have = options.replicas * per, resources.get(kind, 0.0)
        if need > have:
            raise InvalidSettingError(
                f"{options.replicas} replica(s) need {need:g} {kind}(s) ({per:g} each, {option}); this machine's Ray "
                f"cluster has {have:g}: ask for fewer replicas or a smaller {option}")


def attach(address: Optional[str], options: TierOptions) -> Optional[Tier]:
    """The tier already running on the cluster at ``address`` (deployed by another front end, a
    RayService or ``serve deploy``), or None when there is none. ``options``: how the front end
    counts its capacity (the tier's own shape is the deployer's)."""
    from ray.serve.exceptions import RayServeException

    from .cluster import connect

    connect(address)
    try:
        handle = serve.get_app_handle(APP_NAME)
    except RayServeException:
        return None
    log.info("using the model tier %r already running on the cluster", APP_NAME)
    return Tier(options, handle)


def app(args: Optional[Dict[str, Any]] = None):
    """The tier as a Serve application, for a Serve config (``import_path:
    prompt_free.scale.tier:app``: KubeRay's RayService, ``serve deploy``). ``args``: the engine's
    options (``profile``, ``checkpoints``, ``device``, ``precision``, ``memory_budget`` ...) and
    ``cpus`` (a replica's CPU share and torch threads); the config's ``deployments:`` section sets
    replicas, autoscaling, ``max_ongoing_requests``, ``max_queued_requests`` and GPUs."""
    engine_options = dict(args or {})
    options = TierOptions(cpus=float(engine_options.pop("cpus", 1.0)),
                          max_base_models=int(engine_options.get("max_base_models", 2)))
    return _application(options, engine_options)


def _application(options: TierOptions, engine_options: Dict[str, Any]):
    """The ``Generator`` deployment shaped by ``options``, bound to the engine's options."""
    deployment = serve.deployment(generator_class(options.max_base_models), name=DEPLOYMENT,
                                  **options.deployment_options())
    return deployment.bind(engine_options, options.cpus)


def stop() -> None:
    """Removes the tier's application (the cluster keeps running)."""
    serve.delete(APP_NAME)
