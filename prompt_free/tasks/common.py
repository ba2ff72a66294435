"""What every task returns and takes, and the first steps of every request.

Every task runs the same path: ``begin`` checks the settings and the model names against the
registry (nothing is loaded, no image decoded), the task then checks its own inputs, builds a
``Conditioning`` and calls ``Engine.generate`` once per run.
"""

from __future__ import annotations

import functools
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from PIL import Image

from .. import settings as limits
from ..errors import WorkLimitError
from ..sampling import DEFAULT_SCHEDULER, Sampler
from ..images import AS_IS, FRAMINGS
from .fields import APPENDED, LAST, REFERENCE, checked, declared, image_fields, notes, setting, values_of

Progress = Optional[Callable[[int, int], None]]
NEGATIVE_MODES = ("none", "noise")  # negative_mode: none, or the reference with its layout destroyed


@dataclass
class TaskResult:
    images: List[Image.Image]  # generated pictures
    extras: List[Image.Image] = field(default_factory=list)  # e.g. control maps used
    info: Dict[str, Any] = field(default_factory=dict)  # seeds, size, timings ...


@dataclass
class SamplerSettings:
    """Settings every generation takes (defaults: the official demo's)."""

    base_model: Optional[str] = None  # None: the profile's default
    seecoder: Optional[str] = None
    guidance: float = 2.0
    steps: int = 50
    width: Optional[int] = 512
    height: Optional[int] = 512
    seed: int = 20
    num_images: int = 1
    scheduler: str = DEFAULT_SCHEDULER
    reference_strength: float = setting(
        limits.REFERENCE_STRENGTH.default, range=limits.REFERENCE_STRENGTH, section=REFERENCE,
        label="Reference strength", ui_id="strength", cli="--reference-strength", metavar="S",
        help="how strongly the reference conditions the picture (guidance between none and the reference; "
             "default 1.0: the reference as encoded)",  # uncond + s * (cond - uncond): mixing.with_strength
        ui_info="How strongly the reference conditions the model: 0 none, 1 as encoded, up to 2 exaggerated. "
                "Guidance is separate: it scales the difference of the guided and unguided predictions.",
        note="reference strength {value}")
    loras: Tuple[Tuple[str, float], ...] = ()  # (name in checkpoints.yaml `loras:`, scale); empty: none
    deep_cache: int = setting(
        int(limits.DEEP_CACHE.default), range=limits.DEEP_CACHE, section=LAST, cli="--deep-cache", metavar="N",
        label="Quick mode (approximate): deep features reused for N steps",
        help="quick mode, APPROXIMATE: the UNet's deep features are computed every N steps and reused in between "
             f"(2 or 3: faster, slightly different pictures); default 1: off, exact "
             f"({int(limits.DEEP_CACHE.lo)}..{int(limits.DEEP_CACHE.hi)})",
        ui_info="1 = off (exact). 2 or 3: faster steps, a slightly different picture (recorded in the PNG)",
        note="quick mode N={value} (approximate)", png_note=("Deep cache", "{value} (approximate)"))
    # The reference's source mask and framing (tasks.reference: ``_prepare``, ``_encode``).
    reference_mask: Any = setting(
        None, image=True, section=APPENDED, cli="--reference-mask", metavar="PATH",
        label="Reference mask: the part of the reference to use (white = use)",
        help="a mask image over the reference (white or painted = use): only that part informs SeeCoder's tokens "
             "(its cross-attention reads only the features under the mask); all white or none: the whole reference",
        note="source mask: {value}")
    reference_framing: str = setting(
        AS_IS, choices=FRAMINGS, section=APPENDED, cli="--reference-framing",
        label="Reference framing",
        help="how the reference is framed before SeeCoder reads it: as-is (default), crop (centre crop to the "
             "output's aspect), pad (padded to the output's aspect with mid grey), mask (cropped to the reference "
             "mask's box plus a 10 percent margin; needs a reference mask)",
        note="reference framing {value}", png_note=("Reference framing", "{value}"))
    reference_max_side: int = setting(
        int(limits.REFERENCE_MAX_SIDE.default), range=limits.REFERENCE_MAX_SIDE, section=APPENDED,
        cli="--reference-max-side", metavar="PX",
        label="Longest side the reference is encoded at (px)",
        help="scale the reference down (never up) to this longest side before SeeCoder reads it: fewer pixels, a "
             f"faster encode; default 0: as given (down to {limits.MAX_REFERENCE_SIDE} px when larger)",
        ui_info=f"0 = as given (larger than {limits.MAX_REFERENCE_SIDE} px: scaled to it). Smaller: a faster encode, "
                "fewer details",
        note="reference encoded at most {value} px", png_note=("Reference max side", "{value}"))
    # Issue 26: the reference window and the negative reference (the reference builder applies them,
    # tasks.reference: ReferenceOptions, _negative, _finish).
    reference_start: float = setting(
        limits.REFERENCE_START.default, range=limits.REFERENCE_START, section=APPENDED, cli="--reference-start",
        metavar="F", label="Reference from (fraction of the steps)",
        help="the fraction of the run where the reference starts acting; before it the reference is replaced by "
             "SeeCoder's unconditional tokens (a prompt stays) (default 0: from the first step)",
        note="reference from {value}", png_note=("Reference start", "{value}"))
    reference_end: float = setting(
        limits.REFERENCE_END.default, range=limits.REFERENCE_END, section=APPENDED, cli="--reference-end",
        metavar="F", label="Reference until (fraction of the steps)",
        help="the fraction of the run where the reference stops acting (after it: as before the start) "
             "(default 1: to the last step)",
        note="reference until {value}", png_note=("Reference end", "{value}"))
    negative_image: Any = setting(
        None, image=True, section=APPENDED, cli="--negative-image", metavar="IMG",
        label="Negative reference image (optional)",
        help="an image whose SeeCoder context replaces the unconditional context, so guidance pushes away from it "
             "(default none)",
        note="negative reference image", png_note=("Negative reference", "image"))
    negative_strength: float = setting(
        limits.NEGATIVE_STRENGTH.default, range=limits.NEGATIVE_STRENGTH, section=APPENDED,
        cli="--negative-strength", metavar="S", label="Negative strength",
        help="how far the unconditional context moves to the negative: uncond + s * (negative - uncond); 0: no "
             "negative (default 1.0)",
        note="negative strength {value}", png_note=("Negative strength", "{value}"))
    negative_mode: str = setting(
        "none", choices=NEGATIVE_MODES, section=APPENDED, cli="--negative-mode", label="Negative from the reference",
        help="noise: the reference shuffled in blocks (its layout destroyed, its colours kept) as the negative, so "
             "guidance follows the reference's content and layout more than its colours and textures; not with a "
             "negative image (default none)",
        note="{value} negative", png_note=("Negative mode", "{value}"))


