"""Saved embeddings: a reference's SeeCoder context and its unconditional context as a
safetensors file, and combinations of several (re-weighting without re-encoding).

A file holds two tensors, ``context`` and ``uncond`` (each (1, N, C): N = 148 for one
reference, C the base model's context width), in the dtype the engine encoded them in, and
text metadata: ``format`` ("prompt-free-embedding"), ``format_version``, ``seecoder`` (the
SeeCoder's name), ``reference_sha256`` (of the reference file's bytes, or of its pixels for an
image given in memory; empty for a combination), ``settings`` (JSON: what shaped it, e.g. the
reference's encoding or the combination's mode, weights and inputs) and ``version``.

A loaded embedding replaces the encoding of a reference in the reference builder
(``tasks.reference._encode``), so everything after it (strength, text, blocks) applies as to an
encoded reference, and a saved-then-loaded embedding gives the same pixels bit for bit (the
tensors are stored exactly; only a file of another dtype than the engine's is converted).

Loading reads safetensors only (never a pickle: a ``.pt`` / ``.ckpt`` renamed is refused), up to
``settings.MAX_EMBEDDING_BYTES``, and checks the tensors' names and shapes. A SeeCoder name that
differs from the run's gives a note, not a refusal: the file's tensors are used as they are (the
run's SeeCoder is not run at all), and the note says the base model may have been chosen for
another SeeCoder.

Combinations (``combine``), with one weight per input (default 1 each), of embeddings of the
same shape and the same unconditional context (the same SeeCoder; refused otherwise), which the
result keeps:

* ``add``: sum_i w_i c_i;
* ``subtract``: w_1 c_1 - sum_{i>1} w_i c_i (A - A = zeros);
* ``average``: sum_i w_i c_i / sum_i w_i (the weights must sum above 0; A average A = A);
* ``norm_average``: the weighted average with every token rescaled to the weighted mean of the
  inputs' norms of that token: averaging vectors that point in different directions shortens
  them, and a context of shorter tokens acts like a weaker reference; rescaling keeps the
  typical magnitude of a real SeeCoder context (a token whose average is zero stays zero).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from . import settings as limits
from .errors import InputImageError, InvalidSettingError
from .version import __version__

FORMAT = "prompt-free-embedding"
FORMAT_VERSION = 1
ADD, SUBTRACT, AVERAGE, NORM_AVERAGE = "add", "subtract", "average", "norm_average"
MODES = (ADD, SUBTRACT, AVERAGE, NORM_AVERAGE)


@dataclass
class Embedding:
    """A context and its unconditional context, each (1, N, C), with what made them."""

    context: torch.Tensor
    uncond: torch.Tensor
    seecoder: str = ""
    reference_sha256: str = ""
    settings: Dict[str, Any] = field(default_factory=dict)
    name: str = "embedding"  # how messages name it (a file's base name)

    @property
    def pair(self) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.context, self.uncond

    def metadata(self) -> Dict[str, str]:
        return {"format": FORMAT, "format_version": str(FORMAT_VERSION), "seecoder": self.seecoder,
                "reference_sha256": self.reference_sha256, "settings": json.dumps(self.settings, sort_keys=True),
                "version": __version__}

    def to_bytes(self) -> bytes:
        """The safetensors file's bytes."""
        from safetensors.torch import save

        return save(self._tensors(), metadata=self.metadata())

    def save(self, path) -> str:
        """Writes the file atomically (a temporary file, then a rename); returns its path."""
        path = os.fspath(path)
        tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.part")
        with open(tmp, "wb") as f:
            f.write(self.to_bytes())
        os.replace(tmp, path)
        return path

    def _tensors(self) -> Dict[str, torch.Tensor]:
        return {"context": self.context.detach().cpu().contiguous(), "uncond": self.uncond.detach().cpu().contiguous()}


# ----------------------------------------------------------------------------- making
def reference_sha256(reference) -> str:
    """sha256 of a reference file's bytes (of bytes given; of the pixels of an image in memory)."""
    from .fingerprints import input_record

    rec = input_record(reference, keep_path=False) or {}
    return rec.get("sha256") or rec.get("pixels_sha256") or ""


