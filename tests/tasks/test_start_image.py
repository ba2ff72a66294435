"""Start from the reference (``denoise_strength``, img2img; ``tasks.start``, ``sampling.Start``)
on the tiny profile: neutral = today's loop (the init image not even read), every scheduler and
quick mode run, the fast path's DDIM equals the scheduler's own step, a low strength keeps the
image where 1 does not, bad values are refused, and the PNG redo is bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from prompt_free.engine import Engine
from prompt_free.errors import InvalidSettingError
from prompt_free.sampling import SCHEDULERS, FEW_STEP_SCHEDULERS
from prompt_free.tasks import VariationSettings, image_variation
from prompt_free.tasks.reference import ReferenceOptions, build
from prompt_free.tasks.start import start_from
from prompt_free.tasks.common import begin, sampler_for
from tests.helpers.cli import TINY, pixels, run

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def engine():
    return Engine.from_profile("tiny", device="cpu")


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    path = tmp_path_factory.mktemp("start") / "ref.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(path)
    return str(path)


def px(result) -> np.ndarray:
    return np.asarray(result.images[0]).astype(np.float64)


def vs(**kw) -> VariationSettings:
    return VariationSettings(**{"width": 64, "height": 64, "steps": 10, "seed": 1, **kw})


def test_neutral_is_todays_loop_and_reads_no_init_image(engine, ref):
    today = image_variation(engine, ref, vs())
    # at 1 the init image is never read (garbage bytes would be refused if it were): no code path change
    neutral = image_variation(engine, ref, vs(denoise_strength=1.0), init_image=b"not an image")
    assert np.array_equal(px(today), px(neutral))
    assert "denoise_strength" not in neutral.info and "start_from" not in neutral.info


def test_low_strength_keeps_the_image_where_full_strength_does_not(engine, ref):
    """Pixels: two seeds at 0.1 differ far less than at 1. (The tiny VAE's latents are small,
    std ~0.04, so even the last timestep's noise shows: the gap is clear, not a near-identity.)"""
    low = [px(image_variation(engine, ref, vs(seed=s, denoise_strength=0.1))) for s in (1, 2)]
    full = [px(image_variation(engine, ref, vs(seed=s))) for s in (1, 2)]
    d_low, d_full = np.abs(low[0] - low[1]).mean(), np.abs(full[0] - full[1]).mean()
    assert d_low < 0.75 * d_full, (d_low, d_full)


def _latents(engine, ref, strength, seed):
    s = begin(engine, vs(seed=seed, denoise_strength=strength))
    sampler = sampler_for(s)
    built = build(engine, s, [Image.open(ref).convert("RGB")], ReferenceOptions.of(s))
    start = start_from(engine, s, sampler, ref)
    return engine.generate(s.base_model, built.conditioning, sampler, decode=False, start=start).latents, start


def test_low_strength_ends_near_the_images_latents(engine, ref):
    (a, start), (b, _) = _latents(engine, ref, 0.1, 1), _latents(engine, ref, 0.1, 2)
    (c, _), (d, _) = _latents(engine, ref, 1.0, 1), _latents(engine, ref, 1.0, 2)
    assert start is not None and (c is not None)
    z0 = start.latents
    assert (a - b).abs().mean() < 0.2 * (c - d).abs().mean()
    assert (a - z0).abs().mean() < 0.2 * (c - z0).abs().mean()


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_every_scheduler_and_quick_mode(engine, ref, scheduler):
    steps = 4 if scheduler in FEW_STEP_SCHEDULERS else 6
    base = dict(steps=steps, scheduler=scheduler, denoise_strength=0.5)
    one = px(image_variation(engine, ref, vs(**base)))
    assert np.isfinite(one).all()
    quick = px(image_variation(engine, ref, vs(**base, deep_cache=2)))
    assert np.isfinite(quick).all()
    full = px(image_variation(engine, ref, vs(steps=steps, scheduler=scheduler)))
    assert not np.array_equal(one, full)


def test_fast_ddim_equals_the_schedulers_own_step(ref):
    eager = Engine.from_profile("tiny", device="cpu", fast=False)
    fast = Engine.from_profile("tiny", device="cpu", fast=True)
    assert fast.fast is not None and eager.fast is None
    a = image_variation(eager, ref, vs(denoise_strength=0.6))
    b = image_variation(fast, ref, vs(denoise_strength=0.6))
    assert np.array_equal(px(a), px(b))


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.01, 2, float("nan")])
def test_bad_values_are_refused(engine, ref, bad):
    with pytest.raises(InvalidSettingError, match="denoise strength"):
        image_variation(engine, ref, vs(denoise_strength=bad))


def test_a_strength_that_leaves_no_step_is_refused(engine, ref):
    with pytest.raises(InvalidSettingError, match="leaves no step"):
        image_variation(engine, ref, vs(steps=5, denoise_strength=0.1))


def test_init_image_is_used(engine, ref, tmp_path):
    other = tmp_path / "other.png"
    Image.new("RGB", (50, 70), (250, 20, 20)).save(other)
    a = image_variation(engine, ref, vs(denoise_strength=0.3))
    b = image_variation(engine, ref, vs(denoise_strength=0.3), init_image=str(other))
    assert not np.array_equal(px(a), px(b)) and b.info["start_from"] == "init image"


def test_cli_png_metadata_and_redo_bit_for_bit(ref, tmp_path, capsys):
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (20, 200, 90)).save(init)
    out = tmp_path / "out"
    code, _, err = run(["generate", "--reference", ref, "--init-image", init, "--denoise-strength", "0.5", *TINY,
                        "--out", out], capsys)
    assert code == 0, err
    (png,) = sorted(out.glob("*.png"))
    assert "Denoising strength: 0.5" in Image.open(png).info["parameters"]
    code, _, err = run(["generate", "--from-png", png, "--profile", "tiny", "--out", tmp_path / "redo"], capsys)
    assert code == 0, err
    assert np.array_equal(pixels(png), pixels(tmp_path / "redo" / png.name))
    code, _, err = run(["generate", "--reference", ref, "--denoise-strength", "0", *TINY, "--out", out], capsys)
    assert code == 1 and "denoise strength must be between 0.01 and 1" in err


def test_control_and_multi_reference_take_it(engine, ref, tmp_path):
    from prompt_free import embeddings
    from prompt_free.tasks import ControlSettings, ControlSpec, MultiReferenceSettings, multi_reference, reference_control

    pose = "assets/examples/pose_standing.png"
    cs = dict(width=64, height=64, steps=4, seed=3)
    spec = [ControlSpec("openpose", pose, "use as-is", check_map=False)]
    today = reference_control(engine, ref, spec, ControlSettings(**cs))
    saved = reference_control(engine, None, spec, ControlSettings(**cs), embedding=embeddings.encode(engine, ref))
    assert np.array_equal(px(today), px(saved))
    low = reference_control(engine, ref, spec, ControlSettings(**cs, denoise_strength=0.5))
    assert not np.array_equal(px(today), px(low)) and low.info["denoise_strength"] == 0.5
    m_today = multi_reference(engine, [ref], MultiReferenceSettings(**cs))
    m_low = multi_reference(engine, [ref], MultiReferenceSettings(**cs, denoise_strength=0.5))
    assert not np.array_equal(px(m_today), px(m_low)) and m_low.info["start_from"] == "reference"
