"""The Virtual Try-On tab as API clients and users reach it: gradio_client against the in-process
app (``/virtual_tryon`` with a mask image file) and a real browser (Playwright + Chromium)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from prompt_free import masks as M
from tests.helpers.app import EXAMPLES, chromium_page

pytestmark = pytest.mark.timeout(600)

PERSON = EXAMPLES / "tryon_person.png"
GARMENT = EXAMPLES / "tryon_garment_shirt.png"
MASK = EXAMPLES / "tryon_person_mask.png"


def tryon_args(person=PERSON, garment=GARMENT, mask=MASK, mode="mask image", base="auto", dilation=2, feather=3,
               crop=True, keep_pose=False, steps=2, seed=4, randomize=False, n=1, max_side=128):
    from gradio_client import handle_file

    f = lambda p: handle_file(str(p)) if p else None  # noqa: E731
    return [f(person), f(garment), f(mask), mode, "SeeCoder", base, dilation, feather, crop, keep_pose,
            2.0, steps, seed, randomize, n, "DDIM", max_side]


def test_virtual_tryon_endpoint_with_a_mask_file(client):
    gallery, used, info, seed = client.predict(*tryon_args(n=2), api_name="/virtual_tryon")
    assert seed == 4 and len(gallery) == 2
    person = np.asarray(Image.open(PERSON).convert("RGB"))
    mask = M.load_mask(str(MASK))
    outside = M.soften_mask(mask, 2, 3) == 0
    for item in gallery:
        assert item["image"].endswith(".png")
        out = np.asarray(Image.open(item["image"]).convert("RGB"))
        assert out.shape == person.shape  # the photo's own size (256x384), not the generation size
        assert np.array_equal(out[outside], person[outside])
        assert not np.array_equal(out[mask], person[mask])
    assert "inpainting UNet" in info and "Tiny SD Inpainting" in info and "seeds 4, 5" in info
    assert len(used) == 2  # the mask used and the cropped garment (no pose map: pose control off)


def test_virtual_tryon_endpoint_latent_blending_with_standard_model(client):
    gallery, used, info, _ = client.predict(*tryon_args(base="Tiny SD"), api_name="/virtual_tryon")
    assert "latent blending" in info and Image.open(gallery[0]["image"]).size == (256, 384)


@pytest.mark.parametrize(
    "case, patch, message",
    [
        ("missing garment", dict(garment=None), "no garment image given: please upload a photo of the garment"),
        ("missing person", dict(person=None), "no person photo given: please upload a photo of the person to dress"),
        ("no mask, no automatic mode", dict(mask=None, mode="mask image"), "no mask given: paint the region to change on the person photo"),
        ("pose detector weights missing", dict(mask=None, mode="upper body"), "paint or upload the mask instead"),
        ("mask of another shape", dict(mask=EXAMPLES / "tryon_garment_shirt.png"), "the mask must have the photo's aspect ratio"),
        ("generation size too large", dict(max_side=4096), "Value 4096 is greater than maximum value 1536."),
    ],
)
def test_bad_inputs_give_clear_errors(client, case, patch, message):
    with pytest.raises(Exception) as err:
        client.predict(*tryon_args(**patch), api_name="/virtual_tryon")
    assert message in str(err.value), (case, str(err.value))


def test_empty_mask_file_is_a_clear_error_and_server_keeps_serving(client, tmp_path):
    black = tmp_path / "black.png"
    Image.new("L", (256, 384), 0).save(black)
    with pytest.raises(Exception) as err:
        client.predict(*tryon_args(mask=black), api_name="/virtual_tryon")
    assert "the mask is empty" in str(err.value)
    ok = client.predict(*tryon_args(steps=1, max_side=64), api_name="/virtual_tryon")
    assert len(ok[0]) == 1


def test_editor_layers_become_the_mask():
    """The editor holds the photo letterboxed into its fixed canvas; painted layers map back
    onto the photo's own pixels."""
    from prompt_free.app.tryon import CANVAS, _editor_value, editor_mask

    person = Image.open(PERSON).convert("RGB")
    mask = M.load_mask(str(MASK))
    value = _editor_value(person, mask)
    assert value["background"].size == CANVAS and value["layers"][0].size == CANVAS
    layers = [np.asarray(layer) for layer in value["layers"]]
    back = editor_mask({"background": None, "layers": layers, "composite": None}, person.size)
    assert back.size == person.size
    assert (np.asarray(back) > 127).sum() > 0 and np.mean((np.asarray(back) > 127) != mask) < 0.01
    empty = np.zeros((CANVAS[1], CANVAS[0], 4), np.uint8)
    assert editor_mask({"background": None, "layers": [empty], "composite": None}, person.size) is None
    assert editor_mask(None, person.size) is None


@pytest.mark.browser
def test_browser_upload_person_garment_and_mask_then_try_on(app, tmp_path):
    """Upload person and garment, try "Make mask" (a clear error offline), upload a mask (it
    fills the editor), untick pose control, try on, and see the result."""
    engine, demo, url = app
    with chromium_page(url) as page:
        page.get_by_role("tab", name="Virtual Try-On").click()
        page.locator("#tryon-person input[type=file]").set_input_files(str(PERSON))
        page.wait_for_selector("#tryon-person img", timeout=30_000)
        page.locator("#tryon-garment input[type=file]").set_input_files(str(GARMENT))
        page.wait_for_selector("#tryon-garment img", timeout=30_000)
        # no pose detector weights offline: "Make mask" answers with a clear message, no crash
        page.locator("#tryon-make-mask").click()
        page.get_by_text("paint or upload the mask instead").first.wait_for(timeout=60_000)
        page.get_by_text("Upload a mask instead").click()
        page.locator("#tryon-mask-upload input[type=file]").set_input_files(str(MASK))
        page.wait_for_selector("#tryon-mask-upload img", timeout=30_000)
        page.locator("#tryon-keep-pose input[type=checkbox]").uncheck()
        size = page.locator("#tryon-max-side input[type=number]")  # small generation: quick on a CPU
        size.fill("64")
        size.press("Enter")
        page.locator("#tryon-run").click()
        page.wait_for_selector("#tryon-gallery img", timeout=240_000)
        assert page.locator("#tryon-gallery img").count() >= 1
        page.wait_for_selector("#tryon-info:has-text('inpainting UNet')", timeout=30_000)
        page.screenshot(path=str(tmp_path / "tryon.png"))
