"""The Multi-Reference tab as API clients and users reach it: gradio_client on ``/multi_reference``
(the neutral blends equal ``/image_variation`` bit for bit, masks as files, a ControlNet, clear
errors while the server keeps serving) and a real browser."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.helpers.app import EXAMPLES, chromium_page

pytestmark = pytest.mark.timeout(600)

A, B = EXAMPLES / "chelsea.jpg", EXAMPLES / "coffee.jpg"
POSE = EXAMPLES / "pose_standing.png"


def multi_args(refs=(A, B), weights=(1.0, 1.0), masks=(), blend="average", *, use_control=False, control=POSE,
               steps=2, width=64, height=64, seed=3, n=1):
    from gradio_client import handle_file

    def f(p):
        return handle_file(str(p)) if p else None

    def four(values, fill):
        values = list(values)
        return values + [fill] * (4 - len(values))

    return [
        *[f(r) for r in four(refs, None)], *four(weights, 1.0), *[f(m) for m in four(masks, None)],
        blend, "SeeCoder", "Tiny SD",
        use_control, "openpose", f(control), "use as-is", "openpose_full", 1.0, 0.0, 1.0,
        False, "depth", None, "use as-is", "depth", 1.0, 0.0, 1.0, True,
        2.0, steps, width, height, seed, False, n, "DDIM",
    ]


def variation(client, ref, *, steps=2, width=64, height=64, seed=3, n=1):
    from gradio_client import handle_file

    return client.predict(handle_file(str(ref)), "SeeCoder", "Tiny SD", 2.0, steps, width, height, seed, False, n,
                          "DDIM", api_name="/image_variation")


def pixels(gallery):
    return [np.asarray(Image.open(item["image"]).convert("RGB"), dtype=np.int16) for item in gallery]


def same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(pixels(a), pixels(b)))


def mask_file(tmp_path, name, size, box=None, value=255):
    m = Image.new("L", size, 0 if box else value)
    if box:
        m.paste(value, box)
    path = tmp_path / name
    m.save(path)
    return path


def test_neutral_blends_through_the_api_equal_image_variation(client, tmp_path):
    want = variation(client, A, n=2, width=128)[0]
    gallery, info, seed = client.predict(*multi_args(weights=(1.0, 0.0), n=2, width=128), api_name="/multi_reference")
    assert seed == 3 and len(gallery) == 2
    assert same(gallery, want)
    assert "**average** of references 1 (weight 1) · 148 tokens" in info and "reference 2 left out (weight 0)" in info
    white, black = mask_file(tmp_path, "white.png", (128, 64)), mask_file(tmp_path, "black.png", (128, 64), value=0)
    gallery, info, _ = client.predict(*multi_args(masks=(white, black), blend="regions", n=2, width=128),
                                      api_name="/multi_reference")
    assert same(gallery, want)
    assert "**regions** of references 1 (weight 1, masked), 2 (weight 1, masked) · 296 tokens" in info


def test_each_blend_through_the_api_mixes_the_references(client, tmp_path):
    singles = [variation(client, r)[0] for r in (A, B)]
    right = mask_file(tmp_path, "right.png", (32, 32), box=(16, 0, 32, 32))  # another size: resized
    outs = {}
    for blend, masks in (("average", ()), ("concatenate", ()), ("regions", (None, right))):
        gallery, info, _ = client.predict(*multi_args(masks=masks, blend=blend), api_name="/multi_reference")
        assert not any(same(gallery, s) for s in singles), blend
        outs[blend] = pixels(gallery)[0]
        if blend == "concatenate":
            assert "296 tokens" in info
        if blend == "regions":
            assert "Note: mask 2 was 32x32, resized to the output's 64x64" in info
    assert not np.array_equal(outs["average"], outs["concatenate"])
    assert not np.array_equal(outs["average"], outs["regions"])


def test_multi_reference_with_a_controlnet_returns_results_then_the_map(client):
    gallery, info, _ = client.predict(*multi_args(use_control=True, width=64, height=128), api_name="/multi_reference")
    assert len(gallery) == 2
    pose_hint = np.asarray(Image.open(POSE).convert("RGB").resize((64, 128), Image.BICUBIC), dtype=np.int16)
    assert np.array_equal(pixels(gallery)[1], pose_hint)
    assert "ControlNet 1: **openpose** (as-is)" in info
    # unticked, the ControlNet inputs are ignored
    plain = client.predict(*multi_args(use_control=False, width=64, height=128), api_name="/multi_reference")[0]
    assert len(plain) == 1


@pytest.mark.parametrize("case, kwargs, message", [
    ("all weights zero", {"weights": (0.0, 0.0)}, "all reference weights are 0 (weight 1, weight 2)"),
    ("no reference", {"refs": ()}, "no reference image given: upload at least one reference"),
    ("regions without mask 2", {"blend": "regions"}, "reference 2 has no region mask"),
    ("weight over the slider", {"weights": (1.0, 3.0)}, "Value 3.0 is greater than maximum value 2."),
    ("unknown blend", {"blend": "mean"}, "Value: 'mean' (type: <class 'str'>) is not in the list of choices: ['average', 'concatenate', 'regions']"),
])
def test_bad_inputs_give_clear_errors_and_the_server_keeps_serving(client, case, kwargs, message):
    with pytest.raises(Exception) as err:
        client.predict(*multi_args(**kwargs), api_name="/multi_reference")
    assert message in str(err.value), (case, str(err.value))
    assert len(client.predict(*multi_args(steps=1), api_name="/multi_reference")[0]) == 1


def test_unreadable_mask_upload_gives_clear_error(client, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(Exception) as err:
        client.predict(*multi_args(masks=(None, bad), blend="regions"), api_name="/multi_reference")
    assert "mask 2 could not be read as an image (" in str(err.value), str(err.value)
    assert str(tmp_path) not in str(err.value)


@pytest.mark.browser
def test_browser_two_references_and_a_region_mask_on_the_multi_reference_tab(app, tmp_path):
    engine, demo, url = app
    right = mask_file(tmp_path, "right.png", (256, 256), box=(128, 0, 256, 256))
    with chromium_page(url) as page:
        page.get_by_role("tab", name="Multi-Reference").click()
        page.wait_for_selector("#multi-reference-1", state="visible", timeout=30_000)
        for i, ref in ((1, A), (2, B)):
            page.locator(f"#multi-reference-{i} input[type=file]").set_input_files(str(ref))
            page.wait_for_selector(f"#multi-reference-{i} img", timeout=30_000)
        steps = page.locator("#multi-steps input[type=number]")
        steps.fill("2")
        steps.press("Enter")
        page.locator("#multi-blend").get_by_text("regions", exact=True).click()
        page.wait_for_timeout(300)
        # regions without a mask for reference 2: the app says what is missing
        page.locator("#multi-run").click()
        page.wait_for_selector(".toast-body", timeout=120_000)
        assert "reference 2 has no region mask" in page.locator(".toast-body").first.inner_text()
        page.locator("#multi-mask-2 input[type=file]").set_input_files(str(right))
        page.wait_for_selector("#multi-mask-2 img", timeout=30_000)
        page.locator("#multi-run").click()
        page.wait_for_selector("#multi-gallery img", timeout=240_000)
        page.wait_for_function(
            "() => (document.querySelector('#multi-info') || {}).innerText?.includes('regions')", timeout=30_000)
        assert "296 tokens" in page.locator("#multi-info").inner_text()
        page.screenshot(path=str(tmp_path / "multi_reference.png"), full_page=True)
