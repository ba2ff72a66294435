"""Line art: fine, coarse (same network class, two files) and anime."""

from __future__ import annotations

import functools
from pathlib import Path

from .nets import load_into, quiet, wrapping
from .simple import run_plain
from .specs import SPECS

_FINE, _COARSE, _ANIME = (SPECS[n].files[0] for n in ("lineart", "lineart_coarse", "lineart_anime"))


def _net(path: Path):
    with quiet():
        from controlnet_aux.lineart import Generator

        net = Generator(3, 1, 3)
    return load_into(net, path, "line-art")


def _anime_net(path: Path):
    import torch.nn as nn

    with quiet():
        from controlnet_aux.lineart_anime import UnetGenerator

        norm = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
        net = UnetGenerator(3, 1, 8, 64, norm_layer=norm, use_dropout=False)
    return load_into(net, path, "anime line-art")


def _lineart(filename: str):
    def make(nets):
        with quiet():
            from controlnet_aux.lineart import LineartDetector

        net = nets[filename]
        return LineartDetector(net, net)  # a detector runs one network: both slots hold it

    return make


_make_anime = wrapping("lineart_anime", "LineartAnimeDetector", _ANIME)


NETWORKS = {_FINE: _net, _COARSE: _net, _ANIME: _anime_net}
DETECTORS = {
    "lineart": (_lineart(_FINE), run_plain),
    "lineart_coarse": (_lineart(_COARSE), run_plain),
    "lineart_anime": (_make_anime, run_plain),
}
