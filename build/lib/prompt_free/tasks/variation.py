"""Image Variation: new images with the content and style of one reference image."""

from __future__ import annotations

from typing import Optional

from ..conditioning import Conditioning
from .common import Progress, SamplerSettings, TaskResult, begin, check_work, holds_models, sampler_for, sampler_info, timed

VariationSettings = SamplerSettings


@holds_models
def image_variation(engine, reference, settings: Optional[SamplerSettings] = None, progress: Progress = None) -> TaskResult:
    """``settings.num_images`` images of the reference's SeeCoder embedding (image i: seed + i)."""
    s = begin(engine, settings or SamplerSettings())
    sampler = sampler_for(s)
    check_work([(sampler, 0)])
    timings = {}
    with timed(timings, "encode"):
        context, uncond = engine.encode_reference(reference, s.seecoder)
    gen = engine.generate(s.base_model, Conditioning(context, uncond), sampler, progress=progress)
    return TaskResult(gen.images, [], {**sampler_info(s, sampler), "timings": {**timings, **gen.timings}})
