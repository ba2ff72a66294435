"""Control-map detectors ("preprocessors") by name, built on ``controlnet_aux``.

A detector turns a picture into the map a ControlNet expects (edges, pose skeleton, depth ...).
Detectors are built lazily, at most once per process for each (name, weight folders, device),
behind locks so that concurrent callers share one instance. No UI code lives here.

Weights
    Weight-free detectors (``canny``, ``shuffle``, ``none``) always work. The others read the
    annotator files of the hub repo ``lllyasviel/Annotators`` (``seg``: ``dhkim2810/MobileSAM``)
    under their hub file names, looked up in this order:

    1. ``annotator_dir`` (argument), then the folder in ``$PFD_ANNOTATOR_DIR``; a file may also
       be stored as ``<stem>.safetensors`` there;
    2. the Hugging Face cache;
    3. a hub download, unless the hub is offline (``HF_HUB_OFFLINE=1``).

    Pickled files are only read with ``torch.load(weights_only=True)``: the networks are built
    here from ``controlnet_aux``'s model classes and the state dicts loaded into them, instead
    of calling ``controlnet_aux``'s ``from_pretrained`` (which unpickles without that guard).
    When a file cannot be had, ``ModelUnavailableError`` says which detector and file, where it
    looked, and that a ready-made map can be uploaded and used as-is instead.

Public API: ``PREPROCESSORS``, ``ALIASES``, ``AUTO_PREPROCESSOR``, ``get_detector``,
``preprocess``, ``available``, ``detect_pose_keypoints``, ``to_rgb``, ``clear_cache``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import math
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .errors import (
    CheckpointError,
    ConfigError,
    InputImageError,
    InvalidSettingError,
    ModelUnavailableError,
    PromptFreeError,
)

ANNOTATOR_REPO = "lllyasviel/Annotators"
MOBILE_SAM_REPO = "dhkim2810/MobileSAM"
ENV_ANNOTATOR_DIR = "PFD_ANNOTATOR_DIR"

MIN_RESOLUTION = 64
MAX_RESOLUTION = 4096

# OpenPose body keypoints (COCO-18 order), as returned by ``detect_pose_keypoints``.
BODY_KEYPOINT_NAMES: Tuple[str, ...] = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)

Keypoint = Optional[Tuple[float, float, float]]


# ============================================================================ specifications


@dataclass(frozen=True)
class WeightFile:
    """One annotator file: its hub file name and the hub repo that holds it."""

    filename: str
    repo: str = ANNOTATOR_REPO


@dataclass(frozen=True)
class PreprocessorSpec:
    """What a detector is and needs.

    name: key in ``PREPROCESSORS``. label: human-readable. needs_weights: whether annotator
    files are needed. files: those files (hub file names). repos: the hub repo of each file.
    controlnet: the ControlNet type (names of the spec's ControlNet table where it has one) the
    map is made for. map_kind: what the map is called in messages. options: keyword options
    ``preprocess`` accepts, with their defaults. note: caveats.
    """

    name: str
    label: str
    needs_weights: bool
    files: Tuple[str, ...]
    controlnet: Optional[str]
    map_kind: str
    options: Mapping[str, Any] = field(default_factory=dict)
    repos: Tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class _Component:
    """A network loaded from one weight file, shared by every detector that uses it."""

    file: WeightFile
    build: Callable[[Path], Any]  # weight file -> loaded network (on CPU, eval mode)


# ============================================================================ input images


def to_rgb(image, what: str = "image") -> Image.Image:
    """Any PIL image (RGBA, LA, P, L, 1, I;16, I, F, CMYK, YCbCr ...) or a uint8 numpy array
    -> an RGB PIL image of the same size. Transparency is composited on white; 16-bit and
    integer images are scaled to 8 bits (16-bit full range -> 0..255), float images in [0, 1]
    are scaled by 255 (other ranges min-max normalised). ``InputImageError`` when missing or
    unusable."""
    if image is None:
        raise InputImageError(f"no {what} given: upload a picture")
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image, what)
    if not isinstance(image, Image.Image):
        raise InputImageError(f"the {what} must be a picture (PIL image), not a {type(image).__name__}")
    try:
        image.load()
    except Exception as e:
        raise InputImageError(f"the {what} could not be read: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}") from None
    w, h = image.size
    if w < 1 or h < 1:
        raise InputImageError(f"the {what} is empty ({w}x{h} pixels)")
    mode = image.mode
    try:
        if mode == "RGB":
            return image.copy()
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info) or (
            mode in ("L", "RGB") and "transparency" in image.info
        ):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        if mode.startswith("I") or mode == "F":
            grey = _high_depth_to_u8(np.asarray(image), mode)
            return Image.fromarray(grey, "L").convert("RGB")
        if mode in ("LAB", "HSV"):
            # PIL has no direct LAB/HSV -> RGB conversion; go through OpenCV.
            import cv2

            arr = np.asarray(image)
            if mode == "HSV":  # PIL HSV is 0..255 on every channel; OpenCV full-range HSV matches
                rgb = cv2.cvtColor(arr, cv2.COLOR_HSV2RGB_FULL)
            else:
                rgb = cv2.cvtColor(arr, cv2.COLOR_LAB2RGB)  # uint8 LAB: L*255/100, a+128, b+128
            return Image.fromarray(rgb, "RGB")
        return image.convert("RGB")  # L, 1, P, CMYK, YCbCr ...
    except InputImageError:
        raise
    except Exception as e:
        raise InputImageError(f"the {what} (mode {mode}) could not be converted to RGB: {str(e)[:200]}") from None


def _array_to_pil(arr: np.ndarray, what: str) -> Image.Image:
    a = arr
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or a.size == 0:
        raise InputImageError(f"the {what} array has shape {tuple(arr.shape)}; expected HxW, HxWx3 or HxWx4")
    if a.dtype != np.uint8:
        if a.dtype == np.bool_:
            a = a.astype(np.uint8) * 255
        elif np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer):
            if a.ndim == 2:
                a = _high_depth_to_u8(a, "F" if np.issubdtype(a.dtype, np.floating) else ("I;16" if a.dtype == np.uint16 else "I"))
            else:
                a = np.stack([_high_depth_to_u8(a[..., c], "F" if np.issubdtype(a.dtype, np.floating) else "I")
                              for c in range(a.shape[2])], axis=2)
        else:
            raise InputImageError(f"the {what} array has an unsupported dtype {a.dtype}")
    return Image.fromarray(np.ascontiguousarray(a))


def _high_depth_to_u8(arr: np.ndarray, mode: str) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    a = np.where(np.isfinite(a), a, 0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if mode.startswith("I;16"):
        a = a / 257.0
    elif mode == "F" and lo >= 0.0 and hi <= 1.0:
        a = a * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        pass
    elif mode != "F" and lo >= 0.0 and hi <= 65535.0:
        a = a / 257.0  # 16-bit data in a 32-bit image
    else:
        a = (a - lo) / max(hi - lo, 1e-12) * 255.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


# ============================================================================ weight files


class _NotFound(Exception):
    def __init__(self, looked: List[str]):
        super().__init__("; ".join(looked))
        self.looked = looked


def _search_dirs(annotator_dir) -> Tuple[Path, ...]:
    dirs: List[Path] = []
    if annotator_dir is not None and str(annotator_dir).strip():
        dirs.append(Path(annotator_dir).expanduser())
    env = os.environ.get(ENV_ANNOTATOR_DIR, "").strip()
    if env:
        p = Path(env).expanduser()
        if p not in dirs:
            dirs.append(p)
    return tuple(dirs)


def _local_candidates(d: Path, filename: str) -> List[Path]:
    p = d / filename
    out = [p]
    if p.suffix.lower() != ".safetensors":
        out.append(p.with_suffix(".safetensors"))
    return out


def _hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _find_cached(wf: WeightFile) -> Optional[Path]:
    """The file in the Hugging Face cache, without any network access."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(wf.repo, wf.filename)
    except Exception:
        return None
    if isinstance(cached, str) and os.path.isfile(cached):
        return Path(cached)
    return None


def _hub_download(wf: WeightFile) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(wf.repo, wf.filename))


