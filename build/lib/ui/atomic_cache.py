"""Output pictures written to Gradio's cache atomically.

Gradio 6.31 saves every output picture with ``processing_utils.save_pil_to_cache``: the path is
the hash of the PNG bytes, written with ``Path.write_bytes`` (truncate, then write). Two requests
that make the same picture at the same time (same inputs and seed, from two users or two tabs)
write the same file; a client downloading it in between gets an empty or cut-off file (seen in
benchmarks/bench_load.py: "received 0 bytes, expected 10041"). Here the bytes go to a temporary
file in the same folder and replace the cache file in one ``os.replace``, so a reader sees the
whole old file or the whole new one, and a file that is already there (same hash and name:
same bytes) is not written again.

``install()`` replaces the function in ``gradio.processing_utils`` (every caller looks it up
there: Image, Gallery, ``save_img_array_to_cache``); it is idempotent.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gradio import processing_utils


def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    path = (folder / f"{name}.{format}").resolve()
    try:
        if path.stat().st_size == len(data):
            return str(path)
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return str(path)


save_pil_to_cache.pfd_atomic = True


def install() -> None:
    if not getattr(processing_utils.save_pil_to_cache, "pfd_atomic", False):
        processing_utils.save_pil_to_cache = save_pil_to_cache
