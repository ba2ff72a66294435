"""NormalBae surface normals."""

from __future__ import annotations

import types
from pathlib import Path

from .nets import load_into, quiet, wrapping
from .simple import run_plain
from .specs import SPECS

_FILE = SPECS["normal_bae"].files[0]


def _net(path: Path):
    with quiet():
        from controlnet_aux.normalbae.nets.NNET import NNET

        args = types.SimpleNamespace(mode="client", architecture="BN", pretrained="scannet",
                                     sampling_ratio=0.4, importance_ratio=0.7)
        net = NNET(args)
    return load_into(net, path, "NormalBae")


_make = wrapping("normalbae", "NormalBaeDetector", _FILE)


NETWORKS = {_FILE: _net}
DETECTORS = {"normal_bae": (_make, run_plain)}
