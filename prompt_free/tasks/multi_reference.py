"""Multi-Reference: up to four reference images, each with a weight and an optional region mask,
blended into one conditioning; optionally under ControlNets as in Reference + ControlNet.

Blends (``mixing.blend_contexts``, applied by the reference builder ``tasks.reference``; every
reference is encoded by the same SeeCoder, 148 tokens each):

* ``average``: the weighted mean of the references' contexts (weights normalised to sum 1);
  148 tokens, the same unconditional context.
* ``concatenate``: the contexts side by side, each reference's tokens scaled by its weight
  (148 x K tokens); the unconditional context is the unconditional tokens repeated, unscaled
  (one "no reference" per slot).
* ``regions``: the contexts side by side, unscaled, and a ``regions.RegionalAttention`` patch:
  in every cross-attention layer each reference's attention output is used only inside its
  mask (white = where it applies). Where no mask covers, the first reference applies: it is the
  background and needs no mask; every later reference needs one. Details and why:
  ``prompt_free/regions.py``.

A weight of 0 leaves a reference out (as if its slot were empty). Neutral values: one
reference at weight 1 (any blend), ``average`` with weights (1, 0), and ``regions`` with mask
1 all white and mask 2 all black all give Image Variation's picture of reference 1, bit for bit.

Masks are used by the ``regions`` blend only. A mask of another size than the output is
resized to it (nearest), and the info says so. ControlNets: ``tasks.controls`` (checks, maps,
hints), as in Reference + ControlNet; in a regions run they get the regional processors too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .. import settings as limits
from ..errors import InputImageError, InvalidSettingError
from ..images import prepare_reference
from ..masks import load_mask
from ..mixing import AVERAGE, BLENDS, CONCATENATE, REGIONS, blend_contexts  # noqa: F401 - this task's names too
from .common import Progress, SamplerSettings, TaskResult, begin, check_work, holds_models, sampler_for, sampler_info, timed
from .controls import (
    ControlSpec,
    check_maps,
    check_specs,
    control_input,
    control_map,
    controls_info,
    open_images,
    output_size,
)
from .reference import ReferenceOptions, build, normalise_blend  # noqa: F401 - normalise_blend: this task's name too
from .start import StartSettings, check_steps, start_from, start_info
from .text_image import blocks_setting


@dataclass
class Reference:
    """One reference: an image (path, PIL, array, bytes), its weight in [0, 2] (0: left out) and
    an optional region mask (white = where it applies; used by the ``regions`` blend)."""

    image: Any
    weight: float = 1.0
    mask: Any = None


@dataclass
class MultiReferenceSettings(StartSettings, SamplerSettings):
    """Sampler settings plus the blend and optional ControlNets. With ControlNets, a size left
    None follows the first control image (as Reference + ControlNet)."""

    blend: str = AVERAGE
    controls: Sequence[ControlSpec] = field(default_factory=tuple)
    annotator_dir: Optional[str] = None  # detector weights; None: env PFD_ANNOTATOR_DIR, then the hub
    blocks: str = blocks_setting()  # the blended references go to these blocks, the others get the unconditional context


@dataclass
class _Slot:
    index: int  # 1-based, as the inputs are named
    image: Any
    weight: float
    mask: Any


def check_references(references: Sequence[Any], blend: str) -> Tuple[List[_Slot], List[str]]:
    """The slots that hold a reference (images not opened yet) and notes for the info. Refuses
    more than ``settings.MAX_REFERENCES`` slots, weights out of range, no reference, all
    weights 0, and, for ``regions``, a later reference without a mask."""
    references = list(references or [])
    if len(references) > limits.MAX_REFERENCES:
        raise InvalidSettingError(f"at most {limits.MAX_REFERENCES} references can be blended, got {len(references)}")
    slots, notes = [], []
    for i, r in enumerate(references, 1):
        r = r if isinstance(r, Reference) else Reference(r)
        weight = limits.REFERENCE_WEIGHT.check(r.weight, f"weight {i}")
        if r.image is None:
            if r.mask is not None:
                notes.append(f"mask {i} ignored: there is no reference {i}")
            continue
        slots.append(_Slot(i, r.image, weight, r.mask))
    if not slots:
        raise InputImageError("no reference image given: upload at least one reference (reference 1 to "
                              f"{limits.MAX_REFERENCES})")
    used = [s for s in slots if s.weight > 0]
    if not used:
        names = ", ".join(f"weight {s.index}" for s in slots)
        raise InvalidSettingError(f"all reference weights are 0 ({names}): give at least one reference a weight above 0")
    for s in slots:
        if s.weight == 0:
            notes.append(f"reference {s.index} left out (weight 0)")
    if blend == REGIONS:
        for s in used[1:]:
            if s.mask is None:
                raise InputImageError(
                    f"reference {s.index} has no region mask: the regions blend needs a mask for every reference after "
                    f"the first (white = where it applies); reference {used[0].index} takes whatever no mask covers"
                )
    elif any(s.mask is not None for s in used):
        notes.append(f"masks are used by the regions blend only; the {blend} blend ignores them")
    return used, notes


def region_masks(slots: Sequence[_Slot], size: Tuple[int, int], notes: List[str]) -> np.ndarray:
    """(K, H, W) float32 masks at the output ``size`` (width, height); a reference without a
    mask (the first, the background) gets an empty one. Other sizes are resized (nearest)."""
    w, h = size
    out = np.zeros((len(slots), h, w), dtype=np.float32)
    for k, s in enumerate(slots):
        if s.mask is None:
            continue
        m = load_mask(s.mask, None, f"mask {s.index}")
        if m.shape != (h, w):
            notes.append(f"mask {s.index} was {m.shape[1]}x{m.shape[0]}, resized to the output's {w}x{h}")
            m = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        out[k] = m
    return out


@holds_models
def multi_reference(engine, references: Sequence[Any], settings: Optional[MultiReferenceSettings] = None,
                    progress: Progress = None, init_image=None) -> TaskResult:
    """Generate from several references blended by ``settings.blend``. ``references``: up to four
    ``Reference``s or images (weight 1, no mask); None marks an empty slot. Returns the images,
    the control maps used as ``extras`` and run info (blend, references, notes). ``init_image``:
    what a ``denoise_strength`` below 1 starts from (default: the first reference used)."""
    s = begin(engine, settings or MultiReferenceSettings())
    options = ReferenceOptions.of(s)  # the blend, the blocks and the strength, checked
    blend = options.blend
    slots, notes = check_references(references, blend)
    controls = [c for c in (s.controls or ()) if c is not None]
    prepared = check_specs(engine, controls) if controls else []
    open_images(prepared)
    if prepared:
        width, height, followed = output_size(s.width, s.height, prepared[0].image)
    else:
        width, height, followed = s.width or int(limits.SIZE.default), s.height or int(limits.SIZE.default), False
    sampler = sampler_for(s, width, height)
    check_work([(sampler, len(prepared))])
    check_maps(prepared, (sampler.width, sampler.height), followed=followed)
    check_steps(s, sampler)
    refs = [prepare_reference(sl.image, f"reference image {sl.index}") for sl in slots]
    size = (sampler.width, sampler.height)
    masks = region_masks(slots, size, notes) if blend == REGIONS else None

    timings = {}
    with timed(timings, "preprocess"):
        maps = [control_map(engine, p, size, s.annotator_dir) for p in prepared]
    inputs = [control_input(engine, p, m) for p, m in zip(prepared, maps)]
    # the blend in the chosen blocks (the unconditional context in the others), or per region
    built = build(engine, s, refs, options, controls=inputs, weights=[sl.weight for sl in slots], regions=masks,
                  timings=timings, size=size)
    start = start_from(engine, s, sampler, init_image if init_image is not None else slots[0].image)
    gen = engine.generate(s.base_model, built.conditioning, sampler, progress=progress, start=start)
    info = {
        **sampler_info(s, sampler),
        **built.info,  # blend, strength, blocks, tokens
        **start_info(s, init_image),
        "references": [{"reference": sl.index, "weight": sl.weight, "mask": sl.mask is not None and blend == REGIONS}
                       for sl in slots],
        "notes": notes,
        "timings": {**timings, **gen.timings},
    }
    if prepared:
        info["size_from"] = "control image 1" if followed else "settings"
        info["controls"] = controls_info(prepared)
    return TaskResult(gen.images, maps, info)
