"""Every example of every tab runs on the offline tiny profile exactly as shipped: one click on
the example, one on the tab's button, and a picture comes back (no error, no missing detector)."""

from __future__ import annotations

import pytest

from tests.helpers.app import chromium_page, wait_for_result_or_error

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

# tab label, elem_id prefix, where the first picture shows, (where, what) the finished run says
TABS = [
    ("Image Variation", "variation", "#variation-gallery img", ("#variation-info", "seeds")),
    ("Reference + ControlNet", "control", "#control-gallery img", ("#control-info", "seeds")),
    ("Multi-Reference", "multi", "#multi-gallery img", ("#multi-info", "seeds")),
    ("Dual-ControlNet Comparison", "compare", "#compare-image-prompt-free img", ("#compare-stats-prompt-free", "wall")),
    ("Edit with a Reference", "edit", "#edit-gallery img", ("#edit-info", "seeds")),
    ("Virtual Try-On", "tryon", "#tryon-gallery img", ("#tryon-info", "seeds")),
]


def _click_first_example(page, prefix: str) -> None:
    examples = page.locator(f"#{prefix}-examples")
    assert examples.count() == 1, f"the {prefix} tab has no examples"
    cell = examples.locator('[data-testid^="dataset-cell-0-"], [data-testid^="dataset-cell-"], button').first
    cell.click()


def wait_until_finished(page, done) -> None:
    """A live preview shows a picture too: the run is over when its info says so."""
    where, text = done
    page.wait_for_function(f"() => (document.querySelector({where!r}) || {{}}).innerText?.includes({text!r})",
                           timeout=600_000)


@pytest.mark.parametrize("label,prefix,result,done", TABS, ids=[t[1] for t in TABS])
def test_each_tab_s_first_example_gives_a_picture(app, label, prefix, result, done):
    _, _, url = app
    with chromium_page(url) as page:
        page.get_by_role("tab", name=label).click()
        page.locator(f"#{prefix}-run").wait_for(state="visible", timeout=30_000)
        _click_first_example(page, prefix)
        page.wait_for_timeout(1500)  # the example's inputs reach their components (and the mask editors)
        steps = page.locator(f"#{prefix}-steps input[type=number]")
        if steps.count():  # a short run: the example, not the sampler, is under test
            steps.fill("2")
            steps.press("Enter")
        page.locator(f"#{prefix}-run").click()
        wait_for_result_or_error(page, result, timeout_s=600)
        wait_until_finished(page, done)
