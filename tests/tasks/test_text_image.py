"""Reference strength, text + image and style-only control (issue 14, features 1, 2 and 4), at
library level on the tiny profile: neutral values give today's picture bit for bit, each option
changes the picture in the way it is defined (checked against conditionings built here by
hand), the blocks get the contexts they should (read from the inputs of every cross-attention's
key projection), the text encoder loads only with a prompt, and bad values get clear errors."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from prompt_free import text
from prompt_free.blocks import BlockRouting, block_prefixes, normalise_preset
from prompt_free.conditioning import Conditioning
from prompt_free.engine import Engine
from prompt_free.errors import InvalidSettingError
from prompt_free.images import image_to_tensor
from prompt_free.sampling import ControlInput, Sampler
from prompt_free.tasks import (
    CompareSettings,
    ControlSettings,
    ControlSpec,
    TryOnSettings,
    VariationSettings,
    compare,
    image_variation,
    reference_control,
    virtual_tryon,
)
from prompt_free.tasks.compare import DUAL_CONTROLNET, PROMPT_FREE, PROMPT_FREE_TEXT
from tests.helpers.app import EXAMPLES

pytestmark = pytest.mark.timeout(600)

S = 64
BASE = dict(width=S, height=S, steps=2, seed=5, guidance=2.0)
POSE = EXAMPLES / "pose_standing.png"


@pytest.fixture(scope="module")
def engine():
    return Engine.from_profile("tiny", device="cpu")


@pytest.fixture(scope="module")
def reference():
    return Image.open(EXAMPLES / "chelsea.jpg").convert("RGB").resize((64, 48), Image.BICUBIC)


def variation(engine, reference, **kw):
    return image_variation(engine, reference, VariationSettings(**{**BASE, **kw}))


def control(engine, reference, **kw):
    return reference_control(engine, reference, [ControlSpec("openpose", POSE, "use as-is", scale=0.9)],
                             ControlSettings(**{**BASE, **kw}))


def direct(engine, conditioning, **kw):
    """The picture of ``conditioning`` through Engine.generate alone (no task code)."""
    return engine.generate("Tiny SD", conditioning, Sampler(**{**BASE, **kw})).images[0]


def px(img):
    return np.asarray(img.images[0] if hasattr(img, "images") else img, dtype=np.int16)


def encoded(engine, reference, seecoder="SeeCoder"):
    return engine.encode_reference(reference, seecoder)


def tokens(engine, prompt):
    return text.encode_prompt(engine, "Tiny SD", prompt)


# ----------------------------------------------------------------------------- neutral values
NEUTRAL = [
    dict(reference_strength=1.0), dict(reference_strength=1), dict(prompt=""), dict(prompt="   \n"),
    dict(blocks="all"), dict(blocks="all blocks"), dict(prompt="", prompt_mode="style"),
    dict(prompt="", prompt_weight=0.25), dict(reference_strength=1.0, prompt="", prompt_mode="concat", blocks="all"),
]


def test_neutral_options_give_todays_variation_bit_for_bit(engine, reference):
    context, uncond = encoded(engine, reference)
    today = direct(engine, Conditioning(context, uncond))  # today's conditioning, built without the task
    assert np.array_equal(px(variation(engine, reference)), px(today))
    for kw in NEUTRAL:
        assert np.array_equal(px(variation(engine, reference, **kw)), px(today)), kw


def test_neutral_options_give_todays_reference_control_bit_for_bit(engine, reference):
    plain = control(engine, reference)
    for kw in NEUTRAL:
        assert np.array_equal(px(control(engine, reference, **kw)), px(plain)), kw
    hint = image_to_tensor(Image.open(POSE).convert("RGB").resize((S, S), Image.BICUBIC))
    by_hand = direct(engine, Conditioning(*encoded(engine, reference), [ControlInput(engine.controlnet("openpose"), hint, 0.9)]))
    assert np.array_equal(px(plain), px(by_hand))


def test_no_prompt_loads_no_text_encoder_and_a_prompt_does():
    e = Engine.from_profile("tiny", device="cpu")
    ref = EXAMPLES / "coffee.jpg"
    image_variation(e, ref, VariationSettings(**BASE, prompt="", blocks="style", reference_strength=0.5))
    control(e, ref, prompt="  ", prompt_mode="style")
    kinds = {r["kind"] for r in e.memory_report()}
    assert "text_encoder" not in kinds and {"seecoder", "base_model", "controlnet"} <= kinds
    assert not any(k[0] == "text_encoder" for k in e.load_counts)
    image_variation(e, ref, VariationSettings(**BASE, prompt="a cat"))
    assert [r["name"] for r in e.memory_report() if r["kind"] == "text_encoder"] == ["tiny"]
    control(e, ref, prompt="a dog", blocks="layout")
    assert sum(v for k, v in e.load_counts.items() if k[0] == "text_encoder") == 1  # cached, not reloaded


# ----------------------------------------------------------------------------- strength
def test_strength_is_uncond_plus_s_times_cond_minus_uncond(engine, reference):
    context, uncond = encoded(engine, reference)
    at_zero = variation(engine, reference, reference_strength=0.0)
    assert np.array_equal(px(at_zero), px(direct(engine, Conditioning(uncond, uncond))))  # no reference at all
    for s in (0.5, 1.7):
        mixed = uncond.float() + s * (context.float() - uncond.float())
        got = variation(engine, reference, reference_strength=s)
        assert np.array_equal(px(got), px(direct(engine, Conditioning(mixed, uncond)))), s
        assert np.abs(px(got) - px(variation(engine, reference))).mean() > 0.5, s
    # separate from guidance: at strength 0 the guidance has nothing to push
    assert np.array_equal(px(variation(engine, reference, reference_strength=0.0, guidance=5.0)), px(at_zero))


def test_strength_uses_the_anime_unconditional_embedding(engine, reference):
    context, uncond = encoded(engine, reference, "SeeCoder-Anime")
    assert uncond.abs().sum() > 0  # the anime embedding, not zeros
    got = variation(engine, reference, seecoder="SeeCoder-Anime", reference_strength=0.5)
    mixed = uncond.float() + 0.5 * (context.float() - uncond.float())
    assert np.array_equal(px(got), px(direct(engine, Conditioning(mixed, uncond))))


def test_strength_in_the_comparison_and_try_on(engine, reference):
    half = compare(engine, reference, POSE, "openpose", settings=CompareSettings(
        **BASE, methods=(PROMPT_FREE,), control_scale=0.9, reference_strength=0.5))
    assert np.array_equal(px(half.columns[PROMPT_FREE].image), px(control(engine, reference, reference_strength=0.5)))
    assert not np.array_equal(px(half.columns[PROMPT_FREE].image), px(control(engine, reference)))

    person = Image.open(EXAMPLES / "tryon_person.png").convert("RGB").resize((96, 144), Image.BICUBIC)
    mask = Image.new("L", person.size, 0)
    ImageDraw.Draw(mask).rectangle((20, 40, 70, 100), fill=255)
    garment = Image.open(EXAMPLES / "tryon_garment_shirt.png")

    def tryon(**kw):
        return virtual_tryon(engine, person, garment, mask, TryOnSettings(
            steps=2, seed=3, max_side=128, pose_control=False, base_model="Tiny SD", dilation=2, feather=2,
            **kw)).images[0]

    plain = px(tryon())
    assert np.array_equal(px(tryon(reference_strength=1.0)), plain)
    weak = px(tryon(reference_strength=0.0))
    assert np.abs(weak - plain).mean() > 0.1
    far = np.ones(plain.shape[:2], bool)
    far[40 - 8:100 + 8, 20 - 8:70 + 8] = False  # outside the mask and its soft band
    assert np.array_equal(weak[far], plain[far])


# ----------------------------------------------------------------------------- text + image
def test_concat_is_text_tokens_then_seecoder_tokens_with_a_matching_unconditional(engine, reference):
    context, uncond = encoded(engine, reference)
    t, empty = tokens(engine, "a red cat"), tokens(engine, "")
    assert t.shape[1] == 77 and context.shape[1] == 148
    cond = torch.cat([t, context], dim=1)
    unc = torch.cat([empty, uncond], dim=1)
    got = variation(engine, reference, prompt="a red cat")
    assert np.array_equal(px(got), px(direct(engine, Conditioning(cond, unc))))
    assert np.abs(px(got) - px(variation(engine, reference))).mean() > 0.5
    assert got.info["prompt"] == "a red cat" and got.info["prompt_mode"] == "concat"
    # the text weight moves the text part from the empty prompt (0) to the prompt (1)
    w = 0.4
    weighted = torch.cat([empty + w * (t - empty), context], dim=1)
    assert np.array_equal(px(variation(engine, reference, prompt="a red cat", prompt_weight=w)),
                          px(direct(engine, Conditioning(weighted, unc))))
    at_zero = variation(engine, reference, prompt="a red cat", prompt_weight=0.0)
    assert np.array_equal(px(at_zero), px(direct(engine, Conditioning(torch.cat([empty, context], 1), unc))))
    # strength acts on the SeeCoder part only
    s = 0.5
    mixed = torch.cat([t, uncond + s * (context - uncond)], dim=1)
    assert np.array_equal(px(variation(engine, reference, prompt="a red cat", reference_strength=s)),
                          px(direct(engine, Conditioning(mixed, unc))))


def test_concat_with_controlnets_gives_the_controlnet_the_same_context(engine, reference):
    context, uncond = encoded(engine, reference)
    t, empty = tokens(engine, "a house"), tokens(engine, "")
    hint = image_to_tensor(Image.open(POSE).convert("RGB").resize((S, S), Image.BICUBIC))
    by_hand = direct(engine, Conditioning(torch.cat([t, context], 1), torch.cat([empty, uncond], 1),
                                          [ControlInput(engine.controlnet("openpose"), hint, 0.9)]))
    assert np.array_equal(px(control(engine, reference, prompt="a house")), px(by_hand))


# ----------------------------------------------------------------------------- blocks
def test_block_sets_are_instantstyles_sd15_blocks():
    from diffusers import UNet2DConditionModel

    # diffusers' default UNet config is SD 1.5's block layout
    defaults = {k: p.default for k, p in inspect.signature(UNet2DConditionModel.__init__).parameters.items()}
    assert block_prefixes(defaults, "style") == ("up_blocks.1.",)
    assert block_prefixes(defaults, "layout") == ("down_blocks.2.", "mid_block.")
    assert block_prefixes(defaults, "all") == ()
    assert [normalise_preset(x) for x in ("All blocks", "style only", "LAYOUT", "layout_only")] == \
        ["all", "style", "layout", "layout"]


class KeyInputs:
    """Records what every cross-attention's key projection (``attn2.to_k``) of ``modules``
    receives: the context that attention really attends to."""

    def __init__(self, **modules):
        self.seen, self.handles = {}, []
        for prefix, module in modules.items():
            for name, m in module.named_modules():
                if name.endswith("attn2.to_k"):
                    key = f"{prefix}:{name}"
                    self.handles.append(m.register_forward_pre_hook(
                        lambda mod, args, key=key: self.seen.setdefault(key, []).append(args[0].clone())))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()

    def contexts(self, prefix):
        """{module name: its first step's (uncond half, cond half)}, each (1, N, C)."""
        out = {}
        for key, calls in self.seen.items():
            if key.startswith(prefix + ":"):
                u, c = calls[0].chunk(2)
                out[key.split(":", 1)[1]] = (u, c)
        return out


def _blocks_of(name):
    return "style" if name.startswith("up_blocks.1.") else "layout" if name.startswith(("down_blocks.0.", "mid_block.")) else "other"


def assert_received(contexts, expected):
    """Every cross-attention got the (uncond, cond) pair of its block set in ``expected``."""
    assert contexts and {_blocks_of(n) for n in contexts} == {"style", "layout"}  # the tiny UNet has both, nothing else
    for name, (u, c) in contexts.items():
        want_u, want_c = expected[_blocks_of(name)]
        assert u.shape == want_u.shape and torch.equal(u, want_u), (name, "uncond")
        assert c.shape == want_c.shape and torch.equal(c, want_c), (name, "cond")


def test_style_only_sends_the_reference_to_the_style_blocks_and_nothing_elsewhere(engine, reference):
    context, uncond = encoded(engine, reference)
    unet = engine.base_model("Tiny SD").unet
    own = dict(unet.attn_processors)
    with KeyInputs(unet=unet) as keys:
        got = variation(engine, reference, blocks="style")
    assert_received(keys.contexts("unet"), {"style": (uncond, context), "layout": (uncond, uncond)})
    assert unet.attn_processors == own  # the patch is gone after the run
    assert np.abs(px(got) - px(variation(engine, reference))).mean() > 0.5
    with KeyInputs(unet=unet) as keys:
        layout = variation(engine, reference, blocks="layout", reference_strength=0.5)
    half = (uncond.float() + 0.5 * (context.float() - uncond.float()))
    assert_received(keys.contexts("unet"), {"style": (uncond, uncond), "layout": (uncond, half)})
    assert np.abs(px(layout) - px(got)).mean() > 0.5


def test_style_mode_sends_the_text_to_the_other_blocks_and_controlnets_see_the_reference(engine, reference):
    context, uncond = encoded(engine, reference)
    t, empty = tokens(engine, "a house"), tokens(engine, "")
    unet = engine.base_model("Tiny SD").unet
    cn = engine.controlnet("openpose")
    with KeyInputs(unet=unet, controlnet=cn) as keys:
        got = control(engine, reference, prompt="a house", prompt_mode="style")
    assert got.info["blocks"] == "style"  # style mode without a preset: the style preset
    assert_received(keys.contexts("unet"), {"style": (uncond, context), "layout": (empty, t)})
    cn_seen = keys.contexts("controlnet")
    assert cn_seen and all(torch.equal(u, uncond) and torch.equal(c, context) for u, c in cn_seen.values())
    # concat + layout only: the layout blocks get [text | reference], the others the text
    with KeyInputs(unet=unet, controlnet=cn) as keys:
        control(engine, reference, prompt="a house", blocks="layout")
    both = (torch.cat([empty, uncond], 1), torch.cat([t, context], 1))
    assert_received(keys.contexts("unet"), {"style": (empty, t), "layout": both})
    assert all(torch.equal(u, both[0]) and torch.equal(c, both[1]) for u, c in keys.contexts("controlnet").values())
    assert not np.array_equal(px(got), px(control(engine, reference, prompt="a house")))


def test_routing_patch_leaves_self_attention_alone():
    from prompt_free import tiny

    unet = tiny.tiny_unet()
    procs = BlockRouting("style", (0, 148), (148, 225)).processors(unet)
    wrapped = {n for n, p in procs.items() if type(p).__name__ == "_RangeProcessor"}
    assert wrapped == {n for n in procs if n.endswith("attn2.processor")} and wrapped
    ranges = {n: (procs[n].lo, procs[n].hi) for n in wrapped}
    assert all(r == ((0, 148) if n.startswith("up_blocks.1.") else (148, 225)) for n, r in ranges.items())


# ----------------------------------------------------------------------------- the comparison's text column
def test_comparison_text_column_is_reference_control_with_the_prompt(engine, reference):
    s = dict(BASE, control_scale=0.9, prompt="a cat", negative_prompt="blurry")
    methods = (PROMPT_FREE, DUAL_CONTROLNET)  # the tiny profile has no IP-Adapter
    plain = compare(engine, reference, POSE, "openpose", settings=CompareSettings(**s, methods=methods))
    assert list(plain.columns) == list(methods)  # the text column is off unless asked for
    four = compare(engine, reference, POSE, "openpose",
                   settings=CompareSettings(**s, methods=(PROMPT_FREE_TEXT,) + methods, prompt_weight=0.8))
    assert list(four.columns) == [*methods, PROMPT_FREE_TEXT]  # the new column comes last
    for m in plain.columns:  # the existing columns are unchanged
        assert np.array_equal(px(four.columns[m].image), px(plain.columns[m].image)), m
    col = four.columns[PROMPT_FREE_TEXT]
    want = control(engine, reference, prompt="a cat", prompt_weight=0.8)
    assert np.array_equal(px(col.image), px(want))
    assert col.text_encoder and "concatenated" in col.conditioning and "weight 0.8" in col.conditioning
    assert four.side_by_side.width > plain.side_by_side.width


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kw, message", [
    (dict(reference_strength=2.5), "reference strength must be between 0 and 2"),
    (dict(reference_strength=-0.1), "reference strength must be between 0 and 2"),
    (dict(reference_strength="strong"), "reference strength must be a number"),
    (dict(reference_strength=float("nan")), "reference strength must be between"),
    (dict(prompt="a cat", prompt_weight=3), "text weight must be between 0 and 2"),
    (dict(prompt_mode="mix"), "unknown prompt mode 'mix'; choose one of: concat, style"),
    (dict(blocks="middle"), "unknown block preset 'middle'; choose one of: all, style, layout"),
    (dict(prompt=42), "prompt must be text"),
])
def test_bad_values_are_refused_before_any_model_loads(kw, message):
    e = Engine.from_profile("tiny", device="cpu")
    for run in (lambda: image_variation(e, EXAMPLES / "coffee.jpg", VariationSettings(**BASE, **kw)),
                lambda: control(e, EXAMPLES / "coffee.jpg", **kw)):
        with pytest.raises(InvalidSettingError, match=message.replace("(", r"\(").replace(")", r"\)")):
            run()
    assert e.memory_report() == []


def test_prompt_over_the_token_limit_is_refused_with_its_length(engine, reference):
    long = " ".join(["zebra"] * 80)
    with pytest.raises(InvalidSettingError, match=r"prompt is too long: \d+ tokens, and the CLIP text encoder takes "
                                                  r"at most 75 \(77 with its start and end tokens\)"):
        variation(engine, reference, prompt=long)
    with pytest.raises(InvalidSettingError, match="too long"):
        compare(engine, reference, POSE, "openpose",
                settings=CompareSettings(**BASE, methods=(PROMPT_FREE, PROMPT_FREE_TEXT), prompt=long))


def test_comparison_text_column_needs_a_prompt_and_the_concat_recipe(engine, reference):
    with pytest.raises(InvalidSettingError, match="'Prompt-Free \\+ text \\(concat\\)' column needs a prompt"):
        compare(engine, reference, POSE, "openpose", settings=CompareSettings(**BASE, methods=(PROMPT_FREE_TEXT,)))
    with pytest.raises(InvalidSettingError, match="concat recipe on all blocks"):
        compare(engine, reference, POSE, "openpose",
                settings=CompareSettings(**BASE, methods=(PROMPT_FREE,), blocks="style"))
