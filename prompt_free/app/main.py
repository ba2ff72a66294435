"""The app's entry: its options, ``create_app`` (engine + Gradio app) and ``main`` (launch).

``python app.py`` (the thin script Hugging Face Spaces runs), ``prompt-free app`` and
``python -m prompt_free.app`` all end here.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    """The app's options (README's settings table is generated from it)."""
    from prompt_free import settings

    p = argparse.ArgumentParser(prog="python app.py", description="Prompt-Free Diffusion Gradio app")
    p.add_argument("--profile", default=settings.profile(), choices=["auto", "real", "tiny", "full-random"],
                   help="real: checkpoints.yaml models; tiny: offline random-weight models; full-random: SD-1.5-size "
                        "random-weight models (measurements); auto: real when available (env PFD_PROFILE)")
    p.add_argument("--checkpoints", default=settings.checkpoints_path(), help="path of checkpoints.yaml (env PFD_CHECKPOINTS)")
    p.add_argument("--host", default=settings.server_host(), help="address to serve on (env GRADIO_SERVER_NAME; "
                                                                 "default 127.0.0.1, 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=settings.server_port(), help="port (env GRADIO_SERVER_PORT; default 7860)")
    p.add_argument("--share", action="store_true",
                   help="a public gradio.live link; use it with --auth (anyone with the link can use the app)")
    p.add_argument("--auth", default=settings.auth(), metavar="USER:PASSWORD",
                   help="require this login (env PFD_AUTH)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when present)")
    p.add_argument("--precision", choices=settings.PRECISIONS, default=None,
                   help="the models' precision (env PFD_PRECISION; default auto: fp16 on CUDA, bf16 on a CPU with AMX or AVX-512 BF16, "
                        "else fp32; the tiny profile fp32)")
    p.add_argument("--max-base-models", type=int, default=settings.max_base_models(),
                   help="base models kept loaded (LRU; env PFD_MAX_BASE_MODELS)")
    p.add_argument("--memory-budget", default=None,
                   help="memory for models on the device, e.g. 8GB or bytes (env PFD_MEMORY_BUDGET; default: the "
                        "GPU's memory less a reserve, or 3/4 of RAM on the CPU)")
    p.add_argument("--ram-budget", default=None,
                   help="host memory for models evicted from the GPU (env PFD_RAM_BUDGET; default: half the RAM)")
    p.add_argument("--public", action="store_true",
                   help="serve the public: stricter work limit per request (env PFD_PUBLIC; on when SPACE_ID is set)")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--no-fast", dest="fast", action="store_false", default=None,
                       help="the eager sampling loop instead of the fast path (env PFD_FAST=0)")
    speed.add_argument("--fast", dest="fast", action="store_true",
                       help="the fast path with channels_last + torch.compile + CUDA graphs on CUDA (env PFD_FAST=1; default: its "
                            "exact parts only)")
    p.add_argument("--no-previews", dest="previews", action="store_false", default=None,
                   help="no live previews while a picture is sampled, for the whole server (env PFD_PREVIEWS=0; "
                        "default: on, with the profile's previews: decoder)")
    add_tier_options(p)
    return p


def add_tier_options(p: argparse.ArgumentParser) -> None:
    """The model tier's options (issue 27, docs/scale-out.md): without --ray-replicas or --ray-address
    the app runs every task in its own process and never imports Ray."""
    t = p.add_argument_group("model tier on Ray Serve (the serve extra)")
    t.add_argument("--ray-replicas", type=int, default=None, metavar="N",
                   help="run every tab's work on N model replicas on Ray Serve (each holds an engine; one GPU each on "
                        "CUDA, --ray-cpus CPUs each without); starts a local Ray cluster unless --ray-address")
    t.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join this Ray cluster instead (auto: the one `ray start` runs here; host:port); without "
                        "--ray-replicas: use the tier already running there (a RayService's), else deploy one replica")
    t.add_argument("--ray-max-replicas", type=int, default=None, metavar="M",
                   help="autoscale between --ray-replicas and M replicas (default: a fixed number)")
    t.add_argument("--ray-target-ongoing", type=float, default=1.0, metavar="X",
                   help="autoscaling: requests per replica Serve aims at (default 1)")
    t.add_argument("--ray-max-ongoing", type=int, default=1, metavar="K",
                   help="requests one replica holds at once (default 1: its engine runs one at a time)")
    t.add_argument("--ray-max-queued", type=int, default=4, metavar="Q",
                   help="requests waiting for a free replica before the tier answers busy (default 4)")
    t.add_argument("--ray-cpus", type=float, default=1.0, metavar="C",
                   help="CPUs per replica without a GPU, and its torch threads (default 1)")
    t.add_argument("--ray-gpus", type=float, default=None, metavar="G",
                   help="GPUs per replica (default: 1 when this machine has CUDA, else 0; set 1 to join a cluster whose "
                        "GPUs are on other machines)")


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def create_app(profile="auto", checkpoints=None, device=None, max_base_models=2, memory_budget=None, ram_budget=None,
               fast=None, precision=None, previews=None, tier=None):
    """The engine and the Gradio app (queued). ``memory_budget`` / ``ram_budget``: sizes such as
    "8GB" or bytes; None reads ``PFD_MEMORY_BUDGET`` / ``PFD_RAM_BUDGET`` (see ``Engine``).
    ``fast``: the sampling path (True / False; None reads ``PFD_FAST``). ``precision``: auto | fp32 |
    bf16 | fp16 (None reads ``PFD_PRECISION``; see ``prompt_free.precision``). ``previews``: False turns
    live previews off server-wide (None reads ``PFD_PREVIEWS``, default on). ``tier``: a
    ``TierSetup`` (every tab's work on the model tier; the engine here then loads no model)."""
    from prompt_free.engine import Engine
    from . import build_app

    options = dict(profile=profile, checkpoints=checkpoints, device=device, max_base_models=max_base_models,
                   memory_budget=memory_budget, ram_budget=ram_budget, fast=fast, precision=precision,
                   previews=previews)
    if tier is None:
        engine = Engine.from_profile(**options)
        return engine, build_app(engine)
    from .tier_front import front_end

    return front_end(tier, options)


def launch_options(auth=None) -> dict:
    """``demo.launch`` options every launch shares (app.py, tests): the upload limit and the login."""
    from prompt_free import settings

    return dict(max_file_size=settings.max_upload_size(), auth=settings.parse_auth(auth))


def share_warning(share: bool, auth) -> str | None:
    """The warning printed for a public link without a login."""
    if share and not auth:
        return ("warning: --share without --auth: anyone who gets the public link can use this app (and its "
                "GPU); add --auth user:password (or PFD_AUTH)")
    return None


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from prompt_free import settings
    from prompt_free.errors import PromptFreeError
    from prompt_free.memory import format_size
    from .widgets import CSS

    try:
        settings.check_environment()  # a malformed variable stops here, with its message
        args = parse_args(argv)
        if args.public:
            os.environ["PFD_PUBLIC"] = "1"  # read by prompt_free.settings.public_server()
        launch = launch_options(args.auth)
        from prompt_free import threads

        threads.configure()
        from .tier_front import setup_of

        engine, demo = create_app(args.profile, args.checkpoints, args.device, args.max_base_models,
                                  args.memory_budget, args.ram_budget, args.fast, args.precision, args.previews,
                                  tier=setup_of(args))
    except PromptFreeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .previews import available as previews_available

    logging.getLogger("prompt_free").info("profile %s on %s (precision %s, %s%s), memory budget %s, sampling %s, "
                                          "live previews %s", engine.profile, engine.device, engine.precision,
                                          engine.dtype, ", channels_last" if engine.channels_last else "",
                                          format_size(engine.memory.budget),
                                          engine.fast.label if engine.fast is not None else "eager",
                                          "on" if previews_available(engine) else "off")
    if hasattr(demo, "tier"):
        o = demo.tier_options
        logging.getLogger("prompt_free").info(
            "every tab's work runs on the model tier: %d replica(s)%s, %d request(s) each, %d waiting at most",
            o.replicas, f" (autoscaling to {o.max_replicas})" if o.max_replicas else "", o.max_ongoing, o.max_queued)
    warning = share_warning(args.share, launch["auth"])
    if warning:
        print(warning, file=sys.stderr)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, css=CSS, **launch)
    return 0
