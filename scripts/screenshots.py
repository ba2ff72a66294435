"""Take README screenshots of the app's tabs (tiny profile, offline): python scripts/screenshots.py"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.app import EXAMPLES, chromium_page, running_app  # noqa: E402

OUT = ROOT / "docs"


def finished(page, info_id: str, gallery_id: str = "") -> None:
    """Wait for the run's final outputs (not a live preview): ``info_id``, a Markdown the run
    fills at its end, has text. Then scroll to the top so the screenshot starts with the tab."""
    page.wait_for_function(f"() => (document.querySelector('#{info_id}')?.innerText || '').trim().length > 0",
                           timeout=300_000)
    if gallery_id:  # the final pictures replace the previews (then load)
        page.wait_for_function(f"() => {{ const g = document.querySelector('#{gallery_id}'); "
                               f"return g && g.querySelector('img') && !g.innerText.includes('preview'); }}",
                               timeout=60_000)
    page.wait_for_timeout(1500)
    page.evaluate("window.scrollTo(0, 0)")


def variation(page):
    page.locator("#variation-reference input[type=file]").set_input_files(str(EXAMPLES / "chelsea.jpg"))
    page.wait_for_selector("#variation-reference img", timeout=30_000)
    page.locator("#variation-run").click()
    finished(page, "variation-info", "variation-gallery")
    page.screenshot(path=str(OUT / "screenshot-variation.png"), full_page=True)


def control(page):
    page.get_by_role("tab", name="Reference + ControlNet").click()
    page.locator("#control-reference input[type=file]").set_input_files(str(EXAMPLES / "chelsea.jpg"))
    page.wait_for_selector("#control-reference img", timeout=30_000)
    page.locator("#control-image-1 input[type=file]").set_input_files(str(EXAMPLES / "pose_standing.png"))
    page.wait_for_selector("#control-image-1 img", timeout=30_000)
    page.locator("#control-run").click()
    finished(page, "control-info", "control-gallery")
    page.screenshot(path=str(OUT / "screenshot-control.png"), full_page=True)


def multi_reference(page):
    import tempfile

    from PIL import Image

    page.get_by_role("tab", name="Multi-Reference").click()
    for i, name in ((1, "chelsea.jpg"), (2, "coffee.jpg")):
        page.locator(f"#multi-reference-{i} input[type=file]").set_input_files(str(EXAMPLES / name))
        page.wait_for_selector(f"#multi-reference-{i} img", timeout=30_000)
    with tempfile.TemporaryDirectory() as tmp:
        mask = Image.new("L", (256, 256), 0)
        mask.paste(255, (128, 0, 256, 256))  # reference 2 on the right, reference 1 elsewhere
        mask.save(Path(tmp) / "right_half.png")
        page.locator("#multi-mask-2 input[type=file]").set_input_files(str(Path(tmp) / "right_half.png"))
        page.wait_for_selector("#multi-mask-2 img", timeout=30_000)
    page.locator("#multi-blend").get_by_text("regions", exact=True).click()
    page.locator("#multi-run").click()
    finished(page, "multi-info", "multi-gallery")
    page.screenshot(path=str(OUT / "screenshot-multi_reference.png"), full_page=True)


def compare(page):
    page.get_by_role("tab", name="Dual-ControlNet Comparison").click()
    page.locator("#compare-reference input[type=file]").set_input_files(str(EXAMPLES / "chelsea.jpg"))
    page.wait_for_selector("#compare-reference img", timeout=30_000)
    page.locator("#compare-structure input[type=file]").set_input_files(str(EXAMPLES / "pose_standing.png"))
    page.wait_for_selector("#compare-structure img", timeout=30_000)
    page.locator("#compare-run").click()
    page.wait_for_function("() => document.querySelector('#compare-image-dual img') && "
                           "!document.querySelector('.progress-text')", timeout=300_000)  # done: no progress bar left
    finished(page, "compare-differences")
    page.screenshot(path=str(OUT / "screenshot-compare.png"), full_page=True)


def edit(page):
    page.get_by_role("tab", name="Edit with a Reference").click()
    page.locator("#edit-photo input[type=file]").set_input_files(str(EXAMPLES / "coffee.jpg"))
    page.wait_for_selector("#edit-photo img", timeout=30_000)
    page.locator("#edit-reference input[type=file]").set_input_files(str(EXAMPLES / "chelsea.jpg"))
    page.wait_for_selector("#edit-reference img", timeout=30_000)
    page.wait_for_timeout(1000)  # the photo reaches the mask editor
    canvas = page.locator("#edit-mask-editor canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] * 0.38, box["y"] + box["height"] * 0.4
    page.mouse.move(x, y)
    page.mouse.down()
    for i in range(1, 13):  # a zigzag over the cup
        page.mouse.move(x + (i % 2) * box["width"] * 0.22, y + i * box["height"] * 0.02, steps=3)
    page.mouse.up()
    page.locator("#edit-run").click()
    finished(page, "edit-info", "edit-gallery")
    page.screenshot(path=str(OUT / "screenshot-edit.png"), full_page=True)


def tryon(page):
    page.get_by_role("tab", name="Virtual Try-On").click()
    page.locator("#tryon-person input[type=file]").set_input_files(str(EXAMPLES / "tryon_person.png"))
    page.wait_for_selector("#tryon-person img", timeout=30_000)
    page.locator("#tryon-garment input[type=file]").set_input_files(str(EXAMPLES / "tryon_garment_shirt.png"))
    page.wait_for_selector("#tryon-garment img", timeout=30_000)
    page.get_by_text("Upload a mask instead").click()
    page.locator("#tryon-mask-upload input[type=file]").set_input_files(str(EXAMPLES / "tryon_person_mask.png"))
    page.wait_for_selector("#tryon-mask-upload img", timeout=30_000)
    page.locator("#tryon-keep-pose input[type=checkbox]").uncheck()
    page.locator("#tryon-run").click()
    finished(page, "tryon-info", "tryon-gallery")
    page.screenshot(path=str(OUT / "screenshot-tryon.png"), full_page=True)


if __name__ == "__main__":
    tabs = sys.argv[1:] or ["variation", "control", "multi_reference", "compare", "edit", "tryon"]
    with running_app("tiny") as (engine, demo, url):
        for name in tabs:
            with chromium_page(url) as page:
                globals()[name](page)
            print("wrote", OUT / f"screenshot-{name}.png")
