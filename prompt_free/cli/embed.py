"""``prompt-free embed``: save a reference's SeeCoder embedding, or combine saved ones
(``prompt_free.embeddings``); ``prompt-free generate --embedding E`` uses such a file instead of
encoding a reference.

    prompt-free embed --reference IMG [--seecoder NAME] --out E.safetensors
    prompt-free embed --combine E1 E2 ... [--weights W1 W2 ...] [--mode average] --out E.safetensors
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .. import settings
from .options import EXIT_OK, UsageError, _existing_file


def add_embed_parser(sub) -> None:
    from ..embeddings import AVERAGE, MODES

    p = sub.add_parser("embed", help="save a reference's SeeCoder embedding, or combine saved ones (.safetensors)",
                       description="Write a reference's SeeCoder context and its unconditional context as a "
                                   ".safetensors file (generate --embedding uses it instead of the reference), or "
                                   "combine several such files with weights.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--reference", metavar="IMG", help="the reference image to encode")
    src.add_argument("--combine", nargs="+", metavar="E", help="two or more embedding files to combine")
    # A source mask (issue 26, control 3) plugs in here: --reference-mask M, handed to
    # embeddings.encode with the reference and recorded in the file's settings.
    p.add_argument("--weights", nargs="+", type=float, default=None, metavar="W",
                   help="with --combine: one weight per file, in their order (default 1 each)")
    p.add_argument("--mode", choices=list(MODES), default=AVERAGE,
                   help="with --combine: add, subtract (the first minus the others), average (weighted mean), "
                        "norm_average (weighted mean, each token rescaled to the inputs' mean norm); default average")
    p.add_argument("--seecoder", help="with --reference: a SeeCoder of checkpoints.yaml (default: the profile's)")
    p.add_argument("--profile", choices=["auto", "real", "tiny"], default=settings.profile(),
                   help="real, tiny or auto (env PFD_PROFILE)")
    p.add_argument("--checkpoints", default=settings.checkpoints_path(), help="path of checkpoints.yaml")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when present)")
    p.add_argument("--precision", choices=settings.PRECISIONS, default=None, help="the models' precision (env PFD_PRECISION)")
    p.add_argument("--out", required=True, metavar="E.safetensors", help="the file to write")
    p.set_defaults(no_progress=True)


def cmd_embed(args) -> int:
    from .. import embeddings
    from .run import Processes, _engine

    out = Path(args.out)
    if out.suffix.lower() != ".safetensors":
        raise UsageError(f"--out must name a .safetensors file, got '{args.out}'")
    if not out.parent.is_dir():
        raise UsageError(f"the folder of --out '{out.parent}' does not exist")
    t0 = time.perf_counter()
    if args.combine:
        if args.seecoder:
            raise UsageError("--seecoder is for --reference; combined files keep their own SeeCoder")
        loaded = [embeddings.load(_existing_file(p, "embedding"), "embedding") for p in args.combine]
        made = embeddings.combine(loaded, args.weights, args.mode)
    else:
        if args.weights is not None:
            raise UsageError("--weights and --mode are for --combine")
        engine = _engine(args, Processes())
        made = embeddings.encode(engine, _existing_file(args.reference, "reference image"), args.seecoder)
    made.save(out)
    shape = "x".join(str(d) for d in made.context.shape)
    print(f"wrote {out} ({shape}, SeeCoder '{made.seecoder}') in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return EXIT_OK
