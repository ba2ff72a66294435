"""Helpers to run the real app in-process for gradio_client and browser tests (tiny profile)."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
CHROMIUM = os.environ.get("PFD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(profile: str = "tiny", checkpoints=None):
    """Build the engine and the Blocks app exactly as app.py does and serve it on localhost."""
    from app import create_app, launch_options
    from prompt_free.app.widgets import CSS

    engine, demo = create_app(profile, checkpoints)
    port = free_port()
    demo.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, css=CSS,
        **launch_options(),
    )
    try:
        yield engine, demo, f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@contextlib.contextmanager
def chromium_page(url: str):
    """A Playwright page in Debian's Chromium (no browser download needed)."""
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium`")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_selector(".gradio-container", timeout=60_000)
            yield page
        finally:
            browser.close()
