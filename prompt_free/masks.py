"""Masks for inpainting tasks (Edit with a reference, Virtual Try-On): from a painted or
uploaded image (``fit_mask`` resizes one of another size), or drawn automatically from OpenPose
body keypoints; dilation and feathering; paste-back; garment (subject) crop.

Conventions
* A mask is a boolean (H, W) array, True = the region to change (white in a mask image).
* A *paste alpha* is a float32 (H, W) array in [0, 1] made from a mask by ``soften_mask``:
  exactly 1 on the mask dilated by ``dilation`` px, a smooth ramp over the next ``feather`` px,
  and exactly 0 farther out. ``composite`` copies the original pixel wherever alpha == 0, so
  everything farther than ``dilation + feather`` px from the mask is bit-exact.
* Keypoints follow the OpenPose body-18 order (``BODY_PARTS``), each ``(x, y, score)`` or
  ``None``, in pixel coordinates of the image they were detected on.

Only numpy, OpenCV and PIL are used here (no torch), so the UI may call it directly.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from .errors import InputImageError, InvalidSettingError
from .images import open_image
from .settings import MASK_PX

BODY_PARTS = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)
K = {name: i for i, name in enumerate(BODY_PARTS)}

UPPER_BODY, LOWER_BODY, FULL_OUTFIT = "upper body", "lower body", "full outfit"
MASK_MODES = (UPPER_BODY, LOWER_BODY, FULL_OUTFIT)
MIN_KEYPOINT_SCORE = 0.05


class NoPersonError(InputImageError):
    """No person (or not the body parts a mask needs) was found in the person photo."""


class EmptyMaskError(InputImageError):
    """The mask selects no pixel."""


# ----------------------------------------------------------------------------- mask images
def normalize_mode(mode: str) -> str:
    """'Upper body', 'upper_body', 'upper' ... -> one of MASK_MODES."""
    key = str(mode or "").strip().lower().replace("_", " ").replace("-", " ")
    aliases = {"upper": UPPER_BODY, "top": UPPER_BODY, "lower": LOWER_BODY, "bottom": LOWER_BODY,
               "full": FULL_OUTFIT, "outfit": FULL_OUTFIT, "full body": FULL_OUTFIT, "dress": FULL_OUTFIT}
    key = aliases.get(key, key)
    if key not in MASK_MODES:
        raise InvalidSettingError(f"unknown mask mode '{mode}'; choose one of: {', '.join(MASK_MODES)}")
    return key


def load_mask(mask, size: Optional[Tuple[int, int]] = None, what: str = "mask image") -> np.ndarray:
    """A mask image -> bool (H, W), True = change.

    Images with transparency (a brush layer, a transparent PNG) give the painted pixels
    (alpha >= 32); opaque images give their white pixels (luminance > 127). Boolean or 2-D
    numeric arrays are taken as they are (non-zero / > 0.5 for floats in [0, 1]).
    ``size`` (width, height): the mask is resized (nearest) to it; a different aspect ratio is
    an error, because the mask would no longer fit the photo.
    """
    if mask is None:
        raise EmptyMaskError(f"no {what} given")
    if isinstance(mask, np.ndarray) and (mask.dtype == bool or mask.ndim == 2):
        m = _array_mask(mask)
    else:
        m = _image_mask(open_image(mask, what))
    if size is not None and (m.shape[1], m.shape[0]) != tuple(size):
        w, h = size
        if abs(np.log((m.shape[1] / m.shape[0]) / (w / h))) > 0.02:
            raise InputImageError(
                f"the {what} is {m.shape[1]}x{m.shape[0]} but the person photo is {w}x{h}: "
                "the mask must have the photo's aspect ratio"
            )
        m = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    return m


def fit_mask(mask: np.ndarray, size: Tuple[int, int], what: str = "mask image") -> Tuple[np.ndarray, Optional[str]]:
    """A bool mask resized (nearest) to ``size`` (width, height), stretched when its aspect
    ratio differs, and a note that says so (None when it already has that size)."""
    h, w = mask.shape
    W, H = int(size[0]), int(size[1])
    if (w, h) == (W, H):
        return mask, None
    out = cv2.resize(mask.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST).astype(bool)
    note = f"the {what} is {w}x{h}, the photo {W}x{H}: the mask was resized to the photo"
    if abs(np.log((w / h) / (W / H))) > 0.02:
        note += " (stretched: its aspect ratio differs from the photo's)"
    return out, note


def _array_mask(a: np.ndarray) -> np.ndarray:
    if a.dtype == bool:
        return a.copy()
    if np.issubdtype(a.dtype, np.floating):
        return np.nan_to_num(a) > (0.5 if a.max(initial=0) <= 1.0 else 127)
    return a > (0 if a.max(initial=0) <= 1 else 127)


def _image_mask(img: Image.Image) -> np.ndarray:
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = np.asarray(img.getchannel("A"))
        if alpha.min() < 255:  # it has transparency: the painted (opaque) pixels are the mask
            return alpha >= 32
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        return a > (a.max() / 2 if a.max() > 0 else 0)
    return np.asarray(img.convert("L")) > 127


def layers_mask(layers, size: Optional[Tuple[int, int]] = None) -> Optional[np.ndarray]:
    """Union of the painted pixels (alpha >= 32) of an image editor's transparent layers, as a
    bool (H, W) mask; None when no layer has a painted pixel."""
    out = None
    for layer in layers or []:
        if layer is None:
            continue
        img = open_image(layer, "mask layer")
        if img.mode not in ("RGBA", "LA", "PA", "P"):
            continue  # an opaque layer has no painted/unpainted distinction
        m = np.asarray(img.convert("RGBA").getchannel("A")) >= 32
        if size is not None and (m.shape[1], m.shape[0]) != tuple(size):
            m = cv2.resize(m.astype(np.uint8), tuple(size), interpolation=cv2.INTER_NEAREST).astype(bool)
        out = m if out is None or out.shape != m.shape else (out | m)
    return out if out is not None and out.any() else None


def mask_to_image(mask: np.ndarray) -> Image.Image:
    """bool mask or float alpha (H, W) -> grayscale image, white = change."""
    a = mask.astype(np.float32) if mask.dtype == bool else np.clip(mask, 0, 1)
    return Image.fromarray(np.round(a * 255).astype(np.uint8), "L")


def mask_overlay(mask: np.ndarray, color=(255, 0, 255), opacity: float = 0.55) -> Image.Image:
    """A transparent RGBA layer with the mask in ``color``: an editable brush layer for an
    image editor (``load_mask`` reads it back as the same mask)."""
    h, w = mask.shape
    out = np.zeros((h, w, 4), np.uint8)
    out[mask, :3] = color
    out[mask, 3] = int(round(255 * opacity))
    return Image.fromarray(out, "RGBA")


# ----------------------------------------------------------------------------- source masks (the reference's)
SOURCE_MASK = "reference mask (reference_mask)"


def source_mask(mask, what: str = SOURCE_MASK) -> Optional[np.ndarray]:
    """A source mask (the part of a reference that informs its tokens; white or painted = use)
    as a bool (H, W) array, in the reference's own coordinates. None when none is given or it
    is all white: no mask at all (the unmasked encode, bit for bit). An empty (all black) mask
    is refused: it would leave nothing to encode."""
    if mask is None or (isinstance(mask, str) and not mask.strip()):
        return None
    m = load_mask(mask, what=what)
    if not m.any():
        raise InvalidSettingError(f"the {what} is empty (all black): paint or make white the part of the reference "
                                  "to use, or give no mask to use the whole reference")
    return None if m.all() else m


def fit_source_mask(mask: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """A source mask at ``size`` (width, height), stretched when its aspect ratio differs. A
    pixel is kept when at least half of it is under the mask, or, when that leaves nothing (a
    thin mask shrunk), when any of it is: a non-empty mask stays non-empty."""
    W, H = int(size[0]), int(size[1])
    if (mask.shape[1], mask.shape[0]) == (W, H):
        return mask
    cover = cv2.resize(mask.astype(np.float32), (W, H), interpolation=cv2.INTER_AREA)
    out = cover >= 0.5
    return out if out.any() else cover > 0


def crop_mask(mask: np.ndarray, size: Tuple[int, int], box: Optional[Tuple[int, int, int, int]]) -> np.ndarray:
    """A source mask of an image of ``size`` cut to ``box`` (left, top, right, bottom), as the
    image is cropped (a subject crop); None box: unchanged. An empty result is refused."""
    if box is None:
        return mask
    m = fit_source_mask(mask, size)[box[1]:box[3], box[0]:box[2]]
    if not m.any():
        raise InvalidSettingError(f"the {SOURCE_MASK} lies outside the cropped subject of the reference: "
                                  "turn the subject crop off or mask a part of the subject")
    return m


# ----------------------------------------------------------------------------- soften, paste back
def _check_px(v, name: str) -> int:
    return int(round(MASK_PX.check(v, f"{name} (px)")))


def check_soften(dilation, feather) -> Tuple[int, int]:
    """Validated (dilation, feather) in whole pixels (InvalidSettingError otherwise)."""
    return _check_px(dilation, "mask dilation"), _check_px(feather, "mask feathering")


def soften_mask(mask: np.ndarray, dilation=0, feather=0) -> np.ndarray:
    """bool mask -> float32 paste alpha: 1 within ``dilation`` px of the mask, a smoothstep ramp
    down over the next ``feather`` px, exactly 0 beyond (see the module docstring)."""
    dilation, feather = check_soften(dilation, feather)
    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.zeros(mask.shape, np.float32)
    if dilation == 0 and feather == 0:
        return mask.astype(np.float32)
    # distance of every pixel to the nearest mask pixel (0 on the mask)
    d = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    alpha = (d <= dilation).astype(np.float32)
    if feather > 0:
        x = np.clip((dilation + feather - d) / feather, 0.0, 1.0)
        ramp = (x * x * (3 - 2 * x)).astype(np.float32)
        alpha = np.where(d <= dilation, 1.0, np.where(d >= dilation + feather, 0.0, ramp)).astype(np.float32)
    return alpha


def composite(original: Image.Image, generated: Image.Image, alpha: np.ndarray) -> Image.Image:
    """out = original * (1 - a) + generated * a, at the original's size; pixels with a == 0
    are the original's, bit for bit."""
    if generated.size != original.size:
        generated = generated.resize(original.size, Image.BICUBIC)
    out = np.array(original.convert("RGB"))
    ys, xs = np.nonzero(alpha > 0)
    if len(ys) == 0:
        return Image.fromarray(out)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1  # work on the changed box only
    a = alpha[y0:y1, x0:x1, None].astype(np.float32)
    gen = np.asarray(generated.convert("RGB"))[y0:y1, x0:x1].astype(np.float32)
    orig = out[y0:y1, x0:x1]
    blended = np.clip(np.round(orig.astype(np.float32) * (1 - a) + gen * a), 0, 255).astype(np.uint8)
    out[y0:y1, x0:x1] = np.where(a > 0, blended, orig)
    return Image.fromarray(out)


