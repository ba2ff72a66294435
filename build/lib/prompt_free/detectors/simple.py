"""Weight-free detectors: canny, content shuffle and none (the image itself)."""

from __future__ import annotations

from ..errors import InvalidSettingError
from .nets import quiet


def run_plain(impl, rgb, resolution, o):
    """A controlnet_aux detector called with the detection resolution and no options."""
    return impl(rgb, detect_resolution=resolution, image_resolution=resolution, output_type="np")


def _run_canny(impl, rgb, resolution, o):
    # As the official demo: cv2.Canny at the image's own size, thresholds 100/200.
    import cv2

    low, high = float(o["low_threshold"]), float(o["high_threshold"])
    if not (0 <= low <= high):
        raise InvalidSettingError(f"canny thresholds must satisfy 0 <= low <= high (got low={low:g}, high={high:g})")
    return cv2.Canny(rgb, low, high)


def _make_shuffle(nets):
    with quiet():
        from controlnet_aux.shuffle import ContentShuffleDetector

    return ContentShuffleDetector()


NETWORKS = {}
DETECTORS = {
    "canny": (lambda nets: None, _run_canny),
    "shuffle": (_make_shuffle, run_plain),
    "none": (lambda nets: None, lambda impl, rgb, resolution, o: rgb),
}
