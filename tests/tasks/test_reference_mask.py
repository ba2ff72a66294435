"""The reference's source mask (``reference_mask``), framing (``reference_framing``) and encode size
(``reference_max_side``) on the tiny profile: neutral values are today's picture bit for bit, an
all-white mask is no mask, the mask restricts the query transformer's cross-attention (features and
pixels outside it change nothing), framings and the max side change what SeeCoder reads, bad
values are refused by name, and PNG redo repeats a masked run bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from prompt_free.engine import Engine
from prompt_free.errors import InvalidSettingError
from prompt_free.images import PAD_COLOUR, frame_reference, limit_side
from prompt_free.metadata import read, redo_call, save_png, tag
from prompt_free.seecoder.qtransformer import MEMORY_ORDER, level_keep
from prompt_free.tasks import VariationSettings, image_variation, reference_control
from prompt_free.tasks.common import begin
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


def mask_file(tmp_path, a: np.ndarray, name="mask.png") -> str:
    path = tmp_path / name
    Image.fromarray(a.astype(np.uint8) * 255).save(path)
    return str(path)


def left_half(size=(96, 64)) -> np.ndarray:
    m = np.zeros((size[1], size[0]), bool)
    m[:, : size[0] // 2] = True
    return m


def pixels(img) -> np.ndarray:
    return np.asarray(img.convert("RGB"))


def tokens(engine, s_kwargs, ref):
    s = begin(engine, VariationSettings(**RUN, **s_kwargs))
    built = build(engine, s, [ref], ReferenceOptions.of(s), size=(s.width, s.height))
    return built.conditioning.context, built.info


# ----------------------------------------------------------------------------- neutral = today
def test_neutral_values_are_todays_picture_bit_for_bit(engine, tmp_path):
    ref = picture(1)
    today = image_variation(engine, ref, VariationSettings(**RUN))
    neutral = image_variation(engine, ref, VariationSettings(**RUN, reference_mask=None, reference_framing="as-is",
                                                             reference_max_side=0))
    white = image_variation(engine, ref, VariationSettings(**RUN, reference_mask=mask_file(tmp_path, np.ones((64, 96)))))
    for got in (neutral, white):
        assert np.array_equal(pixels(got.images[0]), pixels(today.images[0]))
    assert "reference_mask" not in white.info and "reference_size" not in neutral.info


def test_all_white_mask_hands_over_the_unmasked_encoding_itself(engine, tmp_path):
    ref = picture(2)
    plain, _ = tokens(engine, {}, ref)
    white, _ = tokens(engine, {"reference_mask": mask_file(tmp_path, np.ones((64, 96)))}, ref)
    assert white is plain  # the same cache entry: no masking code path ran


# ----------------------------------------------------------------------------- the mask restricts attention
def test_half_mask_changes_the_tokens_and_the_picture(engine, tmp_path):
    ref = picture(3)
    path = mask_file(tmp_path, left_half())
    plain, _ = tokens(engine, {}, ref)
    masked, info = tokens(engine, {"reference_mask": path}, ref)
    assert masked.shape == plain.shape == (1, 148, plain.shape[-1])
    assert not torch.equal(masked, plain)
    assert info["reference_mask"] == "50% of the reference"
    a = image_variation(engine, ref, VariationSettings(**RUN))
    b = image_variation(engine, ref, VariationSettings(**RUN, reference_mask=path))
    assert not np.array_equal(pixels(a.images[0]), pixels(b.images[0]))


def test_pixels_outside_the_mask_change_nothing(engine, tmp_path):
    """The strong test: another picture outside the mask gives the very same 148 tokens."""
    ref = picture(4)
    other = pixels(ref).copy()
    other[:, 48:] = pixels(picture(99))[:, 48:]
    path = mask_file(tmp_path, left_half())
    a, _ = tokens(engine, {"reference_mask": path}, ref)
    b, _ = tokens(engine, {"reference_mask": path}, Image.fromarray(other))
    assert torch.equal(a, b)
    c, _ = tokens(engine, {}, Image.fromarray(other))
    assert not torch.equal(tokens(engine, {}, ref)[0], c)  # unmasked, the right half matters


def test_query_transformer_reads_only_the_kept_features(engine):
    """The attention restriction itself: features of cells outside the mask, changed at every
    level, leave the tokens unchanged; with every cell kept (None) they do change them."""
    sc = engine.seecoder(engine.defaults["seecoder"]).model
    x = torch.rand(1, 3, 64, 96)
    mask = torch.from_numpy(left_half())[None]
    with torch.no_grad():
        feats = sc.imdecoder(sc.imencoder(x))
        keep = {lvl: level_keep(mask, feats[lvl].shape[-2:], sc.strides[lvl]) for lvl in MEMORY_ORDER}
        changed = {}
        for lvl, f in feats.items():
            k = keep[lvl].view(1, 1, *f.shape[-2:])
            changed[lvl] = torch.where(k, f, torch.randn_like(f) * 5)
        assert torch.equal(sc.qtransformer(feats, keep), sc.qtransformer(changed, keep))
        assert not torch.equal(sc.qtransformer(feats), sc.qtransformer(changed))


def test_level_keep_keeps_the_best_cell_of_a_level_the_mask_does_not_half_cover():
    mask = torch.zeros(1, 64, 96, dtype=torch.bool)
    mask[0, 2:6, 2:6] = True  # 16 pixels: under half of any 32 px cell
    keep = level_keep(mask, (2, 3), 32)
    assert keep is not None and keep.sum() == 1 and bool(keep[0, 0])
    assert level_keep(torch.ones(1, 64, 96, dtype=torch.bool), (2, 3), 32) is None  # all kept: no mask


def test_empty_mask_is_refused_by_name(engine, tmp_path):
    path = mask_file(tmp_path, np.zeros((64, 96)))
    with pytest.raises(InvalidSettingError, match="reference_mask.*empty|empty.*reference_mask"):
        image_variation(engine, picture(5), VariationSettings(**RUN, reference_mask=path))
    with pytest.raises(InvalidSettingError, match="reference_mask"):
        engine.encode_reference(picture(5), engine.defaults["seecoder"], mask=np.zeros((64, 96), bool))


def test_engine_cache_key_holds_the_mask(engine):
    ref, name = picture(6), engine.defaults["seecoder"]
    left, right = left_half(), ~left_half()
    a, _ = engine.encode_reference(ref, name, mask=left)
    b, _ = engine.encode_reference(ref, name, mask=right)
    assert not torch.equal(a, b)
    assert engine.encode_reference(ref, name, mask=left)[0] is a


def test_mask_with_reference_control(engine, tmp_path):
    ref, path = picture(7), mask_file(tmp_path, left_half())
    spec = [ControlSpec("canny", picture(8, (64, 64)), check_map=False)]
    a = reference_control(engine, ref, spec, ControlSettings(**RUN))
    b = reference_control(engine, ref, spec, ControlSettings(**RUN, reference_mask=path))
    assert not np.array_equal(pixels(a.images[0]), pixels(b.images[0]))


# ----------------------------------------------------------------------------- framing, max side
def test_framings_cut_the_reference_and_its_mask_alike():
    img, mask = picture(9, (100, 50)), np.zeros((50, 100), bool)
    mask[10:20, 60:80] = True
    crop, m = frame_reference(img, "crop", 1.0, mask)
    assert crop.size == (50, 50) and m.shape == (50, 50) and np.array_equal(m, mask[:, 25:75])
    pad, m = frame_reference(img, "pad", 1.0, mask)
    assert pad.size == (100, 100) and pad.getpixel((0, 0)) == PAD_COLOUR and m[25:75].sum() == mask.sum()
    boxed, m = frame_reference(img, "mask", 1.0, mask)
    assert boxed.size == (24, 12) and m.all() == False and m.sum() == mask.sum()  # noqa: E712 - a 10 % margin
    same, m = frame_reference(img, "as-is", 1.0, mask)
    assert same is img and m is mask
    assert limit_side(img, 0) is img and limit_side(img, 200) is img and limit_side(img, 64).size == (64, 32)


@pytest.mark.parametrize("framing", ["crop", "pad", "mask"])
def test_framings_change_the_picture(engine, tmp_path, framing):
    ref, path = picture(10), mask_file(tmp_path, left_half())
    base = dict(reference_mask=path) if framing == "mask" else {}
    a = image_variation(engine, ref, VariationSettings(**RUN, **base))
    b = image_variation(engine, ref, VariationSettings(**RUN, **base, reference_framing=framing))
    assert not np.array_equal(pixels(a.images[0]), pixels(b.images[0]))
    assert b.info["reference_framing"] == framing and b.info["reference_size"] != [96, 64]


def test_mask_framing_without_a_mask_and_bad_values_are_refused(engine):
    for kw, name in ((dict(reference_framing="mask"), "reference_mask"), (dict(reference_framing="zoom"), "framing"),
                     (dict(reference_max_side=32), "reference max side"), (dict(reference_max_side=4000), "max side")):
        with pytest.raises(InvalidSettingError, match=name):
            image_variation(engine, picture(11), VariationSettings(**RUN, **kw))


def test_max_side_changes_the_encode_size_and_the_tokens(engine):
    ref = picture(12, (160, 96))
    plain, _ = tokens(engine, {}, ref)
    small, info = tokens(engine, {"reference_max_side": 64}, ref)
    assert info["reference_size"] == [64, 38] and info["reference_max_side"] == 64
    assert not torch.equal(plain, small)
    same, info = tokens(engine, {"reference_max_side": 256}, ref)  # never up
    assert same is plain and "reference_size" not in info


# ----------------------------------------------------------------------------- PNG redo
def test_png_records_the_mask_by_hash_and_redo_is_bit_for_bit(engine, tmp_path):
    ref = tmp_path / "ref.png"
    picture(13).save(ref)
    path = mask_file(tmp_path, left_half())
    s = VariationSettings(**RUN, reference_mask=path, reference_framing="mask", reference_max_side=64)
    result = image_variation(engine, str(ref), s)
    out = save_png(tag(engine, result, "image_variation", s, {"reference": str(ref)})[0], tmp_path / "out.png")
    rec = read(out)
    assert rec["settings"]["reference_mask"]["name"] == "mask.png" and len(rec["settings"]["reference_mask"]["sha256"]) == 64
    assert "Reference mask hash: " in Image.open(out).info["parameters"]
    assert "Reference framing: mask" in Image.open(out).info["parameters"]
    _, again = redo_call(rec).run(engine)
    assert np.array_equal(pixels(again), pixels(result.images[0]))


def test_edit_with_a_subject_crop_cuts_the_source_mask_alike(engine, tmp_path):
    """Edit with ``crop_reference``: the reference mask (over the reference as given) is cut to the
    subject crop with it; the masked run differs from the unmasked one."""
    from prompt_free.tasks import EditSettings, edit_with_reference

    reference = Image.new("RGB", (96, 64), (255, 255, 255))
    reference.paste(picture(14, (48, 40)), (24, 12))  # a subject on a plain background
    photo, region = picture(15, (64, 64)), np.zeros((64, 64), bool)
    region[16:48, 16:48] = True
    path = mask_file(tmp_path, left_half())
    s = dict(steps=2, max_side=64, crop_reference=True)
    a = edit_with_reference(engine, photo, region, reference, EditSettings(**s))
    b = edit_with_reference(engine, photo, region, reference, EditSettings(**s, reference_mask=path))
    assert not np.array_equal(pixels(a.images[0]), pixels(b.images[0]))
    assert b.info["reference_mask"] == "50% of the reference"


def test_a_portable_request_carries_the_mask_as_bytes(tmp_path):
    from prompt_free.catalog import TaskRequest

    path = mask_file(tmp_path, left_half())
    request = TaskRequest("image_variation", VariationSettings(reference_mask=path), {"reference": path})
    portable = request.portable()
    with open(path, "rb") as f:
        assert portable.settings.reference_mask == f.read()
