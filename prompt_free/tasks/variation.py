"""Image Variation: new images with the content and style of one reference image."""

from __future__ import annotations

import time
from typing import Callable, Optional

from .common import SamplerSettings, TaskResult, resolve_defaults

VariationSettings = SamplerSettings


def image_variation(engine, reference, settings: Optional[SamplerSettings] = None, progress: Optional[Callable[[int, int], None]] = None) -> TaskResult:
    s = resolve_defaults(engine, settings or SamplerSettings())
    t0 = time.perf_counter()
    cond, uncond = engine.encode_reference(reference, s.seecoder)
    encode_s = time.perf_counter() - t0
    gen = engine.generate(
        s.base_model, cond, uncond,
        width=s.width, height=s.height, seed=s.seed, num_images=s.num_images,
        steps=s.steps, guidance=s.guidance, scheduler=s.scheduler, progress=progress,
    )
    info = {
        "seeds": gen.seeds, "width": gen.width, "height": gen.height,
        "seecoder": s.seecoder, "base_model": s.base_model, "steps": s.steps,
        "guidance": s.guidance, "scheduler": s.scheduler,
        "timings": {"encode": encode_s, **gen.timings},
    }
    return TaskResult(gen.images, [], info)
