"""Segments: MobileSAM's automatic masks painted with ADE20K palette colours, largest first."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InvalidSettingError
from .nets import load_into, quiet
from .specs import SPECS

_FILE = SPECS["seg"].files[0]


def _net(path: Path):
    with quiet():
        from controlnet_aux.segment_anything.build_sam import build_sam_vit_t

        net = build_sam_vit_t(checkpoint=None)
    return load_into(net, path, "MobileSAM")


def _run(impl, rgb, resolution, o):
    with quiet():
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


NETWORKS = {_FILE: _net}
DETECTORS = {"seg": (lambda nets: nets[_FILE], _run)}
