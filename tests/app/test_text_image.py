"""Reference strength, prompt and blocks through the app (issue 14): gradio_client calls with the
new parameter names and without them (today's picture), clear errors, the comparison's optional
fourth column, and a real browser run with a prompt."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.helpers.app import EXAMPLES, chromium_page, pictures, wait_for_result_or_error

pytestmark = pytest.mark.timeout(600)

S = 64


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "chelsea_small.png"
    Image.open(EXAMPLES / "chelsea.jpg").convert("RGB").resize((S, S), Image.BICUBIC).save(path)
    return path


def _pictures(value):
    return [np.asarray(p, dtype=np.int16) for p in pictures(value)]


def variation_args(reference):
    from gradio_client import handle_file

    return [handle_file(str(reference)), "SeeCoder", "Tiny SD", 2.0, 2, S, S, 9, False, 1, "DDIM"]


def test_variation_endpoint_takes_the_new_names_and_leaves_them_neutral(client, small_reference):
    args = variation_args(small_reference)
    today = _pictures(client.predict(*args, api_name="/image_variation")[0])
    neutral = client.predict(*args, reference_strength=1.0, prompt="", prompt_mode="concat", prompt_weight=1.0,
                             blocks="all", api_name="/image_variation")
    assert len(today) == 1 and np.array_equal(_pictures(neutral[0])[0], today[0])
    for kw in (dict(reference_strength=0.4), dict(prompt="a cat"), dict(prompt="a cat", prompt_mode="style"),
               dict(blocks="style"), dict(blocks="layout")):
        got = client.predict(*args, **kw, api_name="/image_variation")
        assert np.abs(_pictures(got[0])[0] - today[0]).mean() > 0.5, kw
    info = client.predict(*args, prompt="a cat", blocks="layout", reference_strength=0.5, api_name="/image_variation")[1]
    assert "prompt (concat)" in info and "layout blocks only" in info and "reference strength 0.5" in info


@pytest.mark.parametrize("kw, message", [
    # Gradio checks the sliders' and dropdowns' bounds from settings.py (the library checks again)
    (dict(reference_strength=2.5), "Value 2.5 is greater than maximum value 2"),
    (dict(prompt="a cat", prompt_weight=-1), "Value -1 is less than minimum value 0"),
    (dict(prompt="a cat", prompt_mode="mix"), "'mix' (type: <class 'str'>) is not in the list of choices: ['concat', 'style']"),
    (dict(blocks="middle"), "middle is not in the list of choices: ['all', 'style', 'layout']"),
    (dict(prompt=" ".join(["zebra"] * 80)), "prompt is too long: 240 tokens, and the CLIP text encoder takes at most 75"),
])
def test_variation_endpoint_bad_values_get_clear_errors(client, small_reference, kw, message):
    with pytest.raises(Exception) as err:
        client.predict(*variation_args(small_reference), **kw, api_name="/image_variation")
    text = str(err.value)
    assert message in text and "Unexpected error" not in text, text


def test_reference_control_endpoint_takes_prompt_and_blocks_by_name(client, small_reference):
    from gradio_client import handle_file

    args = [handle_file(str(small_reference)), "SeeCoder", "Tiny SD",
            "openpose", handle_file(str(EXAMPLES / "pose_standing.png")), "use as-is", "openpose_full", 1.0, 0.0, 1.0,
            False, "canny", None, "use as-is", "canny", 1.0, 0.0, 1.0,
            True, 2.0, 2, S, S, 4, False, 1, "DDIM"]
    today = _pictures(client.predict(*args, api_name="/reference_control")[0])
    same = _pictures(client.predict(*args, reference_strength=1, prompt="  ", api_name="/reference_control")[0])
    assert all(np.array_equal(a, b) for a, b in zip(today, same)) and len(today) == 2  # result + the map
    styled = _pictures(client.predict(*args, prompt="a house", prompt_mode="style", prompt_weight=1.5,
                                      api_name="/reference_control")[0])
    assert np.abs(styled[0] - today[0]).mean() > 0.5
    assert np.array_equal(styled[1], today[1])  # the same control map


def test_compare_fourth_column_only_when_asked_and_the_others_unchanged(client, small_reference):
    from gradio_client import handle_file

    args = [handle_file(str(small_reference)), handle_file(str(EXAMPLES / "pose_standing.png")), "openpose",
            "use as-is", "openpose_full", "SeeCoder", "Tiny SD", True, False, False, "a cat", "", 1.0, 1.0,
            2.0, 2, S, S, 6, False, "DDIM"]
    off = client.predict(*args, api_name="/compare")
    assert len(off) == 10 and "Prompt-Free + text" not in off[6]
    on = client.predict(*args, prompt_free_text_column=True, prompt_weight=1.0, api_name="/compare")
    assert len(on) == 10  # the same outputs: the new column is in the download and the table
    assert np.array_equal(_pictures(on[0])[0], _pictures(off[0])[0])  # column 1 as before
    assert Image.open(off[7]).size == (S, S) and Image.open(on[7]).size == (2 * S + 8, S)
    side = np.asarray(Image.open(on[7]).convert("RGB"), dtype=np.int16)
    assert np.array_equal(side[:, :S], _pictures(on[0])[0])
    assert np.abs(side[:, S + 8:] - side[:, :S]).mean() > 0.5  # the text column differs from column 1
    assert "Prompt-Free + text (concat)" in on[6] and "a cat" in on[6]  # in the differences table
    half = client.predict(*args, reference_strength=0.5, api_name="/compare")
    assert np.abs(_pictures(half[0])[0] - _pictures(off[0])[0]).mean() > 0.5
    with pytest.raises(Exception) as err:
        client.predict(*args[:10], "", *args[11:], prompt_free_text_column=True, api_name="/compare")
    assert "needs a prompt" in str(err.value)


def test_tryon_endpoint_takes_reference_strength(client):
    from gradio_client import handle_file

    args = [handle_file(str(EXAMPLES / "tryon_person.png")), handle_file(str(EXAMPLES / "tryon_garment_shirt.png")),
            handle_file(str(EXAMPLES / "tryon_person_mask.png")), "mask image", "SeeCoder", "Tiny SD", 4, 4, True,
            False, 2.0, 2, 25, False, 1, "DDIM", 128]
    today = _pictures(client.predict(*args, api_name="/virtual_tryon")[0])
    same = _pictures(client.predict(*args, reference_strength=1.0, api_name="/virtual_tryon")[0])
    weak = _pictures(client.predict(*args, reference_strength=0.0, api_name="/virtual_tryon")[0])
    assert np.array_equal(today[0], same[0]) and not np.array_equal(today[0], weak[0])


@pytest.mark.browser
def test_browser_new_controls_exist_and_a_run_with_a_prompt_works(app, small_reference, tmp_path):
    engine, demo, url = app
    with chromium_page(url) as page:
        page.locator("#variation-options").get_by_text("Reference strength and text").click()  # closed at first
        for elem in ("variation-strength", "variation-prompt", "variation-prompt-mode", "variation-prompt-weight",
                     "variation-blocks"):
            page.wait_for_selector(f"#{elem}", state="visible", timeout=30_000)
        page.locator("#variation-reference input[type=file]").set_input_files(str(small_reference))
        page.wait_for_selector("#variation-reference img", timeout=30_000)
        for label, value in (("Steps", "2"), ("Width", "64"), ("Height", "64")):  # a quick run
            box = page.get_by_label(f"number input for {label}").first
            box.fill(value)
            box.press("Enter")
        page.locator("#variation-prompt textarea").fill("a red cat")
        page.locator("#variation-blocks input").click()
        page.get_by_role("option", name="style only").click()
        page.wait_for_timeout(300)
        page.locator("#variation-run").click()
        wait_for_result_or_error(page, "#variation-gallery img")
        page.wait_for_function("() => (document.querySelector('#variation-info') || {}).innerText?.includes('prompt')",
                               timeout=30_000)
        info = page.locator("#variation-info").inner_text()
        assert "prompt (concat)" in info and "style blocks only" in info and "64x64" in info, info
        page.screenshot(path=str(tmp_path / "variation-text.png"), full_page=True)

        page.get_by_role("tab", name="Reference + ControlNet").click()
        page.locator("#control-options").get_by_text("Reference strength and text").click()
        for elem in ("control-strength", "control-prompt", "control-prompt-mode", "control-prompt-weight",
                     "control-blocks"):
            page.wait_for_selector(f"#{elem}", state="visible", timeout=30_000)
        page.get_by_role("tab", name="Comparison").click()
        for elem in ("compare-strength", "compare-use-prompt-free-text", "compare-prompt-weight",
                     "compare-image-prompt-free-text"):
            page.wait_for_selector(f"#{elem}", state="visible", timeout=30_000)
        # the fourth column: ticked, with a prompt, it shows its picture and stats
        page.locator("#compare-reference input[type=file]").set_input_files(str(small_reference))
        page.wait_for_selector("#compare-reference img", timeout=30_000)
        page.locator("#compare-structure input[type=file]").set_input_files(str(EXAMPLES / "pose_standing.png"))
        page.wait_for_selector("#compare-structure img", timeout=30_000)
        page.locator("#compare-use-dual input").uncheck()
        page.locator("#compare-use-prompt-free-text input").check()
        page.get_by_text("Baseline settings (text-based columns)").click()
        prompt = page.locator("#compare-prompt textarea")
        prompt.wait_for(state="visible", timeout=30_000)
        prompt.click()
        prompt.press_sequentially("a cat")  # typed as a person types: each key an input event Gradio sees
        prompt.press("Tab")  # the value reaches Gradio before the run (a loaded machine lost a plain fill once)
        for elem in ("compare-steps", "compare-width", "compare-height"):
            box = page.locator(f"#{elem} input[type=number]")
            box.fill("2" if elem == "compare-steps" else "64")
            box.press("Enter")
        page.wait_for_timeout(1000)
        page.locator("#compare-run").click()
        wait_for_result_or_error(page, "#compare-image-prompt-free-text img")
        page.wait_for_function(
            "() => (document.querySelector('#compare-stats-prompt-free-text') || {}).innerText?.includes('wall')",
            timeout=30_000)
        assert "switched off" in page.locator("#compare-stats-dual").inner_text()
        page.get_by_role("tab", name="Virtual Try-On").click()
        page.wait_for_selector("#tryon-strength", state="visible", timeout=30_000)
