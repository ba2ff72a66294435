"""Soft edges and scribbles: HED and PiDiNet (``hed``, ``softedge*``, ``scribble*``)."""

from __future__ import annotations

from pathlib import Path

from .nets import load_into, quiet, wrapping
from .specs import HED, PIDINET


def _hed_net(path: Path):
    with quiet():
        from controlnet_aux.hed import ControlNetHED_Apache2

        net = ControlNetHED_Apache2()
    return load_into(net, path, "HED")


def _pidinet(path: Path):
    with quiet():
        from controlnet_aux.pidi.model import pidinet

        net = pidinet()
    return load_into(net, path, "PiDiNet")


_make_hed = wrapping("hed", "HEDdetector", HED.filename)


_make_pidi = wrapping("pidi", "PidiNetDetector", PIDINET.filename)


def _runner(scribble: bool):
    def run(impl, rgb, resolution, o):
        return impl(rgb, detect_resolution=resolution, image_resolution=resolution, safe=bool(o["safe"]),
                    scribble=scribble, output_type="np")

    return run


NETWORKS = {HED.filename: _hed_net, PIDINET.filename: _pidinet}
DETECTORS = {
    "hed": (_make_hed, _runner(False)),
    "softedge": (_make_hed, _runner(False)),
    "scribble_hed": (_make_hed, _runner(True)),
    "softedge_pidi": (_make_pidi, _runner(False)),
    "scribble": (_make_pidi, _runner(True)),
}
