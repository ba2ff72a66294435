"""The reference window and the negative reference (issue 26, controls 1 and 2) on the tiny profile:
their neutral values give today's picture bit for bit (and build today's conditioning: no
schedule, nothing encoded), each changes the picture, the contexts they build are the ones
defined (outside the window: the reference replaced by SeeCoder's unconditional tokens, a
prompt's part kept; a negative: uncond + s (neg - uncond)), quick mode runs a full step where the
window opens, and bad values are clear messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from prompt_free.conditioning import ReferenceWindow
from prompt_free.engine import Engine
from prompt_free.errors import InvalidSettingError
from prompt_free.images import shuffled_blocks
from prompt_free.tasks import MultiReferenceSettings, VariationSettings, image_variation, multi_reference
from prompt_free.tasks.common import begin
from prompt_free.tasks.reference import ReferenceOptions, build

pytestmark = pytest.mark.timeout(600)

NEUTRAL = dict(reference_start=0.0, reference_end=1.0, negative_image=None, negative_strength=1.0, negative_mode="none")


@pytest.fixture(scope="module")
def engine():
    return Engine.from_profile("tiny", device="cpu")


def picture(seed: int, shape=(64, 64)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8))


REF, NEG = picture(1), picture(2)


def pixels(engine, reference=REF, **kw) -> np.ndarray:
    s = VariationSettings(width=64, height=64, steps=6, **kw)
    return np.asarray(image_variation(engine, reference, s).images[0])


def built(engine, **kw):
    s = begin(engine, VariationSettings(width=64, height=64, **kw))
    return build(engine, s, [REF], ReferenceOptions.of(s)).conditioning


@pytest.fixture(scope="module")
def today(engine):
    return pixels(engine)


def test_the_neutral_values_are_todays_picture_bit_for_bit(engine, today):
    assert np.array_equal(pixels(engine, **NEUTRAL), today)
    assert np.array_equal(pixels(engine, negative_image=NEG, negative_strength=0.0), today)  # strength 0: no negative
    context, uncond = engine.encode_reference(REF, "SeeCoder")
    for kw in (NEUTRAL, dict(negative_image=NEG, negative_strength=0.0)):
        c = built(engine, **kw)
        assert c.schedule is None and c.context is context and c.uncond is uncond  # today's tensors themselves


def test_a_window_changes_the_picture_and_outside_it_the_reference_is_unconditional(engine, today):
    late = pixels(engine, reference_start=0.5)
    early = pixels(engine, reference_end=0.5)
    assert np.abs(late.astype(int) - today).max() > 0 and np.abs(early.astype(int) - today).max() > 0
    assert np.abs(late.astype(int) - early).max() > 0
    c = built(engine, reference_start=0.5)
    context, uncond = engine.encode_reference(REF, "SeeCoder")
    assert isinstance(c.schedule, ReferenceWindow)
    assert [c.schedule(i, 6)[0] is context for i in range(6)] == [False] * 3 + [True] * 3
    off, off_uncond = c.schedule(0, 6)
    assert torch.equal(off, uncond) and torch.equal(off_uncond, uncond)


def test_the_window_pairs_are_batched_once_and_a_step_only_picks_one(engine):
    c = built(engine, reference_start=0.5)
    ctx = c.step_context(1, True, torch.device("cpu"), torch.float32)
    first = [ctx.at(i, 6) for i in range(6)]
    again = [ctx.at(i, 6) for i in range(6)]  # the next run of the same context: the same tensors
    assert all(a is b for a, b in zip(first, again))
    assert first[0] is first[2] and first[3] is first[5] and first[0] is not first[3]


def test_outside_the_window_a_prompt_stays(engine):
    c = built(engine, reference_end=0.5, prompt="a red car")
    (inside, inside_uncond), (outside, outside_uncond) = c.schedule.pairs
    assert inside is c.context and inside.shape == outside.shape == (1, 77 + 148, inside.shape[-1])
    assert torch.equal(outside[:, :77], inside[:, :77])  # the text part stays
    assert torch.equal(outside[:, 77:], inside_uncond[:, 77:])  # the reference part: SeeCoder's unconditional
    assert torch.equal(outside_uncond, inside_uncond)


def test_a_negative_replaces_the_unconditional_tokens(engine, today):
    context, uncond = engine.encode_reference(REF, "SeeCoder")
    negative, _ = engine.encode_reference(NEG, "SeeCoder")
    assert built(engine, negative_image=NEG).uncond is negative
    half = built(engine, negative_image=NEG, negative_strength=0.5)
    assert torch.allclose(half.uncond, uncond + 0.5 * (negative - uncond), atol=1e-6) and half.context is context
    assert np.abs(pixels(engine, negative_image=NEG).astype(int) - today).max() > 0


def test_the_noise_negative_is_the_reference_shuffled_in_blocks(engine, today):
    shuffled = shuffled_blocks(REF)
    assert np.array_equal(np.asarray(shuffled_blocks(REF)), np.asarray(shuffled))  # deterministic
    a, b = np.asarray(REF), np.asarray(shuffled)
    assert not np.array_equal(a, b) and np.array_equal(np.sort(a.reshape(-1, 3), 0), np.sort(b.reshape(-1, 3), 0))
    assert built(engine, negative_mode="noise").uncond is engine.encode_reference(shuffled, "SeeCoder")[0]
    assert np.abs(pixels(engine, negative_mode="noise").astype(int) - today).max() > 0


def test_quick_mode_runs_a_full_step_where_the_window_opens(engine):
    unet = engine.base_model("Tiny SD").unet
    calls = []
    hook = unet.mid_block.register_forward_hook(lambda *a: calls.append(1))
    try:
        pixels(engine, deep_cache=2)
        constant = len(calls)
        calls.clear()
        windowed = pixels(engine, deep_cache=2, reference_start=0.5)
    finally:
        hook.remove()
    assert constant == 3 and len(calls) == 4  # steps 0, 2, 4 vs 0, 2, 3 (the window opens), 5
    assert np.abs(windowed.astype(int) - pixels(engine, deep_cache=2)).max() > 0


def test_several_references_take_a_window_and_a_negative(engine):
    refs = [REF, picture(3)]
    base = MultiReferenceSettings(width=64, height=64, steps=3, blend="concatenate")
    plain = np.asarray(multi_reference(engine, refs, base).images[0])
    for kw in (dict(negative_mode="noise", reference_end=0.6), dict(negative_image=NEG)):
        s = MultiReferenceSettings(width=64, height=64, steps=3, blend="concatenate", **kw)
        assert np.abs(np.asarray(multi_reference(engine, refs, s).images[0]).astype(int) - plain).max() > 0


@pytest.mark.parametrize("kw, message", [
    (dict(reference_start=0.6, reference_end=0.6), r"reference_start \(0.6\) must be below reference_end \(0.6\)"),
    (dict(reference_start=0.8, reference_end=0.2), "must start before it ends"),
    (dict(reference_end=1.5), "reference end must be between 0 and 1, got 1.5"),
    (dict(reference_start=-0.1), "reference start must be between 0 and 1"),
    (dict(negative_strength=3.0), "negative strength must be between 0 and 2"),
    (dict(negative_mode="blur"), "unknown negative mode 'blur'; choose one of: none, noise"),
    (dict(negative_mode="noise", negative_image=NEG), "choose one negative"),
])
def test_bad_values_are_clear_messages(engine, kw, message):
    with pytest.raises(InvalidSettingError, match=message):
        image_variation(engine, REF, VariationSettings(width=64, height=64, steps=2, **kw))


def test_a_missing_negative_image_file_is_named(engine, tmp_path):
    with pytest.raises(Exception, match="negative image"):
        image_variation(engine, REF, VariationSettings(width=64, height=64, steps=2,
                                                       negative_image=str(tmp_path / "gone.png")))


@pytest.mark.parametrize("combo", [
    dict(reference_start=0.5, reference_weight_up=0.5, negative_mode="noise"),
    dict(reference_end=0.5, layout_image="coffee.jpg", negative_image="coffee.jpg", reference_weight_down=0.0),
    dict(reference_start=0.25, layout_image="coffee.jpg", deep_cache=2),
])
def test_the_controls_combine_window_negative_block_weights_and_layout(engine, combo):
    """Built by three helpers in parallel: together the window's outside context keeps the shape
    the block-weight copies and the layout route give the inside one (the run's one patch)."""
    from tests.helpers.app import EXAMPLES

    ref = EXAMPLES / "chelsea.jpg"
    combo = {k: str(EXAMPLES / v) if k.endswith("_image") else v for k, v in combo.items()}
    run = dict(width=64, height=64, steps=4, seed=3)
    today = np.asarray(image_variation(engine, ref, VariationSettings(**run)).images[0], float)
    built = build(engine, begin(engine, VariationSettings(**run, **combo)), [Image.open(ref).convert("RGB")],
                  ReferenceOptions.of(begin(engine, VariationSettings(**run, **combo))), size=(64, 64))
    inside, outside = built.conditioning.schedule.inside, built.conditioning.schedule.outside
    assert inside[0].shape == outside[0].shape and inside[1].shape == outside[1].shape
    got = np.asarray(image_variation(engine, ref, VariationSettings(**run, **combo)).images[0], float)
    assert np.abs(got - today).mean() > 0.5
