"""Every image that enters the project is opened here, with one set of rules.

``open_image`` turns any supported input (a path, bytes, a PIL image, a numpy array) into a
decoded PIL image, upright per EXIF, with its mode kept (masks need the alpha channel); its size
is checked against ``settings.MAX_IMAGE_PIXELS`` from the header, before any pixel is decoded.
``to_rgb`` turns any PIL mode into 8-bit RGB; ``load_image`` is the two together. References,
control maps, masks, person and garment photos, detector inputs and training data all come
through here, so an odd image gets the same treatment and the same clear ``InputImageError``
wherever it is given. ``open_lazy`` is the project's only ``Image.open`` (tests/unit/
test_one_opener.py keeps it so): a file is read only as one of ``settings.image_formats()``
(PNG, JPEG, MPO, WebP, GIF, BMP, TIFF, plus ``PFD_IMAGE_FORMATS``), anything else is refused
before any decoder runs (no EPS, PostScript or PDF ever reaches Ghostscript). EXIF that cannot
be parsed means no rotation.

Mode rules: transparency (alpha, or a palette/greyscale transparency key) is composited on
white; 16-bit images are scaled to 8 bits (65535 -> 255); 32-bit integer and float images in
[0, 255] are kept, float images in [0, 1] are scaled by 255, other ranges are min-max
normalised; LAB and HSV are converted through OpenCV; everything else through PIL.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from . import cancel, settings
from .errors import InputImageError, InvalidSettingError

ImageLike = Union[Image.Image, np.ndarray, str, os.PathLike, bytes, None]
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def open_image(image: ImageLike, what: str = "image", formats: Optional[Tuple[str, ...]] = None) -> Image.Image:
    """Any supported input -> a decoded PIL image, upright per EXIF, mode kept.

    An animation (GIF, APNG, WebP) gives its first frame. Every failure is an
    ``InputImageError`` naming ``what`` and the reason (empty file, not an image, a format not
    read, truncated, too many pixels); a file is named by its base name only, never by a server
    directory. ``formats``: the Pillow formats read (default ``settings.image_formats()``)."""
    formats = tuple(formats or settings.image_formats())
    if image is None:
        raise InputImageError(f"no {what} given: please upload one")
    try:
        if isinstance(image, (str, os.PathLike)):
            if not os.path.isfile(image):
                raise InputImageError(f"{what} file '{os.path.basename(os.fspath(image))}' does not exist")
            if os.path.getsize(image) == 0:
                raise InputImageError(f"{what} could not be read as an image (empty file)")
            img = open_lazy(image, what, formats)
        elif isinstance(image, (bytes, bytearray, memoryview)):
            if len(image) == 0:
                raise InputImageError(f"{what} could not be read as an image (empty file)")
            img = open_lazy(io.BytesIO(bytes(image)), what, formats)
        elif isinstance(image, np.ndarray):
            img = array_to_image(image, what)
        elif isinstance(image, Image.Image):
            img = _allowed_pil(image, what, formats)
        else:
            raise InputImageError(f"{what}: unsupported input type {type(image).__name__}")
        if img.width < 1 or img.height < 1:
            raise InputImageError(f"{what} is empty ({img.width}x{img.height} pixels)")
        if img.width * img.height > settings.MAX_IMAGE_PIXELS:  # from the header: nothing decoded yet
            raise InputImageError(_too_many_pixels(what, f"{img.width}x{img.height}"))
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # an animation: its first frame
        cancel.check()  # before and after the decode: Stop (and the request's time limit) reach uploads
        img.load()
        cancel.check()
        return _upright(img)
    except InputImageError:
        raise
    except Image.DecompressionBombError:  # PIL's own guard, on a header far beyond ours
        raise InputImageError(_too_many_pixels(what, "its header claims more than "
                                               f"{2 * (Image.MAX_IMAGE_PIXELS or 0) // 1_000_000} megapixels")) from None
    except MemoryError:  # a row Pillow refuses to allocate (a header of 44.7 million 16-bit RGB pixels in one row)
        raise InputImageError(f"{what} could not be read as an image (too large to decode)") from None
    except (OSError, EOFError, SyntaxError) as e:
        reason = "the file is truncated" if "truncat" in str(e).lower() or isinstance(e, EOFError) else "the file is damaged"
        raise InputImageError(f"{what} could not be read as an image ({reason})") from None
    except (ValueError, TypeError) as e:
        raise InputImageError(f"{what} could not be read as an image ({type(e).__name__}): is the file a PNG/JPEG/WebP?") from None


def open_lazy(source, what: str = "image", formats: Optional[Tuple[str, ...]] = None) -> Image.Image:
    """The project's one ``Image.open``: ``source`` (a path or a binary file object) read as one of
    ``formats`` (default ``settings.image_formats()``), nothing decoded yet (size, mode and EXIF
    come from the header). Any other format is an ``InputImageError`` before its decoder runs:
    Pillow tries only the listed formats' openers. No bomb warning: our own limit is checked
    by the caller."""
    formats = tuple(formats or settings.image_formats())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(source, formats=_openers(formats))
    except UnidentifiedImageError:
        raise InputImageError(f"{what} could not be read as an image ({_not_an_image(source, formats)})") from None


def _openers(formats: Tuple[str, ...]) -> Tuple[str, ...]:
    """The allowed names Pillow has an opener for: MPO has none of its own (JPEG's opener gives
    MPO files), and Pillow's ``formats`` argument fails on a name without one."""
    Image.init()  # every plugin registered (imports only: nothing is decoded)
    return tuple(name for name in formats if name in Image.OPEN)