def holds_models(task):
    """Run ``task(engine, ...)`` as one engine request: every model it uses stays resident until
    it returns (the memory budget evicts only what no running request holds)."""

    @functools.wraps(task)
    def run(engine, *args, **kwargs):
        with engine.request():
            return task(engine, *args, **kwargs)

    return run


def resolve_defaults(engine, settings: SamplerSettings) -> SamplerSettings:
    seecoder = settings.seecoder or engine.defaults["seecoder"]
    return replace(settings, base_model=settings.base_model or engine.registry.base_model_for(seecoder),
                   seecoder=seecoder)


def begin(engine, settings: SamplerSettings) -> SamplerSettings:
    """The checks every request starts with: defaults filled in, every sampler setting and every
    declared setting in range, each once (a size left to the task, None, is checked when the task
    decides it: ``sampler_for``), SeeCoder, base model and LoRAs known to the registry
    (``UnknownModelError`` naming the known ones). Nothing is loaded, no image opened."""
    s = resolve_defaults(engine, settings)
    sampler = _sampler(s, _SIZE_PLACEHOLDER if s.width is None else s.width,
                       _SIZE_PLACEHOLDER if s.height is None else s.height, s.num_images).checked()
    s = replace(s, loras=sampler.loras)
    object.__setattr__(s, _CHECKED, sampler)  # not a field: a copy made by ``replace`` is checked again
    checked(s, skip=SAMPLER_FIELDS)  # the declared settings the sampler does not check (prompt_free.tasks.fields)
    engine.registry.entry("seecoders", s.seecoder)
    for name, _ in s.loras:
        engine.registry.entry("loras", name)
    if s.base_model is not None:
        engine.registry.entry("base_models", s.base_model)
    return s


