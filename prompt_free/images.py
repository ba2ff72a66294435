"""Input images in, output images out: every odd image becomes RGB or a clear error.

Handles missing images, files that are not images, RGBA/LA/P (composited on white), grayscale,
16-bit, CMYK, EXIF rotation, tiny and huge images. Sizes are validated here, not in the UI.
"""

from __future__ import annotations

import io
import os
from typing import Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputImageError, InvalidSettingError

MIN_SIDE = 16  # smaller than this is not a picture to take content from
MAX_PIXELS = 50_000_000  # decompression-bomb guard
MAX_REFERENCE_SIDE = 1536  # SeeCoder works at native size; beyond this we downscale (memory)
SIZE_MULTIPLE = 64
MIN_SIZE, MAX_SIZE = 64, 2048

ImageLike = Union[Image.Image, np.ndarray, str, os.PathLike, bytes, None]


def load_image(image: ImageLike, what: str = "image") -> Image.Image:
    """Any supported input -> 8-bit RGB PIL image, upright per EXIF."""
    if image is None:
        raise InputImageError(f"no {what} given: please upload one")
    try:
        if isinstance(image, (str, os.PathLike)):
            if not os.path.isfile(image):
                raise InputImageError(f"{what} file '{image}' does not exist")
            img = Image.open(image)
        elif isinstance(image, bytes):
            img = Image.open(io.BytesIO(image))
        elif isinstance(image, np.ndarray):
            img = _from_array(image, what)
        elif isinstance(image, Image.Image):
            img = image
        else:
            raise InputImageError(f"{what}: unsupported input type {type(image).__name__}")
        if img.width * img.height > MAX_PIXELS:
            raise InputImageError(f"{what} is too large ({img.width}x{img.height}); the limit is {MAX_PIXELS // 1_000_000} megapixels")
        img.load()
        img = ImageOps.exif_transpose(img) or img
        return to_rgb(img)
    except InputImageError:
        raise
    except Image.DecompressionBombError:
        raise InputImageError(f"{what} is too large to open safely") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InputImageError(f"{what} could not be read as an image ({type(e).__name__}): is the file a PNG/JPEG/WebP?") from None


def _from_array(a: np.ndarray, what: str) -> Image.Image:
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise InputImageError(f"{what}: array of shape {a.shape} is not an image")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.dtype == np.uint16:
        a = (a / 257).round().astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InputImageError(f"{what} contains NaN or infinite values")
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8) if a.max() <= 1.0 else np.clip(a, 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return Image.fromarray(a)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: alpha over white, 16-bit scaled (not clipped), CMYK via PIL."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        return Image.fromarray((np.clip(a / hi, 0, 1) * 255).round().astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        a = a if a.max() > 1 else a * 255
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def prepare_reference(image: ImageLike, what: str = "reference image") -> Image.Image:
    """Reference for SeeCoder: RGB at native size (as the official app), within sane bounds."""
    img = load_image(image, what)
    if min(img.size) < MIN_SIDE:
        raise InputImageError(f"{what} is too small ({img.width}x{img.height}); use at least {MIN_SIDE}x{MIN_SIDE} pixels")
    if max(img.size) > MAX_REFERENCE_SIDE:
        # Deviation from the official app (which never resizes): bounds SeeCoder's memory.
        scale = MAX_REFERENCE_SIDE / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
    return img


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL -> (1, 3, H, W) float32 in [0, 1] (torchvision ToTensor, no normalisation)."""
    a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_images(x: torch.Tensor) -> list:
    """(B, 3, H, W) in [0, 1] -> PIL images; x255 then truncation, as ToPILImage does."""
    x = x.detach().float().clamp(0, 1).mul(255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in x]


def snap_size(width, height, *, multiple: int = SIZE_MULTIPLE, lo: int = MIN_SIZE, hi: int = MAX_SIZE) -> Tuple[int, int]:
    """Floor to multiples of 64 (official) after checking the range."""
    out = []
    for name, v in (("width", width), ("height", height)):
        try:
            v = int(v)
        except (TypeError, ValueError):
            raise InvalidSettingError(f"{name} must be a number, got {v!r}") from None
        if not lo <= v <= hi:
            raise InvalidSettingError(f"{name} {v} is out of range: use {lo} to {hi} pixels")
        out.append(max(multiple, (v // multiple) * multiple))
    return out[0], out[1]


def size_from_control(img: Image.Image, lo: int = 512, hi: int = 1536) -> Tuple[int, int]:
    """Official auto-size: the control image's size floored to 64, clamped to [512, 1536]."""
    w, h = img.size
    return (min(hi, max(lo, (w // 64) * 64)), min(hi, max(lo, (h // 64) * 64)))


def side_by_side(images, gap: int = 8, background=(255, 255, 255)) -> Optional[Image.Image]:
    """One image with the inputs in a row (downloads of comparisons)."""
    images = [i for i in images if i is not None]
    if not images:
        return None
    h = max(i.height for i in images)
    w = sum(i.width for i in images) + gap * (len(images) - 1)
    out = Image.new("RGB", (w, h), background)
    x = 0
    for i in images:
        out.paste(i.convert("RGB"), (x, 0))
        x += i.width + gap
    return out
