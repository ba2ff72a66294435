"""Image Variation: new images with the content and style of one reference image, optionally
with a text prompt and style-only control (the reference builder, ``tasks.reference``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .common import Progress, SamplerSettings, TaskResult, begin, check_work, holds_models, sampler_for, sampler_info
from .reference import ReferenceOptions, build, reference_or_saved
from .start import StartSettings, check_steps, start_from, start_info
from .text_image import BalanceSettings, BlockWeightSettings, TextImageSettings


@dataclass
class VariationSettings(BalanceSettings, BlockWeightSettings, StartSettings, TextImageSettings, SamplerSettings):
    """Sampler settings, the reference's strength, the optional prompt / blocks and where the
    run starts (``denoise_strength``)."""


@holds_models
def image_variation(engine, reference=None, settings: Optional[SamplerSettings] = None, progress: Progress = None,
                    embedding=None, init_image=None) -> TaskResult:
    """``settings.num_images`` images of the reference's SeeCoder embedding (image i: seed + i).
    ``embedding``: a saved embedding (``prompt_free.embeddings``) used instead of encoding the
    reference; ``init_image``: what a ``denoise_strength`` below 1 starts from (default: the reference)."""
    s = begin(engine, settings or VariationSettings())
    options = ReferenceOptions.of(s)
    sampler = sampler_for(s)
    check_work([(sampler, 0)])
    check_steps(s, sampler)
    refs, saved = reference_or_saved(reference, embedding)
    timings = {}
    built = build(engine, s, refs, options, timings=timings, embedding=saved, size=(sampler.width, sampler.height))
    start = start_from(engine, s, sampler, init_image if init_image is not None else reference)
    gen = engine.generate(s.base_model, built.conditioning, sampler, progress=progress, start=start)
    return TaskResult(gen.images, [], {**sampler_info(s, sampler), **built.info, **start_info(s, init_image),
                                       "timings": {**timings, **gen.timings}})
