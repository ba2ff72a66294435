"""Painting the source mask on the reference (issue 26, control 3) in the app: the Edit tab's
mask editor in "More reference controls" fills the ``reference_mask`` upload (the endpoint's
parameter stays as published); in real Chromium a stroke on the left of the reference becomes a
mask that is white there and black on the right, at the reference's own size, and the run with
the accordion open reports it (and no balance: an optional number left empty stays off); an
uploaded mask goes into the editor as its painted layer and comes back out unchanged."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from prompt_free import masks as M
from prompt_free.app.source_mask import SOURCE_CANVAS, read_source_mask
from prompt_free.catalog import TASKS
from tests.helpers.app import EXAMPLES, chromium_page

pytestmark = pytest.mark.timeout(600)
REFERENCE = EXAMPLES / "chelsea.jpg"


def test_an_uploaded_mask_fills_the_editor_and_comes_back_out_unchanged(tmp_path):
    """The editor's round trip (the Edit tab's mapping) on a non-square reference: the mask drawn
    into the letterboxed canvas maps back onto the reference's own pixels."""
    ref = Image.open(REFERENCE).convert("RGB")
    m = np.zeros((ref.height, ref.width), bool)
    m[:, : ref.width // 3] = True
    Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "m.png")
    shown = SOURCE_CANVAS.editor_value(ref, read_source_mask(str(tmp_path / "m.png"), ref.size))
    layers = [np.asarray(layer) for layer in shown["layers"]]
    back = SOURCE_CANVAS.mask_of({"layers": layers}, ref.size)
    assert back.size == ref.size and np.mean((np.asarray(back) > 127) != m) < 0.01
    assert SOURCE_CANVAS.mask_of({"layers": []}, ref.size) is None  # nothing painted: no mask


def test_every_tab_has_the_painter_and_no_endpoint_gained_a_parameter(app, client):
    import json
    from pathlib import Path

    config = app[1].config
    ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    prefixes = ["variation", "control", "compare", "multi", "edit", "tryon"]
    assert {f"{p}-reference-mask-editor" for p in prefixes} <= ids
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    pinned = json.loads((Path(__file__).resolve().parents[1] / "pins" / "api.json").read_text())
    for task in TASKS:
        assert [p["parameter_name"] for p in api["/" + task.endpoint]["parameters"]] == pinned["/" + task.endpoint]


def _painted_mask(page) -> np.ndarray:
    page.wait_for_selector("#variation-reference-mask img", timeout=60_000)
    src = page.locator("#variation-reference-mask img").first.get_attribute("src")
    return M.load_mask(page.request.get(src).body())


@pytest.mark.browser
def test_browser_paint_the_source_mask_on_the_reference(app, tmp_path):
    engine, demo, url = app
    ref = Image.open(REFERENCE)
    with chromium_page(url) as page:
        page.locator("#variation-reference input[type=file]").set_input_files(str(REFERENCE))
        page.wait_for_selector("#variation-reference img", timeout=30_000)
        page.locator("#variation-more").get_by_text("More reference controls").first.click()
        page.get_by_text("Paint the source mask on the reference").first.click()
        canvas = page.locator("#variation-reference-mask-editor canvas").first
        canvas.wait_for(timeout=30_000)
        canvas.scroll_into_view_if_needed()  # mouse events go to viewport coordinates
        page.wait_for_timeout(1000)  # the reference is drawn into the editor
        box = canvas.bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2  # the canvas's (and picture's) centre
        for dy in (-15, 0, 15):  # three strokes on the left half of the picture (about 300 px wide on screen)
            page.mouse.move(cx - 120, cy + dy)
            page.mouse.down()
            for i in range(1, 9):
                page.mouse.move(cx - 120 + i * 10, cy + dy, steps=2)
            page.mouse.up()
            page.wait_for_timeout(300)
        page.wait_for_timeout(1000)  # the last stroke's mask
        mask = _painted_mask(page)
        assert (mask.shape[1], mask.shape[0]) == ref.size
        ys, xs = np.nonzero(mask)
        assert 0.02 < mask.mean() < 0.5, mask.mean()
        assert xs.max() < ref.width / 2 and abs(ys.mean() - ref.height / 2) < ref.height * 0.2  # where it was painted
        # then a run with the painted mask (the accordion open: every control in it rendered at its neutral value)
        for field, value in (("steps", "2"), ("width", "64"), ("height", "64")):
            number = page.locator(f"#variation-{field} input[type=number]")
            number.fill(value)
            number.press("Enter")
        page.locator("#variation-run").click()
        page.wait_for_function(
            "() => (document.querySelector('#variation-info') || {}).innerText?.includes('source mask')",
            timeout=240_000)
        info = page.locator("#variation-info").inner_text()
        assert "balance" not in info and page.locator("#variation-gallery img").count() >= 1, info
        page.screenshot(path=str(tmp_path / "painted.png"))
