"""Files of every kind for the format allowlist tests (issue 28): an EPS whose program loops
forever, a PDF, pictures in the rarely used formats Pillow writes, pictures in the allowed
formats, a JPEG whose EXIF block is damaged; and a watch for Ghostscript processes."""

from __future__ import annotations

import contextlib
import io
import struct
import threading
import time

import psutil
from PIL import Image

# PostScript that never ends: Pillow's EPS plugin would hand it to `gs` at load() and wait forever.
EPS_LOOP = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n{ } loop\n%%EOF\n"
PDF = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
       b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
ALLOWED = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
# formats Pillow writes (so the test can make them) and reads, none of them on the list
RARE = ("PCX", "SGI", "TGA", "PPM", "ICO", "DDS", "IM")


def picture(size=(24, 16)) -> Image.Image:
    """A small picture with detail in every channel (so a wrong decode shows)."""
    img = Image.new("RGB", size)
    img.putdata([((x * 11) % 256, (y * 17) % 256, ((x + y) * 7) % 256) for y in range(size[1]) for x in range(size[0])])
    return img


def encoded(fmt: str, img: Image.Image = None) -> bytes:
    buf = io.BytesIO()
    img = img or picture()
    if fmt in ("JPEG", "PCX", "SGI", "TGA", "PPM", "IM", "DDS") and img.mode != "RGB":
        img = img.convert("RGB")
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def damaged_exif_jpeg(img: Image.Image = None) -> bytes:
    """A JPEG whose EXIF says "rotate 90" and holds a damaged tag: one byte of the Make tag's id
    changed, so it reads as T4Options (a LONG tag) holding ASCII text. Pillow opens and decodes
    it, and ``ImageOps.exif_transpose`` raises ``struct.error`` re-writing that EXIF."""
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise on display
    exif[0x010F] = "Maker"
    data = encoded_with_exif(img or picture((64, 48)), exif)
    damaged = data.replace(b"\x01\x0f\x00\x02", b"\x01\x24\x00\x02", 1)  # tag 0x010F ASCII -> 0x0124
    assert damaged != data
    return damaged


def truncated_exif_jpeg(cut: int, size=(64, 48)) -> bytes:
    """A JPEG whose EXIF (orientation 6) APP1 payload is cut to its first ``cut`` bytes (the
    segment's length field says so, the rest of the file is intact)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encoded_with_exif(picture(size), exif)
    i = data.index(b"\xff\xe1")
    n = struct.unpack(">H", data[i + 2:i + 4])[0]
    payload = data[i + 4:i + 2 + n][:cut]
    return data[:i + 2] + struct.pack(">H", len(payload) + 2) + payload + data[i + 2 + n:]


def encoded_with_exif(img: Image.Image, exif: Image.Exif) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, exif=exif)
    return buf.getvalue()


def gs_processes(root: psutil.Process) -> list:
    """Ghostscript processes under ``root`` (any depth)."""
    found = []
    for p in root.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.name() in ("gs", "ghostscript") or "gs" == (p.exe().rsplit("/", 1)[-1]):
                found.append(p)
    return found


@contextlib.contextmanager
def watching_for_gs(root: psutil.Process = None, every_s: float = 0.005):
    """Yields a list that gets every Ghostscript process seen under ``root`` (default: this
    process) while the block runs, looked for every ``every_s`` seconds by a thread. Each one
    seen is killed, so a regression fails the test at once instead of hanging on the EPS."""
    root = root or psutil.Process()
    seen, done = [], threading.Event()

    def watch():
        while not done.is_set():
            for p in gs_processes(root):
                if p.pid not in seen:
                    seen.append(p.pid)
                with contextlib.suppress(psutil.Error):
                    p.kill()
            time.sleep(every_s)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()
        seen.extend(p.pid for p in gs_processes(root) if p.pid not in seen)