def _locate(wf: WeightFile, dirs: Sequence[Path], *, download: bool = True) -> Path:
    """Path of ``wf``: local folders, then the HF cache, then (when online) the hub."""
    looked: List[str] = []
    for d in dirs:
        for p in _local_candidates(d, wf.filename):
            if p.is_file():
                return p
        looked.append(f"the folder {d}" + ("" if d.is_dir() else " (which does not exist)"))
    if not dirs:
        looked.append(f"no local folder (no annotator_dir given, ${ENV_ANNOTATOR_DIR} not set)")
    cached = _find_cached(wf)
    if cached is not None:
        return cached
    looked.append(f"the Hugging Face cache ({_hub_cache_dir()})")
    if not download:
        looked.append(f"the hub repo {wf.repo} (not asked)")
    elif _hub_offline():
        looked.append(f"the hub repo {wf.repo} (not asked: offline, HF_HUB_OFFLINE=1)")
    else:
        try:
            return _hub_download(wf)
        except Exception as e:
            msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
            looked.append(f"the hub repo {wf.repo} (download failed: {type(e).__name__}{': ' + msg if msg else ''})")
    raise _NotFound(looked)


def _read_weights(path: Path) -> Dict[str, Any]:
    """State dict from a .safetensors file or a pickle read with ``weights_only=True``."""
    from .weights import read_state_dict

    return read_state_dict(path)


_BENIGN_MISSING = ("num_batches_tracked",)
_BENIGN_UNEXPECTED = ("num_batches_tracked", "relative_position_index")


