"""SeeCoder speed parts: the Swin backbone's shifted-window masks are built once per (padded
size, device, dtype) and shared by later encodes (same outputs; a mask made under inference
mode still serves a training forward and backward), and on the compile path the engine compiles
SeeCoder's forward at the common reference sizes only (dynamo's eager backend on the CPU)."""

from __future__ import annotations

import torch

from prompt_free.fast import COMMON_REFERENCE_SIZES, FastPath, _encode
from prompt_free.seecoder.swin import shifted_window_mask, window_mask
from prompt_free.tiny import tiny_seecoder
from tests.helpers.tensors import one_thread  # noqa: F401 (one_thread: an autouse fixture)


def _image(h=96, w=128, seed=0):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_repeated_encodes_build_each_mask_once_and_give_the_same_tokens():
    model = tiny_seecoder()
    window_mask.cache_clear()
    with torch.inference_mode():
        first = model(_image())
        second = model(_image())  # with the masks of the first
        before = window_mask.cache_info().misses
        model(_image(128, 96))  # another size builds its own
    assert window_mask.cache_info().misses > before
    assert torch.equal(first, second)
    window_mask.cache_clear()
    with torch.inference_mode():
        fresh = model(_image())
    assert torch.equal(fresh, first)  # cached and freshly built masks give the same tokens


def test_the_second_encode_of_a_size_builds_no_mask():
    model = tiny_seecoder()
    window_mask.cache_clear()
    with torch.inference_mode():
        model(_image())
        misses = window_mask.cache_info().misses
        model(_image(seed=1))
    assert window_mask.cache_info().misses == misses and window_mask.cache_info().hits > 0


def test_a_cached_mask_is_the_built_one_and_is_shared():
    a = window_mask(24, 36, 12, 6, "cpu", torch.float32)
    assert a is window_mask(24, 36, 12, 6, torch.device("cpu"), torch.float32)
    assert torch.equal(a, shifted_window_mask(24, 36, 12, 6, torch.device("cpu"), torch.float32))
    assert window_mask(24, 36, 12, 6, "cpu", torch.bfloat16).dtype == torch.bfloat16  # per dtype


def test_a_mask_cached_under_inference_mode_serves_a_training_step():
    model = tiny_seecoder()
    window_mask.cache_clear()
    with torch.inference_mode():
        model(_image())  # the masks are cached here
    model.train()
    out = model(_image())
    out.float().pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_the_compile_path_compiles_seecoder_at_the_common_sizes_only():
    import torch._dynamo

    torch._dynamo.reset()
    model = tiny_seecoder()
    path = FastPath(compile=True, backend="eager")
    assert (512, 512) in COMMON_REFERENCE_SIZES
    odd = _image(96, 128)
    assert path.encoder(model, odd) is model  # an uncommon size runs eagerly
    common = _image(512, 512)
    encode = path.encoder(model, common)
    assert encode is not model and _encode in path._compiled_fn
    with torch.inference_mode():
        assert torch.allclose(encode(common), model(common), rtol=1e-5, atol=1e-6)
    assert FastPath(compile=False).encoder(model, common) is model
    torch._dynamo.reset()


def test_the_engine_encodes_through_the_compiled_forward_on_the_compile_path():
    import torch._dynamo

    from prompt_free.engine import Engine
    from PIL import Image

    torch._dynamo.reset()
    plain = Engine.from_profile("tiny", device="cpu", fast=False)
    compiled = Engine.from_profile("tiny", device="cpu", fast=False)
    compiled.fast = FastPath(compile=True, backend="eager")
    img = Image.open("assets/examples/chelsea.jpg").convert("RGB").resize((512, 512))
    want, _ = plain.encode_reference(img, "SeeCoder")
    got, _ = compiled.encode_reference(img, "SeeCoder")
    assert _encode in compiled.fast._compiled_fn
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()


def test_the_mask_cache_is_bounded_by_bytes():
    """A large reference's masks (77 MB at 1536x1024 in fp32) are not all kept: what stays is
    within MASK_CACHE_BYTES, and a mask over it is built for its encode only (same values)."""
    from prompt_free.seecoder import swin

    window_mask.cache_clear()
    big = window_mask(264, 384, 12, 6, "cpu", torch.float32)  # stage 1 of 1056x1536: 58 MB
    assert swin.window_mask.cache_info().currsize == 0
    assert torch.equal(big, shifted_window_mask(264, 384, 12, 6, "cpu", torch.float32))
    for side in (132, 144, 156, 168, 180, 192):  # stage 1 of references from 528 to 768 pixels
        window_mask(side, side, 12, 6, "cpu", torch.float32)
    assert 0 < swin.window_mask.cache_info().currsize <= swin.MASK_CACHE_BYTES
    window_mask.cache_clear()
