"""Reference + ControlNet: content and style from a reference image (SeeCoder), structure from
one or two control images through ControlNets (spec section c, "ControlNet in the loop").

Each ControlNet gets its own control image, used as it is (a ready map: pose skeleton, edges,
depth ...) or turned into a map by a detector (``prompt_free.detectors``), its own
conditioning scale and its own guidance window (the fraction of the steps during which it
acts). The residuals of several ControlNets are summed (``sampling.denoise``).

Size: unless given, the output size follows the first control image as in the official demo
(floor to 64, each side clamped to [512, 1536]); the control image is resized to (w, h) with
PIL bicubic before it becomes the hint, and a detector runs on that resized picture.

Cheap checks run before any model is loaded: unknown ControlNet names, missing control
images, a control image whose aspect ratio is far (> 2x) from the requested size, and, for
"use as-is" maps, a map that does not look like the chosen kind (a photo given to the canny
ControlNet ...). Every problem is a ``PromptFreeError`` with a message that says what to do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..errors import InputImageError, InvalidSettingError, ModelUnavailableError
from ..images import image_to_tensor, load_image, prepare_reference, snap_size, size_from_control
from .common import SamplerSettings, TaskResult, resolve_defaults

MODE_AS_IS = "use as-is"
MODE_PREPROCESS = "preprocess"
MODES = (MODE_AS_IS, MODE_PREPROCESS)
_MODE_ALIASES = {
    "use as-is": MODE_AS_IS, "as-is": MODE_AS_IS, "as_is": MODE_AS_IS, "asis": MODE_AS_IS, "none": MODE_AS_IS,
    "preprocess": MODE_PREPROCESS, "detect": MODE_PREPROCESS,
}
MAX_CONTROLS = 2
MAX_SCALE = 2.0
MAX_ASPECT_MISMATCH = 2.0  # control image ratio vs output ratio; beyond this we refuse
CHECK_SIDE = 256  # maps are inspected at most at this size (cheap)

# ControlNet kind from words in its name / default preprocessor / source (first match wins).
_KIND_WORDS = (
    ("openpose", "openpose"), ("pose", "openpose"), ("lineart_anime", "lineart_anime"), ("lineart", "lineart"),
    ("canny", "canny"), ("mlsd", "mlsd"), ("scribble", "scribble"), ("softedge", "softedge"), ("hed", "softedge"),
    ("pidi", "softedge"), ("depth", "depth"), ("normal", "normal"), ("seg", "seg"), ("shuffle", "shuffle"),
)
# What a ready map of each kind looks like (for messages).
MAP_LOOKS = {
    "canny": "thin white edges on a black background",
    "mlsd": "white straight lines on a black background",
    "scribble": "white strokes on a black background",
    "lineart": "white lines on a black background",
    "lineart_anime": "white lines on a black background",
    "softedge": "soft grey edges on a black background",
    "openpose": "a coloured stick-figure skeleton on a black background",
    "depth": "a greyscale depth map (near is bright)",
    "normal": "a colourful normal map (mostly blue-violet)",
    "seg": "flat areas of a few solid colours",
}
ControlProgress = Optional[Callable[[int, int], None]]


@dataclass
class ControlSpec:
    """One ControlNet in a run.

    controlnet: a name under ``controlnets:`` in checkpoints.yaml. image: the control image
    (path, PIL, array, bytes). mode: "use as-is" (``image`` is a ready map) or "preprocess"
    (a detector makes the map from ``image``). preprocessor: detector name in preprocess mode
    (None: the entry's ``preprocessor``). scale: conditioning scale in [0, 2]. start, end:
    the fraction of the steps during which it acts (0 <= start <= end <= 1). check_map: in
    "use as-is" mode, refuse maps that do not look like the ControlNet's kind.
    options: extra detector options (e.g. canny thresholds).
    """

    controlnet: str
    image: Any = None
    mode: str = MODE_AS_IS
    preprocessor: Optional[str] = None
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0
    check_map: bool = True
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ControlSettings(SamplerSettings):
    """Sampler settings; width/height None: follow the first control image (official)."""

    width: Optional[int] = None
    height: Optional[int] = None
    annotator_dir: Optional[str] = None  # detector weights; None: env PFD_ANNOTATOR_DIR, then the hub


# ----------------------------------------------------------------------------- helpers (also for the UI)
def control_kind(engine_or_registry, name: str) -> Optional[str]:
    """The kind of a ControlNet entry (openpose, canny, depth ...), from its name, its default
    preprocessor or its source; None when unknown (no map check then)."""
    registry = getattr(engine_or_registry, "registry", engine_or_registry)
    entry = registry.entry("controlnets", name)
    words = [name, str(entry.option("preprocessor") or "")]
    words += [s.describe() for s in entry.sources]
    for text in words:
        text = text.lower().replace("-", "_")
        for word, kind in _KIND_WORDS:
            if word in text:
                return kind
    return None


def controlnet_choices(engine, *, include_shuffle: bool = False) -> List[str]:
    """ControlNet names for structure control (shuffle is a content ControlNet: excluded)."""
    names = engine.registry.names("controlnets")
    if include_shuffle:
        return names
    return [n for n in names if control_kind(engine, n) != "shuffle"]


def default_preprocessor(engine, name: str) -> str:
    """The detector an entry uses by default in preprocess mode (its ``preprocessor``)."""
    entry = engine.registry.entry("controlnets", name)
    return str(entry.option("preprocessor") or control_kind(engine, name) or "none")


def follow_size(image, *, lo: int = 512, hi: int = 1536, keep_aspect: bool = False) -> Tuple[int, int]:
    """Output size that follows a control image. Default: the official rule (floor to 64, each
    side clamped to [lo, hi]). ``keep_aspect``: scale the whole image into [lo, hi] first, so
    the ratio survives (used with a smaller ``hi`` in the tiny profile)."""
    img = image if isinstance(image, Image.Image) else load_image(image, "control image")
    if not keep_aspect:
        return size_from_control(img, lo, hi)
    w, h = img.size
    s = 1.0
    if max(w, h) > hi:
        s = hi / max(w, h)
    if min(w, h) * s < lo:
        s = lo / min(w, h)
    return tuple(min(hi, max(lo, int(v * s) // 64 * 64)) for v in (w, h))  # type: ignore[return-value]


def normalise_mode(mode: Optional[str]) -> str:
    key = str(mode or MODE_AS_IS).strip().lower()
    if key not in _MODE_ALIASES:
        raise InvalidSettingError(f"control mode must be '{MODE_AS_IS}' or '{MODE_PREPROCESS}', got {mode!r}")
    return _MODE_ALIASES[key]


def _number(v, what: str, lo: float, hi: float) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise InvalidSettingError(f"{what} must be a number, got {v!r}") from None
    if not (lo <= f <= hi):  # also refuses NaN
        raise InvalidSettingError(f"{what} must be between {lo:g} and {hi:g}, got {v!r}")
    return f


def check_aspect(image_size: Tuple[int, int], size: Tuple[int, int], what: str, *, followed: bool = False) -> None:
    """Refuse a control image whose aspect ratio is more than 2x away from the output's (it
    would be squashed beyond recognition); milder differences are simply resized."""
    (cw, ch), (w, h) = image_size, size
    mismatch = (w / h) / (cw / ch)
    mismatch = max(mismatch, 1 / mismatch)
    if mismatch <= MAX_ASPECT_MISMATCH:
        return
    if followed:
        advice = (f"its aspect ratio is too extreme for the supported sizes; crop it to at most 3:1 "
                  f"(the output would be {w}x{h})")
    else:
        advice = (f"crop the control image to roughly {_ratio(w, h)}, or let the size follow the control image "
                  f"({_ratio(cw, ch)})")
    raise InvalidSettingError(
        f"{what} is {cw}x{ch} but the requested size is {w}x{h}: their aspect ratios differ by "
        f"{mismatch:.1f}x (more than {MAX_ASPECT_MISMATCH:g}x), so the map would be badly distorted. Please {advice}."
    )


def _ratio(w: int, h: int) -> str:
    from math import gcd

    g = gcd(int(w), int(h)) or 1
    a, b = w // g, h // g
    return f"{a}:{b}" if max(a, b) <= 32 else f"{w / h:.2f}:1"


# ----------------------------------------------------------------------------- map heuristics
@dataclass
class MapStats:
    grey: float  # fraction of pixels with (nearly) equal R, G, B
    extreme: float  # fraction of grey-ish pixels that are near black or near white
    black: float  # fraction of near-black pixels
    saturated_fg: float  # among pixels that are not near black: fraction clearly coloured
    top_colours: float  # fraction of pixels covered by the 32 most frequent (coarse) colours


def map_stats(img: Image.Image) -> MapStats:
    small = img.convert("RGB")
    if max(small.size) > CHECK_SIDE:
        small = small.copy()
        small.thumbnail((CHECK_SIDE, CHECK_SIDE), Image.NEAREST)  # nearest: keeps binary maps binary
    a = np.asarray(small, dtype=np.int16).reshape(-1, 3)
    spread = a.max(1) - a.min(1)
    luma = a.mean(1)
    grey = spread <= 24
    black = a.max(1) <= 40
    extreme = grey & ((luma <= 64) | (luma >= 192))
    fg = ~black
    sat_fg = float((spread[fg] >= 80).mean()) if fg.any() else 0.0
    coarse = (a // 16).astype(np.int32)
    codes = coarse[:, 0] * 256 + coarse[:, 1] * 16 + coarse[:, 2]
    counts = np.sort(np.bincount(codes, minlength=4096))[::-1]
    return MapStats(float(grey.mean()), float(extreme.mean()), float(black.mean()), sat_fg,
                    float(counts[:32].sum() / len(codes)))


def map_problem(kind: Optional[str], img: Image.Image) -> Optional[str]:
    """Why ``img`` does not look like a ready map of ``kind`` (None: it plausibly does)."""
    if kind is None or kind == "shuffle" or kind not in MAP_LOOKS:
        return None
    s = map_stats(img)
    coloured = 1 - s.grey
    photo_like = f"{s.extreme:.0%} of its pixels are near black or white and {coloured:.0%} are coloured, as in a photo"
    edge_or_depth = ("canny", "mlsd", "scribble", "lineart", "lineart_anime", "softedge", "depth")
    if kind in edge_or_depth and s.black >= 0.6 and s.saturated_fg > 0.3:
        return "its strokes are coloured (a pose skeleton?); this kind of map is grey or white"
    if kind in ("canny", "mlsd", "scribble", "lineart", "lineart_anime"):
        if s.grey < 0.9 or s.extreme < 0.75:
            return photo_like
    elif kind == "softedge":
        if s.grey < 0.9 or s.extreme < 0.4:
            return photo_like
    elif kind == "openpose":
        if s.black < 0.6:
            return f"only {s.black:.0%} of it is black background, as in a photo"
        if s.saturated_fg < 0.3 and s.black < 0.995:
            return "its strokes are white or grey, not the coloured limbs of a pose skeleton (an edge map?)"
    elif kind == "depth":
        if s.grey < 0.9:
            return f"{coloured:.0%} of its pixels are coloured; a depth map is grey"
    elif kind == "normal":
        if s.grey > 0.9:
            return "it is greyscale; a normal map is colourful (a depth or edge map?)"
    elif kind == "seg":
        if s.top_colours < 0.85:
            return f"its 32 most common colours cover only {s.top_colours:.0%} of it; a segmentation map has a few flat colours"
    return None


def _check_map(kind: Optional[str], img: Image.Image, what: str, controlnet: str, can_preprocess: bool) -> None:
    problem = map_problem(kind, img)
    if problem is None:
        return
    advice = (f"If it is a picture, choose '{MODE_PREPROCESS}' so a detector makes the {kind} map from it; "
              if can_preprocess else "")
    article = "an" if kind[0] in "aeiou" else "a"
    raise InputImageError(
        f"{what} does not look like {article} {kind} map ({MAP_LOOKS[kind]}) for ControlNet '{controlnet}' in "
        f"'{MODE_AS_IS}' mode: {problem}. {advice}otherwise upload a ready {kind} map "
        "(or turn off the map check if this really is one)."
    )


# ----------------------------------------------------------------------------- the task
@dataclass
class _Prepared:
    spec: ControlSpec
    index: int
    kind: Optional[str]
    image: Image.Image
    mode: str
    preprocessor: str

    @property
    def what(self) -> str:
        return f"control image {self.index + 1}"


def _validate(engine, controls: Sequence[ControlSpec]) -> List[_Prepared]:
    controls = [c for c in controls if c is not None]
    if not controls:
        raise InvalidSettingError("no ControlNet given: choose a ControlNet type and upload a control image")
    if len(controls) > MAX_CONTROLS:
        raise InvalidSettingError(f"at most {MAX_CONTROLS} ControlNets can be used at once, got {len(controls)}")
    prepared = []
    for i, c in enumerate(controls):
        label = f"ControlNet {i + 1}"
        if not isinstance(c.controlnet, str) or not c.controlnet:
            raise InvalidSettingError(f"{label}: choose a ControlNet type")
        engine.registry.entry("controlnets", c.controlnet)  # UnknownModelError with the known names
        mode = normalise_mode(c.mode)
        scale = _number(c.scale, f"{label} conditioning scale", 0.0, MAX_SCALE)
        start = _number(c.start, f"{label} control start", 0.0, 1.0)
        end = _number(c.end, f"{label} control end", 0.0, 1.0)
        if start > end:
            raise InvalidSettingError(f"{label}: control start ({start:g}) must not be after control end ({end:g})")
        preprocessor = c.preprocessor or default_preprocessor(engine, c.controlnet)
        if mode == MODE_PREPROCESS:
            from ..detectors import resolve_name
            from ..errors import ConfigError

            try:
                preprocessor = resolve_name(preprocessor)
            except ConfigError as e:
                raise InvalidSettingError(f"{label}: {e}") from None
        what = f"control image {i + 1}"
        if c.image is None:
            raise InputImageError(
                f"no {what} given: upload a control image for ControlNet {i + 1} ('{c.controlnet}'), "
                f"either a ready map ('{MODE_AS_IS}') or a picture to '{MODE_PREPROCESS}'"
            )
        img = load_image(c.image, what)
        prepared.append(_Prepared(replace(c, scale=scale, start=start, end=end), i, control_kind(engine, c.controlnet),
                                  img, mode, preprocessor))
    return prepared


def _make_map(engine, p: _Prepared, size: Tuple[int, int], annotator_dir) -> Image.Image:
    resized = p.image if p.image.size == size else p.image.resize(size, Image.BICUBIC)
    if p.mode == MODE_AS_IS or p.preprocessor == "none":
        return resized
    try:
        out = engine.detector(p.preprocessor, annotator_dir)(resized, resolution=detect_resolution(size), **(p.spec.options or {}))
    except ModelUnavailableError as e:
        if MODE_AS_IS in str(e):  # the detector already suggests a ready map
            raise
        raise ModelUnavailableError(
            f"{e} Alternatively, upload a ready {p.kind or p.preprocessor} map as {p.what} and choose '{MODE_AS_IS}'."
        ) from None
    out = out.convert("RGB")
    return out if out.size == size else out.resize(size, Image.BICUBIC)


def detect_resolution(size: Tuple[int, int]) -> int:
    return max(64, min(1024, min(size) // 64 * 64))


def prepare_control_map(engine, spec: ControlSpec, size: Tuple[int, int], annotator_dir=None, what: str = "control image") -> Image.Image:
    """One ControlNet's hint at ``size``, exactly as ``reference_control`` makes it (same
    validation, aspect-ratio and map-kind checks, detector). Used by the comparison tab."""
    p = _validate(engine, [spec])[0]
    check_aspect(p.image.size, size, what)
    if p.mode == MODE_AS_IS and spec.check_map:
        _check_map(p.kind, p.image, what, spec.controlnet, can_preprocess=p.kind is not None and p.kind != "seg")
    return _make_map(engine, p, size, annotator_dir)


def reference_control(
    engine,
    reference,
    controls: Sequence[ControlSpec],
    settings: Optional[ControlSettings] = None,
    progress: ControlProgress = None,
) -> TaskResult:
    """Generate from ``reference`` (content/style) under ``controls`` (structure). Returns the
    images, the control maps used as ``extras`` (at the output size) and run info."""
    from ..engine import validate_settings
    from ..sampling import ControlInput

    s = resolve_defaults(engine, settings or ControlSettings())
    validate_settings(s.steps, s.guidance, s.num_images, s.seed, s.scheduler)
    engine.registry.entry("seecoders", s.seecoder)
    engine.registry.entry("base_models", s.base_model)
    prepared = _validate(engine, controls)

    followed = s.width is None or s.height is None
    first = prepared[0].image
    if followed:
        width, height = follow_size(first)
        if s.width is not None or s.height is not None:  # one side given: keep it
            width, height = s.width or width, s.height or height
    else:
        width, height = s.width, s.height
    width, height = snap_size(width, height)
    for p in prepared:
        check_aspect(p.image.size, (width, height), p.what, followed=followed and p.index == 0)
    for p in prepared:
        if p.mode == MODE_AS_IS and p.spec.check_map:
            _check_map(p.kind, p.image, p.what, p.spec.controlnet,
                       can_preprocess=p.kind is not None and p.kind != "seg")
    ref = prepare_reference(reference)

    t0 = time.perf_counter()
    maps = [_make_map(engine, p, (width, height), s.annotator_dir) for p in prepared]
    preprocess_s = time.perf_counter() - t0
    inputs = [
        ControlInput(engine.controlnet(p.spec.controlnet), image_to_tensor(m), p.spec.scale, p.spec.start, p.spec.end)
        for p, m in zip(prepared, maps)
    ]
    t0 = time.perf_counter()
    cond, uncond = engine.encode_reference(ref, s.seecoder)
    encode_s = time.perf_counter() - t0
    gen = engine.generate(
        s.base_model, cond, uncond,
        width=width, height=height, seed=s.seed, num_images=s.num_images,
        steps=s.steps, guidance=s.guidance, scheduler=s.scheduler, controls=inputs, progress=progress,
    )
    info = {
        "seeds": gen.seeds, "width": gen.width, "height": gen.height,
        "size_from": "control image 1" if followed else "settings",
        "seecoder": s.seecoder, "base_model": s.base_model, "steps": s.steps,
        "guidance": s.guidance, "scheduler": s.scheduler,
        "controls": [
            {"controlnet": p.spec.controlnet, "kind": p.kind, "mode": p.mode,
             "preprocessor": p.preprocessor if p.mode == MODE_PREPROCESS else None,
             "scale": p.spec.scale, "start": p.spec.start, "end": p.spec.end}
            for p in prepared
        ],
        "timings": {"preprocess": preprocess_s, "encode": encode_s, **gen.timings},
    }
    return TaskResult(gen.images, maps, info)


__all__ = [
    "MODES", "MODE_AS_IS", "MODE_PREPROCESS", "MAX_CONTROLS", "ControlSpec", "ControlSettings",
    "reference_control", "control_kind", "controlnet_choices", "default_preprocessor", "follow_size",
    "check_aspect", "map_problem", "map_stats",
]
