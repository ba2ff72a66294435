"""The pinned pictures (tests/pins/): where they lie and how a picture is compared with one (bit for
bit on the recording's CPU kind, a few levels on a few values elsewhere; see tests/pins/)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PINS = Path(__file__).resolve().parents[1] / "pins"  # the pinned PNGs and their JSON manifest
MANIFEST = PINS / "pins.json"
OTHER_CPU_MAX_LEVELS = 3  # largest per-value difference (of 255) allowed on another CPU kind
OTHER_CPU_MAX_FRACTION = 0.01  # share of values allowed to differ at all on another CPU kind


def capability() -> str:
    return torch.backends.cpu.get_cpu_capability()


def manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def assert_same(name: str, img, same_kind: bool) -> None:
    """``img`` is the pin ``name``: identical on the recording's CPU kind, within the tolerance elsewhere."""
    want = np.asarray(Image.open(PINS / f"{name}.png").convert("RGB"), dtype=np.int16)
    got = np.asarray(img.convert("RGB"), dtype=np.int16)
    assert got.shape == want.shape, name
    diff = np.abs(got - want)
    if same_kind:
        assert diff.max() == 0, f"{name}: {int((diff > 0).sum())} values differ (max {int(diff.max())})"
    else:
        assert diff.max() <= OTHER_CPU_MAX_LEVELS, f"{name}: max difference {int(diff.max())}"
        assert (diff > 0).mean() <= OTHER_CPU_MAX_FRACTION, f"{name}: {(diff > 0).mean():.2%} of values differ"


def assert_endpoint_pins(endpoint: str, images) -> None:
    """``images`` (one endpoint call's pictures, in order) are that endpoint's pinned pictures."""
    stem = "endpoint_" + endpoint.strip("/")
    pins = manifest()
    assert [f"{stem}_{i}" for i in range(len(images))] == pins["tabs"][stem]
    same_kind = pins["cpu_capability"] == capability()
    for i, img in enumerate(images):
        assert_same(f"{stem}_{i}", img, same_kind)