def _allowed_pil(img: Image.Image, what: str, formats: Tuple[str, ...]) -> Image.Image:
    """A PIL image given by a caller: one opened from a file of a format not read is refused too,
    since decoding it (``load``) would run that format's decoder (EPS: Ghostscript)."""
    if isinstance(img, ImageFile.ImageFile) and img.format and img.format.upper() not in formats:
        raise InputImageError(f"{what} could not be read as an image (a {img.format} file; "
                              f"this app reads {', '.join(formats)})")
    return img


def _upright(img: Image.Image) -> Image.Image:
    """The picture turned upright per its EXIF orientation. EXIF that cannot be parsed (Pillow
    raises struct.error, ValueError ... on a truncated or damaged block) means no rotation: the
    picture as stored, never a failed request."""
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - whatever the EXIF parser raises, the pixels are fine
        return img


def _too_many_pixels(what: str, size: str) -> str:
    return (f"{what} could not be read as an image (too many pixels: {size}; the limit is "
            f"{settings.MAX_IMAGE_PIXELS // 1_000_000} megapixels)")


def _not_an_image(source, formats: Tuple[str, ...]) -> str:
    """Why no allowed format was found in ``source`` (a path or a binary file object)."""
    head = b""
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                head = f.read(512)
        elif hasattr(source, "read"):
            source.seek(0)
            head = source.read(512)
    except (OSError, ValueError):
        pass
    text = head.lstrip().lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "an SVG drawing; vector images are not supported: use PNG, JPEG or WebP"
    if text.startswith((b"%!ps", b"%pdf")) or head.startswith(b"\xc5\xd0\xd3\xc6"):  # DOS EPS header
        return "a PostScript, EPS or PDF document; documents are not read: use PNG, JPEG or WebP"
    use = "use a PNG" if formats == ("PNG",) else "use PNG, JPEG or WebP"
    return f"not an image file, or a format this app does not read: {use}"


def load_image(image: ImageLike, what: str = "image") -> Image.Image:
    """Any supported input -> 8-bit RGB PIL image, upright per EXIF."""
    return to_rgb(open_image(image, what), what)