def encode(engine, reference, seecoder: Optional[str] = None, mask=None) -> Embedding:
    """The embedding of ``reference`` (a path, bytes, PIL ...) by ``seecoder`` (default: the
    engine's), as the reference builder encodes it (``Engine.encode_reference``); ``mask``: a
    source mask (``reference_mask``: an image, white = use; all white = none), recorded by hash."""
    from .images import prepare_reference
    from .masks import source_mask

    name = seecoder or engine.defaults["seecoder"]
    engine.registry.entry("seecoders", name)
    keep = source_mask(mask)
    image = prepare_reference(reference)
    with engine.request():
        context, uncond = engine.encode_reference(image, name, mask=keep)
    settings = {"made_by": "encode", "reference_size": list(image.size)}
    if keep is not None:
        settings["reference_mask_sha256"] = reference_sha256(mask)
    return Embedding(context, uncond, name, reference_sha256(reference), settings)


def combine(embeddings: Sequence[Embedding], weights: Optional[Sequence[float]] = None, mode: str = AVERAGE) -> Embedding:
    """The combination of ``embeddings`` by ``mode`` (see the module docstring) with ``weights``
    (one per embedding; default 1 each)."""
    mode = check_mode(mode)
    items = list(embeddings)
    if len(items) < 2:
        raise InvalidSettingError(f"combining takes two or more embeddings, got {len(items)}")
    w = _weights(weights, len(items), mode)
    first = items[0]
    for e in items[1:]:
        _check_compatible(first, e)
    stack = torch.stack([e.context.float() for e in items])  # (K, 1, N, C), in float32
    wt = torch.tensor(w, dtype=torch.float32, device=stack.device).view(-1, 1, 1, 1)
    if mode == ADD:
        out = (wt * stack).sum(0)
    elif mode == SUBTRACT:
        out = wt[0] * stack[0] - (wt[1:] * stack[1:]).sum(0)
    else:
        out = (wt * stack).sum(0) / wt.sum()
        if mode == NORM_AVERAGE:
            target = (wt * stack.norm(dim=-1, keepdim=True)).sum(0) / wt.sum()
            norm = out.norm(dim=-1, keepdim=True)
            out = torch.where(norm > 0, out * (target / norm.clamp_min(torch.finfo(out.dtype).tiny)), out)
    settings = {"made_by": "combine", "mode": mode, "weights": w,
                "inputs": [{"name": e.name, "reference_sha256": e.reference_sha256} for e in items]}
    return Embedding(out.to(first.context.dtype), first.uncond, first.seecoder, "", settings, f"{mode} of {len(items)}")


def check_mode(mode) -> str:
    key = str(mode or "").strip().lower().replace("-", "_").replace(" ", "_")
    if key not in MODES:
        raise InvalidSettingError(f"unknown combine mode {mode!r}; choose one of: {', '.join(MODES)}")
    return key


def _weights(weights, k: int, mode: str) -> List[float]:
    if weights is None or len(weights) == 0:
        return [1.0] * k
    if len(weights) != k:
        raise InvalidSettingError(f"{len(weights)} weights for {k} embeddings: give one weight per embedding")
    try:
        w = [float(x) for x in weights]
    except (TypeError, ValueError):
        raise InvalidSettingError(f"the weights must be numbers, got {list(weights)!r}") from None
    if any(x != x or abs(x) == float("inf") for x in w):
        raise InvalidSettingError(f"the weights must be finite numbers, got {w}")
    if mode in (AVERAGE, NORM_AVERAGE) and sum(w) <= 0:
        raise InvalidSettingError(f"an {mode.replace('_', ' ')} needs weights that sum above 0, got {w}")
    return w


def _check_compatible(a: Embedding, b: Embedding) -> None:
    if tuple(a.context.shape) != tuple(b.context.shape):
        raise InvalidSettingError(f"'{b.name}' is {tuple(b.context.shape)} but '{a.name}' is {tuple(a.context.shape)}: "
                                  "only embeddings of the same shape can be combined")
    if a.seecoder and b.seecoder and a.seecoder != b.seecoder:
        raise InvalidSettingError(f"'{a.name}' was made by SeeCoder '{a.seecoder}' and '{b.name}' by '{b.seecoder}': "
                                  "combine embeddings of one SeeCoder")
    if not torch.equal(a.uncond.cpu().float(), b.uncond.cpu().float()):
        raise InvalidSettingError(f"'{a.name}' and '{b.name}' have different unconditional contexts (different "
                                  "SeeCoders): combine embeddings of one SeeCoder")


