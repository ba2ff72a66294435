"""The one reference builder (``prompt_free.tasks.reference``) on the tiny profile: the tensors it
builds, read directly (no generation): neutral options hand over the engine's encoded tensors
themselves, strength, text and blocks lay out the contexts as defined, several references blend,
the info entries each task reports, and the options its settings declare (``tasks.fields``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from prompt_free import text
from prompt_free.blocks import PRESETS, BlockRouting, ContextSlice
from prompt_free.engine import Engine
from prompt_free.errors import InvalidSettingError
from prompt_free.regions import RegionalAttention
from prompt_free.sampling import ControlInput
from prompt_free.tasks import fields
from prompt_free.tasks.common import begin
from prompt_free.tasks.compare import CompareSettings
from prompt_free.tasks.edit import EditSettings
from prompt_free.tasks.multi_reference import MultiReferenceSettings
from prompt_free.tasks.reference import PROMPT_MODES, ReferenceOptions, build
from prompt_free.tasks.variation import VariationSettings

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def engine():
    return Engine.from_profile("tiny", device="cpu")


def picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def refs():
    return [picture(1), picture(2)]


def settings(engine, cls=VariationSettings, **kw):
    return begin(engine, cls(width=64, height=64, **kw))


def run(engine, refs, cls=VariationSettings, controls=(), **kw):
    s = settings(engine, cls, **kw)
    timings = {}
    built = build(engine, s, refs, ReferenceOptions.of(s), controls=controls, timings=timings,
                  weights=[1.0] * len(refs) if len(refs) > 1 else None)
    return built, timings


def lerp(uncond, context, s):
    return (uncond.float() + s * (context.float() - uncond.float())).to(context.dtype)


def test_neutral_options_hand_over_the_encoded_tensors_themselves(refs):
    e = Engine.from_profile("tiny", device="cpu")
    context, uncond = e.encode_reference(refs[0], "SeeCoder")
    control = ControlInput(e.controlnet("openpose"), torch.zeros(1, 3, 64, 64), 0.9)
    built, timings = run(e, refs[:1], controls=[control], prompt="  ", blocks="all blocks", reference_strength=1)
    c = built.conditioning
    assert c.context is context and c.uncond is uncond  # no arithmetic, not a float-equal copy
    assert c.unet_patch is None and c.inpainting is None and list(c.controls) == [control]
    assert "encode" in timings and "text" not in timings
    assert not any(k[0] == "text_encoder" for k in e.load_counts)  # no prompt: no text encoder
    assert built.info == {"reference_strength": 1, "prompt": "", "prompt_mode": None, "prompt_weight": None,
                          "blocks": "all"}


@pytest.mark.parametrize("strength", [0.0, 0.5, 1.7])
def test_strength_is_uncond_plus_s_times_cond_minus_uncond(engine, refs, strength):
    context, uncond = engine.encode_reference(refs[0], "SeeCoder-Anime")
    assert uncond.abs().sum() > 0  # the anime embedding: its own "nothing", not zeros
    built, _ = run(engine, refs[:1], seecoder="SeeCoder-Anime", reference_strength=strength)
    assert torch.equal(built.conditioning.context, lerp(uncond, context, strength))
    assert built.conditioning.uncond is uncond
    if strength == 0.0:
        assert torch.equal(built.conditioning.context, uncond)
    else:
        assert not torch.equal(built.conditioning.context, context)
    assert built.info["reference_strength"] == strength


def test_text_concat_is_weighted_prompt_then_reference_with_each_parts_unconditional(engine, refs):
    context, uncond = engine.encode_reference(refs[0], "SeeCoder")
    prompt, empty = text.encode_prompt(engine, "Tiny SD", "a red cat"), text.encode_prompt(engine, "Tiny SD", "")
    built, timings = run(engine, refs[:1], prompt=" a red cat ", prompt_weight=0.4, reference_strength=0.5)
    c = built.conditioning
    assert c.context.shape[1] == 77 + 148 and c.uncond.shape == c.context.shape
    assert torch.equal(c.context[:, :77], lerp(empty, prompt, 0.4))
    assert torch.equal(c.context[:, 77:], lerp(uncond, context, 0.5))  # strength acts on the reference only
    assert torch.equal(c.uncond[:, :77], empty) and torch.equal(c.uncond[:, 77:], uncond)
    assert c.unet_patch is None and {"text", "encode"} <= set(timings)
    assert built.info == {"reference_strength": 0.5, "prompt": "a red cat", "prompt_mode": "concat",
                          "prompt_weight": 0.4, "blocks": "all"}


def test_style_mode_routes_reference_and_text_and_controls_see_the_reference(engine, refs):
    context, uncond = engine.encode_reference(refs[0], "SeeCoder")
    prompt = text.encode_prompt(engine, "Tiny SD", "a dog")
    control = ControlInput(engine.controlnet("openpose"), torch.zeros(1, 3, 64, 64), 0.9)
    built, _ = run(engine, refs[:1], controls=[control], prompt="a dog", prompt_mode="style")
    c = built.conditioning
    assert c.unet_patch == BlockRouting("style", (0, 148), (148, 225))  # "all" became "style"
    assert torch.equal(c.context[:, :148], context) and torch.equal(c.context[:, 148:], prompt)
    (routed,) = c.controls
    assert isinstance(routed.controlnet, ContextSlice) and (routed.controlnet.lo, routed.controlnet.hi) == (0, 148)
    assert built.info["blocks"] == "style" and built.info["prompt_mode"] == "style"


def test_layout_blocks_without_text_give_the_others_the_unconditional_context(engine, refs):
    context, uncond = engine.encode_reference(refs[0], "SeeCoder")
    built, _ = run(engine, refs[:1], blocks="layout")
    c = built.conditioning
    assert c.unet_patch == BlockRouting("layout", (0, 148), (148, 296))
    assert torch.equal(c.context, torch.cat([context, uncond], 1)) and torch.equal(c.uncond, torch.cat([uncond, uncond], 1))


def test_several_references_blend(engine, refs):
    (c1, u), (c2, _) = [engine.encode_reference(r, "SeeCoder") for r in refs]
    s = settings(engine, MultiReferenceSettings, reference_strength=0.5)
    average = build(engine, s, refs, ReferenceOptions.of(s), weights=[1.0, 3.0]).conditioning
    mean = (c1.float() * 0.25 + c2.float() * 0.75).to(c1.dtype)
    assert torch.equal(average.context, lerp(u, mean, 0.5)) and average.uncond is u

    s = settings(engine, MultiReferenceSettings, blend="concatenate")
    built = build(engine, s, refs, ReferenceOptions.of(s), weights=[0.5, 2.0])
    cat = built.conditioning
    assert torch.equal(cat.context, torch.cat([(c1.float() * 0.5).to(c1.dtype), (c2.float() * 2.0).to(c2.dtype)], 1))
    assert torch.equal(cat.uncond, torch.cat([u, u], 1))
    assert built.info == {"blend": "concatenate", "reference_strength": 1.0, "blocks": "all", "tokens": 296}

    s = settings(engine, MultiReferenceSettings, blend="regions")
    masks = np.zeros((2, 64, 64), np.float32)
    masks[1, :, 32:] = 1
    regions = build(engine, s, refs, ReferenceOptions.of(s), weights=[1.0, 1.0], regions=masks).conditioning
    assert isinstance(regions.unet_patch, RegionalAttention) and regions.unet_patch.spans == [slice(0, 148), slice(148, 296)]
    assert torch.equal(regions.context, torch.cat([c1, c2], 1))


def test_several_references_need_a_blend_and_weights(engine, refs):
    s = settings(engine)
    with pytest.raises(ValueError, match="need a blend"):
        build(engine, s, refs, ReferenceOptions.of(s))
    s = settings(engine, MultiReferenceSettings)
    with pytest.raises(ValueError, match="one weight per reference"):
        build(engine, s, refs, ReferenceOptions.of(s), weights=[1.0])


def test_options_and_info_follow_what_the_settings_declare(engine):
    edit = ReferenceOptions.of(settings(engine, EditSettings, reference_strength=0.3))
    assert (edit.prompt, edit.blocks, edit.blend) == (None, None, None)
    assert edit.info() == {"reference_strength": 0.3} and edit.notes() == ["strength 0.3"]
    compare = ReferenceOptions.of(settings(engine, CompareSettings, prompt="x"))
    assert compare.image_only().info() == {"reference_strength": 1.0} and compare.notes() == []
    with pytest.raises(InvalidSettingError, match="not with regions"):
        ReferenceOptions.of(settings(engine, MultiReferenceSettings, blend="regions", blocks="style"))
    with pytest.raises(InvalidSettingError, match="unknown blend 'mix'"):
        ReferenceOptions.of(settings(engine, MultiReferenceSettings, blend="mix"))


def test_reference_settings_are_declared_once_with_todays_defaults():
    names = [f.name for f in dataclasses.fields(VariationSettings)]
    start = names.index("prompt")  # appended settings (denoise strength, block weights ...) follow them
    assert names[start:start + 4] == ["prompt", "prompt_mode", "prompt_weight", "blocks"]
    declared = dict(fields.in_section(VariationSettings, fields.REFERENCE))
    assert [n for n in declared if n != "reference_strength"] == ["prompt", "prompt_mode", "prompt_weight", "blocks"]
    assert {n: declared[n].cli for n in declared} == {
        "reference_strength": "--reference-strength", "prompt": "--prompt", "prompt_mode": "--prompt-mode",
        "prompt_weight": "--prompt-weight", "blocks": "--blocks"}
    assert declared["prompt_mode"].choices == PROMPT_MODES and declared["blocks"].choices == PRESETS
    assert declared["prompt_weight"].range.what == "text weight"
    defaults = VariationSettings()
    assert (defaults.prompt, defaults.prompt_mode, defaults.prompt_weight, defaults.blocks) == ("", "concat", 1.0, "all")
    multi = dict(fields.in_section(MultiReferenceSettings, fields.REFERENCE))
    assert multi["blocks"] == declared["blocks"] and MultiReferenceSettings().blocks == "all"
