"""Edit with a reference (library level, tiny profile, offline): the masked region of any photo
is filled from a reference image, with the 9-channel inpainting UNet and with latent blending;
the photo outside the (dilated, feathered) mask comes back bit for bit; the fill depends on the
reference; try-on is this edit with a garment; masks of another size are resized with a note;
clear errors for missing, empty and unreadable inputs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from prompt_free import masks as M
from prompt_free.engine import Engine
from prompt_free.errors import InputImageError, InvalidSettingError
from prompt_free.tasks import EditSettings, TryOnSettings, edit_with_reference, virtual_tryon
from prompt_free.tasks import edit as E
from tests.helpers.app import EXAMPLES

pytestmark = pytest.mark.timeout(300)

PHOTO = (150, 100)  # a landscape photo of odd size (not a multiple of 64)


@pytest.fixture(scope="module")
def engine():
    return Engine.from_profile("tiny", device="cpu")


@pytest.fixture(scope="module")
def photo():
    return Image.open(EXAMPLES / "coffee.jpg").convert("RGB").resize(PHOTO, Image.BICUBIC)


@pytest.fixture(scope="module")
def mask():
    m = np.zeros((PHOTO[1], PHOTO[0]), bool)
    m[30:75, 50:110] = True
    return m


@pytest.fixture(scope="module")
def cat():
    return Image.open(EXAMPLES / "chelsea.jpg").convert("RGB")


@pytest.fixture(scope="module")
def astronaut():
    return Image.open(EXAMPLES / "astronaut.jpg").convert("RGB")


def quick(**kw):
    base = dict(steps=2, seed=3, max_side=128, dilation=0, feather=0)
    base.update(kw)
    return EditSettings(**base)


def outside_and_inside(result, photo, mask, dilation, feather):
    """(values outside the paste alpha equal the photo's, mean change inside the mask)."""
    out, orig = np.asarray(result), np.asarray(photo)
    assert out.shape == orig.shape
    alpha = M.soften_mask(mask, dilation, feather)
    outside = alpha == 0
    assert outside.sum() > 0.3 * outside.size
    return np.array_equal(out[outside], orig[outside]), np.abs(out[mask].astype(int) - orig[mask]).mean()


@pytest.mark.parametrize("base_model, method", [("Tiny SD Inpainting", E.METHOD_INPAINT), ("Tiny SD", E.METHOD_BLEND)])
@pytest.mark.parametrize("dilation, feather", [(0, 0), (3, 4)])
def test_outside_the_mask_is_the_photo_bit_for_bit_and_the_mask_changes(engine, photo, mask, cat, base_model, method,
                                                                        dilation, feather):
    r = edit_with_reference(engine, photo, mask, cat, quick(base_model=base_model, dilation=dilation, feather=feather))
    assert r.info["method"] == method and r.info["base_model"] == base_model
    assert r.images[0].size == PHOTO and r.info["generation_size"] == (128, 64)
    same_outside, change_inside = outside_and_inside(r.images[0], photo, mask, dilation, feather)
    assert same_outside, "pixels outside the mask changed"
    assert change_inside > 2, "the masked region did not change"
    paste_mask, reference_used = r.extras
    assert np.array_equal(np.asarray(paste_mask) > 0, M.soften_mask(mask, dilation, feather) > 0)
    assert reference_used.size == cat.size  # not cropped unless asked


def test_default_base_model_is_the_inpainting_one(engine, photo, mask, cat):
    r = edit_with_reference(engine, photo, mask, cat, quick(steps=1))
    assert r.info["method"] == E.METHOD_INPAINT and r.info["base_model"] == "Tiny SD Inpainting"


@pytest.mark.parametrize("base_model", ["Tiny SD Inpainting", "Tiny SD"])
def test_the_fill_depends_on_the_reference(engine, photo, mask, cat, astronaut, base_model):
    s = quick(base_model=base_model)
    a = np.asarray(edit_with_reference(engine, photo, mask, cat, s).images[0]).astype(int)
    again = np.asarray(edit_with_reference(engine, photo, mask, cat, s).images[0]).astype(int)
    b = np.asarray(edit_with_reference(engine, photo, mask, astronaut, s).images[0]).astype(int)
    assert np.array_equal(a, again)  # same seed, same reference: same pixels
    assert np.abs(a[mask] - b[mask]).mean() > 1, "two references gave the same fill"
    assert np.array_equal(a[~mask], b[~mask])  # and the same photo around it


def test_try_on_is_the_edit_with_a_garment_as_reference(engine, mask):
    """Try-on without pose control and garment crop, with a mask image, is exactly this edit."""
    person = Image.open(EXAMPLES / "tryon_person.png").convert("RGB").resize((100, 150), Image.BICUBIC)
    garment = Image.open(EXAMPLES / "tryon_garment_shirt.png").convert("RGB")
    m = np.zeros((150, 100), bool)
    m[50:110, 20:80] = True
    common = dict(steps=2, seed=9, max_side=128, dilation=2, feather=3, base_model="Tiny SD")
    t = virtual_tryon(engine, person, garment, m, TryOnSettings(pose_control=False, crop_garment=False, **common))
    e = edit_with_reference(engine, person, m, garment, EditSettings(**common))
    assert np.array_equal(np.asarray(t.images[0]), np.asarray(e.images[0]))


def test_crop_reference_crops_a_plain_background(engine, photo, mask):
    ref = Image.new("RGB", (200, 160), (250, 250, 250))
    ImageDraw.Draw(ref).rectangle([60, 40, 139, 119], fill=(30, 90, 200))
    r = edit_with_reference(engine, photo, mask, ref, quick(steps=1, crop_reference=True))
    assert r.extras[1].size[0] < 200 and not any("crop" in n for n in r.info["notes"])
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (80, 80, 3), dtype=np.uint8))
    r = edit_with_reference(engine, photo, mask, noise, quick(steps=1, crop_reference=True))
    assert r.extras[1].size == (80, 80)
    assert "reference crop: no plain background found, the whole reference photo was used" in r.info["notes"]


