"""Multi-Reference task (library level, tiny profile, offline): the neutral cases reproduce Image
Variation bit for bit, each blend really mixes (average, concatenate: 296 tokens, regions: each
reference's attention output inside its region, at every resolution and aspect ratio), ControlNets,
and clear errors before any model loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from prompt_free.engine import Engine
from prompt_free.errors import InputImageError, InvalidSettingError, WorkLimitError
from prompt_free.regions import RegionalAttention, RegionalCrossAttention, level_sizes, region_alphas
from prompt_free.tasks import (
    ControlSettings,
    ControlSpec,
    MultiReferenceSettings,
    Reference,
    VariationSettings,
    image_variation,
    multi_reference,
    reference_control,
)
from prompt_free.tasks.multi_reference import blend_contexts
from tests.helpers.app import EXAMPLES

pytestmark = pytest.mark.timeout(300)

A, B = EXAMPLES / "chelsea.jpg", EXAMPLES / "coffee.jpg"


@pytest.fixture(scope="module")
def engine():
    return Engine.from_profile("tiny", device="cpu")


def px(img):
    return np.asarray(img, dtype=np.int16)


def same(a, b) -> bool:
    return len(a.images) == len(b.images) and all(np.array_equal(px(x), px(y)) for x, y in zip(a.images, b.images))


def plain(size, value):
    return Image.new("L", size, value)


def right_half(size):
    m = Image.new("L", size, 0)
    m.paste(255, (size[0] // 2, 0, size[0], size[1]))
    return m


# ----------------------------------------------------------------------------- exactness
def test_neutral_blends_equal_image_variation_of_reference_1_bit_for_bit(engine):
    """average with weights (1, 0), and regions with mask 1 all white and mask 2 all black, give
    Image Variation's pictures of reference 1 (two images: the guidance batch holds 2 x 2)."""
    kw = dict(width=128, height=64, steps=3, seed=5, num_images=2)
    want = image_variation(engine, A, VariationSettings(**kw))
    average = multi_reference(engine, [Reference(A, 1.0), Reference(B, 0.0)], MultiReferenceSettings(**kw))
    regions = multi_reference(engine, [Reference(A, 1.0, plain((128, 64), 255)), Reference(B, 1.0, plain((128, 64), 0))],
                              MultiReferenceSettings(blend="regions", **kw))
    assert same(average, want)
    assert regions.info["tokens"] == 296  # both references were in the run, through the regional processors
    assert same(regions, want)
    # and the mixing is real: with both weights 1 the average is another picture
    mixed = multi_reference(engine, [A, B], MultiReferenceSettings(**kw))
    assert not same(mixed, want)


def test_one_reference_at_weight_1_is_image_variation_in_every_blend(engine):
    kw = dict(width=64, height=64, steps=2, seed=9)
    want = image_variation(engine, B, VariationSettings(**kw))
    for blend in ("average", "concatenate", "regions"):
        assert same(multi_reference(engine, [B], MultiReferenceSettings(blend=blend, **kw)), want), blend


def test_regions_with_controlnet_equals_reference_control_of_reference_1(engine):
    """The run's ControlNet gets the regional processors too (it sees the same 296-token context)."""
    control = [ControlSpec("openpose", EXAMPLES / "pose_standing.png", scale=0.9)]
    kw = dict(width=64, height=128, steps=2, seed=3)
    want = reference_control(engine, A, control, ControlSettings(**kw))
    got = multi_reference(engine, [Reference(A, 1.0, plain((64, 128), 255)), Reference(B, 1.0, plain((64, 128), 0))],
                          MultiReferenceSettings(blend="regions", controls=control, **kw))
    assert same(got, want)
    assert np.array_equal(px(got.extras[0]), px(want.extras[0]))
    assert got.info["controls"][0]["controlnet"] == "openpose"


# ----------------------------------------------------------------------------- each blend mixes
def test_average_is_the_weighted_mean_and_concatenate_puts_scaled_tokens_side_by_side(engine):
    (c1, u), (c2, _) = engine.encode_reference(A, "SeeCoder"), engine.encode_reference(B, "SeeCoder")
    ctx, unc, spans = blend_contexts([c1, c2], u, [1.0, 3.0], "average")
    assert ctx.shape == (1, 148, 64) and unc is u
    torch.testing.assert_close(ctx, (c1 + 3 * c2) / 4)
    ctx, unc, spans = blend_contexts([c1, c2], u, [0.5, 2.0], "concatenate")
    assert ctx.shape == (1, 296, 64) and unc.shape == (1, 296, 64)
    assert torch.equal(ctx[:, :148], c1 * 0.5) and torch.equal(ctx[:, 148:], c2 * 2.0)
    assert torch.equal(unc, torch.cat([u, u], dim=1))
    assert spans == [slice(0, 148), slice(148, 296)]
    ctx, unc, spans = blend_contexts([c1, c2], u, [0.5, 2.0], "regions")  # unscaled: weights act per position
    assert torch.equal(ctx, torch.cat([c1, c2], dim=1))


