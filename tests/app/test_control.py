"""The Reference + ControlNet tab as users and API clients reach it: gradio_client on
``/reference_control``, clear errors (the server keeps serving), and a real browser."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.helpers.app import EXAMPLES, POSE, chromium_page, control_args

pytestmark = pytest.mark.timeout(600)

DEPTH = EXAMPLES / "depth_spheres.png"


def gallery_sizes(gallery):
    return [Image.open(item["image"]).size for item in gallery]


def test_reference_control_endpoint_returns_results_then_maps(client):
    gallery, info, seed = client.predict(*control_args(n=2), api_name="/reference_control")
    assert seed == 3
    assert len(gallery) == 3  # two results, then the control map used
    assert all(item["image"].endswith(".png") for item in gallery)
    assert gallery_sizes(gallery) == [(64, 128)] * 3
    pose_hint = np.asarray(Image.open(POSE).convert("RGB").resize((64, 128), Image.BICUBIC))
    assert np.array_equal(np.asarray(Image.open(gallery[2]["image"]).convert("RGB")), pose_hint)
    assert "seeds 3, 4" in info and "ControlNet 1: **openpose** (as-is)" in info


def test_two_controlnets_through_the_api(client):
    one = client.predict(*control_args(), api_name="/reference_control")[0]
    two = client.predict(*control_args(second=DEPTH), api_name="/reference_control")[0]
    muted = client.predict(*control_args(second=DEPTH, second_scale=0.0), api_name="/reference_control")[0]
    assert len(one) == 2 and len(two) == 3
    px = [np.asarray(Image.open(g[0]["image"]), dtype=np.int16) for g in (one, two, muted)]
    assert np.abs(px[0] - px[1]).max() > 0
    assert np.array_equal(px[0], px[2])


def test_switching_tabs_reloads_nothing(app, client):
    from gradio_client import handle_file

    engine = app[0]
    client.predict(*control_args(steps=1), api_name="/reference_control")
    before = dict(engine.load_counts)
    client.predict(handle_file(str(EXAMPLES / "coffee.jpg")), "SeeCoder", "Tiny SD", 2.0, 1, 64, 64, 1, False, 1, "DDIM",
                   api_name="/image_variation")
    client.predict(*control_args(steps=1), api_name="/reference_control")
    assert dict(engine.load_counts) == before
    assert engine.load_counts[("base_models", "Tiny SD")] == 1 and engine.load_counts[("controlnets", "openpose")] == 1


@pytest.mark.parametrize(
    "case, kwargs, message",
    [
        ("missing control image", {"control": None}, "no control image 1 given: upload a control image for ControlNet 1 ('openpose')"),
        ("missing reference", {"reference": None}, "no reference image given: please upload one"),
        ("aspect ratio", {"control": EXAMPLES / "pose_two_people.png", "width": 64, "height": 256},
         "their aspect ratios differ by 6.0x (more than 2x)"),
        ("photo as canny map", {"kind": "canny", "control": EXAMPLES / "coffee.jpg", "width": 128, "height": 64},
         "control image 1 does not look like a canny map"),
        ("edge map as pose", {"control": EXAMPLES / "canny_house.png"}, "control image 1 does not look like an openpose map"),
        ("missing second image", {"use_second": True}, "no control image 2 given: upload a control image for ControlNet 2 ('depth')"),
        ("scale out of range", {"second": DEPTH, "second_scale": 5.0}, "Value 5.0 is greater than maximum value 2."),
    ],
)
def test_bad_inputs_give_clear_errors_and_server_keeps_serving(client, case, kwargs, message):
    args = control_args(**kwargs)
    with pytest.raises(Exception) as err:
        client.predict(*args, api_name="/reference_control")
    assert message in str(err.value), (case, str(err.value))
    ok = client.predict(*control_args(steps=1), api_name="/reference_control")
    assert len(ok[0]) == 2


def test_unknown_controlnet_name_is_refused(client):
    with pytest.raises(Exception) as err:
        client.predict(*control_args(kind="no-such-controlnet"), api_name="/reference_control")
    assert "Value: no-such-controlnet is not in the list of choices" in str(err.value), str(err.value)


@pytest.mark.browser
def test_browser_reference_and_pose_map_on_control_tab(app, tmp_path):
    engine, demo, url = app
    with chromium_page(url) as page:
        page.get_by_role("tab", name="Reference + ControlNet").click()
        page.locator("#control-reference input[type=file]").set_input_files(str(EXAMPLES / "chelsea.jpg"))
        page.wait_for_selector("#control-reference img", timeout=30_000)
        page.locator("#control-image-1 input[type=file]").set_input_files(str(POSE))
        page.wait_for_selector("#control-image-1 img", timeout=30_000)
        # the size follows the 2:3 pose map (tiny profile: scaled into 256 px, ratio kept)
        width = page.locator("input[aria-label='number input for Width']:visible")
        height = page.locator("input[aria-label='number input for Height']:visible")
        page.wait_for_function(  # the default is 256 x 256: wait for the width to change
            """() => [...document.querySelectorAll("input[aria-label='number input for Width']")]
                     .some(e => e.offsetParent !== null && e.value === '128')""", timeout=30_000)
        assert width.input_value() == "128" and height.input_value() == "256"
        steps = page.locator("input[aria-label='number input for Steps']:visible")
        steps.fill("2")
        steps.press("Enter")
        page.locator("#control-run").click()
        page.wait_for_selector("#control-gallery img", timeout=240_000)
        page.wait_for_function("() => document.querySelectorAll('#control-gallery img').length >= 2", timeout=60_000)
        assert page.locator("#control-gallery img").count() >= 2  # the result and the pose map
        page.wait_for_function("() => document.querySelector('#control-info').innerText.includes('128x256')",
                               timeout=30_000)
        page.screenshot(path=str(tmp_path / "control.png"))


@pytest.fixture
def offline_no_annotators(monkeypatch, tmp_path):
    import huggingface_hub.constants as C

    monkeypatch.delenv("PFD_ANNOTATOR_DIR", raising=False)
    cache = tmp_path / "empty-hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read by prompt_free.settings.hub_offline
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(cache))


def test_missing_annotator_weights_are_explained(client, offline_no_annotators):
    from prompt_free.app.widgets import annotator_note

    note = annotator_note("preprocess", "openpose_full")
    assert "PFD_ANNOTATOR_DIR" in note and "use as-is" in note
    assert annotator_note("use as-is", "openpose_full") == "" and annotator_note("preprocess", "canny") == ""
    with pytest.raises(Exception) as err:
        client.predict(*control_args(control=EXAMPLES / "astronaut.jpg", mode="preprocess", width=128, height=128),
                       api_name="/reference_control")
    msg = str(err.value)
    assert "body_pose_model.pth" in msg and "'use as-is'" in msg, msg
    # canny needs no weights: preprocessing works offline
    gallery = client.predict(*control_args(kind="canny", control=EXAMPLES / "coffee.jpg", mode="preprocess",
                                           preprocessor="canny", width=128, height=64), api_name="/reference_control")[0]
    assert len(gallery) == 2
