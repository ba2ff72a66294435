"""The paths checked on the CPU by substitution, on CUDA in fp16, for a session lent a GPU
(benchmarks/gpu_goals.sh runs this file; skipped without CUDA): live previews keep the final
pixels, quick mode (deep_cache 2) stays finite and close to the exact latents, SeeCoder's cached
window masks give the same tokens as fresh ones, the graphed guided step is captured and matches
eager fp16 across a base-model switch. Tiny profile, so it takes seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prompt_free.engine import Engine
from prompt_free.images import load_image
from prompt_free.previews import showing
from prompt_free.tasks import VariationSettings, image_variation
from tests.helpers.tensors import rel

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


def test_graphed_steps_are_captured_and_match_eager_fp16_across_a_base_model_switch():
    """CUDA graphs of the guided step (exact parts, no compile): every step shape is captured,
    the latents match eager fp16 within 1e-2 with two ControlNets, and a switch to another base
    model copies into the same slot (same addresses) and gives that model's eager latents."""
    from prompt_free.conditioning import Conditioning
    from prompt_free.cuda_graphs import weights_address
    from prompt_free.fast import FastPath
    from prompt_free.sampling import Sampler
    from tests.helpers.models import two_controlnets

    eager = Engine.from_profile("tiny", device="cuda", fast=False, precision="fp16")
    graphed = Engine.from_profile("tiny", device="cuda", fast=False, precision="fp16")
    graphed.fast = FastPath(graphs=True)

    def latents(e, base, controls_of):
        ctx, unc = e.encode_reference(load_image(REF), "SeeCoder")
        s = Sampler(width=128, height=128, steps=6, seed=3, num_images=2)
        return e.generate(base, Conditioning(ctx, unc, controls_of(e)), s, decode=False).latents.float()

    for controls_of in ((lambda e: []), two_controlnets):
        assert rel(latents(graphed, "Tiny SD", controls_of), latents(eager, "Tiny SD", controls_of)) <= 1e-2
    graphs = graphed.fast.graphs
    assert graphs.failed is None and len(graphs) and all(s.graph is not None for s in graphs._steps.values())
    addresses, captured = weights_address(graphs.slot.module), graphs.captures
    other = "Tiny SD (other seed)"
    assert rel(latents(graphed, other, two_controlnets), latents(eager, other, two_controlnets)) <= 1e-2
    assert weights_address(graphs.slot.module) == addresses and graphs.captures == captured


@pytest.mark.parametrize("switch", [False, True], ids=["constant-context", "context-switched-at-step-3"])
@pytest.mark.parametrize("graphs", [False, True], ids=["exact-parts", "graphed"])
def test_fast_steps_make_no_host_sync_on_cuda(graphs, switch):
    """After the first step (set-up, captures) no step of the fast path waits for the GPU: torch's
    sync debug mode turns any host sync into an error from step 2 on (a DDIM run with a ControlNet),
    also when the step context changes mid-run (its contexts on the device, as the engine's are)."""
    from prompt_free.fast import FastPath
    from prompt_free.sampling import ControlInput, denoise, make_scheduler
    from prompt_free.steps import StepContext
    from prompt_free.tiny import tiny_controlnet, tiny_unet

    unet = tiny_unet(1).to("cuda", torch.float16).eval().requires_grad_(False)
    cn = tiny_controlnet(21).to("cuda", torch.float16).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(2)
    noise, cond = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 148, 64, generator=g)
    hint = torch.rand(1, 3, 64, 64, generator=g)
    checked = []

    def progress(i, n):
        if i == 1:
            torch.cuda.set_sync_debug_mode("error")
        checked.append(i)

    a, b, zeros = (t.to("cuda") for t in (cond, cond.flip(1), torch.zeros_like(cond)))
    ctx = StepContext(a, zeros, 1, True, unet.device, unet.dtype,
                      (lambda i, n: (a if i < 3 else b, zeros)) if switch else None)
    try:
        with torch.inference_mode():
            out = denoise(unet, make_scheduler(), noise, cond, torch.zeros_like(cond), steps=6, guidance=2.0,
                          controls=[ControlInput(cn, hint, 0.7)], fast=FastPath(graphs=graphs), progress=progress,
                          step_context=ctx)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert checked == [1, 2, 3, 4, 5, 6] and torch.isfinite(out).all()