def test_concatenate_runs_296_tokens_and_differs_from_each_reference(engine):
    kw = dict(width=64, height=64, steps=2, seed=4)
    got = multi_reference(engine, [A, B], MultiReferenceSettings(blend="concatenate", **kw))
    assert got.info["tokens"] == 296 and got.info["blend"] == "concatenate"
    for ref in (A, B):
        assert not same(got, image_variation(engine, ref, VariationSettings(**kw)))


def test_region_weights_share_overlaps_and_leave_the_rest_to_reference_1():
    full = np.ones((2, 16, 16), np.float32)
    torch.testing.assert_close(region_alphas(full, [1.0, 3.0], (2, 2)), torch.tensor([[0.25] * 4, [0.75] * 4]))
    half = np.zeros((2, 16, 16), np.float32)
    half[1, :, 8:] = 1  # reference 2 on the right; reference 1 without a mask (the background)
    a = region_alphas(half, [1.0, 0.5], (1, 2))  # weight 0.5: half of reference 1 shows through
    torch.testing.assert_close(a, torch.tensor([[1.0, 0.5], [0.0, 0.5]]))
    a = region_alphas(half, [1.0, 1.0], (1, 1))  # one position: the mask is area-averaged
    torch.testing.assert_close(a, torch.tensor([[0.5], [0.5]]))
    assert level_sizes(64, 128) == [(8, 16), (4, 8), (2, 4), (1, 2), (1, 1)]
    assert level_sizes(72, 200)[:2] == [(9, 25), (5, 13)]  # rounding up, as stride-2 convolutions do


