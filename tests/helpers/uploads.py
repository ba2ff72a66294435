"""Odd and broken image files for the upload tests, written small (no huge allocation)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers.app import EXAMPLES

# corrupt, empty and bomb files: every image input of every tab gets these
# (and the formats never read, issue 28: an EPS that would loop in Ghostscript, a PDF, a PCX)
CORE = ("empty", "text", "truncated_jpeg", "svg", "bomb_header", "eps", "pdf", "pcx")
# readable but odd pictures (and the core set): every file for one endpoint per tab
ALL = CORE + ("1x1", "8x2000", "10000x10000", "rgba", "transparent", "grey16", "palette", "cmyk_jpeg",
              "exif_rotated", "damaged_exif", "animated_gif")
# the files no input may accept: the error must say the input could not be read
UNREADABLE = CORE + ("10000x10000",)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` (8-bit RGB) and has no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b"")


def flat_grey_png(width: int, height: int, value: int = 128) -> bytes:
    """A real, valid flat greyscale PNG, compressed row by row (a few hundred KB for 10000^2)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    z = zlib.compressobj(9)
    row = b"\x00" + bytes([value]) * width
    parts = [z.compress(row) for _ in range(height)]
    parts.append(z.flush())
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def photo(size=(64, 64)) -> Image.Image:
    return Image.open(EXAMPLES / "astronaut.jpg").convert("RGB").resize(size, Image.BICUBIC)


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def rgba_photo(size=(64, 64)) -> Image.Image:
    """The photo with a transparent left half and a half-transparent band (RGB under alpha 0 is black)."""
    a = np.asarray(photo(size).convert("RGBA")).copy()
    w = size[0]
    a[:, : w // 2, :3] = 0
    a[:, : w // 2, 3] = 0
    a[: size[1] // 4, :, 3] = 128
    return Image.fromarray(a, "RGBA")


def make(name: str) -> tuple:
    """(file name, bytes) of the case ``name``."""
    if name == "empty":
        return "empty.png", b""
    if name == "text":
        return "notes.png", b"this is a text file, not a picture\n" * 4
    if name == "truncated_jpeg":
        data = _save(photo(), "JPEG", quality=90)
        return "truncated.jpg", data[: len(data) // 2]
    if name == "svg":
        return "drawing.svg", (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
                               b'<rect width="64" height="64" fill="red"/></svg>\n')
    if name == "bomb_header":
        return "bomb.png", png_header_only(100_000, 100_000)
    if name == "1x1":
        return "one.png", _save(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG")
    if name == "8x2000":
        return "strip.png", _save(Image.new("RGB", (8, 2000), (30, 200, 30)), "PNG")
    if name == "10000x10000":
        return "big.png", flat_grey_png(10_000, 10_000)
    if name == "rgba":
        return "rgba.png", _save(rgba_photo(), "PNG")
    if name == "transparent":
        return "transparent.png", _save(Image.new("RGBA", (64, 64), (0, 0, 0, 0)), "PNG")
    if name == "grey16":
        ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
        return "grey16.png", _save(Image.fromarray(ramp), "PNG")
    if name == "palette":
        return "palette.png", _save(photo().quantize(16), "PNG")
    if name == "cmyk_jpeg":
        return "cmyk.jpg", _save(photo().convert("CMYK"), "JPEG")
    if name == "exif_rotated":
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 CW on display
        return "rotated.jpg", _save(photo((64, 48)), "JPEG", exif=exif)
    if name in ("eps", "pdf", "pcx", "damaged_exif"):
        from tests.helpers import formats as F

        return {"eps": ("spin.eps", F.EPS_LOOP), "pdf": ("doc.pdf", F.PDF), "pcx": ("old.pcx", _save(photo(), "PCX")),
                "damaged_exif": ("damaged_exif.jpg", F.damaged_exif_jpeg(photo((64, 48))))}[name]
    if name == "animated_gif":
        frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
        buf = io.BytesIO()
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
        return "animated.gif", buf.getvalue()
    raise KeyError(name)


def write(folder: Path, name: str) -> Path:
    file_name, data = make(name)
    path = Path(folder) / name / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(data)
    return path
