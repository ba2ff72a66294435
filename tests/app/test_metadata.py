"""PNGs served by the app carry how they were made (names only, never server paths), the CLI
redoes them, and "Load settings from a PNG" fills a tab's controls in a real browser."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from prompt_free import cli, metadata
from tests.helpers.app import EXAMPLES, chromium_page, control_args, variation_args

pytestmark = pytest.mark.timeout(600)


def test_variation_gallery_pngs_carry_both_chunks_without_server_paths(app, tmp_path, capsys):
    from gradio_client import Client

    client = Client(app[2], verbose=False)
    gallery, _, _ = client.predict(*variation_args(EXAMPLES / "chelsea.jpg", seed=4, n=2, steps=2, size=64),
                                   api_name="/image_variation")
    second = Image.open(gallery[1]["image"])
    assert "Seed: 5, Size: 64x64" in second.info["parameters"]
    rec = json.loads(second.info["prompt-free"])
    assert rec["task"] == "image_variation" and rec["seed"] == 5 and rec["output"] == {"kind": "images", "index": 1}
    ref = rec["call"]["reference"]
    assert ref["name"] == "chelsea.jpg" and "path" not in ref  # the server's upload folder is not recorded
    assert ref["sha256"] == metadata.file_sha256(EXAMPLES / "chelsea.jpg")
    # the CLI redoes the app's picture, with the reference given again
    png = tmp_path / "app.png"
    png.write_bytes(open(gallery[1]["image"], "rb").read())
    assert cli.main(["generate", "--from-png", str(png), "--reference", str(EXAMPLES / "chelsea.jpg"),
                     "--out", str(tmp_path / "D")]) == 0
    assert np.array_equal(np.asarray(second.convert("RGB")), np.asarray(Image.open(tmp_path / "D" / "app.png").convert("RGB")))


def test_control_gallery_records_the_controlnets_and_their_maps(app):
    from gradio_client import Client

    client = Client(app[2], verbose=False)
    gallery, _, _ = client.predict(*control_args(steps=1, width=64, height=128), api_name="/reference_control")
    result, used_map = (json.loads(Image.open(g["image"]).info["prompt-free"]) for g in gallery[:2])
    spec = result["call"]["controls"][0]
    assert spec["controlnet"] == "openpose" and spec["mode"] == "use as-is" and spec["scale"] == 1.0
    assert spec["image"]["name"] == "pose_standing.png"
    assert spec["image"]["sha256"] == metadata.file_sha256(EXAMPLES / "pose_standing.png")
    assert [m["name"] for m in result["models"]["controlnets"]] == ["openpose"]
    assert used_map["output"] == {"kind": "extras", "index": 0}


def test_recorded_values_give_the_settings_the_models_and_no_random_seed():
    from prompt_free.app.widgets import recorded_values

    rec = {"settings": {"seed": 9, "steps": 3, "base_model": None, "width": None},
           "models": {"base_model": {"name": "Tiny SD"}, "seecoder": {"name": "SeeCoder-PA"}}}
    assert recorded_values(rec) == {"seed": 9, "steps": 3, "base_model": "Tiny SD", "seecoder": "SeeCoder-PA",
                                    "randomize": False}


@pytest.mark.browser
def test_browser_load_settings_from_png_fills_the_control_tab(app, tmp_path, capsys):
    """A CLI picture (2 ControlNets, seed 33, 3 steps, canny scale 0.7) loaded in the Reference +
    ControlNet tab sets its seed, steps, second ControlNet and the scale."""
    code = cli.main(["generate", "--reference", str(EXAMPLES / "coffee.jpg"), "--control", f"canny={EXAMPLES / 'canny_house.png'}",
                     "--control", f"depth={EXAMPLES / 'depth_spheres.png'}", "--control-scale", "0.7", "--no-check-maps",
                     "--seed", "33", "--steps", "3", "--size", "64x64", "--profile", "tiny", "--out", str(tmp_path)])
    assert code == 0
    png = tmp_path / "coffee-s33.png"
    with chromium_page(app[2]) as page:
        page.get_by_role("tab", name="Reference + ControlNet").click()
        page.get_by_text("Load settings from a PNG").last.click()
        page.locator("#control-load-png input[type=file]").set_input_files(str(png))
        page.wait_for_function("() => document.querySelector('#control-load-png-note').innerText.includes('seed 33')",
                               timeout=60_000)
        steps = page.locator("input[aria-label='number input for Steps']:visible")
        assert steps.input_value() == "3"
        assert page.locator("#control-use-2 input").is_checked()
        assert page.locator("#control-scale-1 input[type=number]").input_value() == "0.7"
        assert "coffee.jpg" in page.locator("#control-load-png-note").inner_text()


@pytest.mark.browser
def test_browser_load_settings_from_png_fills_the_edit_tab(app, tmp_path, capsys):
    """Every tab has the upload: a CLI edit (seed 12, 3 steps, reference strength 1.5) loaded in
    the Edit with a Reference tab sets its steps and strength (single components by field name)."""
    photo, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    Image.open(EXAMPLES / "rocket.jpg").convert("RGB").resize((96, 64)).save(photo)
    m = Image.new("L", (96, 64), 0)
    m.paste(255, (20, 10, 60, 50))
    m.save(mask)
    code = cli.main(["edit", "--photo", str(photo), "--mask", str(mask), "--reference", str(EXAMPLES / "coffee.jpg"),
                     "--reference-strength", "1.5", "--seed", "12", "--steps", "3", "--max-side", "128",
                     "--profile", "tiny", "--out", str(tmp_path / "out")])
    assert code == 0
    png = next((tmp_path / "out").glob("photo-edit-s12*.png"))
    with chromium_page(app[2]) as page:
        page.get_by_role("tab", name="Edit with a Reference").click()
        page.locator("text=Load settings from a PNG >> visible=true").first.click()
        page.locator("#edit-load-png input[type=file]").set_input_files(str(png))
        page.wait_for_function("() => document.querySelector('#edit-load-png-note').innerText.includes('seed 12')",
                               timeout=60_000)
        assert page.locator("#edit-strength input[type=number]").input_value() == "1.5"
        assert page.locator("input[aria-label='number input for Steps']:visible").input_value() == "3"


def test_every_tab_has_the_load_settings_upload(app):
    ids = {getattr(b, "elem_id", None) for b in app[1].blocks.values()}
    for tab in ("variation", "control", "multi", "compare", "edit", "tryon"):
        assert f"{tab}-load-png" in ids, tab