# ----------------------------------------------------------------------------- loading
def load(source, what: str = "embedding") -> Embedding:
    """An embedding file (a path, its bytes or a binary file object): safetensors only, the
    tensors ``context`` and ``uncond`` of the same shape (1, N, C); ``InputImageError`` naming
    ``what`` and the file for anything else."""
    data, name = _read(source, what)
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    try:
        tensors = load_bytes(data)
        meta = _metadata(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise InputImageError(f"{what} '{name}' is not a safetensors file ({str(e).splitlines()[0][:120]}); "
                              "save one with `prompt-free embed` or the app's Saved embeddings") from None
    missing = [k for k in ("context", "uncond") if k not in tensors]
    if missing:
        raise InputImageError(f"{what} '{name}' has no tensor {' / '.join(missing)}: it is not a Prompt-Free embedding "
                              f"(it holds: {', '.join(sorted(tensors)[:6]) or 'nothing'})")
    context, uncond = tensors["context"], tensors["uncond"]
    _check_shape(context, uncond, what, name)
    try:
        settings = json.loads(meta.get("settings") or "{}")
    except ValueError:
        settings = {}
    return Embedding(context, uncond, meta.get("seecoder", ""), meta.get("reference_sha256", ""),
                     settings if isinstance(settings, dict) else {}, name)


def _read(source, what: str) -> Tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), what
    elif isinstance(source, (str, os.PathLike)):
        name = os.path.basename(os.fspath(source))
        if not os.path.isfile(source):
            raise InputImageError(f"{what} '{name}' does not exist")
        if os.path.getsize(source) > limits.MAX_EMBEDDING_BYTES:
            raise InputImageError(f"{what} '{name}' is too large for an embedding (over "
                                  f"{limits.MAX_EMBEDDING_BYTES // (1024 * 1024)} MB)")
        with open(source, "rb") as f:
            data = f.read()
    elif isinstance(source, io.IOBase) or hasattr(source, "read"):
        data, name = source.read(limits.MAX_EMBEDDING_BYTES + 1), os.path.basename(str(getattr(source, "name", what)))
    else:
        raise InputImageError(f"{what}: expected a .safetensors file, got {type(source).__name__}")
    if len(data) > limits.MAX_EMBEDDING_BYTES:
        raise InputImageError(f"{what} '{name}' is too large for an embedding")
    return data, name


def _metadata(data: bytes) -> Dict[str, str]:
    """The safetensors header's ``__metadata__`` (its first 8 bytes give the header's length)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


def _check_shape(context: torch.Tensor, uncond: torch.Tensor, what: str, name: str) -> None:
    if context.dim() != 3 or context.shape[0] != 1 or not 1 <= context.shape[1] <= limits.MAX_EMBEDDING_TOKENS:
        raise InputImageError(f"{what} '{name}': its context is {tuple(context.shape)}, expected (1, N, C) with N "
                              f"from 1 to {limits.MAX_EMBEDDING_TOKENS} tokens (148 for one reference)")
    if tuple(uncond.shape) != tuple(context.shape):
        raise InputImageError(f"{what} '{name}': its unconditional context is {tuple(uncond.shape)}, its context "
                              f"{tuple(context.shape)}; they must have the same shape")
    if not (context.is_floating_point() and uncond.is_floating_point()):
        raise InputImageError(f"{what} '{name}': its tensors are not floating point")


def for_run(embedding: Embedding, width: int, seecoder: str, base_model: str, device, dtype,
            notes: Optional[List[str]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(context, uncond) of ``embedding`` on ``device`` in ``dtype`` for a run of ``base_model``
    (context width ``width``): a width that differs is refused; a SeeCoder that differs, or a
    dtype that must be converted, adds a note to ``notes``."""
    c = int(embedding.context.shape[-1])
    if c != int(width):
        raise InvalidSettingError(f"embedding '{embedding.name}' is {c} wide but base model '{base_model}' expects "
                                  f"{width} (was it made for another kind of base model?)")
    if notes is not None and embedding.seecoder and embedding.seecoder != seecoder:
        notes.append(f"embedding '{embedding.name}' was made by SeeCoder '{embedding.seecoder}'; it is used as saved "
                     f"(this run's SeeCoder '{seecoder}' is not used, and the base model is the one chosen for it)")
    if notes is not None and embedding.context.dtype != dtype:
        notes.append(f"embedding '{embedding.name}' is {str(embedding.context.dtype).replace('torch.', '')}, converted "
                     f"to {str(dtype).replace('torch.', '')}")
    return embedding.context.to(device, dtype), embedding.uncond.to(device, dtype)


__all__ = ["ADD", "AVERAGE", "Embedding", "FORMAT", "FORMAT_VERSION", "MODES", "NORM_AVERAGE", "SUBTRACT",
           "check_mode", "combine", "encode", "for_run", "load", "reference_sha256"]
