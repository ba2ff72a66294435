"""The app in tests: the real app served in-process (tiny profile), a Chromium page on it, and the
argument lists API clients send to its endpoints (gradio_client and browser tests, the pins, the
load benchmark)."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]  # the repository
EXAMPLES = ROOT / "assets" / "examples"
POSE = EXAMPLES / "pose_standing.png"  # 512 x 768
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


# ----------------------------------------------------------------------------- endpoint arguments
def variation_args(image, seed=3, n=1, steps=4, size=128, randomize=False):
    """``/image_variation``'s arguments (tiny app)."""
    from gradio_client import handle_file

    return [handle_file(str(image)) if image else None, "SeeCoder", "Tiny SD", 2.0, steps, size, size, seed,
            randomize, n, "DDIM"]


def control_args(reference=EXAMPLES / "astronaut.jpg", control=POSE, *, kind="openpose", mode="use as-is",
                 preprocessor="openpose_full", second=None, use_second=None, second_kind="depth", second_scale=1.0,
                 check=True, steps=2, width=64, height=128, seed=3, n=1):
    """``/reference_control``'s arguments (tiny app): one ControlNet, a second one with ``second``."""
    from gradio_client import handle_file

    def f(p):
        return handle_file(str(p)) if p else None

    return [
        f(reference), "SeeCoder", "Tiny SD",
        kind, f(control), mode, preprocessor, 1.0, 0.0, 1.0,
        second is not None if use_second is None else use_second, second_kind, f(second), "use as-is", "depth", second_scale, 0.0, 1.0,
        check, 2.0, steps, width, height, seed, False, n, "DDIM",
    ]


def endpoint_calls():
    """One call of every endpoint, with its inputs as a user would send them (tiny app)."""
    from gradio_client import handle_file

    def f(name):
        return handle_file(str(EXAMPLES / name))

    return {
        "/image_variation": [f("coffee.jpg"), "SeeCoder-PA", "Tiny SD", 2.5, 3, 128, 64, 17, False, 2, "DDIM"],
        "/reference_control": [f("astronaut.jpg"), "SeeCoder", "Tiny SD",
                               "openpose", f("pose_standing.png"), "use as-is", "openpose_full", 0.9, 0.0, 1.0,
                               True, "canny", f("astronaut.jpg"), "preprocess", "canny", 1.1, 0.1, 0.9,
                               True, 2.0, 3, 64, 96, 21, False, 1, "DDIM"],
        "/multi_reference": [f("chelsea.jpg"), f("coffee.jpg"), None, None, 1.0, 0.5, 1.0, 1.0, None, None, None, None,
                             "average", "SeeCoder", "Tiny SD",
                             False, "openpose", None, "use as-is", "openpose_full", 1.0, 0.0, 1.0,
                             False, "depth", None, "use as-is", "depth", 1.0, 0.0, 1.0,
                             True, 2.0, 3, 64, 64, 19, False, 1, "DDIM"],
        "/compare": [f("chelsea.jpg"), f("pose_standing.png"), "openpose", "use as-is", "openpose_full",
                     "SeeCoder", "Tiny SD", True, True, False, "a cat", "blurry", 0.8, 1.0,
                     2.0, 3, 64, 96, 23, False, "DDIM"],
        "/virtual_tryon": [f("tryon_person.png"), f("tryon_garment_shirt.png"), f("tryon_person_mask.png"),
                           "mask image", "SeeCoder", "auto", 4, 4, True, False, 2.0, 3, 25, False, 1, "DDIM", 128],
        "/edit_reference": [f("coffee.jpg"), f("chelsea.jpg"), f("tryon_person_mask.png"), "SeeCoder", "Tiny SD",
                            3, 5, False, 2.5, 3, 27, False, 1, "DDIM", 128],
    }


def pictures(value) -> list:
    """Every picture file in an endpoint's output tuple, in order (galleries, images, files)."""
    out = []
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(v, (list, tuple)):
            out += pictures(v)
        elif isinstance(v, dict) and "image" in v:
            out += pictures(v["image"])
        elif isinstance(v, str) and v.lower().endswith((".png", ".webp", ".jpg")) and os.path.isfile(v):
            out.append(Image.open(v).convert("RGB"))
    return out


def wait_for_result_or_error(page, selector: str, timeout_s: float = 300.0) -> None:
    """Wait for ``selector``; fail at once with the message when the app shows an error toast."""
    import time

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if page.locator(selector).count():
            return
        toast = page.locator(".toast-body")
        if toast.count():
            pytest.fail(f"the app reported an error: {toast.first.inner_text()}")
        page.wait_for_timeout(500)
    pytest.fail(f"no {selector} after {timeout_s:.0f} s")
