"""The pictures of docs/reference-controls.md, drawn from assets/examples/ by the library's own
functions (no model: random weights would explain nothing), so they show exactly what the code
does to the inputs:

* ``reference-controls-source-mask.png``: the reference, a source mask, what SeeCoder's backbone
  reads (``seecoder.model.fill_outside``) and the memory cells its query transformer reads at
  strides 16 and 32 (``seecoder.qtransformer.level_keep``);
* ``reference-controls-framing.png``: ``reference_framing`` as-is / crop / pad / mask for a square
  output (``images.frame_reference``), the source mask's outline on each;
* ``reference-controls-noise-negative.png``: the reference and the noise negative
  (``images.shuffled_blocks``).

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/reference_controls_figures.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prompt_free.images import (  # noqa: E402
    FRAMINGS, frame_reference, image_to_tensor, load_image, shuffled_blocks, tensor_to_images)
from prompt_free.seecoder.model import fill_outside  # noqa: E402
from prompt_free.seecoder.qtransformer import level_keep  # noqa: E402

REFERENCE = ROOT / "assets" / "examples" / "chelsea.jpg"
OUT = ROOT / "docs"
TILE = 240  # height of each panel


def example_mask(size) -> np.ndarray:
    """An ellipse over the cat's head (the left two thirds of the picture), True = use."""
    w, h = size
    img = Image.new("L", size, 0)
    ImageDraw.Draw(img).ellipse([0.12 * w, 0.08 * h, 0.78 * w, 0.98 * h], fill=255)
    return np.asarray(img) > 127


def captioned(img: Image.Image, caption: str) -> Image.Image:
    img = img.convert("RGB")
    img = img.resize((round(img.width * TILE / img.height), TILE), Image.LANCZOS)
    out = Image.new("RGB", (max(img.width, 7 * len(caption) + 8), TILE + 24), "white")
    out.paste(img, ((out.width - img.width) // 2, 0))
    ImageDraw.Draw(out).text((4, TILE + 6), caption, fill="black")
    return out


def row(panels) -> Image.Image:
    gap = 10
    out = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), max(p.height for p in panels)), "white")
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + gap
    return out


def cells_read(filled: Image.Image, mask: np.ndarray, stride: int) -> Image.Image:
    """``filled`` with the memory cells of ``stride`` the query transformer reads outlined, the others dimmed."""
    w, h = filled.size
    gh, gw = -(-h // stride), -(-w // stride)
    keep = level_keep(torch.from_numpy(mask)[None], (gh, gw), stride)
    keep = np.ones((gh, gw), bool) if keep is None else keep[0].numpy().reshape(gh, gw)
    out = filled.convert("RGB").copy()
    dim = Image.blend(out, Image.new("RGB", out.size, "black"), 0.65)
    draw = ImageDraw.Draw(out)
    for i in range(gh):
        for j in range(gw):
            box = (j * stride, i * stride, min((j + 1) * stride, w) - 1, min((i + 1) * stride, h) - 1)
            if not keep[i, j]:
                out.paste(dim.crop(box), box[:2])
            draw.rectangle(box, outline=(255, 0, 255) if keep[i, j] else (60, 60, 60))
    return out


def mask_outline(img: Image.Image, mask: np.ndarray) -> Image.Image:
    edge = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.FIND_EDGES).filter(ImageFilter.MaxFilter(3))
    out = img.convert("RGB").copy()
    out.paste(Image.new("RGB", out.size, (255, 0, 255)), (0, 0), edge)
    return out


def source_mask_figure(ref: Image.Image, mask: np.ndarray) -> Image.Image:
    filled_img = tensor_to_images(fill_outside(image_to_tensor(ref), torch.from_numpy(mask)[None]))[0]
    return row([captioned(ref, "reference"), captioned(Image.fromarray(mask.astype(np.uint8) * 255), "reference_mask"),
                captioned(filled_img, "backbone input"),
                captioned(cells_read(filled_img, mask, 16), "cells read, stride 16"),
                captioned(cells_read(filled_img, mask, 32), "cells read, stride 32")])


def framing_figure(ref: Image.Image, mask: np.ndarray) -> Image.Image:
    panels = []
    for framing in FRAMINGS:
        img, m = frame_reference(ref, framing, 1.0, mask)
        panels.append(captioned(mask_outline(img, m) if m is not None else img, framing))
    return row(panels)


def main() -> int:
    ref = load_image(REFERENCE)
    mask = example_mask(ref.size)
    figures = {
        "reference-controls-source-mask.png": source_mask_figure(ref, mask),
        "reference-controls-framing.png": framing_figure(ref, mask),
        "reference-controls-noise-negative.png": row([captioned(ref, "reference"),
                                                      captioned(shuffled_blocks(ref), "negative_mode noise")]),
    }
    for name, img in figures.items():
        img.save(OUT / name, optimize=True)
        print(OUT / name, img.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
