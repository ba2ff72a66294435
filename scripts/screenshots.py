"""Take README screenshots of the app's tabs (tiny profile, offline): python scripts/screenshots.py"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests._app import EXAMPLES, chromium_page, running_app  # noqa: E402

OUT = ROOT / "docs"


def variation(page):
    page.locator("#variation-reference input[type=file]").set_input_files(str(EXAMPLES / "chelsea.jpg"))
    page.wait_for_selector("#variation-reference img", timeout=30_000)
    page.locator("#variation-run").click()
    page.wait_for_selector("#variation-gallery img", timeout=300_000)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(OUT / "screenshot-variation.png"), full_page=False)


if __name__ == "__main__":
    with running_app("tiny") as (engine, demo, url):
        with chromium_page(url) as page:
            variation(page)
    print("wrote", OUT / "screenshot-variation.png")
