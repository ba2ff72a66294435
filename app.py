"""Prompt-Free Diffusion app: `python app.py` (see README.md for options).

The thin entry Hugging Face Spaces runs; the app lives in ``prompt_free.app`` (which sets up
ZeroGPU's ``spaces`` before torch). ``app.create_app`` and ``app.main`` stay its names here.
"""

from __future__ import annotations

import sys

from prompt_free.extras import MissingExtraError, require

if __name__ == "__main__":
    try:
        require("app", "python app.py")
    except MissingExtraError as e:  # one line and exit status 1, as `prompt-free app` says it
        sys.exit(f"error: {e}")

from prompt_free.app.main import build_parser, create_app, launch_options, main, parse_args, share_warning

__all__ = ["build_parser", "create_app", "launch_options", "main", "parse_args", "share_warning"]

if __name__ == "__main__":
    sys.exit(main())
