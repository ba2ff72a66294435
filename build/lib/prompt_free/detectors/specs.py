"""The table of detectors: what each one is, needs and accepts. No torch, no controlnet_aux."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from ..errors import ConfigError

# The canonical ControlNet kinds (the names under ``controlnets:`` in checkpoints.yaml).
KINDS = ("openpose", "canny", "depth", "softedge", "mlsd", "normal", "scribble", "lineart",
         "lineart_anime", "seg", "shuffle")


@dataclass(frozen=True)
class WeightFile:
    """One annotator file under its hub file name. ``repo``: the hub repo that holds it when it
    is not the registry's ``annotators:`` source (MobileSAM)."""

    filename: str
    repo: Optional[str] = None


@dataclass(frozen=True)
class DetectorSpec:
    """name: key in ``SPECS``. label: human-readable. kind: the ControlNet kind its map is for
    (None: any). map_kind: what the map is called in messages. weights: annotator files.
    options: keyword options with their defaults. nearest: the map has flat colours, so it is
    resized back to the image's size with nearest-neighbour."""

    name: str
    label: str
    kind: Optional[str]
    map_kind: str
    weights: Tuple[WeightFile, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""
    nearest: bool = False

    @property
    def files(self) -> Tuple[str, ...]:
        return tuple(w.filename for w in self.weights)

    @property
    def needs_weights(self) -> bool:
        return bool(self.weights)


BODY, HAND, FACE = WeightFile("body_pose_model.pth"), WeightFile("hand_pose_model.pth"), WeightFile("facenet.pth")
HED, PIDINET = WeightFile("ControlNetHED.pth"), WeightFile("table5_pidinet.pth")
MIDAS = WeightFile("dpt_hybrid-midas-501f0c75.pt")
_EDGE = {"safe": False}

_TABLE = (
    DetectorSpec("canny", "Canny edges", "canny", "canny edge", options={"low_threshold": 100, "high_threshold": 200},
                 note="Runs at the image's own size (resolution is not used), as the official demo."),
    DetectorSpec("openpose", "OpenPose (body)", "openpose", "OpenPose", (BODY,)),
    DetectorSpec("openpose_hand", "OpenPose (body + hands)", "openpose", "OpenPose", (BODY, HAND)),
    DetectorSpec("openpose_face", "OpenPose (body + face)", "openpose", "OpenPose", (BODY, FACE)),
    DetectorSpec("openpose_full", "OpenPose (body + hands + face)", "openpose", "OpenPose", (BODY, HAND, FACE)),
    DetectorSpec("depth", "Depth (MiDaS DPT-Hybrid)", "depth", "depth", (MIDAS,)),
    DetectorSpec("depth_zoe", "Depth (ZoeDepth)", "depth", "depth", (WeightFile("ZoeD_M12_N.pt"),),
                 {"gamma_corrected": False}),
    DetectorSpec("normal", "Normal (from MiDaS depth, as the official demo)", "normal", "normal", (MIDAS,),
                 {"bg_threshold": 0.4, "a": 2 * math.pi}),
    DetectorSpec("normal_bae", "Normal (NormalBae)", "normal", "normal", (WeightFile("scannet.pt"),),
                 note="Pairs with control_v11p_sd15_normalbae, which the official demo does not list."),
    DetectorSpec("hed", "HED edges", "softedge", "HED edge", (HED,), _EDGE),
    DetectorSpec("softedge", "Soft edges (HED)", "softedge", "soft-edge", (HED,), _EDGE),
    DetectorSpec("softedge_pidi", "Soft edges (PiDiNet)", "softedge", "soft-edge", (PIDINET,), _EDGE),
    DetectorSpec("scribble", "Scribble (PiDiNet, as the official demo)", "scribble", "scribble", (PIDINET,), _EDGE),
    DetectorSpec("scribble_hed", "Scribble (HED)", "scribble", "scribble", (HED,), _EDGE),
    DetectorSpec("mlsd", "M-LSD straight lines", "mlsd", "M-LSD line", (WeightFile("mlsd_large_512_fp32.pth"),),
                 {"value_threshold": 0.1, "distance_threshold": 0.1}),
    DetectorSpec("lineart", "Line art", "lineart", "line-art", (WeightFile("sk_model.pth"),)),
    DetectorSpec("lineart_coarse", "Line art (coarse)", "lineart", "line-art", (WeightFile("sk_model2.pth"),)),
    DetectorSpec("lineart_anime", "Anime line art", "lineart_anime", "anime line-art", (WeightFile("netG.pth"),)),
    DetectorSpec("seg", "Segments (MobileSAM)", "seg", "segmentation",
                 (WeightFile("mobile_sam.pt", "dhkim2810/MobileSAM"),), {"points_per_side": 16}, nearest=True,
                 note=("controlnet_aux 0.0.10 has no ADE20K semantic segmentor (no UniFormer/OneFormer); "
                       "this paints MobileSAM segments with ADE20K palette colours by size, which are not "
                       "the classes the seg ControlNet was trained on. Prefer an ADE20K-coloured map used as-is.")),
    DetectorSpec("shuffle", "Content shuffle", "shuffle", "shuffle",
                 note="Random (numpy's global RNG): seed numpy for reproducible maps."),
    DetectorSpec("none", "None (use the image as the map)", None, "control"),
)
SPECS: Dict[str, DetectorSpec] = {s.name: s for s in _TABLE}

# Names of the official demo's preprocessor dropdown that differ from ours.
ALIASES: Dict[str, str] = {
    "openpose_withface": "openpose_face",
    "openpose_withfacehand": "openpose_full",
    "softedge_hed": "softedge",
    "softedge_pidinet": "softedge_pidi",
    "normalbae": "normal_bae",
    "zoe": "depth_zoe",
}


def resolve_name(name: str) -> str:
    """Canonical detector name (aliases and case folded); ``ConfigError`` when unknown."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"no preprocessor name given; choose one of: {', '.join(SPECS)}")
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = ALIASES.get(key, key)
    if key not in SPECS:
        raise ConfigError(f"unknown preprocessor '{name}'; choose one of: {', '.join(SPECS)}")
    return key