# ----------------------------------------------------------------------------- masks from a pose
def _as_points(person: Sequence) -> np.ndarray:
    """One person's keypoints -> (18, 2) float array, NaN where missing or not confident."""
    pts = np.full((len(BODY_PARTS), 2), np.nan)
    for i, kp in enumerate(list(person)[: len(BODY_PARTS)]):
        if kp is None:
            continue
        x, y = float(kp[0]), float(kp[1])
        score = float(kp[2]) if len(kp) > 2 and kp[2] is not None else 1.0
        if np.isfinite(x) and np.isfinite(y) and score >= MIN_KEYPOINT_SCORE and x >= 0 and y >= 0:
            pts[i] = (x, y)
    return pts


def _is_point(e) -> bool:
    try:
        return e is None or (2 <= len(e) <= 4 and all(isinstance(v, (int, float, np.integer, np.floating)) for v in e[:2]))
    except TypeError:
        return False


def _is_person(obj) -> bool:
    """One person's keypoints (18 points or None) rather than a list of people."""
    try:
        return len(obj) == len(BODY_PARTS) and any(e is not None for e in obj) and all(_is_point(e) for e in obj)
    except TypeError:
        return False


def pick_person(people: Iterable[Sequence]) -> Optional[np.ndarray]:
    """The most prominent person (largest keypoint extent, then most keypoints) as (18, 2)
    points with NaN for missing ones; None when there is nobody."""
    best, best_key = None, None
    for person in people or []:
        if person is None:
            continue
        pts = _as_points(person)
        ok = ~np.isnan(pts[:, 0])
        if ok.sum() < 2:
            continue
        span = np.ptp(pts[ok], axis=0)
        key = (float(span[0] * span[1] + span.max() ** 2), int(ok.sum()))
        if best_key is None or key > best_key:
            best, best_key = pts, key
    return best


