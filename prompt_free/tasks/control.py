"""Reference + ControlNet: content and style from a reference image (SeeCoder), structure from
one or two control images through ControlNets (spec section c, "ControlNet in the loop").

Each ControlNet gets its own control image, used as it is (a ready map: pose skeleton, edges,
depth ...) or turned into a map by a detector, its own conditioning scale and its own guidance
window (the fraction of the steps during which it acts). The residuals of several ControlNets
are summed (``sampling.denoise``).

Size: unless given, the output size follows the first control image as in the official demo
(floor to 64, each side clamped to [512, 1536]); the control image is resized to (w, h) with
PIL bicubic before it becomes the hint, and a detector runs on that resized picture. The
checks, maps and hints are ``tasks.controls``'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from .common import Progress, SamplerSettings, TaskResult, begin, check_work, holds_models, sampler_for, sampler_info, timed
from .controls import (  # noqa: F401 - the names this tab's users import from here
    MODE_AS_IS,
    MODE_PREPROCESS,
    MODES,
    ControlSpec,
    check_aspect,
    check_maps,
    check_specs,
    control_input,
    control_kind,
    control_map,
    controlnet_choices,
    controls_info,
    default_preprocessor,
    follow_size,
    open_images,
    output_size,
)
from ..map_check import map_problem, map_stats  # noqa: F401
from ..settings import MAX_CONTROLS  # noqa: F401
from .reference import ReferenceOptions, build, reference_or_saved
from .start import StartSettings, check_steps, start_from, start_info
from .text_image import BalanceSettings, BlockWeightSettings, TextImageSettings


@dataclass
class ControlSettings(BalanceSettings, BlockWeightSettings, StartSettings, TextImageSettings, SamplerSettings):
    """Sampler settings, the reference's strength and the optional prompt / blocks
    (``tasks.reference``); width/height None: follow the first control image (official)."""

    width: Optional[int] = None
    height: Optional[int] = None
    annotator_dir: Optional[str] = None  # detector weights; None: env PFD_ANNOTATOR_DIR, then the hub


@holds_models
def reference_control(
    engine,
    reference,
    controls: Sequence[ControlSpec],
    settings: Optional[ControlSettings] = None,
    progress: Progress = None,
    embedding=None,
    init_image=None,
) -> TaskResult:
    """Generate from ``reference`` (content/style) under ``controls`` (structure). Returns the
    images, the control maps used as ``extras`` (at the output size) and run info.
    ``embedding`` / ``init_image``: as ``image_variation``'s."""
    s = begin(engine, settings or ControlSettings())
    options = ReferenceOptions.of(s)
    prepared = check_specs(engine, controls)
    open_images(prepared)
    width, height, followed = output_size(s.width, s.height, prepared[0].image)
    sampler = sampler_for(s, width, height)
    check_work([(sampler, len(prepared))])
    check_maps(prepared, (sampler.width, sampler.height), followed=followed)
    check_steps(s, sampler)
    refs, saved = reference_or_saved(reference, embedding)

    timings = {}
    with timed(timings, "preprocess"):
        maps = [control_map(engine, p, (sampler.width, sampler.height), s.annotator_dir) for p in prepared]
    inputs = [control_input(engine, p, m) for p, m in zip(prepared, maps)]
    built = build(engine, s, refs, options, controls=inputs, timings=timings, embedding=saved,
                  size=(sampler.width, sampler.height))
    start = start_from(engine, s, sampler, init_image if init_image is not None else reference)
    gen = engine.generate(s.base_model, built.conditioning, sampler, progress=progress, start=start)
    info = {
        **sampler_info(s, sampler),
        **built.info,
        **start_info(s, init_image),
        "size_from": "control image 1" if followed else "settings",
        "controls": controls_info(prepared),
        "timings": {**timings, **gen.timings},
    }
    return TaskResult(gen.images, maps, info)


__all__ = [
    "MODES", "MODE_AS_IS", "MODE_PREPROCESS", "MAX_CONTROLS", "ControlSpec", "ControlSettings",
    "reference_control", "control_kind", "controlnet_choices", "default_preprocessor", "follow_size",
    "check_aspect", "map_problem", "map_stats",
]
