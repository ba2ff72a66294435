"""``prompt-free embed``: save a reference's SeeCoder embedding, or combine saved ones
(``prompt_free.embeddings``); ``prompt-free generate --embedding E`` uses such a file instead of
encoding a reference.

    prompt-free embed --reference IMG [--reference-mask M] [--seecoder NAME] --out E.safetensors
    prompt-free embed --combine E1 E2 ... [--weights W1 W2 ...] [--mode average] --out E.safetensors
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .options import EXIT_OK, UsageError, _existing_file


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
        if args.seecoder or args.reference_mask:
            raise UsageError("--seecoder and --reference-mask are for --reference; combined files keep their own")
        loaded = [embeddings.load(_existing_file(p, "embedding"), "embedding") for p in args.combine]
        made = embeddings.combine(loaded, args.weights, args.mode)
    else:
        if args.weights is not None:
            raise UsageError("--weights and --mode are for --combine")
        engine = _engine(args, Processes())
        mask = _existing_file(args.reference_mask, "reference mask") if args.reference_mask else None
        made = embeddings.encode(engine, _existing_file(args.reference, "reference image"), args.seecoder, mask)
    made.save(out)
    shape = "x".join(str(d) for d in made.context.shape)
    print(f"wrote {out} ({shape}, SeeCoder '{made.seecoder}') in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return EXIT_OK