_SIZE_PLACEHOLDER = 512
_CHECKED = "_checked_sampler"
SAMPLER_FIELDS = frozenset(f.name for f in fields(Sampler))


def _sampler(s: SamplerSettings, width, height, num_images) -> Sampler:
    return Sampler(width=width, height=height, seed=s.seed, num_images=num_images, steps=s.steps,
                   guidance=s.guidance, scheduler=s.scheduler, loras=s.loras, deep_cache=s.deep_cache)


def sampler_for(s: SamplerSettings, width=None, height=None, num_images=None) -> Sampler:
    """The engine's ``Sampler`` of ``s`` (checked), with the size or image count a task decided;
    after ``begin`` only those are checked."""
    width, height = s.width if width is None else width, s.height if height is None else height
    num_images = s.num_images if num_images is None else num_images
    begun = s.__dict__.get(_CHECKED)
    if begun is not None:
        return begun.sized(width, height, num_images)
    return _sampler(s, width, height, num_images).checked()


def work(sampler: Sampler, controlnets: int = 0) -> float:
    """The work of one run in megapixel-steps: pixels x steps x images x (1 + ControlNets)."""
    return sampler.width * sampler.height / 1e6 * sampler.steps * sampler.num_images * (1 + controlnets)


def check_work(runs: Sequence[Tuple[Sampler, int]]) -> float:
    """Refuse a request whose work (summed over its runs: (sampler, number of ControlNets)) is
    over ``settings.max_work()``. Every task calls it once, as soon as its size and ControlNets
    are known and before any model loads. Returns the work."""
    total = sum(work(s, n) for s, n in runs)
    limit = limits.max_work()
    if total > limit:
        s0, _ = runs[0]
        parts = [f"{s0.width}x{s0.height} pixels", f"{s0.steps} steps", f"{s0.num_images} image(s)"]
        cns = sorted({n for _, n in runs})
        parts.append(f"{'/'.join(map(str, cns))} ControlNet(s)")
        if len(runs) > 1:
            parts.append(f"{len(runs)} runs")
        raise WorkLimitError(
            f"this request is too large for this server: {', '.join(parts)} make {total:,.0f} megapixel-steps "
            f"(width x height / 1e6 x steps x images x (1 + ControlNets)); the limit is {limit:,.0f} (PFD_MAX_WORK). "
            "Lower the size, the number of steps or images, or use fewer ControlNets."
        )
    return total


def sampler_info(s: SamplerSettings, sampler: Sampler) -> Dict[str, Any]:
    """The part of ``TaskResult.info`` every task reports."""
    info = {
        "seeds": sampler.seeds, "width": sampler.width, "height": sampler.height,
        "seecoder": s.seecoder, "base_model": s.base_model, "steps": sampler.steps,
        "guidance": sampler.guidance, "scheduler": sampler.scheduler,
    }
    # by the reference builder: the reference's options, and the source mask (its share, only when it masks)
    reported = {name for name, decl in declared(s) if decl.section == REFERENCE} | {"reference_mask"}
    images = set(image_fields(s))
    for name, value, _ in notes(s, values_of(s)):  # never silent: e.g. quick mode says the run was approximate
        if name not in reported:
            info.setdefault(name, image_name(value) if name in images else getattr(sampler, name, value))
    return {**info, **lora_info(sampler)}


def image_name(value) -> str:
    """How a run's info names an image setting: a file by its name (never a server's path), else "image"."""
    return os.path.basename(os.fspath(value)) if isinstance(value, (str, os.PathLike)) else "image"


def lora_info(sampler: Sampler) -> Dict[str, Any]:
    """``{"loras": [[name, scale], ...]}`` when the run applies LoRAs, else nothing."""
    return {"loras": [list(pair) for pair in sampler.loras]} if sampler.loras else {}


@contextmanager
def timed(timings: Dict[str, float], name: str) -> Iterator[None]:
    """Adds the wall time of the block to ``timings[name]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
