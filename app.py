"""Prompt-Free Diffusion app: `python app.py` (see README.md for options)."""

from __future__ import annotations

import argparse
import logging
import sys


def parse_args(argv=None):
    from prompt_free import settings

    p = argparse.ArgumentParser(description="Prompt-Free Diffusion Gradio app")
    p.add_argument("--profile", default=settings.profile(), choices=["auto", "real", "tiny"],
                   help="real: checkpoints.yaml models; tiny: offline random-weight models; auto: real when available "
                        "(env PFD_PROFILE)")
    p.add_argument("--checkpoints", default=settings.checkpoints_path(), help="path of checkpoints.yaml (env PFD_CHECKPOINTS)")
    p.add_argument("--host", default=settings.server_host())
    p.add_argument("--port", type=int, default=settings.server_port())
    p.add_argument("--share", action="store_true")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when present)")
    p.add_argument("--max-base-models", type=int, default=settings.max_base_models(),
                   help="base models kept loaded (LRU; env PFD_MAX_BASE_MODELS)")
    return p.parse_args(argv)


def create_app(profile="auto", checkpoints=None, device=None, max_base_models=2):
    from prompt_free.engine import Engine
    from ui import build_app

    engine = Engine.from_profile(profile, checkpoints, device=device, max_base_models=max_base_models)
    return engine, build_app(engine)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from prompt_free.errors import PromptFreeError
    from ui.widgets import CSS

    try:
        args = parse_args(argv)  # environment defaults are checked here
        engine, demo = create_app(args.profile, args.checkpoints, args.device, args.max_base_models)
    except PromptFreeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.getLogger("prompt_free").info("profile %s on %s (%s)", engine.profile, engine.device, engine.dtype)
    demo.queue(max_size=32).launch(server_name=args.host, server_port=args.port, share=args.share, css=CSS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
