"""The balance through the server (gradio_client): left empty it is the picture of a call that
leaves it out, bit for bit; 0.5 with a prompt changes it and the info line reports the balance
and its calibrated text bias; without a prompt it is a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.helpers.app import EXAMPLES, variation_args

pytestmark = pytest.mark.timeout(600)


def test_balance_through_the_endpoint(app):
    from gradio_client import Client

    client = Client(app[2], verbose=False)

    def picture(**kw):
        out = client.predict(*variation_args(EXAMPLES / "chelsea.jpg", steps=2, size=64), api_name="/image_variation",
                             prompt="a red car", **kw)
        return np.asarray(Image.open(out[0][0]["image"]).convert("RGB")), out[1]

    today, _ = picture()
    off, _ = picture(balance=None)
    assert np.array_equal(off, today)
    half, info = picture(balance=0.5)
    assert not np.array_equal(half, today) and "balance 0.5" in info and "text bias " in info
    with pytest.raises(Exception, match="give a prompt"):
        client.predict(*variation_args(EXAMPLES / "chelsea.jpg", steps=2, size=64), api_name="/image_variation",
                       balance=0.5)


@pytest.mark.browser
def test_browser_balance_is_off_until_turned_on(app, tmp_path):
    """The balance's UI: a checkbox and a slider that write the hidden ``balance`` parameter. With
    the accordion open and the box unchecked a prompted run has no balance (a rendered Gradio
    Number would send 0: the reference only); checked, the slider's 0.5 reaches the run."""
    from tests.helpers.app import chromium_page

    engine, demo, url = app
    with chromium_page(url) as page:
        page.locator("#variation-reference input[type=file]").set_input_files(str(EXAMPLES / "chelsea.jpg"))
        page.wait_for_selector("#variation-reference img", timeout=30_000)
        page.locator("#variation-options").get_by_text("Reference strength and text").click()
        page.locator("#variation-prompt textarea").fill("a red car")
        page.locator("#variation-more").get_by_text("More reference controls").first.click()
        page.wait_for_selector("#variation-balance-on", state="visible", timeout=30_000)
        for field, value in (("steps", "2"), ("width", "64"), ("height", "64")):
            number = page.locator(f"#variation-{field} input[type=number]")
            number.fill(value)
            number.press("Enter")

        def run_info(wanted: str) -> str:
            page.locator("#variation-run").click()
            page.wait_for_function(
                f"() => (document.querySelector('#variation-info') || {{}}).innerText?.includes('{wanted}')",
                timeout=240_000)
            return page.locator("#variation-info").inner_text()

        off = run_info("seed")
        assert "balance" not in off and "prompt (concat)" in off, off
        page.locator("#variation-balance-on input").check()
        page.wait_for_timeout(500)
        on = run_info("balance")
        assert "balance 0.5" in on, on
        page.screenshot(path=str(tmp_path / "balance.png"))