def array_to_image(a: np.ndarray, what: str = "image") -> Image.Image:
    """HxW, HxWx1, HxWx3 or HxWx4 array of any numeric dtype -> a PIL image (L, RGB or RGBA)."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or a.size == 0:
        raise InputImageError(f"{what}: array of shape {tuple(a.shape)} is not an image (expected HxW, HxWx3 or HxWx4)")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InputImageError(f"{what} contains NaN or infinite values")
        a = _to_u8(a, "F")
    elif np.issubdtype(a.dtype, np.integer):
        if a.dtype != np.uint8:
            a = _to_u8(a, "I;16" if a.dtype == np.uint16 else "I")
    else:
        raise InputImageError(f"{what}: arrays of dtype {a.dtype} are not images")
    return Image.fromarray(np.ascontiguousarray(a))


def _to_u8(a: np.ndarray, mode: str) -> np.ndarray:
    """High bit depth -> uint8 by the module's rules (``mode``: I;16, I or F)."""
    a = np.asarray(a, dtype=np.float64)
    a = np.where(np.isfinite(a), a, 0.0)
    lo, hi = float(a.min()), float(a.max())
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


def to_rgb(img: Image.Image, what: str = "image") -> Image.Image:
    """Any PIL mode -> 8-bit RGB of the same size (rules: see the module docstring)."""
    mode = img.mode
    try:
        if mode == "RGB" and "transparency" not in img.info:
            return img
        if mode in _ALPHA_MODES or "transparency" in img.info:
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        if mode.startswith("I") or mode == "F":
            return Image.fromarray(_to_u8(np.asarray(img), mode), "L").convert("RGB")
        if mode in ("LAB", "HSV"):  # PIL converts neither to RGB
            import cv2

            code = cv2.COLOR_HSV2RGB_FULL if mode == "HSV" else cv2.COLOR_LAB2RGB
            return Image.fromarray(cv2.cvtColor(np.asarray(img), code), "RGB")
        return img.convert("RGB")  # L, 1, P, CMYK, YCbCr ...
    except (OSError, ValueError) as e:
        raise InputImageError(f"{what} (mode {mode}) could not be converted to RGB: {str(e)[:200]}") from None


def prepare_reference(image: ImageLike, what: str = "reference image") -> Image.Image:
    """Reference for SeeCoder: RGB at native size (as the official app), within sane bounds."""
    img = load_image(image, what)
    check_min_side(img, what)
    if max(img.size) > settings.MAX_REFERENCE_SIDE:
        # Deviation from the official app (which never resizes): bounds SeeCoder's memory.
        scale = settings.MAX_REFERENCE_SIDE / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
    return img


# Framing of a reference (``reference_framing``): how it is cut before SeeCoder reads it.
AS_IS, CROP, PAD, MASK_FRAME = "as-is", "crop", "pad", "mask"
FRAMINGS = (AS_IS, CROP, PAD, MASK_FRAME)
PAD_COLOUR = (128, 128, 128)  # mid grey: no colour of its own, the middle of SeeCoder's [0, 1] input
MASK_MARGIN = 0.10  # "mask" framing: the mask's box grown by 10 % of its width / height on each side

Box = Tuple[int, int, int, int]  # left, top, right, bottom


def frame_reference(img: Image.Image, framing: str, aspect: float,
                    mask: Optional[np.ndarray] = None) -> Tuple[Image.Image, Optional[np.ndarray]]:
    """(the reference as framed, its source mask cut the same way). ``mask``: bool (H, W) at the
    image's size (True = use) or None; ``aspect``: the output's width / height.
    as-is: unchanged (the objects themselves); crop: the centred part of the output's aspect;
    pad: the whole reference centred on ``PAD_COLOUR`` to the output's aspect (the padding is
    outside the source mask); mask: the mask's box grown by ``MASK_MARGIN``, clamped."""
    w, h = img.size
    if framing == AS_IS:
        return img, mask
    if framing == PAD:
        return _pad_to(img, aspect, mask)
    if framing == CROP:
        cw, ch = (max(1, round(h * aspect)), h) if w / h > aspect else (w, max(1, round(w / aspect)))
        box = ((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)
    elif framing == MASK_FRAME:
        if mask is None:
            raise InvalidSettingError("reference framing 'mask' crops to the reference mask's box: give a "
                                      "reference mask (reference_mask), or choose as-is, crop or pad")
        box = _mask_box(mask)
    else:
        raise InvalidSettingError(f"unknown reference framing {framing!r}; choose one of: {', '.join(FRAMINGS)}")
    if box == (0, 0, w, h):
        return img, mask
    return img.crop(box), (None if mask is None else mask[box[1]:box[3], box[0]:box[2]])


def _mask_box(mask: np.ndarray) -> Box:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    mx, my = round(MASK_MARGIN * (x1 - x0)), round(MASK_MARGIN * (y1 - y0))
    return max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my)


