"""Quick mode through the app: every generating endpoint takes ``deep_cache`` after its LoRA
parameters, before ``previews`` (left out: the exact picture, pinned by tests/pins/test_pixel_pins.py), hands it to its task,
and says in its info line that the picture is approximate."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.app import endpoint_calls, pictures

pytestmark = pytest.mark.timeout(600)


def _texts(value) -> str:
    return " ".join(v for v in value if isinstance(v, str)) if isinstance(value, (list, tuple)) else str(value)


def test_variation_in_quick_mode_is_another_picture_and_says_approximate(client):
    args = endpoint_calls()["/image_variation"]
    exact = client.predict(*args, api_name="/image_variation")
    quick = client.predict(*args, deep_cache=2, api_name="/image_variation")
    a, b = (np.asarray(p) for p in (pictures(exact)[0], pictures(quick)[0]))
    assert a.shape == b.shape and not np.array_equal(a, b)
    assert "quick mode N=2 (approximate)" in _texts(quick) and "approximate" not in _texts(exact)
    again = client.predict(*args, deep_cache=1, api_name="/image_variation")
    assert np.array_equal(np.asarray(pictures(again)[0]), a)  # 1 is off: the exact picture


@pytest.mark.parametrize("endpoint", ["/reference_control", "/multi_reference", "/compare", "/virtual_tryon",
                                      "/edit_reference"])
def test_every_endpoint_hands_deep_cache_to_its_task(client, endpoint):
    args = endpoint_calls()[endpoint]
    exact = [np.asarray(p) for p in pictures(client.predict(*args, api_name=endpoint))]
    quick = [np.asarray(p) for p in pictures(client.predict(*args, deep_cache=3, api_name=endpoint))]
    assert len(quick) == len(exact) and all(a.shape == b.shape for a, b in zip(exact, quick))
    assert any(not np.array_equal(a, b) for a, b in zip(exact, quick))  # the task sampled in quick mode


def test_an_interval_out_of_range_is_refused_with_a_message(client):
    with pytest.raises(Exception) as e:
        client.predict(*endpoint_calls()["/image_variation"], deep_cache=11, api_name="/image_variation")
    assert "11" in str(e.value) and "10" in str(e.value)


@pytest.mark.browser
def test_browser_load_settings_from_png_sets_the_quick_mode_slider(app, tmp_path):
    """A CLI picture made with --deep-cache 3, loaded in the Image Variation tab, sets its quick-mode
    slider, whose label says approximate."""
    from prompt_free import cli
    from tests.helpers.app import EXAMPLES, chromium_page

    code = cli.main(["generate", "--reference", str(EXAMPLES / "coffee.jpg"), "--deep-cache", "3", "--seed", "31",
                     "--steps", "3", "--size", "64x64", "--profile", "tiny", "--out", str(tmp_path)])
    assert code == 0
    with chromium_page(app[2]) as page:
        assert not page.locator("#variation-deep-cache").is_visible()  # advanced: closed at first
        page.locator("#variation-quick").get_by_text("Quick mode", exact=True).first.click()
        assert "approximate" in page.locator("#variation-deep-cache").inner_text()
        page.get_by_text("Load settings from a PNG").first.click()
        page.locator("#variation-load-png input[type=file]").set_input_files(str(tmp_path / "coffee-s31.png"))
        page.wait_for_function("() => document.querySelector('#variation-load-png-note').innerText.includes('seed 31')",
                               timeout=60_000)
        assert page.locator("#variation-deep-cache input[type=number]").input_value() == "3"
