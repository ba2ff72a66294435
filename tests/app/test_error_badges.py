"""A refused run marks the results, never the Seed box (an input the run also writes back): the
"Error" badge used to stay on Seed after a refused request."""

from __future__ import annotations

import pytest

from tests.helpers.app import chromium_page

pytestmark = [pytest.mark.timeout(600), pytest.mark.browser]


def test_a_refused_run_leaves_no_error_badge_on_the_seed(app):
    with chromium_page(app[2]) as page:
        page.locator("#variation-run").click()  # no reference image: refused with a message
        page.wait_for_selector(".toast-body", timeout=120_000)
        assert "reference" in page.locator(".toast-body").first.inner_text().lower()
        page.wait_for_selector("#variation-gallery .error", timeout=30_000)  # the run's own outputs say so
        assert page.locator("#variation-seed .error").count() == 0


def test_every_run_event_shows_its_progress_off_the_seed(app):
    engine, demo, url = app
    runs = [d for d in demo.fns.values() if d.api_name in {
        "image_variation", "reference_control", "multi_reference", "compare", "virtual_tryon", "edit_reference"}]
    assert len(runs) == 6
    for d in runs:
        seed = next(c for c in d.outputs if getattr(c, "label", None) == "Seed")
        assert d.show_progress_on and seed not in d.show_progress_on, d.api_name
