"""``python -m prompt_free.train --config configs/train_seecoder.yaml`` (or through
``accelerate launch -m prompt_free.train ...`` for several GPUs)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from ..errors import PromptFreeError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m prompt_free.train",
        description="Train a SeeCoder (decoder + query transformer) on images, the Prompt-Free Diffusion recipe.",
    )
    p.add_argument("--config", required=True, help="training config (YAML); see docs/training.md")
    p.add_argument("--output-dir", help="override output_dir")
    p.add_argument("--resume", help="override resume: 'latest' or a state folder")
    p.add_argument("--max-steps", type=int, help="stop once this many optimizer steps are done in total (resume later)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
        help="override a config field, e.g. --set training.batch_size=2 (value read as YAML); repeatable",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from .config import dump_config, load_config

    try:
        cfg = load_config(args.config, args.overrides)
        if args.output_dir:
            cfg.output_dir = args.output_dir
        if args.resume:
            cfg.resume = args.resume
        if args.print_config:
            print(dump_config(cfg), end="")
            return 0
        from .trainer import Trainer

        result = Trainer(cfg).train(max_steps=args.max_steps)
    except PromptFreeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"done: step {result.step}; SeeCoder: {result.seecoder_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
