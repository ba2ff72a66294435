"""``generate --reference-dir``'s own rules: which references are still to do (one rule for one
process, accelerate's processes and Ray), the checks of the Ray options, and the folder run on
a Ray cluster (``prompt_free.scale.batch``), written here as the one-process run writes."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Callable, List, Sequence, Tuple

from .. import settings
from ..errors import PromptFreeError
from .options import UsageError
from .run import _names, _write, picture_name


def check_ray_options(args) -> None:
    """The Ray options go with a folder, on their own: bad combinations are usage errors."""
    if not args.ray:
        if args.ray_address is not None or args.ray_actors is not None:
            raise UsageError("--ray-address and --ray-actors go with --ray")
        return
    if not args.reference_dir:
        raise UsageError("--ray runs a folder: give --reference-dir DIR (one --reference runs here)")
    if settings.world_size() > 1:
        raise UsageError("--ray and accelerate launch both split a folder: use one of them")
    if args.ray_actors is not None and args.ray_actors < 1:
        raise UsageError(f"--ray-actors must be 1 or more, got {args.ray_actors}")
    if args.device not in (None, "cpu", "cuda"):
        raise UsageError(f"--device {args.device}: with --ray each actor gets its own GPU; give --device cuda or cpu")
    from ..extras import require

    require("serve", "prompt-free generate --ray")  # before any work: a missing Ray is one line


def still_to_do(refs: Sequence[Path], args, out: Path, *, note: bool = True) -> List[Path]:
    """The references of a folder whose pictures (``<stem>-s<seed + i>.png``, i < --num-images) are
    not all in ``out`` yet, so a run again after a stop finishes the rest; all with --overwrite.
    ``note``: say how many are skipped (one process of several says it)."""
    if args.overwrite or args.num_images < 1:  # a bad --num-images is the task's error to give
        return list(refs)
    todo = [r for r in refs
            if not all((out / picture_name(r.stem, args.seed + i)).is_file() for i in range(args.num_images))]
    if note and len(todo) < len(refs):
        print(f"{len(refs) - len(todo)} of {len(refs)} reference(s) already done in {out}: skipped (--overwrite "
              "redoes them)", file=sys.stderr)
    return todo


def engine_options(engine, args) -> dict:
    """What an actor builds its engine with: this run's profile (``auto`` as resolved here), the
    checkpoints.yaml by absolute path (actors run elsewhere), precision; no step bars."""
    checkpoints = os.path.abspath(args.checkpoints) if args.checkpoints else None
    return dict(profile=engine.profile, checkpoints=checkpoints, precision=args.precision, progress_bar=False)


def generate_on_ray(engine, args, refs: Sequence[Path], request_of: Callable, out: Path,
                    progress: Callable) -> Tuple[List[Path], List[str]]:
    """The references on a Ray cluster: ``request_of(ref)`` is each one's ``TaskRequest``; the
    pictures are written as they come back. Returns (written paths, "name: problem" lines)."""
    from ..scale.batch import run_batch

    requests, failures = [], {}
    for key, ref in enumerate(refs):
        try:
            requests.append((key, request_of(ref)))
        except PromptFreeError as e:
            failures[key] = f"{ref.name}: {e}"
    written: List[Path] = []
    actors: Counter = Counter()
    if not requests:  # nothing to run: no cluster to start
        return written, [failures[k] for k in sorted(failures)]
    done = run_batch(requests, engine_options(engine, args), address=args.ray_address, actors=args.ray_actors,
                     device=args.device)
    for d in progress(done, total=len(requests)):
        actors[d.actor] += 1
        if d.error is not None:
            failures[d.key] = f"{refs[d.key].name}: {d.error}"
        else:
            written += _write(_names(refs[d.key].stem, d.result), out)
    counts = ", ".join(str(n) for n in sorted(actors.values(), reverse=True))
    print(f"ray: {sum(actors.values())} reference(s) on {len(actors)} actor(s) ({counts})", file=sys.stderr)
    return written, [failures[k] for k in sorted(failures)]
