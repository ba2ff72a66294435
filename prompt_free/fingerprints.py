"""What identifies an input or a model cheaply: sha256 of files (once per process) and pixels,
the record of an image input, what the registry can tell about a model without downloading it.
Used by the PNG records (``prompt_free.metadata``) and their checks."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from PIL import Image

from .catalog import FileBytes
from .errors import PromptFreeError


_FILE_HASHES: Dict[Tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process


def file_sha256(path) -> str:
    """sha256 of a file's bytes (computed once per process for an unchanged file)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]


def pixels_sha256(img: Image.Image) -> str:
    """sha256 of a PIL image's mode, size and pixels (for images given in memory)."""
    h = hashlib.sha256(f"{img.mode} {img.width}x{img.height}\n".encode())
    h.update(img.tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- inputs
def is_image_like(value) -> bool:
    return isinstance(value, (Image.Image, bytes, bytearray, os.PathLike)) or hasattr(value, "__array__")


def input_record(value, keep_path: bool = True) -> Optional[Dict[str, Any]]:
    """How an image input is recorded: a file by name (and absolute path with ``keep_path``) and
    sha256 of its bytes; bytes by their sha256; an in-memory image by its pixels' sha256."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
        rec = {"input": "file", "name": os.path.basename(os.fspath(value)), "sha256": file_sha256(value)}
        if keep_path:
            rec["path"] = os.path.abspath(os.fspath(value))
        return rec
    if isinstance(value, FileBytes):  # a file read for a run in another process: recorded as the file
        rec = {"input": "file", "name": os.path.basename(value.path), "sha256": hashlib.sha256(value).hexdigest()}
        if keep_path:
            rec["path"] = os.path.abspath(value.path)
        return rec
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"input": "bytes", "sha256": hashlib.sha256(bytes(value)).hexdigest()}
    if isinstance(value, Image.Image):
        return {"input": "pixels", "pixels_sha256": pixels_sha256(value)}
    if hasattr(value, "__array__"):
        return {"input": "pixels", "pixels_sha256": pixels_sha256(Image.fromarray(value.__array__()))}
    return None


# ----------------------------------------------------------------------------- models
def model_record(registry, kind: str, name: Optional[str]) -> Optional[Dict[str, Any]]:
    """What the registry can tell cheaply about a model without downloading: tiny builder and
    seed; a pinned sha256; a hub file's blob hash (its sha256 for LFS files) and a diffusers
    repo's snapshot revision from the local cache; a local file's sha256 (once per process)."""
    if not name:
        return None
    try:
        entry = registry.entry(kind, name)
    except PromptFreeError:
        return {"name": name, "unknown": True}
    rec: Dict[str, Any] = {"name": name}
    if entry.tiny is not None:
        rec.update(tiny=entry.tiny, seed=entry.option("seed"), profile=registry.profile)
        return rec
    for src in entry.sources:
        found = _source_fingerprint(src)
        if found:
            rec.update(found)
            return rec
    rec["source"] = entry.sources[0].describe() if entry.sources else None
    return rec


def _source_fingerprint(src) -> Optional[Dict[str, Any]]:
    if src.sha256:
        return {"sha256": src.sha256}
    if src.path is not None:
        if src.path.is_file():
            return {"file": src.path.name, "sha256": file_sha256(src.path)}
        if src.path.is_dir():
            return {"folder": src.path.name}
        return None
    if not src.repo:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency
        return None
    target = src.file or ("config.json" if src.subfolder else "model_index.json")
    filename = f"{src.subfolder}/{target}" if src.subfolder else target
    hit = try_to_load_from_cache(src.repo, filename, revision=src.revision, repo_type=src.repo_type)
    if not isinstance(hit, str):
        return None
    rec: Dict[str, Any] = {"repo": src.repo}
    parts = Path(hit).parts
    if "snapshots" in parts:
        rec["revision"] = parts[parts.index("snapshots") + 1]
    if src.file:
        blob = os.path.basename(os.path.realpath(hit))
        rec["sha256" if re.fullmatch(r"[0-9a-f]{64}", blob) else "git_oid"] = blob
    return rec