def _have(p: np.ndarray, *names: str) -> bool:
    return all(not np.isnan(p[K[n], 0]) for n in names)


def _pt(p: np.ndarray, name: str) -> np.ndarray:
    return p[K[name]].copy()


def _pair(p: np.ndarray, right: str, left: str, center: Optional[np.ndarray]):
    """Both points of a left/right pair, mirroring a missing one around ``center``'s x."""
    r = _pt(p, right) if _have(p, right) else None
    l = _pt(p, left) if _have(p, left) else None
    if r is None and l is None:
        return None, None
    if center is not None:
        if r is None:
            r = np.array([2 * center[0] - l[0], l[1]])
        if l is None:
            l = np.array([2 * center[0] - r[0], r[1]])
    return r, l


def _body_scale(p: np.ndarray, size: Tuple[int, int]) -> float:
    """A body width in pixels: the shoulder width, or an estimate from other parts."""
    if _have(p, "r_shoulder", "l_shoulder"):
        sw = float(np.linalg.norm(_pt(p, "r_shoulder") - _pt(p, "l_shoulder")))
        if sw > 2:
            return sw
    if _have(p, "r_hip", "l_hip"):
        hw = float(np.linalg.norm(_pt(p, "r_hip") - _pt(p, "l_hip")))
        if hw > 2:
            return hw * 1.6
    if _have(p, "neck") and (_have(p, "r_hip") or _have(p, "l_hip")):
        hip = _pt(p, "r_hip") if _have(p, "r_hip") else _pt(p, "l_hip")
        return float(np.linalg.norm(hip - _pt(p, "neck"))) * 0.6
    ok = ~np.isnan(p[:, 0])
    return max(8.0, float(np.ptp(p[ok][:, 1])) * 0.25 if ok.sum() >= 2 else 0.1 * max(size))


