"""Memory given back (issue 28, item 4): large uploads through the served app leave the server's
RSS where ordinary requests left it.

The app (tiny profile) served in-process, one ``gradio_client`` client: after a warm-up of
ordinary requests, three 42-megapixel uploads (JPEG, PNG, JPEG: what a camera gives) as Image
Variation's reference, the upload path the issue measured. Each is decoded at full size
(126 MB of pixels) and scaled to SeeCoder's 1536-pixel bound. Before the fix the process kept
+28 % after the first and +37 % after three (glibc's arenas held the freed decode buffers,
SeeCoder's mask cache kept 75 MB per new reference size); the target is within 10 %.
RSS is read from ``/proc/self/status`` (Linux, glibc: skipped elsewhere).
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np
import pytest
from PIL import Image

from tests.helpers.app import EXAMPLES, variation_args

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(not os.path.exists("/proc/self/status") or platform.libc_ver()[0] != "glibc",
                       reason="RSS from /proc and glibc's allocator (Linux)"),
]

LARGE = (7952, 5304)  # 42.2 megapixels


def _rss() -> int:
    """Resident bytes, once the request's worker has finished (it gives memory back after it
    has handed the answer over: a moment after the client has it)."""
    time.sleep(0.5)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _large(folder, fmt: str) -> str:
    """A smooth 42-megapixel picture (a few MB as a file, below the upload limit)."""
    w, h = LARGE
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    a = np.empty((h, w, 3), np.uint8)
    a[..., 0] = x * 0.7 + y * 0.3
    a[..., 1] = (x + y) / 2
    a[..., 2] = 255 - y
    path = str(folder / f"large.{fmt.lower()}")
    Image.fromarray(a).save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    del a
    return path


def test_three_42_megapixel_uploads_leave_rss_within_10_percent_of_the_warm_up_level(app, client, tmp_path):
    jpeg, png = _large(tmp_path, "JPEG"), _large(tmp_path, "PNG")
    for _ in range(2):  # warm-up: ordinary requests (models built, threads and arenas made)
        client.predict(*variation_args(EXAMPLES / "coffee.jpg", steps=2), api_name="/image_variation")
    warm = _rss()
    levels = []
    for path in (jpeg, png, jpeg):
        client.predict(*variation_args(path, steps=2), api_name="/image_variation")
        levels.append(_rss())
    mb = 2**20
    report = (f"warm-up {warm / mb:.0f} MB, after each 42 MP upload "
              + ", ".join(f"{r / mb:.0f} MB ({100 * (r / warm - 1):+.1f} %)" for r in levels))
    print(report)
    assert levels[-1] <= 1.10 * warm, report
