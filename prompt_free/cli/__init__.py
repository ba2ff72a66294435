"""The command line: ``prompt-free`` (console script) and ``python -m prompt_free``.

    prompt-free generate --reference IMG [--control canny=MAP ...] [--seed N] [--steps N]
                         [--guidance G] [--size WxH] [--num-images N] [--base-model NAME]
                         [--seecoder NAME] [--profile tiny|real|auto] --out DIR
    prompt-free generate --reference-dir DIR --out OUT ...      (a folder, with a progress bar;
                         under ``accelerate launch`` the references are split across processes;
                         references whose pictures are in OUT already are skipped: --overwrite)
    prompt-free generate --reference-dir DIR --out OUT --ray [--ray-address A] [--ray-actors N] ...
                         (the folder on a Ray cluster, one engine per actor; the serve extra)
    prompt-free generate --from-png OUT.png --out DIR           (redo a picture from its metadata)
    prompt-free generate --reference A --reference B [--weight W ...] [--mask K=MASK ...]
                         [--blend average|concatenate|regions] ...   (Multi-Reference, up to 4)
    prompt-free generate ... [--reference-strength S] [--prompt TEXT --prompt-mode concat|style
                         --prompt-weight W] [--blocks all|style|layout] [--lora NAME[=SCALE] ...]
                         (a few-step LoRA's entry sets --steps/--sampler/--guidance not given)
    prompt-free generate --embedding E.safetensors [--reference IMG] ...  (a saved embedding instead of
                         encoding the reference; --denoise-strength S [--init-image IMG]: start from an image)
    prompt-free embed --reference IMG [--seecoder NAME] --out E.safetensors     (save an embedding)
    prompt-free embed --combine E1 E2 ... [--weights W ...] [--mode average|add|subtract|norm_average] --out E.safetensors
    prompt-free export [--seecoder NAME] [--base-model NAME] [--controlnet NAME ...] --out DIR
                         (diffusers folders: DIR/prior, a PromptFreePriorPipeline; DIR/base, the base model
                         without text encoder; docs/diffusers.md)
    prompt-free edit --photo P --mask M --reference R --out DIR  (Edit with a reference)
    prompt-free tryon --person P --garment G [--mask M|upper body|...] --out DIR
    prompt-free download ...                                    (= python -m prompt_free.download)
    prompt-free app ...                                         (= python app.py)

Each command calls the library's task functions (``prompt_free.tasks``), writes PNGs with their
metadata (``prompt_free.metadata``) and prints where they went and how long it took, with a
tqdm bar of each run's steps on stderr (``--no-progress``: none). A problem with the input, or a
missing extra (``prompt-free app`` without gradio, ``--ray`` without Ray), is one line on stderr and exit code 1 (2 for a
usage error), never a traceback.

File names do not depend on the number of processes: ``<reference stem>-s<seed>.png`` for each
image (image i of a run has seed + i) and ``<reference stem>-s<seed>-map<k>.png`` for the control
maps; several references: ``<first reference's stem>-multi-s<seed>.png``; ``edit`` / ``tryon``:
``<photo stem>-edit-s<seed>.png`` / ``-tryon-`` and ``...-extra<k>.png`` for the extra pictures;
``--from-png`` writes the picture under the PNG's own name.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from .. import settings
from ..errors import PromptFreeError
from ..extras import MissingExtraError
from .commands import cmd_app, cmd_edit, cmd_generate, cmd_tryon, recorded_inputs
from .embed import cmd_embed
from .export import cmd_export
from .options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, build_parser, parse_control, parse_lora, parse_size
from .run import Processes, _engine, lora_sampler, processes

__all__ = ["main", "build_parser", "UsageError", "Processes", "processes", "lora_sampler", "parse_size",
           "parse_control", "parse_lora", "recorded_inputs", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "download":  # its own parser, options and exit codes
        from ..download import main as download_main

        return download_main(argv[1:])
    if argv and argv[0] == "app":
        try:
            return cmd_app(argv[1:])
        except MissingExtraError as e:  # not a usage error: the installation lacks a part
            print(f"error: {e}", file=sys.stderr)
            return EXIT_FAILED
        except PromptFreeError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USAGE
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        settings.check_environment()
        return {"generate": cmd_generate, "tryon": cmd_tryon, "edit": cmd_edit, "embed": cmd_embed,
                "export": cmd_export}[args.command](args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except PromptFreeError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:
        print(f"error: {e.strerror or e}: {getattr(e, 'filename', '') or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
