"""The "Speed" choice of every tab: Paper (DDIM, 50 steps) and Quick (DPM++ 2M Karras, 20 steps)
set the sampler controls, which stay editable; UI only (no endpoint parameter)."""

from __future__ import annotations

import pytest

from prompt_free.sampling import SCHEDULERS
from tests.helpers.app import chromium_page

pytestmark = pytest.mark.timeout(600)


def test_presets_name_real_schedulers():
    from prompt_free.app.widgets import SPEED_PRESETS

    assert SPEED_PRESETS == {"Paper": ("DDIM", 50), "Quick": ("DPM++ 2M Karras", 20)}
    assert all(name in SCHEDULERS for name, _ in SPEED_PRESETS.values())


def test_speed_starts_at_the_preset_the_controls_start_at():
    from prompt_free.app.widgets import preset_of

    assert preset_of("DDIM", 50) == "Paper" and preset_of("DPM++ 2M Karras", 20.0) == "Quick"
    assert preset_of("DDIM", 20) is None and preset_of("Euler a", 50) is None


def test_every_tab_has_the_speed_choice_and_no_endpoint_takes_it(app):
    from prompt_free.app import TABS

    engine, demo, url = app
    radios = [b for b in demo.blocks.values() if "pfd-speed" in (getattr(b, "elem_classes", None) or [])]
    assert len(radios) == len(TABS) == 6
    # the offline demo starts at 20 DDIM steps: neither preset, so Speed shows none (it agrees with Steps)
    assert all(r.value is None and r.choices == [("Paper", "Paper"), ("Quick", "Quick")] for r in radios)
    from gradio_client import Client

    api = Client(url, verbose=False).view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert not [name for name, e in api.items() for p in e["parameters"] if "speed" in p["parameter_name"].lower()]


@pytest.mark.browser
def test_browser_quick_sets_steps_and_sampler_and_paper_sets_them_back(app):
    engine, demo, url = app
    with chromium_page(url) as page:
        page.get_by_role("tab", name="Multi-Reference").click()
        steps = page.locator("#multi-steps input[type=number]")
        sampler = page.locator("#multi-scheduler input")
        steps.wait_for(state="visible", timeout=30_000)
        steps.fill("7")
        steps.press("Enter")
        page.locator("#multi-speed").get_by_label("Quick").check()
        page.wait_for_function("() => document.querySelector('#multi-steps input[type=number]').value === '20'",
                               timeout=30_000)
        assert sampler.input_value() == "DPM++ 2M Karras"
        steps.fill("12")  # still editable after a preset
        steps.press("Enter")
        assert steps.input_value() == "12"
        page.locator("#multi-speed").get_by_label("Paper").check()
        page.wait_for_function("() => document.querySelector('#multi-steps input[type=number]').value === '50'",
                               timeout=30_000)
        assert sampler.input_value() == "DDIM"