def _draw_limb(canvas: np.ndarray, points: List[Optional[np.ndarray]], thickness: float) -> None:
    chain = []
    for q in points:
        if q is None:
            break
        chain.append(q)
    t = max(1, int(round(thickness)))
    for a, b in zip(chain, chain[1:]):
        cv2.line(canvas, _ipt(a), _ipt(b), 1, t, lineType=cv2.LINE_8)
    for q in chain:
        cv2.circle(canvas, _ipt(q), max(1, t // 2), 1, -1)


def _ipt(q: np.ndarray) -> Tuple[int, int]:
    return int(round(q[0])), int(round(q[1]))


def _fill(canvas: np.ndarray, points: Sequence[np.ndarray]) -> None:
    hull = cv2.convexHull(np.round(np.asarray(points, np.float64)).astype(np.int32))
    cv2.fillConvexPoly(canvas, hull, 1)


def _upper(p: np.ndarray, canvas: np.ndarray, sw: float) -> None:
    neck = _pt(p, "neck") if _have(p, "neck") else None
    rs, ls = _pair(p, "r_shoulder", "l_shoulder", neck)
    if rs is None:
        raise NoPersonError("no shoulders were found in the person photo, so no upper-body mask can be made: paint the mask instead")
    if neck is None:
        neck = (rs + ls) / 2
    center = (rs + ls) / 2
    rh, lh = _pair(p, "r_hip", "l_hip", center)
    if rh is None:  # hips not visible (cropped photo): a torso of typical proportions
        down = np.array([0.0, 1.6 * sw])
        rh, lh = rs + down + (center - rs) * 0.15, ls + down + (center - ls) * 0.15
    up = np.array([0.0, -0.12 * sw])
    hem = np.array([0.0, 0.25 * sw])
    side = np.array([0.14 * sw, 0.0]) * np.sign(ls[0] - rs[0] if ls[0] != rs[0] else 1.0)
    _fill(canvas, [rs + up - side, ls + up + side, lh + hem + side * 0.7, rh + hem - side * 0.7, neck + up])
    for s, e, w in (("r_shoulder", "r_elbow", "r_wrist"), ("l_shoulder", "l_elbow", "l_wrist")):
        start = rs if s.startswith("r") else ls
        elbow = _pt(p, e) if _have(p, e) else None
        wrist = _pt(p, w) if _have(p, w) and elbow is not None else None
        _draw_limb(canvas, [start, elbow, wrist], 0.38 * sw)


def _lower(p: np.ndarray, canvas: np.ndarray, sw: float) -> None:
    neck = _pt(p, "neck") if _have(p, "neck") else None
    rh, lh = _pair(p, "r_hip", "l_hip", neck)
    if rh is None:
        raise NoPersonError("no hips were found in the person photo, so no lower-body mask can be made: paint the mask instead")
    center = (rh + lh) / 2
    leg = 1.15 * sw  # typical thigh / shin length when a joint is not visible
    side = np.array([0.18 * sw, 0.0]) * np.sign(lh[0] - rh[0] if lh[0] != rh[0] else 1.0)
    waist = np.array([0.0, -0.3 * sw])
    legs = []
    for hip, k, a, sgn in ((rh, "r_knee", "r_ankle", -1), (lh, "l_knee", "l_ankle", 1)):
        knee = _pt(p, k) if _have(p, k) else hip + np.array([0.0, leg])
        ankle = _pt(p, a) if _have(p, a) else None
        if ankle is not None:
            ankle = ankle + (ankle - knee) * 0.08  # hems reach a little past the ankle joint
        legs.append((hip, knee, ankle))
        _draw_limb(canvas, [hip, knee, ankle], 0.5 * sw)
    (_, rk, _), (_, lk, _) = legs
    _fill(canvas, [rh + waist - side, lh + waist + side, lh + side, rh - side, center + np.array([0, 0.2 * sw])])
    _fill(canvas, [rh - side * 0.6, lh + side * 0.6, lk, rk, center])


def _head_cut(p: np.ndarray, canvas: np.ndarray, sw: float) -> None:
    """Keep the face and head out of the mask."""
    face = [_pt(p, n) for n in ("nose", "r_eye", "l_eye", "r_ear", "l_ear") if _have(p, n)]
    if not face:
        return
    c = np.mean(face, axis=0)
    r = 0.33 * sw
    if _have(p, "neck"):
        r = max(r, 0.6 * float(np.linalg.norm(c - _pt(p, "neck"))))
    cv2.circle(canvas, _ipt(c), max(1, int(round(r))), 0, -1)


def mask_from_keypoints(people, size: Tuple[int, int], mode: str = UPPER_BODY) -> np.ndarray:
    """OpenPose body keypoints -> bool mask (H, W) of the clothing region of ``mode``:
    * upper body: torso from a little above the shoulders to a little below the hips, plus
      both arms (shoulder to wrist), never the head;
    * lower body: from the waist (above the hips) down both legs to the ankles;
    * full outfit: both.
    ``people``: a list of people (each 18 keypoints (x, y, score) or None) or one person; the
    most prominent is used. Raises NoPersonError when nobody (or no needed part) is found.
    """
    mode = normalize_mode(mode)
    w, h = int(size[0]), int(size[1])
    people = [people] if _is_person(people) else list(people if people is not None else [])
    p = pick_person(people)
    if p is None:
        raise NoPersonError("no person was found in the person photo, so no automatic mask can be made: paint or upload the mask instead")
    sw = _body_scale(p, (w, h))
    canvas = np.zeros((h, w), np.uint8)
    if mode in (UPPER_BODY, FULL_OUTFIT):
        _upper(p, canvas, sw)
    if mode in (LOWER_BODY, FULL_OUTFIT):
        _lower(p, canvas, sw)
    _head_cut(p, canvas, sw)
    mask = canvas.astype(bool)
    if not mask.any():
        raise NoPersonError("the person found in the photo lies outside the picture; paint the mask instead")
    return mask


def scale_keypoints(people, sx: float, sy: float):
    """Keypoints detected on a resized copy -> coordinates of the original image."""
    out = []
    for person in people or []:
        if person is None:
            continue
        out.append([None if kp is None else (kp[0] * sx, kp[1] * sy, *(tuple(kp[2:3]) or (1.0,))) for kp in person])
    return out


# ----------------------------------------------------------------------------- garment crop
def garment_box(img: Image.Image, tolerance: int = 28, margin: float = 0.04) -> Optional[Tuple[int, int, int, int]]:
    """Bounding box (left, top, right, bottom) of the garment in a product photo, or None when
    the background cannot be told apart (not uniform along the border) or the garment already
    fills the picture. The background colour is the median of the border pixels; a pixel
    belongs to the garment when any channel differs from it by more than ``tolerance``."""
    a = np.asarray(img.convert("RGB"), dtype=np.int16)
    h, w = a.shape[:2]
    if min(h, w) < 8:
        return None
    b = max(1, min(h, w) // 100)
    border = np.concatenate([a[:b].reshape(-1, 3), a[-b:].reshape(-1, 3), a[:, :b].reshape(-1, 3), a[:, -b:].reshape(-1, 3)])
    bg = np.median(border, axis=0)
    if (np.abs(border - bg).max(axis=1) <= tolerance).mean() < 0.6:
        return None  # busy border: no single background colour
    fg = (np.abs(a - bg).max(axis=2) > tolerance).astype(np.uint8)
    k = max(1, min(h, w) // 150) * 2 + 1
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((k, k), np.uint8))
    if fg.sum() < 0.005 * h * w:
        return None
    ys, xs = np.nonzero(fg)
    mx, my = int(round(margin * w)), int(round(margin * h))
    box = (max(0, xs.min() - mx), max(0, ys.min() - my), min(w, xs.max() + 1 + mx), min(h, ys.max() + 1 + my))
    if (box[2] - box[0]) * (box[3] - box[1]) > 0.95 * h * w:
        return None
    return box


def crop_garment(img: Image.Image, **kwargs) -> Tuple[Image.Image, Optional[Tuple[int, int, int, int]]]:
    """The garment cropped to itself (see ``garment_box``), and the box used (None: unchanged)."""
    box = garment_box(img, **kwargs)
    if box is None or min(box[2] - box[0], box[3] - box[1]) < 16:
        return img, None
    return img.crop(box), box
