"""Per-block-group reference weights (``reference_weight_down`` / ``_mid`` / ``_up``) and the
layout image (``layout_image``) on the tiny profile: neutral values are today's picture bit for
bit with no patch; a weight changes the picture and equals the same run with the contexts routed
by hand (an independent processor swap here); a layout image equals style/layout routing by hand;
bad values are refused by name; the PNG records them and redo is bit for bit."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from PIL import Image

from prompt_free.blocks import CROSS_ATTENTION, block_prefixes
from prompt_free.conditioning import AttentionProcessors, Conditioning
from prompt_free.engine import Engine
from prompt_free.errors import InputImageError, InvalidSettingError
from prompt_free.metadata import read, redo_call, save_png, tag
from prompt_free.mixing import with_strength
from prompt_free.tasks import VariationSettings, image_variation, reference_control
from prompt_free.tasks.common import begin, sampler_for
from prompt_free.tasks.control import ControlSettings, ControlSpec
from prompt_free.tasks.reference import ReferenceOptions, build

pytestmark = pytest.mark.timeout(600)

RUN = dict(steps=2, width=64, height=64)


@pytest.fixture(scope="module")
def engine():
    return Engine.from_profile("tiny", device="cpu")


def picture(seed: int, size=(96, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def px(result) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB"))


class _ByHand:
    """An independent UNet patch for the checks: every cross-attention whose name starts with a
    prefix in ``rules`` sees the given token range of the run's context."""

    def __init__(self, rules):
        self.rules = rules

    @contextlib.contextmanager
    def applied(self, unet):
        procs = {}
        for name, proc in unet.attn_processors.items():
            rng = next((r for prefixes, r in self.rules if name.endswith(CROSS_ATTENTION) and name.startswith(prefixes)),
                       None)
            procs[name] = proc if rng is None else self._cut(proc, *rng)
        with AttentionProcessors(procs).applied(unet):
            yield

    @staticmethod
    def _cut(proc, lo, hi):
        def cut(attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
            return proc(attn, hidden_states, encoder_hidden_states[:, lo:hi], *args, **kwargs)

        return cut


def by_hand(engine, s, context, uncond, rules):
    s = begin(engine, s)
    return engine.generate(s.base_model, Conditioning(context, uncond, unet_patch=_ByHand(rules)), sampler_for(s))


# ----------------------------------------------------------------------------- neutral = today
def test_neutral_values_are_todays_picture_and_build_no_patch(engine):
    ref = picture(1)
    today = image_variation(engine, ref, VariationSettings(**RUN))
    neutral = image_variation(engine, ref, VariationSettings(**RUN, reference_weight_down=1.0, reference_weight_mid=1,
                                                             reference_weight_up=1.0, layout_image=None))
    assert np.array_equal(px(neutral), px(today))
    s = begin(engine, VariationSettings(**RUN))
    built = build(engine, s, [ref], ReferenceOptions.of(s))
    assert built.conditioning.unet_patch is None and built.conditioning.context.shape[1] == 148
    assert not any(k.startswith("reference_weight") or k == "layout_image" for k in neutral.info)


# ----------------------------------------------------------------------------- weights
def test_up_weight_zero_changes_the_picture_and_equals_routing_by_hand(engine):
    ref = picture(2)
    today = image_variation(engine, ref, VariationSettings(**RUN))
    s = VariationSettings(**RUN, reference_weight_up=0.0)
    got = image_variation(engine, ref, s)
    assert not np.array_equal(px(got), px(today))
    assert got.info["reference_weight_up"] == 0.0
    context, uncond = engine.encode_reference(ref, begin(engine, s).seecoder)
    n = context.shape[1]
    # copies: [weight 1 | weight 0 = uncond]; down and mid see the first, up the second
    hand = by_hand(engine, s, torch.cat([context, uncond], 1), torch.cat([uncond, uncond], 1),
                   [(("up_blocks.",), (n, 2 * n)), (("down_blocks.", "mid_block."), (0, n))])
    assert np.array_equal(px(got), np.asarray(hand.images[0].convert("RGB")))


def test_equal_weights_equal_the_reference_strength(engine):
    ref = picture(3)
    strength = image_variation(engine, ref, VariationSettings(**RUN, reference_strength=0.5))
    weights = image_variation(engine, ref, VariationSettings(**RUN, reference_weight_down=0.5, reference_weight_mid=0.5,
                                                             reference_weight_up=0.5))
    assert np.allclose(px(strength).astype(int), px(weights).astype(int), atol=1)


def test_weights_with_a_prompt_and_blocks_and_quick_mode_run(engine):
    ref = picture(4)
    base = dict(**RUN, prompt="a red cup", blocks="style", reference_weight_mid=0.0, reference_weight_up=1.5)
    a = image_variation(engine, ref, VariationSettings(**base))
    b = image_variation(engine, ref, VariationSettings(**{**base, "reference_weight_mid": 1.0,
                                                          "reference_weight_up": 1.0}))
    assert not np.array_equal(px(a), px(b))
    quick = image_variation(engine, ref, VariationSettings(**base, deep_cache=2))
    assert quick.images[0].size == (64, 64)


def test_weights_with_reference_control(engine):
    ref, hint = picture(5), picture(6, (64, 64))
    spec = [ControlSpec("canny", hint, mode="preprocess")]
    today = reference_control(engine, ref, spec, ControlSettings(**RUN))
    low = reference_control(engine, ref, spec, ControlSettings(**RUN, reference_weight_down=0.25))
    assert not np.array_equal(px(today), px(low))


# ----------------------------------------------------------------------------- layout image
def test_layout_image_changes_the_picture_and_equals_routing_by_hand(engine):
    ref, lay = picture(7), picture(8)
    today = image_variation(engine, ref, VariationSettings(**RUN))
    s = VariationSettings(**RUN, layout_image=lay)
    got = image_variation(engine, ref, s)
    assert not np.array_equal(px(got), px(today)) and got.info["layout_image"] == "96x64"
    seecoder = begin(engine, s).seecoder
    (c_ref, u_ref), (c_lay, u_lay) = engine.encode_reference(ref, seecoder), engine.encode_reference(lay, seecoder)
    n = c_ref.shape[1]
    config = engine.base_model(begin(engine, s).base_model).unet.config
    rules = [(block_prefixes(config, "layout"), (n, 2 * n)), (block_prefixes(config, "style"), (0, n)),
             (("down_blocks.", "mid_block.", "up_blocks."), (2 * n, 3 * n))]
    hand = by_hand(engine, s, torch.cat([c_ref, c_lay, u_ref], 1), torch.cat([u_ref, u_lay, u_ref], 1), rules)
    assert np.array_equal(px(got), np.asarray(hand.images[0].convert("RGB")))


def test_layout_image_with_weights_weights_both_contexts(engine):
    ref, lay = picture(9), picture(10)
    s = VariationSettings(**RUN, layout_image=lay, reference_weight_down=0.5)
    got = image_variation(engine, ref, s)
    seecoder = begin(engine, s).seecoder
    (c_ref, u_ref), (c_lay, u_lay) = engine.encode_reference(ref, seecoder), engine.encode_reference(lay, seecoder)
    n = c_ref.shape[1]
    config = engine.base_model(begin(engine, s).base_model).unet.config
    half = [with_strength(c_ref, u_ref, 0.5), with_strength(c_lay, u_lay, 0.5), u_ref]
    context = torch.cat([*half, c_ref, c_lay, u_ref], 1)  # copies in the order of the weights: 0.5 (down), 1
    uncond = torch.cat([u_ref, u_lay, u_ref] * 2, 1)
    down_layout = tuple(p for p in block_prefixes(config, "layout") if p.startswith("down"))
    mid_layout = tuple(p for p in block_prefixes(config, "layout") if p.startswith("mid"))
    rules = [(down_layout, (n, 2 * n)), (("down_blocks.",), (2 * n, 3 * n)),
             (mid_layout, (4 * n, 5 * n)), (block_prefixes(config, "style"), (3 * n, 4 * n)),
             (("mid_block.", "up_blocks."), (5 * n, 6 * n))]
    hand = by_hand(engine, s, context, uncond, rules)
    assert np.array_equal(px(got), np.asarray(hand.images[0].convert("RGB")))


# ----------------------------------------------------------------------------- refused
@pytest.mark.parametrize("kw, match", [
    (dict(reference_weight_up=2.5), "reference weight up"),
    (dict(reference_weight_down=-0.1), "reference weight down"),
    (dict(reference_weight_mid="x"), "reference weight mid"),
    (dict(layout_image="/no/such/file.png"), "layout image"),
    (dict(layout_image=picture(1), prompt="a cup"), "layout image"),
    (dict(layout_image=picture(1), blocks="style"), "layout image"),
])
def test_bad_values_are_refused_by_name(engine, kw, match):
    with pytest.raises((InvalidSettingError, InputImageError), match=match):
        image_variation(engine, picture(1), VariationSettings(**RUN, **kw))


# ----------------------------------------------------------------------------- PNG redo
def test_png_records_weights_and_the_layout_image_and_redo_is_bit_for_bit(engine, tmp_path):
    ref, lay = tmp_path / "ref.png", tmp_path / "lay.png"
    picture(11).save(ref)
    picture(12).save(lay)
    s = VariationSettings(**RUN, reference_weight_up=0.5, layout_image=str(lay))
    result = image_variation(engine, str(ref), s)
    out = save_png(tag(engine, result, "image_variation", s, {"reference": str(ref)})[0], tmp_path / "out.png")
    rec = read(out)
    assert rec["settings"]["layout_image"]["name"] == "lay.png" and len(rec["settings"]["layout_image"]["sha256"]) == 64
    params = Image.open(out).info["parameters"]
    assert "Reference weight up: 0.5" in params and "Layout image hash: " in params
    _, again = redo_call(rec).run(engine)
    assert np.array_equal(np.asarray(again.convert("RGB")), px(result))


# ----------------------------------------------------------------------------- the comparison
def test_comparison_weights_reach_the_text_column_only(engine):
    from prompt_free.tasks import CompareSettings, compare
    from prompt_free.tasks.compare import DUAL_CONTROLNET, PROMPT_FREE, PROMPT_FREE_TEXT
    from tests.helpers.app import EXAMPLES

    ref, pose = picture(14), EXAMPLES / "pose_standing.png"
    s = dict(**RUN, prompt="a cat", methods=(PROMPT_FREE, DUAL_CONTROLNET, PROMPT_FREE_TEXT))
    plain = compare(engine, ref, pose, "openpose", settings=CompareSettings(**s))
    up0 = compare(engine, ref, pose, "openpose", settings=CompareSettings(**s, reference_weight_up=0.0))
    for m in (PROMPT_FREE, DUAL_CONTROLNET):
        assert np.array_equal(np.asarray(up0.columns[m].image), np.asarray(plain.columns[m].image)), m
    assert not np.array_equal(np.asarray(up0.columns[PROMPT_FREE_TEXT].image),
                              np.asarray(plain.columns[PROMPT_FREE_TEXT].image))
