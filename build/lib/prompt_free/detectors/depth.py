"""Depth and normal from depth: MiDaS DPT-Hybrid (``depth``, ``normal``) and ZoeDepth."""

from __future__ import annotations

from pathlib import Path

from .nets import load_into, quiet, wrapping
from .specs import MIDAS, SPECS

_ZOE = SPECS["depth_zoe"].files[0]


def _midas_net(path: Path):
    with quiet():
        from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

        net = DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True)
    return load_into(net, path, "MiDaS DPT-Hybrid")


def _zoe_net(path: Path):
    with quiet():
        from controlnet_aux.zoe.zoedepth.models.zoedepth.zoedepth_v1 import ZoeDepth
        from controlnet_aux.zoe.zoedepth.utils.config import get_config

        conf = get_config("zoedepth", "infer")
        conf["pretrained_resource"] = None  # the weights come from our file, not a download
        conf["use_pretrained_midas"] = False
        net = ZoeDepth.build_from_config(conf)
    return load_into(net, path, "ZoeDepth")


_make_midas = wrapping("midas", "MidasDetector", MIDAS.filename)


_make_zoe = wrapping("zoe", "ZoeDetector", _ZOE)


def _run_depth(impl, rgb, resolution, o):
    return impl(rgb, detect_resolution=resolution, image_resolution=resolution, output_type="np")


def _run_normal(impl, rgb, resolution, o):
    _, normal = impl(rgb, a=float(o["a"]), bg_th=float(o["bg_threshold"]), depth_and_normal=True,
                     detect_resolution=resolution, image_resolution=resolution, output_type="np")
    return normal


def _run_zoe(impl, rgb, resolution, o):
    return impl(rgb, detect_resolution=resolution, image_resolution=resolution, output_type="np",
                gamma_corrected=bool(o["gamma_corrected"]))


NETWORKS = {MIDAS.filename: _midas_net, _ZOE: _zoe_net}
DETECTORS = {
    "depth": (_make_midas, _run_depth),
    "normal": (_make_midas, _run_normal),
    "depth_zoe": (_make_zoe, _run_zoe),
}
