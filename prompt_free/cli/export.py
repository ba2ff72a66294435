"""``prompt-free export``: the profile's SeeCoder and base model as diffusers folders
(``prompt_free.diffusers_prior.export``), for the two-pipeline recipe of docs/diffusers.md.

    prompt-free export [--profile P] [--seecoder NAME] [--base-model NAME] [--controlnet NAME ...] --out DIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .options import EXIT_OK, UsageError


def cmd_export(args) -> int:
    from ..diffusers_prior.export import export
    from .run import Processes, _engine

    out = Path(args.out)
    taken = [str(out / sub) for sub in ("prior", "base", "controlnets") if (out / sub).exists()]
    if taken:
        raise UsageError(f"{', '.join(taken)} already exist(s): choose another --out or remove them")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the output folder '{args.out}': {e.strerror}") from None
    t0 = time.perf_counter()
    made = export(_engine(args, Processes()), out, args.seecoder, args.base_model, args.controlnet)
    extra = "".join(f", ControlNet '{name}' to {path}" for name, path in made.controlnets.items())
    print(f"wrote SeeCoder '{made.seecoder}' to {made.prior}, base model '{made.base_model}' to {made.base}{extra} "
          f"in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return EXIT_OK
