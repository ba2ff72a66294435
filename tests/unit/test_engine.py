"""Engine semantics on the tiny profile: the paper's sampler, seeds, sizes, caches, concurrency."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from prompt_free.engine import Engine
from prompt_free.errors import InvalidSettingError, UnknownModelError
from prompt_free.registry import Registry
from prompt_free.sampling import denoise, make_scheduler
from prompt_free.tasks import VariationSettings, image_variation


@pytest.fixture(scope="module")
def engine():
    return Engine.from_profile("tiny")


@pytest.fixture(scope="module")
def reference():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))


def small(**kw):
    base = dict(width=64, height=64, steps=2, seed=5)
    base.update(kw)
    return VariationSettings(**base)


class ContextRecorder:
    """Forward pre-hook on the real UNet: records what context reaches it."""

    def __init__(self, unet):
        self.contexts = []
        self.handle = unet.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        self.contexts.append(kwargs["encoder_hidden_states"].detach().clone())

    def close(self):
        self.handle.remove()


def test_tiny_profile_engine_has_banner_and_cpu_fp32(engine):
    assert engine.profile == "tiny" and engine.banner
    assert engine.device.type in ("cpu", "cuda")
    if engine.device.type == "cpu":
        assert engine.dtype == torch.float32


def test_zero_unconditional_embedding_reaches_unet_first_half(engine, reference):
    unet = engine.base_model("Tiny SD").unet
    rec = ContextRecorder(unet)
    try:
        image_variation(engine, reference, small(guidance=2.0, num_images=2))
    finally:
        rec.close()
    assert len(rec.contexts) == 2  # one batched call per step
    for ctx in rec.contexts:
        assert ctx.shape == (4, 148, 64)  # [uncond x2, cond x2]
        assert torch.count_nonzero(ctx[:2]) == 0
        assert torch.count_nonzero(ctx[2:]) > 0


def test_guidance_one_runs_conditional_branch_only(engine, reference):
    unet = engine.base_model("Tiny SD").unet
    rec = ContextRecorder(unet)
    try:
        image_variation(engine, reference, small(guidance=1.0))
    finally:
        rec.close()
    assert [c.shape[0] for c in rec.contexts] == [1, 1]
    assert all(torch.count_nonzero(c) > 0 for c in rec.contexts)


def test_guidance_formula_matches_manual_cfg_step(engine, reference):
    base = engine.base_model("Tiny SD")
    cond, uncond = engine.encode_reference(reference, "SeeCoder")
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    g = 3.5
    with torch.no_grad():
        got = denoise(base.unet, make_scheduler(), noise, cond, uncond, steps=1, guidance=g)
        sched = make_scheduler()
        sched.set_timesteps(1)
        t = sched.timesteps[0]
        e_u = base.unet(noise, t, encoder_hidden_states=uncond).sample
        e_c = base.unet(noise, t, encoder_hidden_states=cond).sample
        expected = sched.step(e_u + g * (e_c - e_u), t, noise, eta=0.0).prev_sample
    assert torch.allclose(got, expected, atol=1e-5)
    # and it is not the unguided result
    with torch.no_grad():
        unguided = make_scheduler()
        unguided.set_timesteps(1)
        plain = unguided.step(e_c, t, noise, eta=0.0).prev_sample
    assert not torch.allclose(got, plain, atol=1e-4)


def test_official_ddim_timesteps_at_50_steps():
    sched = make_scheduler("DDIM")
    sched.set_timesteps(50)
    assert sched.timesteps.tolist() == list(range(981, 0, -20))
    assert sched.final_alpha_cumprod == sched.alphas_cumprod[0]


def test_same_seed_reproduces_and_image_i_uses_seed_plus_i(engine, reference):
    a = image_variation(engine, reference, small(seed=7, num_images=2))
    b = image_variation(engine, reference, small(seed=7, num_images=2))
    single = image_variation(engine, reference, small(seed=8, num_images=1))
    assert a.info["seeds"] == [7, 8]
    for x, y in zip(a.images, b.images):
        assert np.array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(a.images[0]), np.asarray(a.images[1]))
    # batching does not change a picture: image 1 of the batch equals seed 8 alone
    assert np.abs(np.asarray(a.images[1], dtype=int) - np.asarray(single.images[0], dtype=int)).max() <= 1


def test_sizes_are_floored_to_multiples_of_64(engine, reference):
    r = image_variation(engine, reference, small(width=130, height=200))
    assert r.images[0].size == (128, 192)
    assert (r.info["width"], r.info["height"]) == (128, 192)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(width=10), "width 10 is out of range"),
        (dict(height=99999), "height 99999 is out of range"),
        (dict(steps=0), "steps must be between"),
        (dict(steps=2.5), "steps must be a whole number"),
        (dict(guidance=-1), "guidance must be between"),
        (dict(guidance=float("nan")), "guidance must be between"),
        (dict(num_images=20), "number of images must be between"),
        (dict(seed=-3), "seed must be between"),
        (dict(scheduler="Bogus"), "unknown scheduler"),
    ],
)
def test_out_of_range_settings_raise_typed_errors(engine, reference, settings, message):
    with pytest.raises(InvalidSettingError, match=message):
        image_variation(engine, reference, small(**settings))


def test_a_checked_sampler_is_taken_as_it_is_and_an_unchecked_one_is_checked_by_generate(engine, reference):
    """A request checks its sampler once, where it is made: ``checked()`` of a checked sampler is
    that sampler; any other sampler (made by hand, or a ``replace`` of a checked one) is checked
    by ``generate``."""
    from dataclasses import replace

    from prompt_free.conditioning import Conditioning
    from prompt_free.sampling import Sampler

    checked = Sampler(width=100, height=70, steps=2).checked()
    assert checked.checked() is checked and (checked.width, checked.height) == (64, 64)
    assert not Sampler().is_checked and not replace(checked, steps=3).is_checked
    ctx, unc = engine.encode_reference(reference, "SeeCoder")
    r = engine.generate("Tiny SD", Conditioning(ctx, unc), Sampler(width=100, height=70, steps=2), decode=False)
    assert (r.width, r.height) == (64, 64)  # snapped by generate's check
    with pytest.raises(InvalidSettingError, match="steps must be between"):
        engine.generate("Tiny SD", Conditioning(ctx, unc), replace(checked, steps=0), decode=False)


def test_unknown_model_names_raise_unknown_model_error(engine, reference):
    with pytest.raises(UnknownModelError, match="unknown base model 'Nope'.*Tiny SD"):
        image_variation(engine, reference, small(base_model="Nope"))
    with pytest.raises(UnknownModelError, match="unknown SeeCoder 'Nope'"):
        image_variation(engine, reference, small(seecoder="Nope"))


@pytest.mark.parametrize("scheduler", ["DPM++ 2M", "Euler a", "UniPC"])
def test_other_schedulers_generate(engine, reference, scheduler):
    r = image_variation(engine, reference, small(scheduler=scheduler, steps=3))
    assert np.isfinite(np.asarray(r.images[0], dtype=float)).all()


def test_cache_hits_do_not_reload_and_switching_back_is_free(reference):
    engine = Engine(Registry.load(profile="tiny"), max_base_models=2)
    for _ in range(2):
        image_variation(engine, reference, small(base_model="Tiny SD"))
    image_variation(engine, reference, small(base_model="Tiny SD (other seed)"))
    image_variation(engine, reference, small(base_model="Tiny SD"))
    assert engine.load_counts[("base_models", "Tiny SD")] == 1
    assert engine.load_counts[("base_models", "Tiny SD (other seed)")] == 1
    assert engine.load_counts[("seecoders", "SeeCoder")] == 1


def test_lru_of_one_evicts_and_reloads(reference):
    engine = Engine(Registry.load(profile="tiny"), max_base_models=1)
    image_variation(engine, reference, small(base_model="Tiny SD"))
    image_variation(engine, reference, small(base_model="Tiny SD (other seed)"))
    image_variation(engine, reference, small(base_model="Tiny SD"))
    assert engine.load_counts[("base_models", "Tiny SD")] == 2


def test_base_models_give_different_pictures(engine, reference):
    a = image_variation(engine, reference, small(base_model="Tiny SD"))
    b = image_variation(engine, reference, small(base_model="Tiny SD (other seed)"))
    assert not np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))


def test_seecoder_variants_give_different_contexts(engine, reference):
    plain, u_plain = engine.encode_reference(reference, "SeeCoder")
    pa, _ = engine.encode_reference(reference, "SeeCoder-PA")
    anime, u_anime = engine.encode_reference(reference, "SeeCoder-Anime")
    assert plain.shape == pa.shape == anime.shape == (1, 148, 64)
    assert torch.count_nonzero(u_plain) == 0
    assert torch.count_nonzero(u_anime[0, :77]) > 0 and torch.count_nonzero(u_anime[0, 77:]) == 0
    assert not torch.allclose(plain, pa)


def test_concurrent_requests_give_the_same_results_as_serial(reference):
    serial_engine = Engine(Registry.load(profile="tiny"))
    serial = [image_variation(serial_engine, reference, small(seed=s)).images[0] for s in (1, 2)]
    results, errors = {}, []
    fresh = Engine(Registry.load(profile="tiny"))  # both threads race on a cold engine: load once

    def work(seed):
        try:
            results[seed] = image_variation(fresh, reference, small(seed=seed)).images[0]
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert fresh.load_counts[("base_models", "Tiny SD")] == 1
    assert fresh.load_counts[("seecoders", "SeeCoder")] == 1
    for s, img in zip((1, 2), serial):
        assert np.array_equal(np.asarray(results[s]), np.asarray(img))


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "I;16"])
def test_odd_image_modes_are_accepted(engine, mode):
    img = Image.new("RGB", (80, 60), (200, 30, 30)).convert(mode)
    r = image_variation(engine, img, small())
    assert r.images[0].mode == "RGB"


def test_exif_rotated_reference_is_encoded_upright(engine, tmp_path):
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 100, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    path = tmp_path / "rot.png"
    img.save(path, exif=exif)
    from prompt_free.images import load_image

    loaded = load_image(str(path))
    assert loaded.size == (60, 100)  # portrait, as displayed
    upright = load_image(img.transpose(Image.Transpose.ROTATE_270))
    assert np.array_equal(np.asarray(loaded), np.asarray(upright))
    c1, _ = engine.encode_reference(str(path), "SeeCoder")
    c2, _ = engine.encode_reference(img, "SeeCoder")
    assert not torch.allclose(c1, c2)  # the rotation is applied before encoding


def test_tiny_and_huge_references(engine):
    from prompt_free.errors import InputImageError
    from prompt_free.images import prepare_reference
    from prompt_free.settings import MAX_REFERENCE_SIDE

    with pytest.raises(InputImageError, match="too small"):
        image_variation(engine, Image.new("RGB", (8, 8)), small())
    big = prepare_reference(Image.new("RGB", (4000, 1000)))
    assert max(big.size) == MAX_REFERENCE_SIDE and big.size[1] == 384


def test_low_precision_engine_runs_every_task():
    """bf16 on the CPU stands in for fp16 on CUDA: every task's casts between the fp32 sampler
    state and low-precision models must hold."""
    from prompt_free.tasks import (
        CompareSettings, ControlSettings, ControlSpec, EditSettings, TryOnSettings, compare, edit_with_reference,
        reference_control, virtual_tryon,
    )
    from tests.helpers.app import EXAMPLES

    engine = Engine(Registry.load(profile="tiny"), device="cpu", dtype=torch.bfloat16)
    ref = Image.open(EXAMPLES / "chelsea.jpg")
    pose = Image.open(EXAMPLES / "pose_standing.png")
    assert engine.base_model("Tiny SD").unet.dtype == torch.bfloat16
    assert engine.seecoder("SeeCoder").model.dtype == torch.bfloat16
    outputs = [
        image_variation(engine, ref, small()).images[0],
        reference_control(engine, ref, [ControlSpec("openpose", pose)], ControlSettings(width=64, height=128, steps=2)).images[0],
        *[c.image for c in compare(engine, ref, pose, "openpose", settings=CompareSettings(width=64, height=128, steps=2)).columns.values()],
        virtual_tryon(engine, EXAMPLES / "tryon_person.png", EXAMPLES / "tryon_garment_shirt.png",
                      EXAMPLES / "tryon_person_mask.png", TryOnSettings(steps=2, max_side=128, pose_control=False)).images[0],
        edit_with_reference(engine, EXAMPLES / "tryon_person.png", EXAMPLES / "tryon_person_mask.png", ref,
                            EditSettings(steps=2, max_side=64, base_model="Tiny SD")).images[0],  # latent blending
    ]
    assert len(outputs) == 6
    for img in outputs:
        a = np.asarray(img, dtype=float)
        assert np.isfinite(a).all() and a.std() > 0
