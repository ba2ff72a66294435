"""Draw the Virtual Try-On examples in ``assets/examples/`` (CC0, drawn by this script).

    .venv/bin/python assets/make_tryon_examples.py            # (re)writes the files
    .venv/bin/python assets/make_tryon_examples.py --check    # verifies they are up to date

Files:

* ``tryon_person.png``: a simple drawn person (flat colours: skin, blue shirt, dark trousers,
  shoes) standing on a light studio background, 256x384;
* ``tryon_person_mask.png`` / ``tryon_person_mask_lower.png``: the upper- / lower-body mask of that person (white = change), made by
  ``prompt_free.masks.mask_from_keypoints`` from the skeleton the drawing is built on;
* ``tryon_garment_shirt.png``: a red T-shirt with white stripes on a white background;
* ``tryon_garment_trousers.png``: green trousers on a near-white background.

The person is drawn around ``PERSON_KEYPOINTS`` (OpenPose body-18 order, pixel coordinates),
which the tests reuse. Everything is deterministic, so rerunning gives identical files.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "assets" / "examples"
PERSON_SIZE = (256, 384)

# keypoint name -> (x, y) in pixels of the 256x384 person picture (the person faces the viewer,
# so their right side is on the left of the picture)
PERSON_POINTS: Dict[str, Tuple[float, float]] = {
    "nose": (128, 62), "neck": (128, 100),
    "r_shoulder": (96, 104), "r_elbow": (82, 156), "r_wrist": (76, 204),
    "l_shoulder": (160, 104), "l_elbow": (174, 156), "l_wrist": (180, 204),
    "r_hip": (110, 200), "r_knee": (108, 274), "r_ankle": (106, 346),
    "l_hip": (146, 200), "l_knee": (148, 274), "l_ankle": (150, 346),
    "r_eye": (120, 55), "l_eye": (136, 55), "r_ear": (110, 60), "l_ear": (146, 60),
}
ORDER = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)
PERSON_KEYPOINTS = [(*PERSON_POINTS[n], 1.0) for n in ORDER]  # one person, detector format

SKIN, HAIR, SHIRT, TROUSERS, SHOES = (233, 190, 160), (70, 45, 30), (40, 90, 200), (45, 45, 60), (25, 20, 20)


def _limb(d: ImageDraw.ImageDraw, a, b, width: int, fill) -> None:
    d.line([a, b], fill=fill, width=width)
    r = width // 2
    for x, y in (a, b):
        d.ellipse([x - r, y - r, x + r, y + r], fill=fill)


def draw_person() -> Image.Image:
    w, h = PERSON_SIZE
    y = np.linspace(0, 1, h)[:, None, None]
    bg = (np.array([236, 240, 245]) * (1 - y) + np.array([205, 210, 220]) * y).astype(np.uint8)
    img = Image.fromarray(np.broadcast_to(bg, (h, w, 3)).copy())
    d = ImageDraw.Draw(img)
    p = PERSON_POINTS
    d.ellipse([60, 352, 196, 370], fill=(185, 190, 200))  # floor shadow
    # legs (trousers) and shoes
    for hip, knee, ankle in (("r_hip", "r_knee", "r_ankle"), ("l_hip", "l_knee", "l_ankle")):
        _limb(d, p[hip], p[knee], 30, TROUSERS)
        _limb(d, p[knee], p[ankle], 26, TROUSERS)
        ax, ay = p[ankle]
        d.ellipse([ax - 16, ay + 4, ax + 16, ay + 20], fill=SHOES)
    d.polygon([(104, 192), (152, 192), (156, 226), (100, 226)], fill=TROUSERS)
    # arms: skin forearms, shirt sleeves on the upper arms
    for sh, el, wr in (("r_shoulder", "r_elbow", "r_wrist"), ("l_shoulder", "l_elbow", "l_wrist")):
        _limb(d, p[el], p[wr], 16, SKIN)
        x, y = p[wr]
        d.ellipse([x - 10, y - 4, x + 10, y + 16], fill=SKIN)
        _limb(d, p[sh], p[el], 24, SHIRT)
    # neck, torso (shirt)
    d.rectangle([120, 80, 136, 104], fill=SKIN)
    d.polygon([(90, 98), (166, 98), (160, 150), (156, 208), (100, 208), (96, 150)], fill=SHIRT)
    d.polygon([(118, 98), (138, 98), (128, 114)], fill=SKIN)  # neckline
    # head and hair
    d.ellipse([104, 30, 152, 90], fill=SKIN)
    d.chord([102, 24, 154, 74], 180, 360, fill=HAIR)
    for eye in ("r_eye", "l_eye"):
        x, y = p[eye]
        d.ellipse([x - 3, y - 2, x + 3, y + 2], fill=(40, 30, 30))
    d.arc([118, 62, 138, 78], 20, 160, fill=(150, 70, 70), width=2)
    return img


def draw_shirt() -> Image.Image:
    img = Image.new("RGB", (240, 240), (255, 255, 255))
    d = ImageDraw.Draw(img)
    red, white = (205, 35, 45), (250, 250, 250)
    body = [(70, 52), (98, 40), (142, 40), (170, 52), (212, 90), (188, 118), (168, 100), (168, 206), (72, 206), (72, 100), (52, 118), (28, 90)]
    d.polygon(body, fill=red)
    mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(mask).polygon(body, fill=255)
    stripes = Image.new("RGB", img.size, red)
    sd = ImageDraw.Draw(stripes)
    for y in range(70, 206, 22):
        sd.rectangle([0, y, 240, y + 7], fill=white)
    img.paste(stripes, (0, 0), mask)
    d.chord([100, 26, 140, 58], 0, 180, fill=(255, 255, 255))  # collar opening
    d.line([(100, 42), (120, 56), (140, 42)], fill=(150, 20, 30), width=3)
    return img


def draw_trousers() -> Image.Image:
    img = Image.new("RGB", (200, 260), (246, 246, 244))
    d = ImageDraw.Draw(img)
    green, dark = (40, 120, 70), (25, 80, 45)
    d.polygon([(56, 24), (144, 24), (160, 238), (112, 238), (100, 96), (88, 238), (40, 238)], fill=green)
    d.rectangle([56, 24, 144, 38], fill=dark)  # waistband
    d.line([(100, 40), (100, 92)], fill=dark, width=2)
    return img


def person_mask(mode: str = "upper body") -> Image.Image:
    sys.path.insert(0, str(ROOT))
    from prompt_free.masks import mask_from_keypoints, mask_to_image

    return mask_to_image(mask_from_keypoints([PERSON_KEYPOINTS], PERSON_SIZE, mode))


def build() -> Dict[str, Image.Image]:
    return {
        "tryon_person.png": draw_person(),
        "tryon_person_mask.png": person_mask(),
        "tryon_person_mask_lower.png": person_mask("lower body"),  # the trousers example's (offline: no pose detector)
        "tryon_garment_shirt.png": draw_shirt(),
        "tryon_garment_trousers.png": draw_trousers(),
    }


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only verify that the files are up to date")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from prompt_free.images import open_lazy  # the project's one Image.open (its allowed formats)

    stale = []
    for name, img in build().items():
        path = HERE / name
        if args.check:
            if not path.is_file() or not np.array_equal(np.asarray(open_lazy(path)), np.asarray(img)):
                stale.append(name)
        else:
            path.write_bytes(_png(img))
            print(f"wrote {path.relative_to(ROOT)} {img.size[0]}x{img.size[1]}")
    if stale:
        print("out of date: " + ", ".join(stale) + " (run assets/make_tryon_examples.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