# ----------------------------------------------------------------------------- masks of another size
def test_mask_of_another_size_is_resized_and_the_note_says_so(engine, photo, mask, cat):
    small = Image.fromarray(mask).resize((75, 50), Image.NEAREST)  # half size, same aspect
    r = edit_with_reference(engine, photo, small, cat, quick(steps=1, base_model="Tiny SD"))
    assert "the mask image is 75x50, the photo 150x100: the mask was resized to the photo" in r.info["notes"]
    same_outside, _ = outside_and_inside(r.images[0], photo, M.fit_mask(M.load_mask(small), PHOTO)[0], 0, 0)
    assert same_outside
    square = Image.fromarray(mask).resize((64, 64), Image.NEAREST)  # another aspect ratio: stretched, said so
    r = edit_with_reference(engine, photo, square, cat, quick(steps=1, base_model="Tiny SD"))
    assert any("stretched: its aspect ratio differs" in n for n in r.info["notes"])
    exact = edit_with_reference(engine, photo, mask, cat, quick(steps=1, base_model="Tiny SD"))
    assert not any("resized" in n for n in exact.info["notes"])  # the photo's size: no note


def test_fit_mask():
    m = np.zeros((10, 20), bool)
    m[2:5, 4:9] = True
    same, note = M.fit_mask(m, (20, 10))
    assert same is m and note is None
    big, note = M.fit_mask(m, (40, 20))
    assert big.shape == (20, 40) and big.sum() == 4 * m.sum() and "10" in note and "stretched" not in note


# ----------------------------------------------------------------------------- errors
def test_no_mask_and_empty_mask_say_draw_or_upload_a_mask(engine, photo, cat):
    for none in (None, ""):
        with pytest.raises(M.EmptyMaskError, match="no mask given: draw or upload a mask"):
            edit_with_reference(engine, photo, none, cat, quick())
    with pytest.raises(M.EmptyMaskError, match="the mask is empty: draw or upload a mask"):
        edit_with_reference(engine, photo, Image.new("L", PHOTO, 0), cat, quick())
    transparent = Image.new("RGBA", PHOTO, (0, 0, 0, 0))  # an editor layer with nothing painted
    with pytest.raises(M.EmptyMaskError, match="the mask is empty"):
        edit_with_reference(engine, photo, transparent, cat, quick())


@pytest.mark.parametrize("which, message", [("photo", "no photo given"), ("reference", "no reference image given")])
def test_missing_images_are_clear_errors(engine, photo, mask, cat, which, message):
    args = {"photo": photo, "reference": cat}
    args[which] = None
    with pytest.raises(InputImageError, match=message):
        edit_with_reference(engine, args["photo"], mask, args["reference"], quick())


@pytest.mark.parametrize("which, name", [("photo", "photo"), ("mask", "mask image"), ("reference", "reference image")])
def test_unreadable_images_name_the_input(engine, photo, mask, cat, tmp_path, which, name):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    args = {"photo": photo, "mask": mask, "reference": cat, which: str(bad)}
    with pytest.raises(InputImageError) as err:
        edit_with_reference(engine, args["photo"], args["mask"], args["reference"], quick())
    assert str(err.value).startswith(f"{name} could not be read as an image (not an image file")
    assert str(tmp_path) not in str(err.value)  # never a server directory


@pytest.mark.parametrize("kw, message", [
    (dict(max_side=5000), "maximum generation size"),
    (dict(dilation=1000), "mask dilation"),
    (dict(feather=-1), "mask feathering"),
    (dict(steps=0), "steps must be between"),
    (dict(base_model="SD 9"), "SD 9"),
])
def test_bad_settings_are_clear_errors(engine, photo, mask, cat, kw, message):
    with pytest.raises(InvalidSettingError if "SD 9" not in message else Exception) as err:
        edit_with_reference(engine, photo, mask, cat, quick(**kw))
    assert message in str(err.value)
