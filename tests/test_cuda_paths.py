"""The stop-22 paths on CUDA in fp16, for a session lent a GPU (benchmarks/gpu_goals.sh runs this
file; skipped without CUDA): live previews keep the final pixels, quick mode (deep_cache 2) stays
finite and close to the exact latents, SeeCoder's cached window masks give the same tokens as
fresh ones. Tiny profile, so it takes seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prompt_free.engine import Engine
from prompt_free.images import load_image
from prompt_free.previews import showing
from prompt_free.tasks import VariationSettings, image_variation
from tests._torch import rel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

REF = "assets/examples/chelsea.jpg"


@pytest.fixture(scope="module")
def engine():
    return Engine.from_profile("tiny", device="cuda", precision="fp16")


def test_previews_keep_the_final_pixels_on_cuda_fp16(engine):
    reference = load_image(REF)
    s = VariationSettings(steps=10, width=64, height=64, seed=5)
    plain = image_variation(engine, reference, s)
    seen = []
    with showing(seen.append):
        shown = image_variation(engine, reference, s)
    assert [p.step for p in seen] == [2, 4, 6, 8]  # settings.preview_interval(10) == 2, never the last step
    assert np.array_equal(np.asarray(plain.images[0]), np.asarray(shown.images[0]))


def test_quick_mode_on_cuda_fp16_is_finite_and_close_to_exact(engine):
    def final(deep_cache):
        s = VariationSettings(steps=8, width=128, height=128, seed=3, deep_cache=deep_cache)
        return torch.from_numpy(np.asarray(image_variation(engine, load_image(REF), s).images[0]).astype(np.float32))

    exact, quick = final(1), final(2)
    assert torch.isfinite(quick).all()
    assert not torch.equal(quick, exact)  # it really took the shallow path
    assert rel(quick, exact) <= 0.5  # pixels of the tiny random model after 8 steps at N = 2 (CPU: a few %)


def test_seecoder_masks_cached_on_cuda_give_the_same_tokens():
    from prompt_free.seecoder.swin import window_mask
    from prompt_free.tiny import tiny_seecoder

    model = tiny_seecoder().to("cuda", torch.float16)
    x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(0)).to("cuda", torch.float16)
    window_mask.cache_clear()
    with torch.inference_mode():
        fresh = model(x)
        cached = model(x)
    assert window_mask.cache_info().hits > 0
    assert torch.equal(fresh, cached)