def test_regions_processor_puts_each_references_attention_output_in_its_region(engine):
    """On a real cross-attention layer, at the latent's and the next level's resolution of a wide
    picture: left of the mask edge the output is the layer's own output for reference 1's tokens
    alone, right of it for reference 2's."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    attn = engine.base_model("Tiny SD").unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    g = torch.Generator().manual_seed(0)
    c1, c2 = torch.randn(2, 148, 64, generator=g), torch.randn(2, 148, 64, generator=g)
    masks = np.zeros((2, 64, 128), np.float32)
    masks[1, :, 64:] = 1
    patch = RegionalAttention(masks, [1.0, 1.0], [slice(0, 148), slice(148, 296)])
    processor = RegionalCrossAttention(patch.spans, patch.alphas_for("cpu", torch.float32))
    with torch.no_grad():
        for h, w in [(8, 16), (4, 8)]:
            x = torch.randn(2, h * w, attn.to_q.in_features, generator=g)
            got = processor(attn, x, torch.cat([c1, c2], dim=1)).view(2, h, w, -1)
            own1 = AttnProcessor2_0()(attn, x, c1).view(2, h, w, -1)
            own2 = AttnProcessor2_0()(attn, x, c2).view(2, h, w, -1)
            torch.testing.assert_close(got[:, :, : w // 2], own1[:, :, : w // 2], rtol=0, atol=1e-6)
            torch.testing.assert_close(got[:, :, w // 2 :], own2[:, :, w // 2 :], rtol=0, atol=1e-6)
            assert (got[:, :, : w // 2] - own2[:, :, : w // 2]).abs().max() > 1e-3


def test_regions_patch_is_applied_for_one_run_to_the_unet_and_controlnets(engine):
    unet = engine.base_model("Tiny SD").unet
    controlnet = engine.controlnet("openpose")
    before = [dict(m.attn_processors) for m in (unet, controlnet)]
    patch = RegionalAttention(np.zeros((2, 64, 64), np.float32), [1.0, 1.0], [slice(0, 148), slice(148, 296)],
                              [controlnet])
    with patch.applied(unet):
        for m in (unet, controlnet):
            for name, p in m.attn_processors.items():
                assert isinstance(p, RegionalCrossAttention) == name.endswith("attn2.processor"), name
    after = [dict(m.attn_processors) for m in (unet, controlnet)]
    assert all(a[k] is b[k] for a, b in zip(after, before) for k in b)


def test_regions_mixes_end_to_end_and_reports_a_resized_mask(engine):
    kw = dict(width=64, height=64, steps=2, seed=6)
    got = multi_reference(engine, [A, Reference(B, 1.0, right_half((32, 32)))], MultiReferenceSettings(blend="regions", **kw))
    assert "mask 2 was 32x32, resized to the output's 64x64" in got.info["notes"]
    assert got.info["references"] == [{"reference": 1, "weight": 1.0, "mask": False},
                                      {"reference": 2, "weight": 1.0, "mask": True}]
    for ref in (A, B):
        assert not same(got, image_variation(engine, ref, VariationSettings(**kw)))


# ----------------------------------------------------------------------------- errors
def _garbage(tmp_path):
    p = tmp_path / "broken.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return p


@pytest.mark.parametrize("case, references, kw, error, message", [
    ("weight out of range", [A, Reference(B, 2.5)], {}, InvalidSettingError, "weight 2 must be between 0 and 2, got 2.5"),
    ("all weights zero", [Reference(A, 0), Reference(B, 0.0)], {}, InvalidSettingError,
     "all reference weights are 0 (weight 1, weight 2)"),
    ("no reference", [None, Reference(None, 1.0)], {}, InputImageError, "no reference image given"),
    ("five references", [A] * 5, {}, InvalidSettingError, "at most 4 references"),
    ("unknown blend", [A], {"blend": "mean"}, InvalidSettingError, "unknown blend 'mean'; choose one of: average"),
    ("regions, reference 2 without mask", [A, B], {"blend": "regions"}, InputImageError,
     "reference 2 has no region mask"),
    ("unreadable reference", [A, "GARBAGE"], {}, InputImageError, "reference image 2 could not be read as an image ("),
    ("unreadable mask", [A, Reference(B, 1.0, "GARBAGE")], {"blend": "regions"}, InputImageError,
     "mask 2 could not be read as an image ("),
])
def test_bad_inputs_give_clear_errors_before_any_model_loads(tmp_path, case, references, kw, error, message):
    bad = _garbage(tmp_path)
    refs = [Reference(bad if r.image == "GARBAGE" else r.image, r.weight, bad if r.mask == "GARBAGE" else r.mask)
            if isinstance(r, Reference) else (bad if r == "GARBAGE" else r) for r in references]
    eng = Engine.from_profile("tiny", device="cpu")
    with pytest.raises(error) as e:
        multi_reference(eng, refs, MultiReferenceSettings(width=64, height=64, steps=1, **kw))
    assert message in str(e.value), (case, str(e.value))
    assert str(tmp_path) not in str(e.value)
    assert not any(k[0] in ("base_models", "seecoders", "controlnets") for k in eng.load_counts), case


def test_work_limit_applies(monkeypatch):
    monkeypatch.setenv("PFD_MAX_WORK", "0.01")
    eng = Engine.from_profile("tiny", device="cpu")
    with pytest.raises(WorkLimitError, match="megapixel-steps"):
        multi_reference(eng, [A, B], MultiReferenceSettings(width=64, height=64, steps=10))
    assert not eng.load_counts


def test_masks_outside_regions_and_empty_slots_are_noted(engine):
    got = multi_reference(engine, [A, Reference(None, 1.0, plain((64, 64), 255)), Reference(B, 0.0)],
                          MultiReferenceSettings(width=64, height=64, steps=1, blend="average"))
    assert got.info["notes"] == ["mask 2 ignored: there is no reference 2", "reference 3 left out (weight 0)"]
    got = multi_reference(engine, [A, Reference(B, 1.0, plain((64, 64), 255))],
                          MultiReferenceSettings(width=64, height=64, steps=1, blend="concatenate"))
    assert got.info["notes"] == ["masks are used by the regions blend only; the concatenate blend ignores them"]


# ----------------------------------------------------------------------------- strength and blocks
def test_strength_and_blocks_act_on_the_blend_as_on_a_single_reference(engine):
    """One reference: Multi-Reference with a reference strength, or with its references in the
    style blocks only, gives Image Variation's picture with the same option (both build the
    context the same way); and each option changes the picture."""
    kw = dict(width=64, height=64, steps=2, seed=9)
    plain_run = image_variation(engine, B, VariationSettings(**kw))
    for options in (dict(reference_strength=0.5), dict(blocks="style"), dict(reference_strength=1.5, blocks="layout")):
        want = image_variation(engine, B, VariationSettings(**kw, **options))
        got = multi_reference(engine, [B], MultiReferenceSettings(**kw, **options))
        assert same(got, want), options
        assert not same(got, plain_run), options
        assert got.info["blocks"] == options.get("blocks", "all")


def test_blocks_other_than_all_are_refused_with_regions_before_any_model_loads():
    eng = Engine.from_profile("tiny", device="cpu")
    with pytest.raises(InvalidSettingError, match="not with regions"):
        multi_reference(eng, [A, Reference(B, 1.0, right_half((64, 64)))],
                        MultiReferenceSettings(blend="regions", blocks="style", width=64, height=64, steps=1))
    with pytest.raises(InvalidSettingError, match="unknown block preset"):
        multi_reference(eng, [A], MultiReferenceSettings(blocks="middle", width=64, height=64, steps=1))
    assert not eng.load_counts
