"""M-LSD straight lines."""

from __future__ import annotations

from pathlib import Path

from .nets import load_into, quiet, wrapping
from .specs import SPECS

_FILE = SPECS["mlsd"].files[0]


def _net(path: Path):
    with quiet():
        from controlnet_aux.mlsd.models.mbv2_mlsd_large import MobileV2_MLSD_Large

        net = MobileV2_MLSD_Large()
    return load_into(net, path, "M-LSD")


_make = wrapping("mlsd", "MLSDdetector", _FILE)


def _run(impl, rgb, resolution, o):
    return impl(rgb, thr_v=float(o["value_threshold"]), thr_d=float(o["distance_threshold"]),
                detect_resolution=resolution, image_resolution=resolution, output_type="np")


NETWORKS = {_FILE: _net}
DETECTORS = {"mlsd": (_make, _run)}
