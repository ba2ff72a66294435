"""What every command shares: the processes accelerate started, the engine, the output folder,
the sampler's settings (with a few-step LoRA's), writing and reporting the PNGs."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .. import settings
from ..tasks.common import SamplerSettings
from .options import UsageError, declared_values, parse_lora

# ----------------------------------------------------------------------------- processes
@dataclass
class Processes:
    """This process's place among the ones ``accelerate launch`` / torchrun started."""

    index: int = 0
    count: int = 1
    state: object = None  # accelerate's PartialState when there are several

    @property
    def main(self) -> bool:
        return self.index == 0

    def split(self, items: Sequence):
        """This process's share of ``items`` (accelerate's ``split_between_processes``, no padding:
        no item is done twice), as a context manager."""
        if self.state is None:
            from contextlib import nullcontext

            return nullcontext(list(items))
        return self.state.split_between_processes(list(items), apply_padding=False)

    def wait(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


def processes() -> Processes:
    """Several processes when launched by accelerate or torchrun (``WORLD_SIZE`` > 1). Without
    CUDA each must ask for the CPU backend, else it sees itself as rank 0 of 1."""
    if settings.world_size() <= 1:
        return Processes()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return Processes(state.process_index, state.num_processes, state)


# ----------------------------------------------------------------------------- commands
def _engine(args, proc: Processes, profile: Optional[str] = None, device: Optional[str] = None):
    """The engine of this process (``device``: instead of --device, e.g. the CPU for a --ray run,
    whose models load in the actors)."""
    from .. import threads
    from ..engine import Engine

    if proc.count <= 1:  # under accelerate each process shares the cores; torch's default is kept
        threads.configure()

    device = device or args.device
    if device is None and proc.state is not None:
        device = str(proc.state.device)
    # the steps' bar like diffusers' (also when stderr is not a terminal); one per process would
    # garble the shared terminal, so several processes show only the folder's bar
    bar = not args.no_progress and proc.count <= 1
    return Engine.from_profile(profile or args.profile or settings.profile(), args.checkpoints, device=device,
                               precision=args.precision, progress_bar=bar)


def _out_dir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the output folder '{path}': {e.strerror}") from None
    if not os.access(out, os.W_OK):
        raise UsageError(f"cannot write into the output folder '{path}'")
    return out


def _sampler_settings(args, engine, width=None, height=None) -> dict:
    loras = tuple(parse_lora(t) for t in args.lora)
    s = dict(seed=args.seed, num_images=args.num_images, base_model=args.base_model, seecoder=args.seecoder,
             loras=loras, **declared_values(args, SamplerSettings), **lora_sampler(args, engine, loras))
    if width is not None:
        s.update(width=width, height=height)
    return s


def lora_sampler(args, engine, loras) -> Dict[str, object]:
    """steps, guidance and scheduler of a run: those given on the command line, else those of a
    --lora entry that carries them (a few-step LoRA), else the paper's. Two LoRAs that set one of
    them differently need it given (``UsageError``)."""
    from ..sampling import DEFAULT_SCHEDULER

    given = {"steps": args.steps, "guidance": args.guidance, "scheduler": args.sampler}
    out = {"steps": int(settings.STEPS.default), "guidance": settings.GUIDANCE.default, "scheduler": DEFAULT_SCHEDULER}
    from_lora: Dict[str, Tuple[str, object]] = {}
    for name, scale in loras:
        if scale == 0:  # a LoRA at scale 0 is no LoRA (lora.LoraPatch)
            continue
        for key, value in engine.registry.entry("loras", name).sampler_preset.items():
            if key in from_lora and from_lora[key][1] != value and given[key] is None:
                option = "--sampler" if key == "scheduler" else f"--{key}"
                raise UsageError(f"LoRAs '{from_lora[key][0]}' and '{name}' set different {key} ({from_lora[key][1]} "
                                 f"and {value}): give {option}")
            from_lora.setdefault(key, (name, value))
    out.update({k: v for k, (_, v) in from_lora.items()})
    out.update({k: v for k, v in given.items() if v is not None})
    return out


def _print_lora_notes(engine, args, proc) -> None:
    """What each --lora entry sets (its sampler) and whether it is validated with SeeCoder context."""
    if not proc.main:
        return
    for name, scale in (parse_lora(t) for t in args.lora):
        note = engine.registry.entry("loras", name).lora_note() if scale != 0 else ""
        if note:
            overridden = [o for o, v in (("--steps", args.steps), ("--guidance", args.guidance), ("--sampler", args.sampler))
                          if v is not None]
            print(f"note: {note}" + (f" ({', '.join(overridden)} given: used instead)" if overridden else ""),
                  file=sys.stderr)


def _write(pictures_by_name: Sequence[Tuple[str, object]], out: Path) -> List[Path]:
    from ..metadata import save_png

    return [save_png(img, out / name) for name, img in pictures_by_name]


def picture_name(stem: str, seed: int) -> str:
    """The file of the picture of seed ``seed`` made from ``<stem>``: ``<stem>-s<seed>.png``."""
    return f"{stem}-s{seed}.png"


def _names(stem: str, result) -> List[Tuple[str, object]]:
    seeds = result.info.get("seeds") or []
    named = [(picture_name(stem, seeds[i] if i < len(seeds) else i), img) for i, img in enumerate(result.images)]
    base = seeds[0] if seeds else 0
    named += [(f"{stem}-s{base}-map{k + 1}.png", img) for k, img in enumerate(result.extras)]
    return named


def _report(paths: Sequence[Path], out: Path, seconds: float, proc: Processes, *, list_files: bool = True) -> None:
    if list_files:
        for p in paths:
            print(p)
    who = f"process {proc.index + 1}/{proc.count}: " if proc.count > 1 else ""
    print(f"{who}wrote {len(paths)} file(s) to {out} in {seconds:.1f} s", flush=True)
