"""ControlNets in a run, for every task that uses them (Reference + ControlNet, the comparison,
try-on): what a user gives (``ControlSpec``), its checks, the map and the hint.

Which kind of map a ControlNet takes (openpose, canny, depth ...) and which detector makes it
are known from ``checkpoints.yaml``: an entry's ``preprocessor:`` (its default detector) and
optional ``kind:``; without ``kind:``, the kind is the one of its preprocessor in the detector
table. Nothing is guessed from names.

Cheap checks run before any model is loaded: unknown ControlNet names, ranges, missing control
images, a control image whose aspect ratio is far (> 2x) from the output's, and, for "use
as-is" maps, a map that does not look like the ControlNet's kind (``map_check``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

from PIL import Image

from .. import detectors, settings
from ..errors import ConfigError, InputImageError, InvalidSettingError, ModelUnavailableError
from ..images import image_to_tensor, load_image, size_from_control
from ..map_check import MAP_LOOKS, map_problem
from ..sampling import ControlInput

MODE_AS_IS = "use as-is"
MODE_PREPROCESS = "preprocess"
MODES = (MODE_AS_IS, MODE_PREPROCESS)
_MODE_ALIASES = {
    "use as-is": MODE_AS_IS, "as-is": MODE_AS_IS, "as_is": MODE_AS_IS, "asis": MODE_AS_IS, "none": MODE_AS_IS,
    "preprocess": MODE_PREPROCESS, "detect": MODE_PREPROCESS,
}
CONTENT_KIND = "shuffle"  # a content ControlNet (the comparison's baseline), not a structure one


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


# ----------------------------------------------------------------------------- kinds
def control_kind(engine_or_registry, name: str) -> Optional[str]:
    """The kind of map a ControlNet entry takes: its ``kind:``, else its preprocessor's kind;
    None when unknown (no map check then)."""
    registry = getattr(engine_or_registry, "registry", engine_or_registry)
    entry = registry.entry("controlnets", name)
    kind = entry.option("kind")
    if kind:
        return kind
    preprocessor = entry.option("preprocessor")
    return _preprocessor_kind(preprocessor) if preprocessor else None


def _preprocessor_kind(name: str) -> Optional[str]:
    return detectors.SPECS[detectors.resolve_name(name)].kind


def controlnet_choices(engine, *, include_shuffle: bool = False) -> List[str]:
    """ControlNet names for structure control (shuffle is a content ControlNet: excluded)."""
    names = engine.registry.names("controlnets")
    if include_shuffle:
        return names
    return [n for n in names if control_kind(engine, n) != CONTENT_KIND]


def default_preprocessor(engine, name: str) -> str:
    """The detector an entry uses by default in preprocess mode (its ``preprocessor``)."""
    entry = engine.registry.entry("controlnets", name)
    return str(entry.option("preprocessor") or control_kind(engine, name) or "none")


def normalise_mode(mode: Optional[str]) -> str:
    key = str(mode or MODE_AS_IS).strip().lower()
    if key not in _MODE_ALIASES:
        raise InvalidSettingError(f"control mode must be '{MODE_AS_IS}' or '{MODE_PREPROCESS}', got {mode!r}")
    return _MODE_ALIASES[key]


# ----------------------------------------------------------------------------- size
def follow_size(image, *, lo: int = settings.FOLLOW_SIZE_LO, hi: int = settings.FOLLOW_SIZE_HI,
                keep_aspect: bool = False) -> Tuple[int, int]:
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


def output_size(width, height, control_image: Image.Image) -> Tuple[int, int, bool]:
    """(width, height, followed): the settings' size, or where one or both sides are None the
    size that follows ``control_image`` (official)."""
    if width is not None and height is not None:
        return width, height, False
    w, h = follow_size(control_image)
    return width or w, height or h, True


def check_aspect(image_size: Tuple[int, int], size: Tuple[int, int], what: str, *, followed: bool = False) -> None:
    """Refuse a control image whose aspect ratio is more than 2x away from the output's (it
    would be squashed beyond recognition); milder differences are simply resized."""
    (cw, ch), (w, h) = image_size, size
    mismatch = (w / h) / (cw / ch)
    mismatch = max(mismatch, 1 / mismatch)
    limit = settings.MAX_ASPECT_MISMATCH
    if mismatch <= limit:
        return
    if followed:
        advice = (f"its aspect ratio is too extreme for the supported sizes; crop it to at most 3:1 "
                  f"(the output would be {w}x{h})")
    else:
        advice = (f"crop the control image to roughly {_ratio(w, h)}, or let the size follow the control image "
                  f"({_ratio(cw, ch)})")
    raise InvalidSettingError(
        f"{what} is {cw}x{ch} but the requested size is {w}x{h}: their aspect ratios differ by "
        f"{mismatch:.1f}x (more than {limit:g}x), so the map would be badly distorted. Please {advice}."
    )


def _ratio(w: int, h: int) -> str:
    from math import gcd

    g = gcd(int(w), int(h)) or 1
    a, b = w // g, h // g
    return f"{a}:{b}" if max(a, b) <= 32 else f"{w / h:.2f}:1"


# ----------------------------------------------------------------------------- checks
@dataclass
class PreparedControl:
    """A checked ``ControlSpec``: ranges in bounds, the mode and detector resolved, the image
    opened (``open_images``)."""

    spec: ControlSpec
    index: int
    kind: Optional[str]
    mode: str
    preprocessor: str
    what: str  # how messages name its image
    image: Optional[Image.Image] = None


def check_specs(engine, controls: Sequence[ControlSpec], *, what: Optional[str] = None) -> List[PreparedControl]:
    """Names, modes, ranges and detector names of ``controls``; no image is opened yet."""
    controls = [c for c in controls if c is not None]
    if not controls:
        raise InvalidSettingError("no ControlNet given: choose a ControlNet type and upload a control image")
    if len(controls) > settings.MAX_CONTROLS:
        raise InvalidSettingError(f"at most {settings.MAX_CONTROLS} ControlNets can be used at once, got {len(controls)}")
    prepared = []
    for i, c in enumerate(controls):
        label = f"ControlNet {i + 1}"
        if not isinstance(c.controlnet, str) or not c.controlnet:
            raise InvalidSettingError(f"{label}: choose a ControlNet type")
        engine.registry.entry("controlnets", c.controlnet)  # UnknownModelError with the known names
        mode = normalise_mode(c.mode)
        scale = settings.CONTROL_SCALE.check(c.scale, f"{label} conditioning scale")
        start = settings.CONTROL_WINDOW.check(c.start, f"{label} control start")
        end = settings.CONTROL_WINDOW.check(c.end, f"{label} control end")
        if start > end:
            raise InvalidSettingError(f"{label}: control start ({start:g}) must not be after control end ({end:g})")
        preprocessor = c.preprocessor or default_preprocessor(engine, c.controlnet)
        if mode == MODE_PREPROCESS:
            try:
                preprocessor = detectors.resolve_name(preprocessor)
            except ConfigError as e:
                raise InvalidSettingError(f"{label}: {e}") from None
        prepared.append(PreparedControl(replace(c, scale=scale, start=start, end=end), i,
                                        control_kind(engine, c.controlnet), mode, preprocessor,
                                        what or f"control image {i + 1}"))
    return prepared


def open_images(prepared: Sequence[PreparedControl]) -> None:
    """Open every control image (``InputImageError`` for a missing or unreadable one)."""
    for p in prepared:
        if p.spec.image is None:
            raise InputImageError(
                f"no {p.what} given: upload a control image for ControlNet {p.index + 1} ('{p.spec.controlnet}'), "
                f"either a ready map ('{MODE_AS_IS}') or a picture to '{MODE_PREPROCESS}'"
            )
        p.image = load_image(p.spec.image, p.what)


def check_maps(prepared: Sequence[PreparedControl], size: Tuple[int, int], *, followed: bool = False) -> None:
    """Aspect ratios against the output ``size``, then as-is maps against their kind."""
    for p in prepared:
        check_aspect(p.image.size, size, p.what, followed=followed and p.index == 0)
    for p in prepared:
        if p.mode == MODE_AS_IS and p.spec.check_map:
            _check_map(p)


def _check_map(p: PreparedControl) -> None:
    problem = map_problem(p.kind, p.image)
    if problem is None:
        return
    kind = p.kind
    can_preprocess = kind != "seg"
    advice = (f"If it is a picture, choose '{MODE_PREPROCESS}' so a detector makes the {kind} map from it; "
              if can_preprocess else "")
    article = "an" if kind[0] in "aeiou" else "a"
    raise InputImageError(
        f"{p.what} does not look like {article} {kind} map ({MAP_LOOKS[kind]}) for ControlNet '{p.spec.controlnet}' in "
        f"'{MODE_AS_IS}' mode: {problem}. {advice}otherwise upload a ready {kind} map "
        "(or turn off the map check if this really is one)."
    )


# ----------------------------------------------------------------------------- maps and hints
def detect_resolution(size: Tuple[int, int]) -> int:
    return max(64, min(1024, min(size) // 64 * 64))


def control_map(engine, p: PreparedControl, size: Tuple[int, int], annotator_dir=None) -> Image.Image:
    """The hint picture of ``p`` at the output ``size``: the image resized (PIL bicubic, as the
    official demo), then, in preprocess mode, the detector's map of that resized picture."""
    resized = p.image if p.image.size == size else p.image.resize(size, Image.BICUBIC)
    if p.mode == MODE_AS_IS or p.preprocessor == "none":
        return resized
    try:
        out = run_detector(engine, p.preprocessor, resized, size, annotator_dir, **(p.spec.options or {}))
    except ModelUnavailableError as e:
        if MODE_AS_IS in str(e):  # the detector's message already suggests a ready map
            raise
        raise ModelUnavailableError(
            f"{e} Alternatively, upload a ready {p.kind or p.preprocessor} map as {p.what} and choose '{MODE_AS_IS}'."
        ) from None
    return out


def run_detector(engine, name: str, image: Image.Image, size: Tuple[int, int], annotator_dir=None, **options) -> Image.Image:
    """Detector ``name`` (built once and held by the engine) on ``image`` -> RGB map at ``size``."""
    out = engine.detector(name, annotator_dir)(image, resolution=detect_resolution(size), **options).convert("RGB")
    return out if out.size == size else out.resize(size, Image.BICUBIC)


def control_input(engine, p: PreparedControl, hint: Image.Image) -> ControlInput:
    """The loop's view of ``p``: its ControlNet (loaded by the engine), hint tensor and window."""
    return ControlInput(engine.controlnet(p.spec.controlnet), image_to_tensor(hint), p.spec.scale,
                        p.spec.start, p.spec.end)
