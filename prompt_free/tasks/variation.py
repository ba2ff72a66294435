"""Image Variation: new images with the content and style of one reference image, optionally
with a text prompt and style-only control (the reference builder, ``tasks.reference``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..images import prepare_reference
from .common import Progress, SamplerSettings, TaskResult, begin, check_work, holds_models, sampler_for, sampler_info
from .reference import ReferenceOptions, build
from .text_image import TextImageSettings


@dataclass
class VariationSettings(TextImageSettings, SamplerSettings):
    """Sampler settings, the reference's strength, and the optional prompt / blocks."""


@holds_models
def image_variation(engine, reference, settings: Optional[SamplerSettings] = None, progress: Progress = None) -> TaskResult:
    """``settings.num_images`` images of the reference's SeeCoder embedding (image i: seed + i)."""
    s = begin(engine, settings or VariationSettings())
    options = ReferenceOptions.of(s)
    sampler = sampler_for(s)
    check_work([(sampler, 0)])
    timings = {}
    built = build(engine, s, [prepare_reference(reference)], options, timings=timings,
                  size=(sampler.width, sampler.height))
    gen = engine.generate(s.base_model, built.conditioning, sampler, progress=progress)
    return TaskResult(gen.images, [], {**sampler_info(s, sampler), **built.info,
                                       "timings": {**timings, **gen.timings}})
