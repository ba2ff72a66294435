"""Does a picture look like a ready control map of a given kind? Cheap heuristics on a small
copy, so a photo given "as-is" to the canny ControlNet is refused with advice instead of
producing a meaningless picture."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image

CHECK_SIDE = 256  # maps are inspected at most at this size (cheap)

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
