"""A task's result on the way from a replica to the front end: every picture in it as PNG bytes
with its metadata chunks (what a download of it holds), the rest as it is.

``pack`` walks the result (dataclasses, lists, tuples, dicts) and replaces each PIL image by a
``Png``; ``unpack`` reverses it. A picture that appears twice (a comparison's column image is
also one of ``images``) is encoded once and comes back as one object, so the front end's
``present`` sees the same structure as in-process. PNG is lossless: the same pixels, the same
text chunks (``metadata.pnginfo``), which Gradio writes into the files it serves.
"""

from __future__ import annotations

import copy
import dataclasses
import io
from dataclasses import dataclass
from typing import Any, Callable, Dict

from PIL import Image

from ..metadata import pnginfo

COMPRESS_LEVEL = 1  # the bytes cross a local socket at most: fast encoding over small size


@dataclass(frozen=True)
class Png:
    """One picture as PNG bytes (metadata chunks included)."""

    data: bytes

    @classmethod
    def of(cls, img: Image.Image) -> "Png":
        buf = io.BytesIO()
        img.save(buf, format="PNG", pnginfo=pnginfo(img), compress_level=COMPRESS_LEVEL)
        return cls(buf.getvalue())

    def image(self) -> Image.Image:
        from ..images import open_lazy  # the one opener (PNG only here: what a replica sends)

        img = open_lazy(io.BytesIO(self.data), "a picture from a replica", formats=("PNG",))
        img.load()
        return img


def _walk(value: Any, convert: Callable[[Any], Any], memo: Dict[int, Any]) -> Any:
    """``value`` with ``convert`` applied to its leaves that it changes, one result per object."""
    key = id(value)
    if key in memo:
        return memo[key]
    out = convert(value)
    if out is value:
        if isinstance(value, (list, tuple)):
            items = [_walk(v, convert, memo) for v in value]
            out = type(value)(items) if not hasattr(value, "_fields") else type(value)(*items)
        elif isinstance(value, dict):
            out = {k: _walk(v, convert, memo) for k, v in value.items()}
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            out = copy.copy(value)
            for f in dataclasses.fields(value):
                object.__setattr__(out, f.name, _walk(getattr(value, f.name), convert, memo))
    memo[key] = out
    return out


def pack(value: Any) -> Any:
    """``value`` with every PIL image replaced by its ``Png``."""
    return _walk(value, lambda v: Png.of(v) if isinstance(v, Image.Image) else v, {})


def unpack(value: Any) -> Any:
    """``pack``'s inverse: every ``Png`` decoded back into a PIL image (its text chunks in ``info``)."""
    return _walk(value, lambda v: v.image() if isinstance(v, Png) else v, {})
