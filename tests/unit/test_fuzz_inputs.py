"""Fuzzing the opener and the PNG-settings loader (issue 28, item 5), with hypothesis: random
bytes behind each allowed format's header, truncated and damaged files, damaged EXIF, headers
claiming huge sizes, crafted ``prompt-free`` PNG records (JSON that is not an object, wrong
types, huge numbers, unknown names). Each gives a picture / a record, or a typed error from
``prompt_free.errors`` (``MetadataError`` is one), within 2 s; never another exception.

Derandomized with a fixed number of examples, so CI runs the same cases every time (``-m fuzz``
selects these tests; ./test runs them by default, about half a minute on a 2-core CPU)."""

from __future__ import annotations

import io
import json
import struct
import time
import warnings
import zlib

import pytest

pytest.importorskip("hypothesis", reason='the fuzz tests need hypothesis: pip install -r requirements-dev.txt '
                                         '(or pip install ".[dev]")')
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image, PngImagePlugin  # noqa: E402

from prompt_free import metadata  # noqa: E402
from prompt_free.errors import PromptFreeError  # noqa: E402
from prompt_free.images import load_image  # noqa: E402
from tests.helpers import formats as F  # noqa: E402

pytestmark = pytest.mark.fuzz
FUZZ = settings(derandomize=True, max_examples=300, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TIME_LIMIT_S = 2.0

HEADERS = {
    "PNG": b"\x89PNG\r\n\x1a\n", "JPEG": b"\xff\xd8\xff", "WEBP": b"RIFF\x00\x01\x00\x00WEBPVP8 ",
    "GIF": b"GIF89a", "BMP": b"BM", "TIFF-II": b"II*\x00", "TIFF-MM": b"MM\x00*",
}
SAMPLES = {fmt: F.encoded(fmt) for fmt in F.ALLOWED}
SAMPLES["EXIF"] = F.damaged_exif_jpeg()


def _within_time(call):
    """``call()``'s result, or None for a typed error; anything else propagates (a failure)."""
    start = time.monotonic()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF, truncated reads
            out = call()
    except PromptFreeError:
        out = None
    assert time.monotonic() - start < TIME_LIMIT_S
    return out


def _opens(data: bytes):
    img = _within_time(lambda: load_image(data, "reference image"))
    assert img is None or (img.mode == "RGB" and img.width >= 1 and img.height >= 1)


@FUZZ
@given(st.sampled_from(sorted(HEADERS)), st.binary(max_size=1024))
def test_random_bytes_behind_each_allowed_header(fmt, tail):
    _opens(HEADERS[fmt] + tail)


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_truncated_files(fmt, data):
    whole = SAMPLES[fmt]
    _opens(whole[:data.draw(st.integers(0, len(whole) - 1))])


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_damaged_files_and_damaged_exif(fmt, data):
    """A few bytes changed: in the first 200 (headers, EXIF, chunk lengths) or anywhere."""
    b = bytearray(SAMPLES[fmt])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, min(len(b), 200) - 1) if data.draw(st.booleans()) else st.integers(0, len(b) - 1))
        b[i] = data.draw(st.integers(0, 255))
    _opens(bytes(b))


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


SIDES = st.one_of(st.integers(0, 4), st.integers(2**14, 2**31 - 1), st.just(2**32 - 1))


@FUZZ
@given(SIDES, SIDES, st.sampled_from([0, 2, 3, 4, 6]), st.sampled_from([1, 8, 16]))
@example(44739236, 1, 2, 16)  # found by this test: Pillow raised MemoryError allocating the row
def test_headers_claiming_odd_or_huge_sizes(width, height, colour, depth):
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    png = HEADERS["PNG"] + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) \
        + _png_chunk(b"IEND", b"")
    _opens(png)
    bmp_info = struct.pack("<IiiHHIIiiII", 40, width % 2**31, height % 2**31, 1, 24, 0, 0, 0, 0, 0, 0)
    _opens(b"BM" + struct.pack("<IHHI", 54 + 16, 0, 0, 54) + bmp_info + bytes(16))
    _opens(b"GIF89a" + struct.pack("<HH", width % 2**16, height % 2**16) + b"\x00\x00\x00;")


# ----------------------------------------------------------------------------- PNG records
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)
SETTING_NAMES = ["seed", "steps", "guidance", "width", "height", "num_images", "sampler", "seecoder", "base_model",
                 "loras", "deep_cache", "reference_strength", "controls", "nope"]
TASKS = ["image_variation", "reference_control", "multi_reference", "compare", "edit_reference", "virtual_tryon",
         "no_such_task"]


def _record():
    settings_ = st.dictionaries(st.sampled_from(SETTING_NAMES), JSON, max_size=5) | JSON
    return st.fixed_dictionaries({"task": st.sampled_from(TASKS) | JSON, "settings": settings_}, optional={
        "format": st.integers(-2, 2**70) | JSON,
        "settings_type": st.sampled_from(["VariationSettings", "ControlSettings", "Nope"]) | JSON,
        "call": st.dictionaries(st.sampled_from(["reference", "controls", "person"]), JSON, max_size=2) | JSON,
        "output": st.fixed_dictionaries({"kind": st.sampled_from(["images", "extras"]) | JSON, "index": JSON}) | JSON,
        "models": st.dictionaries(st.sampled_from(["seecoder", "base_model"]), JSON, max_size=2) | JSON,
        "version": JSON,
    })


def _png_with(text: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text(metadata.JSON_CHUNK, text)
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _loads(png: bytes):
    """The loader and the redo: a record and a call, or typed errors."""
    rec = _within_time(lambda: metadata.read(png))
    assert rec is None or isinstance(rec, dict)
    if rec is not None:
        _within_time(lambda: metadata.redo_call(rec))


@FUZZ
@given(_record())
def test_crafted_records(record):
    _loads(_png_with(json.dumps(record)))


@FUZZ
@given(JSON | st.text(max_size=40))
def test_chunks_that_are_not_records(value):
    _loads(_png_with(value if isinstance(value, str) else json.dumps(value)))
