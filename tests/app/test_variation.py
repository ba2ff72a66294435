"""The app as users and API clients reach it: in-process server, gradio_client, real browser."""

from __future__ import annotations

import pytest

from tests.helpers.app import EXAMPLES, chromium_page, variation_args

pytestmark = pytest.mark.timeout(600)


def test_variation_endpoint_returns_png_images_with_seed(app):
    from gradio_client import Client
    from PIL import Image

    engine, demo, url = app
    client = Client(url, verbose=False)
    gallery, info, seed = client.predict(*variation_args(EXAMPLES / "coffee.jpg", n=2), api_name="/image_variation")
    assert seed == 3
    assert len(gallery) == 2
    for item in gallery:
        assert item["image"].endswith(".png")
        assert Image.open(item["image"]).size == (128, 128)
    assert "seeds 3, 4" in info


def test_variation_endpoint_same_seed_same_pixels(app):
    from gradio_client import Client
    from PIL import Image
    import numpy as np

    client = Client(app[2], verbose=False)
    a = client.predict(*variation_args(EXAMPLES / "chelsea.jpg", seed=9), api_name="/image_variation")[0][0]
    b = client.predict(*variation_args(EXAMPLES / "chelsea.jpg", seed=9), api_name="/image_variation")[0][0]
    assert np.array_equal(np.asarray(Image.open(a["image"])), np.asarray(Image.open(b["image"])))


@pytest.mark.parametrize(
    "case, args_patch, message",
    [
        ("missing image", {0: None}, "no reference image given: please upload one"),
        # Gradio validates slider ranges and dropdown choices itself, with clear messages;
        # the library's own messages for these are tested in tests/unit/test_engine.py.
        ("unknown base model", {2: "SD 9"}, "Value: SD 9 is not in the list of choices"),
        ("steps out of range", {4: 500}, "Value 500 is greater than maximum value 150."),
        ("size out of range", {5: 5000}, "Value 5000 is greater than maximum value 1536."),
        ("unknown scheduler", {10: "Nope"}, "Value: Nope is not in the list of choices"),
    ],
)
def test_variation_bad_inputs_give_clear_errors_and_server_keeps_serving(app, case, args_patch, message, tmp_path):
    from gradio_client import Client

    client = Client(app[2], verbose=False)
    args = variation_args(EXAMPLES / "coffee.jpg")
    for i, v in args_patch.items():
        args[i] = v
    with pytest.raises(Exception) as err:
        client.predict(*args, api_name="/image_variation")
    assert message in str(err.value), (case, str(err.value))
    # the server still answers
    ok = client.predict(*variation_args(EXAMPLES / "coffee.jpg", steps=1, size=64), api_name="/image_variation")
    assert len(ok[0]) == 1


def test_variation_corrupt_upload_gives_clear_error(app, tmp_path):
    """A picture whose header reads but whose data is cut off reaches the library, which says so."""
    import io

    from gradio_client import Client
    from PIL import Image

    buf = io.BytesIO()
    Image.open(EXAMPLES / "coffee.jpg").convert("RGB").resize((64, 64)).save(buf, format="PNG")
    bad = tmp_path / "truncated.png"
    bad.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    client = Client(app[2], verbose=False)
    with pytest.raises(Exception) as err:
        client.predict(*variation_args(bad), api_name="/image_variation")
    assert "reference image could not be read as an image (the file is truncated)" in str(err.value), str(err.value)


def test_variation_unidentifiable_upload_gives_clear_error(app, tmp_path):
    """Bytes PIL cannot identify reach the project's opener (ui.uploads.image_input), which says so."""
    from gradio_client import Client

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    client = Client(app[2], verbose=False)
    with pytest.raises(Exception) as err:
        client.predict(*variation_args(bad), api_name="/image_variation")
    assert "reference image could not be read as an image (" in str(err.value), str(err.value)
    assert str(tmp_path) not in str(err.value)  # no server directory in the message
    ok = client.predict(*variation_args(EXAMPLES / "coffee.jpg", steps=1, size=64), api_name="/image_variation")
    assert len(ok[0]) == 1


def test_app_shows_offline_banner_in_tiny_profile(app):
    engine, demo, url = app
    assert engine.banner and "NOT meaningful" in engine.banner


@pytest.mark.browser
def test_browser_upload_and_generate_on_variation_tab(app, tmp_path):
    engine, demo, url = app
    with chromium_page(url) as page:
        page.wait_for_selector(".pfd-banner", state="visible", timeout=30_000)
        assert "NOT meaningful" in page.locator(".pfd-banner").first.inner_text()
        page.locator("#variation-reference input[type=file]").set_input_files(str(EXAMPLES / "astronaut.jpg"))
        page.wait_for_selector("#variation-reference img", timeout=30_000)
        page.locator("#variation-run").click()
        page.wait_for_selector("#variation-gallery img", timeout=240_000)
        assert page.locator("#variation-gallery img").count() >= 1
        page.screenshot(path=str(tmp_path / "variation.png"))
        # the "Models in memory" panel lists what the run loaded, with the budget
        page.locator("#memory-panel").get_by_text("Models in memory").click()
        page.locator("#memory-refresh").click()
        page.wait_for_function(
            "() => (document.querySelector('#memory-report') || {}).innerText?.includes('Tiny SD')", timeout=30_000)
        report = page.locator("#memory-report").inner_text()
        assert "base model" in report and "seecoder" in report and "budget on cpu" in report, report


def test_the_app_shows_no_step_bar_even_on_a_terminal(app):
    """The tabs show their own progress: the engine's tqdm bar is off in the app (a bar would be a
    second progress tracked by Gradio and would fill the server's log)."""
    import io

    from gradio_client import Client

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    engine, demo, url = app
    terminal = Terminal()
    engine.set_progress_bar_config(file=terminal)  # what a bar on a terminal would write to
    try:
        Client(url, verbose=False).predict(*variation_args(EXAMPLES / "coffee.jpg"), api_name="/image_variation")
    finally:
        engine.set_progress_bar_config(file=None)
    assert engine.progress_bar_config["disable"] is True and terminal.getvalue() == ""