def _load_into(module, sd: Mapping[str, Any], path: Path, what: str, *, drop_first_component: bool = False):
    """Load ``sd`` into ``module`` strictly, up to buffers that torch/timm recompute."""
    import torch

    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}
    model_keys = list(module.state_dict().keys())
    if drop_first_component and not any(k in sd for k in model_keys):
        # OpenPose body/hand files store "conv1_1.weight" for the model's "model0.conv1_1.weight".
        sd = {k: sd[k.split(".", 1)[1]] for k in model_keys if "." in k and k.split(".", 1)[1] in sd}
    missing = [k for k in model_keys if k not in sd and not k.endswith(_BENIGN_MISSING)]
    unexpected = [k for k in sd if k not in set(model_keys) and not k.endswith(_BENIGN_UNEXPECTED)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if not problems:
        own = module.state_dict()
        wrong = [f"{k} {tuple(sd[k].shape)} (expected {tuple(own[k].shape)})"
                 for k in model_keys if k in sd and isinstance(sd[k], torch.Tensor) and sd[k].shape != own[k].shape]
        if wrong:
            problems.append(f"{len(wrong)} wrong shapes (e.g. {', '.join(wrong[:2])})")
    if problems:
        raise CheckpointError(f"'{path}' does not fit the {what} network: " + "; ".join(problems))
    module.load_state_dict({k: v for k, v in sd.items() if k in set(model_keys)}, strict=False)
    return module.float().eval()


@contextlib.contextmanager
def _quiet():
    """Silence the prints and deprecation warnings of controlnet_aux / timm while building."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            yield


# ---------------------------------------------------------------------------- builders
# Each returns the controlnet_aux object a detector wraps, with the weights loaded.


def _build_openpose_body(path: Path):
    with _quiet():
        from controlnet_aux.open_pose.body import Body
        from controlnet_aux.open_pose.model import bodypose_model

        net = bodypose_model()
    body = Body.__new__(Body)
    body.model = _load_into(net, _read_weights(path), path, "OpenPose body", drop_first_component=True)
    return body


def _build_openpose_hand(path: Path):
    with _quiet():
        from controlnet_aux.open_pose.hand import Hand
        from controlnet_aux.open_pose.model import handpose_model

        net = handpose_model()
    hand = Hand.__new__(Hand)
    hand.model = _load_into(net, _read_weights(path), path, "OpenPose hand", drop_first_component=True)
    return hand


def _build_openpose_face(path: Path):
    with _quiet():
        from controlnet_aux.open_pose import face as face_mod

        net = face_mod.FaceNet()
    face = face_mod.Face.__new__(face_mod.Face)
    face.inference_size = face_mod.params["inference_img_size"]
    face.sigma = face_mod.params["gaussian_sigma"]
    face.threshold = face_mod.params["heatmap_peak_thresh"]
    face.model = _load_into(net, _read_weights(path), path, "OpenPose face")
    return face


def _build_hed(path: Path):
    with _quiet():
        from controlnet_aux.hed import ControlNetHED_Apache2

        net = ControlNetHED_Apache2()
    return _load_into(net, _read_weights(path), path, "HED")


def _build_pidinet(path: Path):
    with _quiet():
        from controlnet_aux.pidi.model import pidinet

        net = pidinet()
    return _load_into(net, _read_weights(path), path, "PiDiNet")


def _build_mlsd(path: Path):
    with _quiet():
        from controlnet_aux.mlsd.models.mbv2_mlsd_large import MobileV2_MLSD_Large

        net = MobileV2_MLSD_Large()
    return _load_into(net, _read_weights(path), path, "M-LSD")


def _build_midas(path: Path):
    with _quiet():
        from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

        net = DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True)
    return _load_into(net, _read_weights(path), path, "MiDaS DPT-Hybrid")


def _build_normalbae(path: Path):
    import types

    with _quiet():
        from controlnet_aux.normalbae.nets.NNET import NNET

        args = types.SimpleNamespace(mode="client", architecture="BN", pretrained="scannet",
                                     sampling_ratio=0.4, importance_ratio=0.7)
        net = NNET(args)
    return _load_into(net, _read_weights(path), path, "NormalBae")


def _build_lineart(path: Path):
    with _quiet():
        from controlnet_aux.lineart import Generator

        net = Generator(3, 1, 3)
    return _load_into(net, _read_weights(path), path, "line-art")


def _build_lineart_anime(path: Path):
    import functools

    import torch.nn as nn

    with _quiet():
        from controlnet_aux.lineart_anime import UnetGenerator

        norm = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
        net = UnetGenerator(3, 1, 8, 64, norm_layer=norm, use_dropout=False)
    return _load_into(net, _read_weights(path), path, "anime line-art")


def _build_zoe(path: Path):
    with _quiet():
        from controlnet_aux.zoe.zoedepth.models.zoedepth.zoedepth_v1 import ZoeDepth
        from controlnet_aux.zoe.zoedepth.utils.config import get_config

        conf = get_config("zoedepth", "infer")
        conf["pretrained_resource"] = None
        conf["use_pretrained_midas"] = False
        net = ZoeDepth.build_from_config(conf)
    return _load_into(net, _read_weights(path), path, "ZoeDepth")


def _build_mobile_sam(path: Path):
    with _quiet():
        from controlnet_aux.segment_anything.build_sam import build_sam_vit_t

        net = build_sam_vit_t(checkpoint=None)
    return _load_into(net, _read_weights(path), path, "MobileSAM")


_AF = WeightFile  # short alias for the table below

COMPONENTS: Dict[str, _Component] = {
    "openpose_body": _Component(_AF("body_pose_model.pth"), _build_openpose_body),
    "openpose_hand": _Component(_AF("hand_pose_model.pth"), _build_openpose_hand),
    "openpose_face": _Component(_AF("facenet.pth"), _build_openpose_face),
    "hed": _Component(_AF("ControlNetHED.pth"), _build_hed),
    "pidinet": _Component(_AF("table5_pidinet.pth"), _build_pidinet),
    "mlsd": _Component(_AF("mlsd_large_512_fp32.pth"), _build_mlsd),
    "midas": _Component(_AF("dpt_hybrid-midas-501f0c75.pt"), _build_midas),
    "normalbae": _Component(_AF("scannet.pt"), _build_normalbae),
    "lineart": _Component(_AF("sk_model.pth"), _build_lineart),
    "lineart_coarse": _Component(_AF("sk_model2.pth"), _build_lineart),
    "lineart_anime": _Component(_AF("netG.pth"), _build_lineart_anime),
    "zoe": _Component(_AF("ZoeD_M12_N.pt"), _build_zoe),
    "mobile_sam": _Component(WeightFile("mobile_sam.pt", MOBILE_SAM_REPO), _build_mobile_sam),
}


# ============================================================================ detectors
# A detector = components + a wrapper (the controlnet_aux detector object) + a run function
# (impl, rgb uint8 HxWx3, resolution, options) -> uint8 map (any size; resized afterwards).


def _u8(x) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype != np.uint8:
        a = np.clip(np.nan_to_num(a.astype(np.float32)), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    return np.ascontiguousarray(a)


def _make_canny(parts):
    return None


def _run_canny(impl, rgb, resolution, o):
    # As the official demo: cv2.Canny at the image's own size, thresholds 100/200.
    import cv2

    low, high = float(o["low_threshold"]), float(o["high_threshold"])
    if not (0 <= low <= high):
        raise InvalidSettingError(f"canny thresholds must satisfy 0 <= low <= high (got low={low:g}, high={high:g})")
    return cv2.Canny(rgb, low, high)


def _make_openpose(parts):
    with _quiet():
        from controlnet_aux.open_pose import OpenposeDetector

    return OpenposeDetector(parts["openpose_body"], parts.get("openpose_hand"), parts.get("openpose_face"))


def _openpose_runner(hand: bool, face: bool):
    def run(impl, rgb, resolution, o):
        return impl(rgb, detect_resolution=resolution, image_resolution=resolution,
                    include_body=True, include_hand=hand, include_face=face, output_type="np")

    return run


def _make_midas(parts):
    with _quiet():
        from controlnet_aux.midas import MidasDetector

    return MidasDetector(parts["midas"])


def _run_depth(impl, rgb, resolution, o):
    return impl(rgb, detect_resolution=resolution, image_resolution=resolution, output_type="np")


def _run_midas_normal(impl, rgb, resolution, o):
    _, normal = impl(rgb, a=float(o["a"]), bg_th=float(o["bg_threshold"]), depth_and_normal=True,
                     detect_resolution=resolution, image_resolution=resolution, output_type="np")
    return normal


def _wrapping(module: str, cls_name: str, component: str):
    """A maker that wraps one loaded network in its controlnet_aux detector class."""

    def make(parts):
        with _quiet():
            cls = getattr(importlib.import_module(f"controlnet_aux.{module}"), cls_name)
        return cls(parts[component])

    return make


def _edge_runner(scribble: bool):
    def run(impl, rgb, resolution, o):
        return impl(rgb, detect_resolution=resolution, image_resolution=resolution, safe=bool(o["safe"]),
                    scribble=scribble, output_type="np")

    return run


def _run_mlsd(impl, rgb, resolution, o):
    return impl(rgb, thr_v=float(o["value_threshold"]), thr_d=float(o["distance_threshold"]),
                detect_resolution=resolution, image_resolution=resolution, output_type="np")


def _run_plain(impl, rgb, resolution, o):
    return impl(rgb, detect_resolution=resolution, image_resolution=resolution, output_type="np")


def _lineart_maker(component: str):
    def make(parts):
        with _quiet():
            from controlnet_aux.lineart import LineartDetector

        net = parts[component]
        return LineartDetector(net, net)  # fine and coarse share the loaded network

    return make


def _run_zoe(impl, rgb, resolution, o):
    return impl(rgb, detect_resolution=resolution, image_resolution=resolution, output_type="np",
                gamma_corrected=bool(o["gamma_corrected"]))


def _make_seg(parts):
    return parts["mobile_sam"]


def _run_seg(impl, rgb, resolution, o):
    with _quiet():
        from controlnet_aux.segment_anything.automatic_mask_generator import SamAutomaticMaskGenerator
        from controlnet_aux.util import ade_palette, resize_image

    pps = int(o["points_per_side"])
    if not 1 <= pps <= 64:
        raise InvalidSettingError(f"seg points_per_side must be in 1..64 (got {pps})")
    img = resize_image(rgb, resolution)
    # A new generator per call: it keeps per-image state, the network is shared.
    masks = SamAutomaticMaskGenerator(impl, points_per_side=pps).generate(img)
    canvas = np.zeros_like(img)
    palette = ade_palette()
    for i, ann in enumerate(sorted(masks, key=lambda a: a["area"], reverse=True)):
        canvas[np.asarray(ann["segmentation"], dtype=bool)] = palette[i % len(palette)]
    return canvas


def _make_shuffle(parts):
    with _quiet():
        from controlnet_aux.shuffle import ContentShuffleDetector

    return ContentShuffleDetector()


def _run_none(impl, rgb, resolution, o):
    return rgb


@dataclass(frozen=True)
class _DetectorDef:
    components: Tuple[str, ...]
    make: Callable[[Dict[str, Any]], Any]
    run: Callable[..., np.ndarray]
    nearest: bool = False  # resize the map back with nearest-neighbour (flat-colour maps)


def _spec(name, label, components, controlnet, map_kind, options=None, note=""):
    return dict(name=name, label=label, components=tuple(components), controlnet=controlnet,
                map_kind=map_kind, options=dict(options or {}), note=note)


def _register(s: Dict[str, Any], make, run, nearest: bool = False) -> None:
    comps = s["components"]
    spec = PreprocessorSpec(
        name=s["name"], label=s["label"], needs_weights=bool(comps),
        files=tuple(COMPONENTS[c].file.filename for c in comps),
        controlnet=s["controlnet"], map_kind=s["map_kind"], options=s["options"],
        repos=tuple(COMPONENTS[c].file.repo for c in comps), note=s["note"],
    )
    _DEFS[spec.name] = (spec, _DetectorDef(comps, make, run, nearest))


_EDGE_OPTS = {"safe": False}
_DEFS: Dict[str, Tuple[PreprocessorSpec, _DetectorDef]] = {}


_register(_spec("canny", "Canny edges", (), "canny", "canny edge",
                {"low_threshold": 100, "high_threshold": 200},
                note="Runs at the image's own size (resolution is not used), as the official demo."),
          _make_canny, _run_canny)
_register(_spec("openpose", "OpenPose (body)", ("openpose_body",), "openpose", "OpenPose"),
          _make_openpose, _openpose_runner(False, False))
_register(_spec("openpose_hand", "OpenPose (body + hands)", ("openpose_body", "openpose_hand"),
                "openpose_v11p", "OpenPose"),
          _make_openpose, _openpose_runner(True, False))
_register(_spec("openpose_face", "OpenPose (body + face)", ("openpose_body", "openpose_face"),
                "openpose_v11p", "OpenPose"),
          _make_openpose, _openpose_runner(False, True))
_register(_spec("openpose_full", "OpenPose (body + hands + face)",
                ("openpose_body", "openpose_hand", "openpose_face"), "openpose_v11p", "OpenPose"),
          _make_openpose, _openpose_runner(True, True))
_register(_spec("depth", "Depth (MiDaS DPT-Hybrid)", ("midas",), "depth", "depth"),
          _make_midas, _run_depth)
_register(_spec("depth_zoe", "Depth (ZoeDepth)", ("zoe",), "depth", "depth", {"gamma_corrected": False}),
          _wrapping("zoe", "ZoeDetector", "zoe"), _run_zoe)
_register(_spec("normal", "Normal (from MiDaS depth, as the official demo)", ("midas",), "normal", "normal",
                {"bg_threshold": 0.4, "a": 2 * math.pi}),
          _make_midas, _run_midas_normal)
_register(_spec("normal_bae", "Normal (NormalBae)", ("normalbae",), "normalbae_v11p", "normal",
                note="Pairs with control_v11p_sd15_normalbae, which the official demo does not list."),
          _wrapping("normalbae", "NormalBaeDetector", "normalbae"), _run_plain)
_register(_spec("hed", "HED edges", ("hed",), "hed", "HED edge", _EDGE_OPTS),
          _wrapping("hed", "HEDdetector", "hed"), _edge_runner(False))
_register(_spec("softedge", "Soft edges (HED)", ("hed",), "softedge_v11p", "soft-edge", _EDGE_OPTS),
          _wrapping("hed", "HEDdetector", "hed"), _edge_runner(False))
_register(_spec("softedge_pidi", "Soft edges (PiDiNet)", ("pidinet",), "softedge_v11p", "soft-edge", _EDGE_OPTS),
          _wrapping("pidi", "PidiNetDetector", "pidinet"), _edge_runner(False))
_register(_spec("scribble", "Scribble (PiDiNet, as the official demo)", ("pidinet",), "scribble", "scribble",
                _EDGE_OPTS),
          _wrapping("pidi", "PidiNetDetector", "pidinet"), _edge_runner(True))
_register(_spec("scribble_hed", "Scribble (HED)", ("hed",), "scribble", "scribble", _EDGE_OPTS),
          _wrapping("hed", "HEDdetector", "hed"), _edge_runner(True))
_register(_spec("mlsd", "M-LSD straight lines", ("mlsd",), "mlsd", "M-LSD line",
                {"value_threshold": 0.1, "distance_threshold": 0.1}),
          _wrapping("mlsd", "MLSDdetector", "mlsd"), _run_mlsd)
_register(_spec("lineart", "Line art", ("lineart",), "lineart_v11p", "line-art"),
          _lineart_maker("lineart"), _run_plain)
_register(_spec("lineart_coarse", "Line art (coarse)", ("lineart_coarse",), "lineart_v11p", "line-art"),
          _lineart_maker("lineart_coarse"), _run_plain)
_register(_spec("lineart_anime", "Anime line art", ("lineart_anime",), "lineart_anime_v11p", "anime line-art"),
          _wrapping("lineart_anime", "LineartAnimeDetector", "lineart_anime"), _run_plain)
_register(_spec("seg", "Segments (MobileSAM)", ("mobile_sam",), "seg", "segmentation",
                {"points_per_side": 16},
                note=("controlnet_aux 0.0.10 has no ADE20K semantic segmentor (no UniFormer/OneFormer); "
                      "this paints MobileSAM segments with ADE20K palette colours by size, which are not "
                      "the classes the seg ControlNet was trained on. Prefer an ADE20K-coloured map used as-is.")),
          _make_seg, _run_seg, nearest=True)
_register(_spec("shuffle", "Content shuffle", (), "shuffle_v11e", "shuffle",
                note="Random (numpy's global RNG): seed numpy for reproducible maps."),
          _make_shuffle, _run_plain)
_register(_spec("none", "None (use the image as the map)", (), None, "control"),
          lambda parts: None, _run_none)

PREPROCESSORS: Dict[str, PreprocessorSpec] = {name: spec for name, (spec, _) in _DEFS.items()}

# Names of the official demo's preprocessor dropdown that differ from ours.
ALIASES: Dict[str, str] = {
    "openpose_withface": "openpose_face",
    "openpose_withfacehand": "openpose_full",
    "softedge_hed": "softedge",
    "softedge_pidinet": "softedge_pidi",
    "normalbae": "normal_bae",
    "zoe": "depth_zoe",
}

# The official demo's ControlNet dropdown: ControlNet -> preprocessor it selects (spec (e)).
AUTO_PREPROCESSOR: Dict[str, str] = {
    "canny": "canny", "canny_v11p": "canny", "depth": "depth", "hed": "hed", "softedge_v11p": "hed",
    "mlsd": "mlsd", "mlsd_v11p": "mlsd", "normal": "normal", "openpose": "openpose",
    "openpose_v11p": "openpose", "scribble": "scribble", "seg": "none", "lineart_v11p": "none",
    "lineart_anime_v11p": "none",
}


def resolve_name(name: str) -> str:
    """Canonical preprocessor name (aliases and case folded); ``ConfigError`` when unknown."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"no preprocessor name given; choose one of: {', '.join(PREPROCESSORS)}")
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = ALIASES.get(key, key)
    if key not in PREPROCESSORS:
        raise ConfigError(f"unknown preprocessor '{name}'; choose one of: {', '.join(PREPROCESSORS)}")
    return key


# ============================================================================ cache


_cache: Dict[tuple, Any] = {}
_cache_lock = threading.Lock()
_key_locks: Dict[tuple, threading.Lock] = {}


def _cached(key: tuple, factory: Callable[[], Any]) -> Any:
    obj = _cache.get(key)
    if obj is not None:
        return obj
    with _cache_lock:
        lock = _key_locks.setdefault(key, threading.Lock())
    with lock:
        obj = _cache.get(key)
        if obj is None:
            obj = factory()
            _cache[key] = obj
    return obj


def clear_cache() -> None:
    """Forget every built detector (their memory is freed once nobody holds them)."""
    with _cache_lock:
        _cache.clear()
        _key_locks.clear()


def _device_key(device) -> str:
    return "cpu" if device is None else str(device)


class AnnotatorUnavailableError(ModelUnavailableError):
    """A detector's weights are missing. ``problem`` is the message without the advice to
    upload a ready-made map (which only fits the ControlNet tabs)."""

    def __init__(self, problem: str, map_kind: str):
        self.problem = problem
        super().__init__(f"{problem}, or upload a ready-made {map_kind} map and choose 'use as-is' instead.")


def _unavailable_error(spec: PreprocessorSpec, missing: Sequence[Tuple[WeightFile, Sequence[str]]]) -> AnnotatorUnavailableError:
    files = ", ".join(f"'{wf.filename}'" for wf, _ in missing)
    repos = sorted({wf.repo for wf, _ in missing})
    looked = missing[0][1]
    plural = len(missing) > 1
    return AnnotatorUnavailableError(
        f"The '{spec.name}' preprocessor needs the annotator file{'s' if plural else ''} {files} "
        f"(hub repo {', '.join(repos)}), which {'are' if plural else 'is'} not available. "
        f"Looked in: {'; '.join(looked)}. Put the file{'s' if plural else ''} into a folder given as "
        f"annotator_dir or named by ${ENV_ANNOTATOR_DIR}",
        spec.map_kind,
    )


def _component_key(cname: str, dirs: Tuple[Path, ...], device) -> tuple:
    return ("component", cname, tuple(str(d) for d in dirs), _device_key(device))


def _component(cname: str, dirs: Tuple[Path, ...], device, spec: PreprocessorSpec):
    comp = COMPONENTS[cname]

    def build():
        try:
            path = _locate(comp.file, dirs)
        except _NotFound as e:
            raise _unavailable_error(spec, [(comp.file, e.looked)]) from None
        try:
            net = comp.build(path)
            if device is not None:
                net.to(device)
        except Exception as e:
            if isinstance(e, CheckpointError):
                why = str(e)
            else:  # building the network itself failed (library versions, device ...)
                first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
                why = f"{type(e).__name__}{': ' + first if first else ''}"
            raise AnnotatorUnavailableError(
                f"The '{spec.name}' preprocessor could not load its annotator file '{path}': {why}. "
                f"Replace the file with '{comp.file.filename}' from the hub repo {comp.file.repo}",
                spec.map_kind,
            ) from (None if isinstance(e, CheckpointError) else e)
        return net

    return _cached(_component_key(cname, dirs, device), build)


# ============================================================================ public API


class Detector:
    """A built detector: ``detector(image, resolution=512, **options) -> RGB PIL map`` at the
    image's size. ``impl`` is the controlnet_aux object (or network) it wraps."""

    def __init__(self, spec: PreprocessorSpec, impl: Any, definition: _DetectorDef):
        self.spec = spec
        self.name = spec.name
        self.impl = impl
        self._def = definition

    def __repr__(self) -> str:
        return f"Detector({self.name!r})"

    def options(self, options: Mapping[str, Any]) -> Dict[str, Any]:
        """Defaults merged with ``options`` (None values mean default); unknown names rejected."""
        unknown = [k for k in options if k not in self.spec.options]
        if unknown:
            allowed = ", ".join(self.spec.options) or "none"
            raise InvalidSettingError(
                f"the '{self.name}' preprocessor has no option {', '.join(repr(k) for k in unknown)} (options: {allowed})"
            )
        merged = dict(self.spec.options)
        merged.update({k: v for k, v in options.items() if v is not None})
        return merged

    def __call__(self, image, *, resolution: int = 512, **options) -> Image.Image:
        import torch

        opts = self.options(options)
        res = _check_resolution(resolution)
        rgb_img = to_rgb(image)
        w0, h0 = rgb_img.size
        rgb = np.asarray(rgb_img, dtype=np.uint8)
        try:
            with torch.no_grad():
                out = self._def.run(self.impl, rgb, res, opts)
        except PromptFreeError:
            raise
        except Exception as e:
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise PromptFreeError(
                f"The '{self.name}' preprocessor failed on this image ({type(e).__name__}{': ' + msg if msg else ''}). "
                f"Try another image or resolution, or upload a ready-made {self.spec.map_kind} map and choose "
                f"'use as-is' instead."
            ) from e
        out = _u8(out)
        if out.shape[:2] != (h0, w0):
            import cv2

            shrink = out.shape[0] > h0 and out.shape[1] > w0
            interp = cv2.INTER_NEAREST if self._def.nearest else (cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            out = cv2.resize(out, (w0, h0), interpolation=interp)
        return Image.fromarray(_u8(out), "RGB")


def _check_resolution(resolution) -> int:
    try:
        res = int(resolution)
    except (TypeError, ValueError):
        raise InvalidSettingError(f"detection resolution must be a whole number of pixels, not {resolution!r}") from None
    if res != resolution or not MIN_RESOLUTION <= res <= MAX_RESOLUTION:
        raise InvalidSettingError(
            f"detection resolution must be a whole number in {MIN_RESOLUTION}..{MAX_RESOLUTION} (got {resolution!r})"
        )
    return res


def get_detector(name: str, annotator_dir=None, *, device=None) -> Detector:
    """The detector ``name`` (see ``PREPROCESSORS``; aliases accepted), built on first use and
    cached per (name, weight folders, device). ``ModelUnavailableError`` when weights are missing."""
    key_name = resolve_name(name)
    spec, definition = _DEFS[key_name]
    dirs = _search_dirs(annotator_dir)

    def build():
        # Name every missing file at once (not only the first).
        missing = []
        for c in definition.components:
            if _component_key(c, dirs, device) in _cache:
                continue
            try:
                _locate(COMPONENTS[c].file, dirs)
            except _NotFound as e:
                missing.append((COMPONENTS[c].file, e.looked))
        if missing:
            raise _unavailable_error(spec, missing)
        parts = {c: _component(c, dirs, device, spec) for c in definition.components}
        return Detector(spec, definition.make(parts), definition)

    return _cached(("detector", key_name, tuple(str(d) for d in dirs), _device_key(device)), build)


def preprocess(name: str, image, *, resolution: int = 512, annotator_dir=None, device=None, **options) -> Image.Image:
    """Run detector ``name`` on ``image`` (any PIL mode) -> RGB PIL map at the image's size.

    resolution: the detection resolution (short side, rounded to a multiple of 64 by the
    detectors; ``canny`` runs at the image's own size). options: the detector's options
    (``PREPROCESSORS[name].options``), e.g. ``low_threshold``/``high_threshold`` for canny.
    """
    return get_detector(name, annotator_dir, device=device)(image, resolution=resolution, **options)


def available(name: str, annotator_dir=None) -> bool:
    """Whether every file ``name`` needs is in a local folder or the HF cache (no network)."""
    spec, definition = _DEFS[resolve_name(name)]
    dirs = _search_dirs(annotator_dir)
    for cname in definition.components:
        try:
            _locate(COMPONENTS[cname].file, dirs, download=False)
        except _NotFound:
            return False
    return True


def _format_people(candidate, subset, sx: float = 1.0, sy: float = 1.0) -> List[List[Keypoint]]:
    """OpenPose body results (candidate rows x, y, score, id; subset rows of 18 candidate
    indices, total score, part count) -> people as 18 (x, y, score) or None, scaled."""
    people: List[List[Keypoint]] = []
    candidate = np.asarray(candidate, dtype=np.float64).reshape(-1, 4) if len(candidate) else np.zeros((0, 4))
    for person in np.asarray(subset).reshape(-1, 20) if len(subset) else []:
        kps: List[Keypoint] = []
        for idx in person[:18].astype(int):
            if idx < 0 or idx >= len(candidate):
                kps.append(None)
            else:
                x, y, score = candidate[idx][:3]
                kps.append((float(x) * sx, float(y) * sy, float(score)))
        people.append(kps)
    return people


def detect_pose_keypoints(image, annotator_dir=None, *, resolution: int = 512, device=None) -> List[List[Keypoint]]:
    """OpenPose body keypoints of every person in ``image``.

    Returns a list of people; each person is a list of 18 entries in ``BODY_KEYPOINT_NAMES``
    order, each ``(x, y, score)`` in pixel coordinates of ``image`` or ``None`` when not found.
    An empty list when nobody is found. The image is shrunk to ``resolution`` on its short side
    for detection when larger. Needs ``body_pose_model.pth`` (``ModelUnavailableError`` otherwise).
    """
    import cv2
    import torch

    rgb_img = to_rgb(image, "person photo")
    res = _check_resolution(resolution)
    spec = PREPROCESSORS["openpose"]
    body = _component("openpose_body", _search_dirs(annotator_dir), device, spec)
    rgb = np.asarray(rgb_img, dtype=np.uint8)
    h0, w0 = rgb.shape[:2]
    if min(h0, w0) > res:
        k = res / min(h0, w0)
        rgb = cv2.resize(rgb, (max(1, round(w0 * k)), max(1, round(h0 * k))), interpolation=cv2.INTER_AREA)
    h, w = rgb.shape[:2]
    try:
        with torch.no_grad():
            candidate, subset = body(np.ascontiguousarray(rgb[:, :, ::-1]))  # the body network expects BGR
    except Exception as e:
        raise PromptFreeError(
            f"pose detection failed on this image ({type(e).__name__}: {str(e)[:200]}); paint or upload the mask instead"
        ) from e
    return _format_people(candidate, subset, w0 / w, h0 / h)


__all__ = [
    "ALIASES",
    "AUTO_PREPROCESSOR",
    "BODY_KEYPOINT_NAMES",
    "COMPONENTS",
    "Detector",
    "ENV_ANNOTATOR_DIR",
    "PREPROCESSORS",
    "PreprocessorSpec",
    "WeightFile",
    "available",
    "clear_cache",
    "detect_pose_keypoints",
    "get_detector",
    "preprocess",
    "resolve_name",
    "to_rgb",
]
