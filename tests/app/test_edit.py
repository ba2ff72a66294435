"""The Edit with a Reference tab as API clients and users reach it: gradio_client against the
in-process app (``/edit_reference`` with a mask image file) and a real browser (Playwright +
Chromium) that paints the mask on the photo with the mouse, and uploads one of another size."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from prompt_free import masks as M
from tests.helpers.app import EXAMPLES, chromium_page

pytestmark = pytest.mark.timeout(600)

PHOTO = EXAMPLES / "coffee.jpg"
CAT = EXAMPLES / "chelsea.jpg"
ASTRONAUT = EXAMPLES / "astronaut.jpg"


@pytest.fixture(scope="module")
def photo_and_mask(tmp_path_factory):
    """A small photo (odd size) and a mask image of its size (white box = change)."""
    folder = tmp_path_factory.mktemp("edit")
    photo = Image.open(PHOTO).convert("RGB").resize((150, 100), Image.BICUBIC)
    photo.save(folder / "photo.png")
    m = np.zeros((100, 150), np.uint8)
    m[30:75, 50:110] = 255
    Image.fromarray(m).save(folder / "mask.png")
    Image.fromarray(m).resize((75, 50), Image.NEAREST).save(folder / "mask_half.png")
    Image.new("L", (150, 100), 0).save(folder / "black.png")
    return folder


def edit_args(folder, photo="photo.png", reference=CAT, mask="mask.png", base="auto", dilation=0, feather=0,
              crop=False, steps=2, seed=4, randomize=False, n=1, max_side=128):
    from gradio_client import handle_file

    def f(p):
        return handle_file(str(folder / p if isinstance(p, str) else p)) if p else None

    return [f(photo), f(reference), f(mask), "SeeCoder", base, dilation, feather, crop,
            2.0, steps, seed, randomize, n, "DDIM", max_side]


def _pixels(item):
    return np.asarray(Image.open(item["image"]).convert("RGB")).astype(int)


def test_edit_reference_endpoint_keeps_the_photo_outside_the_mask(client, photo_and_mask):
    gallery, used, info, seed = client.predict(*edit_args(photo_and_mask, n=2), api_name="/edit_reference")
    assert seed == 4 and len(gallery) == 2
    photo = np.asarray(Image.open(photo_and_mask / "photo.png")).astype(int)
    mask = M.load_mask(str(photo_and_mask / "mask.png"))
    for item in gallery:
        out = _pixels(item)
        assert out.shape == photo.shape  # the photo's own size (150x100), not the generation size
        assert np.array_equal(out[~mask], photo[~mask])
        assert np.abs(out[mask] - photo[mask]).mean() > 2
    assert "inpainting UNet" in info and "Tiny SD Inpainting" in info and "seeds 4, 5" in info
    assert len(used) == 2  # the mask used and the reference


def test_edit_reference_fill_depends_on_the_reference_with_latent_blending(client, photo_and_mask):
    a, _, info, _ = client.predict(*edit_args(photo_and_mask, base="Tiny SD"), api_name="/edit_reference")
    b, _, _, _ = client.predict(*edit_args(photo_and_mask, base="Tiny SD", reference=ASTRONAUT),
                                api_name="/edit_reference")
    assert "latent blending" in info
    mask = M.load_mask(str(photo_and_mask / "mask.png"))
    pa, pb = _pixels(a[0]), _pixels(b[0])
    assert np.array_equal(pa[~mask], pb[~mask]) and np.abs(pa[mask] - pb[mask]).mean() > 1


def test_a_mask_of_another_size_is_resized_and_the_info_says_so(client, photo_and_mask):
    gallery, _, info, _ = client.predict(*edit_args(photo_and_mask, mask="mask_half.png", steps=1),
                                         api_name="/edit_reference")
    assert "the mask image is 75x50, the photo 150x100: the mask was resized to the photo" in info
    assert Image.open(gallery[0]["image"]).size == (150, 100)


@pytest.mark.parametrize(
    "case, patch, message",
    [
        ("missing photo", dict(photo=None), "no photo given: please upload the photo to edit"),
        ("missing reference", dict(reference=None), "no reference image given"),
        ("no mask", dict(mask=None), "no mask given: draw or upload a mask"),
        ("empty mask", dict(mask="black.png"), "the mask is empty: draw or upload a mask"),
        ("generation size too large", dict(max_side=4096), "Value 4096 is greater than maximum value 1536."),
    ],
)
def test_bad_inputs_give_clear_errors(client, photo_and_mask, case, patch, message):
    with pytest.raises(Exception) as err:
        client.predict(*edit_args(photo_and_mask, **patch), api_name="/edit_reference")
    assert message in str(err.value), (case, str(err.value))


def test_editor_layers_become_the_mask_on_a_landscape_canvas():
    from prompt_free.app.edit import EDIT_CANVAS

    photo = Image.open(PHOTO).convert("RGB").resize((300, 100))  # wider than the canvas: letterboxed
    m = np.zeros((100, 300), bool)
    m[20:60, 100:200] = True
    value = EDIT_CANVAS.editor_value(photo, m)
    assert value["background"].size == EDIT_CANVAS.size and value["layers"][0].size == EDIT_CANVAS.size
    back = EDIT_CANVAS.mask_of({"background": None, "layers": [np.asarray(value["layers"][0])]}, photo.size)
    assert back.size == photo.size and np.mean((np.asarray(back) > 127) != m) < 0.01


@pytest.mark.browser
def test_browser_paint_a_mask_then_edit_and_upload_a_mask_of_another_size(app, photo_and_mask, tmp_path):
    """Upload photo and reference, paint a stroke on the photo with the mouse, edit, and see the
    result; then upload a mask of another size: a warning says it was resized."""
    engine, demo, url = app
    with chromium_page(url) as page:
        page.get_by_role("tab", name="Edit with a Reference").click()
        page.locator("#edit-photo input[type=file]").set_input_files(str(photo_and_mask / "photo.png"))
        page.wait_for_selector("#edit-photo img", timeout=30_000)
        page.locator("#edit-reference input[type=file]").set_input_files(str(CAT))
        page.wait_for_selector("#edit-reference img", timeout=30_000)
        # nothing painted yet: the run asks for a mask
        size = page.locator("#edit-max-side input[type=number]")  # small generation: quick on a CPU
        size.fill("64")
        size.press("Enter")
        steps = page.locator("#edit-steps input[type=number]")
        steps.fill("2")
        steps.press("Enter")
        page.locator("#edit-run").click()
        page.get_by_text("draw or upload a mask").first.wait_for(timeout=60_000)
        # paint a stroke across the middle of the photo (the canvas fills the editor's drawing area)
        canvas = page.locator("#edit-mask-editor canvas").first
        canvas.wait_for(timeout=30_000)
        canvas.scroll_into_view_if_needed()  # mouse events go to viewport coordinates
        box = canvas.bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(cx - box["width"] * 0.15, cy)
        page.mouse.down()
        for i in range(1, 11):
            page.mouse.move(cx - box["width"] * 0.15 + i * box["width"] * 0.03, cy + (i % 2) * 4, steps=2)
        page.mouse.up()
        page.locator("#edit-run").click()
        page.wait_for_selector("#edit-gallery img", timeout=120_000)
        page.wait_for_selector("#edit-info:has-text('inpainting UNet')", timeout=30_000)
        # the painted stroke became the mask: the result differs from the photo only in a band around it
        src = page.locator("#edit-gallery img").first.get_attribute("src")
        out = np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB")).astype(int)
        photo = np.asarray(Image.open(photo_and_mask / "photo.png")).astype(int)
        assert out.shape == photo.shape
        changed = np.abs(out - photo).max(axis=2) > 0
        ys, xs = np.nonzero(changed)
        assert changed.sum() > 50, "the painted stroke did not change the photo"
        assert 25 <= ys.mean() <= 75 and 45 <= xs.mean() <= 105  # around the middle, where it was painted
        assert not changed[:15].any() and not changed[-15:].any()  # far from the stroke: the photo's own pixels
        page.get_by_text("Upload a mask instead").click()
        page.locator("#edit-mask-upload input[type=file]").set_input_files(str(photo_and_mask / "mask_half.png"))
        page.get_by_text("the mask was resized to the photo").first.wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "edit.png"))
