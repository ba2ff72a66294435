"""Draw the example control maps in ``assets/examples/`` (CC0, drawn by this script).

    .venv/bin/python assets/make_examples.py            # (re)writes the files
    .venv/bin/python assets/make_examples.py --check    # verifies they are up to date

Maps:

* ``pose_*.png``: OpenPose skeletons in the standard OpenPose colour scheme (18 COCO body
  keypoints, 17 limbs, one hue per limb/keypoint going round the colour wheel, limbs as
  translucent ellipses and keypoints as dots on a black background), what the ``openpose``
  ControlNets were trained on.
* ``canny_house.png``: a thin white-edges-on-black line drawing, like a Canny edge map.
* ``scribble_rocket.png``: a thick white-on-black scribble, like the ``scribble`` maps.
* ``depth_spheres.png``: a greyscale depth map (near = bright), like MiDaS output.

Everything is deterministic (no randomness), so rerunning gives identical files.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent / "examples"

# --------------------------------------------------------------------------- OpenPose scheme
# 18 body keypoints in OpenPose (COCO-18) order.
KEYPOINTS = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)
# The 17 limbs drawn by OpenPose, as pairs of keypoint names, in the order that picks their colour.
LIMBS = (
    ("neck", "r_shoulder"), ("neck", "l_shoulder"), ("r_shoulder", "r_elbow"), ("r_elbow", "r_wrist"),
    ("l_shoulder", "l_elbow"), ("l_elbow", "l_wrist"), ("neck", "r_hip"), ("r_hip", "r_knee"),
    ("r_knee", "r_ankle"), ("neck", "l_hip"), ("l_hip", "l_knee"), ("l_knee", "l_ankle"),
    ("neck", "nose"), ("nose", "r_eye"), ("r_eye", "r_ear"), ("nose", "l_eye"), ("l_eye", "l_ear"),
)


def openpose_colours(n: int = 18) -> List[Tuple[int, int, int]]:
    """The OpenPose palette: 18 fully saturated hues, 20 degrees apart, starting at red."""
    out = []
    for i in range(n):
        hue = (i * 20) % 360  # red, orange, yellow, ..., magenta, pink-red
        sector, frac = divmod(hue, 60)
        up, down = round(255 * frac / 60), round(255 * (1 - frac / 60))
        out.append([(255, up, 0), (down, 255, 0), (0, 255, up), (0, down, 255), (up, 0, 255), (255, 0, down)][sector])
    return out


def draw_pose(size: Tuple[int, int], people: Sequence[Dict[str, Tuple[float, float]]], stick: int = 4) -> Image.Image:
    """OpenPose-style body map. ``people``: keypoint name -> (x, y) in [0, 1] image fractions;
    missing keypoints are simply not drawn (as OpenPose does for undetected ones)."""
    w, h = size
    colours = openpose_colours()
    canvas = np.zeros((h, w, 3), np.float32)
    for person in people:
        pts = {k: (x * w, y * h) for k, (x, y) in person.items()}
        for i, (a, b) in enumerate(LIMBS):
            if a not in pts or b not in pts:
                continue
            layer = Image.new("L", (w, h), 0)
            _ellipse_between(ImageDraw.Draw(layer), pts[a], pts[b], stick)
            alpha = np.asarray(layer, np.float32)[..., None] / 255.0 * 0.6
            canvas = canvas * (1 - alpha) + np.array(colours[i], np.float32) * alpha
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for person in people:
        for i, name in enumerate(KEYPOINTS):
            if name in person:
                x, y = person[name][0] * w, person[name][1] * h
                draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=colours[i])
    return img


def _ellipse_between(draw: ImageDraw.ImageDraw, p: Tuple[float, float], q: Tuple[float, float], half_width: float) -> None:
    """A filled ellipse whose long axis runs from p to q (an OpenPose limb)."""
    (x0, y0), (x1, y1) = p, q
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_len = math.hypot(x1 - x0, y1 - y0) / 2
    ang = math.atan2(y1 - y0, x1 - x0)
    poly = []
    for k in range(36):
        t = 2 * math.pi * k / 36
        ex, ey = half_len * math.cos(t), half_width * math.sin(t)
        poly.append((cx + ex * math.cos(ang) - ey * math.sin(ang), cy + ex * math.sin(ang) + ey * math.cos(ang)))
    draw.polygon(poly, fill=255)


def _person(cx: float, top: float, height: float, *, aspect: float = 1.5, arms: str = "down", legs: str = "straight",
            facing: float = 0.0):
    """A person's 18 keypoints (image fractions) from a few knobs. ``height``: fraction of the
    canvas height; ``aspect``: canvas height / width (keeps the body's proportions)."""
    u = height / 8.0  # one "head" unit, vertically
    sx = u * aspect  # the same length as a fraction of the width
    neck = (cx, top + 1.3 * u)
    k = {
        "nose": (cx + facing * sx * 0.3, top + 0.75 * u),
        "neck": neck,
        "r_shoulder": (cx - 1.1 * sx, neck[1]),
        "l_shoulder": (cx + 1.1 * sx, neck[1]),
        "r_hip": (cx - 0.7 * sx, top + 4.1 * u),
        "l_hip": (cx + 0.7 * sx, top + 4.1 * u),
        "r_eye": (cx - 0.25 * sx + facing * sx * 0.3, top + 0.6 * u),
        "l_eye": (cx + 0.25 * sx + facing * sx * 0.3, top + 0.6 * u),
        "r_ear": (cx - 0.5 * sx, top + 0.7 * u),
        "l_ear": (cx + 0.5 * sx, top + 0.7 * u),
    }
    if arms == "down":
        k.update(r_elbow=(cx - 1.4 * sx, top + 2.9 * u), r_wrist=(cx - 1.5 * sx, top + 4.3 * u),
                 l_elbow=(cx + 1.4 * sx, top + 2.9 * u), l_wrist=(cx + 1.5 * sx, top + 4.3 * u))
    elif arms == "up":
        k.update(r_elbow=(cx - 2.0 * sx, top + 0.5 * u), r_wrist=(cx - 2.4 * sx, top - 0.8 * u),
                 l_elbow=(cx + 2.0 * sx, top + 0.5 * u), l_wrist=(cx + 2.4 * sx, top - 0.8 * u))
    elif arms == "wave":
        k.update(r_elbow=(cx - 1.4 * sx, top + 2.9 * u), r_wrist=(cx - 1.5 * sx, top + 4.3 * u),
                 l_elbow=(cx + 2.2 * sx, top + 1.6 * u), l_wrist=(cx + 2.6 * sx, top + 0.1 * u))
    if legs == "straight":
        k.update(r_knee=(cx - 0.8 * sx, top + 5.9 * u), r_ankle=(cx - 0.85 * sx, top + 7.7 * u),
                 l_knee=(cx + 0.8 * sx, top + 5.9 * u), l_ankle=(cx + 0.85 * sx, top + 7.7 * u))
    elif legs == "stride":
        k.update(r_knee=(cx - 1.5 * sx, top + 5.8 * u), r_ankle=(cx - 2.3 * sx, top + 7.6 * u),
                 l_knee=(cx + 1.2 * sx, top + 5.9 * u), l_ankle=(cx + 1.4 * sx, top + 7.7 * u))
    return k


# --------------------------------------------------------------------------- line maps
def draw_canny_house(size=(512, 512)) -> Image.Image:
    """Thin white edges on black: a house with a door, windows and a tree."""
    w, h = size
    img = Image.new("RGB", size, (0, 0, 0))
    d = ImageDraw.Draw(img)
    white = (255, 255, 255)
    s = lambda x, y: (x * w / 512, y * h / 512)  # noqa: E731
    d.line([s(0, 430), s(512, 430)], fill=white, width=1)
    d.rectangle([s(110, 250), s(350, 430)], outline=white, width=1)
    d.line([s(90, 255), s(230, 130), s(370, 255)], fill=white, width=1)
    d.rectangle([s(200, 330), s(255, 430)], outline=white, width=1)
    for x in (130, 280):
        d.rectangle([s(x, 280), s(x + 45, 325)], outline=white, width=1)
        d.line([s(x + 22, 280), s(x + 22, 325)], fill=white, width=1)
    d.rectangle([s(300, 150), s(325, 205)], outline=white, width=1)
    d.line([s(425, 430), s(425, 330)], fill=white, width=1)
    d.line([s(440, 430), s(440, 330)], fill=white, width=1)
    d.ellipse([s(375, 210), s(490, 340)], outline=white, width=1)
    d.ellipse([s(40, 60), s(90, 110)], outline=white, width=1)
    return img


def draw_scribble_rocket(size=(512, 512)) -> Image.Image:
    """A thick white scribble on black: a rocket taking off with smoke."""
    w, h = size
    img = Image.new("RGB", size, (0, 0, 0))
    d = ImageDraw.Draw(img)
    white = (255, 255, 255)
    s = lambda x, y: (x * w / 512, y * h / 512)  # noqa: E731
    lw = max(2, round(6 * w / 512))
    body = [s(256, 50), s(300, 130), s(300, 330), s(212, 330), s(212, 130), s(256, 50)]
    d.line(body, fill=white, width=lw, joint="curve")
    d.ellipse([s(236, 160), s(276, 200)], outline=white, width=lw)
    d.line([s(212, 270), s(170, 350), s(212, 330)], fill=white, width=lw, joint="curve")
    d.line([s(300, 270), s(342, 350), s(300, 330)], fill=white, width=lw, joint="curve")
    d.line([s(230, 330), s(256, 400), s(282, 330)], fill=white, width=lw, joint="curve")
    for cx, cy, r in ((200, 440, 40), (256, 460, 45), (315, 440, 40), (150, 470, 30), (365, 470, 30)):
        d.arc([s(cx - r, cy - r), s(cx + r, cy + r)], 180, 360, fill=white, width=lw)
    return img


def draw_depth_spheres(size=(512, 512)) -> Image.Image:
    """A greyscale depth map (near = bright): a floor receding upwards and three spheres."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = 0.15 + 0.45 * (yy / (h - 1))  # floor: nearer at the bottom
    for cx, cy, r, near in ((0.3, 0.62, 0.2, 0.95), (0.68, 0.55, 0.15, 0.8), (0.52, 0.35, 0.09, 0.6)):
        dx, dy = (xx / w - cx) / r, (yy / h - cy) / r
        inside = dx * dx + dy * dy < 1
        bulge = np.sqrt(np.clip(1 - dx * dx - dy * dy, 0, 1))
        depth = np.where(inside, np.maximum(depth, near - 0.25 + 0.25 * bulge), depth)
    img = Image.fromarray((np.clip(depth, 0, 1) * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.5))
    return img.convert("RGB")


def draw_coffee_mask(size=(512, 341)) -> Image.Image:
    """White = change: the surface of the coffee in coffee.jpg (Edit with a Reference's example)."""
    img = Image.new("RGB", size, (0, 0, 0))
    ImageDraw.Draw(img).ellipse([172, 78, 318, 168], fill=(255, 255, 255))
    return img


def build_examples() -> Dict[str, Image.Image]:
    portrait = (512, 768)
    return {
        "pose_standing.png": draw_pose(portrait, [_person(0.5, 0.1, 0.8)]),
        "pose_arms_up.png": draw_pose(portrait, [_person(0.5, 0.16, 0.76, arms="up", legs="stride")]),
        "pose_two_people.png": draw_pose(
            (768, 512), [_person(0.3, 0.12, 0.8, aspect=2 / 3, arms="wave", facing=0.5),
             _person(0.7, 0.15, 0.78, aspect=2 / 3, facing=-0.5)]
        ),
        "canny_house.png": draw_canny_house(),
        "scribble_rocket.png": draw_scribble_rocket(),
        "depth_spheres.png": draw_depth_spheres(),
        "edit_coffee_mask.png": draw_coffee_mask(),
    }


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only verify that the files match")
    p.add_argument("--out", type=Path, default=HERE)
    args = p.parse_args(argv)
    sys.path.insert(0, str(HERE.parents[1]))
    from prompt_free.images import open_lazy  # the project's one Image.open (its allowed formats)

    stale = []
    for name, img in build_examples().items():
        path = args.out / name
        if args.check:
            if not path.is_file() or not np.array_equal(np.asarray(open_lazy(path).convert("RGB")), np.asarray(img)):
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_png_bytes(img))
        print(f"wrote {path} ({img.width}x{img.height})")
    if stale:
        print(f"out of date: {', '.join(stale)} (run assets/make_examples.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