def _pad_to(img: Image.Image, aspect: float, mask: Optional[np.ndarray]):
    w, h = img.size
    pw, ph = (w, max(h, round(w / aspect))) if w / h > aspect else (max(w, round(h * aspect)), h)
    if (pw, ph) == (w, h):
        return img, mask
    left, top = (pw - w) // 2, (ph - h) // 2
    out = Image.new("RGB", (pw, ph), PAD_COLOUR)
    out.paste(img.convert("RGB"), (left, top))
    if mask is None:
        return out, None
    m = np.zeros((ph, pw), bool)
    m[top:top + h, left:left + w] = mask
    return out, m


def limit_side(img: Image.Image, max_side: Optional[int]) -> Image.Image:
    """The reference scaled down (never up, aspect kept, bicubic as ``prepare_reference``) so
    its longest side is at most ``max_side`` (``reference_max_side``); None or 0: unchanged."""
    if not max_side or max(img.size) <= int(max_side):
        return img
    scale = int(max_side) / max(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)


def shuffled_blocks(img: Image.Image, blocks: int = 16, seed: int = 0) -> Image.Image:
    """``img`` (RGB) cut into a ``blocks`` x ``blocks`` grid of tiles, the tiles put back in an order
    fixed by ``seed`` (the strips of the right and bottom edges narrower than a tile stay): its
    colours and local textures kept exactly, its layout and objects destroyed. The negative
    reference's ``noise`` mode (adapted from IPAdapter_plus's noised negative: there an elastic
    warp, flips and Gaussian noise; a shuffle needs no torchvision and keeps the colour statistics
    exactly, so pushing away from it leaves the reference's palette alone). Deterministic: the
    same image always gives the same pixels, whatever the run's seed."""
    a = np.asarray(img.convert("RGB"))
    h, w = a.shape[0] // blocks, a.shape[1] // blocks
    if h == 0 or w == 0:
        return img.convert("RGB")
    grid = a[: h * blocks, : w * blocks].reshape(blocks, h, blocks, w, 3).swapaxes(1, 2).reshape(-1, h, w, 3)
    order = np.random.default_rng(seed).permutation(len(grid))
    out = a.copy()
    out[: h * blocks, : w * blocks] = grid[order].reshape(blocks, blocks, h, w, 3).swapaxes(1, 2).reshape(
        blocks * h, blocks * w, 3)
    return Image.fromarray(out)


def check_min_side(img: Image.Image, what: str) -> Image.Image:
    """Refuse pictures too small to take content from (references, person photos)."""
    side = settings.MIN_IMAGE_SIDE
    if min(img.size) < side:
        raise InputImageError(f"{what} is too small ({img.width}x{img.height}); use at least {side}x{side} pixels")
    return img


def image_to_tensor(img: Image.Image):
    """RGB PIL -> (1, 3, H, W) float32 in [0, 1] (torchvision ToTensor, no normalisation)."""
    import torch

    a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_images(x) -> list:
    """(B, 3, H, W) in [0, 1] -> PIL images; x255 then truncation, as ToPILImage does."""
    import torch

    x = x.detach().float().clamp(0, 1).mul(255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in x]


def snap_size(width, height) -> Tuple[int, int]:
    """Floor to multiples of 64 (official) after checking the range."""
    multiple, lo, hi = settings.SIZE_MULTIPLE, int(settings.SIZE.lo), int(settings.SIZE.hi)
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


def size_from_control(img: Image.Image, lo: int = settings.FOLLOW_SIZE_LO, hi: int = settings.FOLLOW_SIZE_HI) -> Tuple[int, int]:
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
