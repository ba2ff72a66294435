"""Reading weight files safely: safetensors first, pickles only with ``weights_only=True``.

Every failure becomes a ``CheckpointError`` that names the file and what is wrong.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Dict, Iterable, Mapping, Tuple

import torch

from .errors import CheckpointError

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


def _describe(path) -> str:
    return f"'{os.fspath(path)}'"


def read_state_dict(path, *, device: str = "cpu") -> Dict[str, torch.Tensor]:
    """Load a flat ``{key: tensor}`` dict from a .safetensors or a (weights-only) pickle file.

    Pickles may wrap the dict under ``state_dict`` or ``model`` (common in training
    checkpoints); anything that is not a dict of tensors is refused.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"weight file {_describe(path)} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{_describe(path)} is a folder, not a weight file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"weight file {_describe(path)} is empty")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES or (suffix not in PICKLE_SUFFIXES and not zipfile.is_zipfile(path)):
        return _read_safetensors(path, device)
    return _read_pickle(path, device)


def _read_safetensors(path: Path, device: str) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=device)
    except Exception as e:  # safetensors raises its own SafetensorError / OSError / ValueError
        hint = ""
        if zipfile.is_zipfile(path):
            hint = " (it looks like a PyTorch pickle: give it a .pth/.pt/.ckpt name)"
        raise CheckpointError(
            f"weight file {_describe(path)} is not a valid safetensors file{hint}: {str(e).splitlines()[0][:200]}"
        ) from None


def _read_pickle(path: Path, device: str) -> Dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(path), map_location=device, weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:
        msg = str(e).splitlines()[0][:200]
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            msg = "it contains Python objects other than tensors, which are not loaded for safety"
        raise CheckpointError(f"weight file {_describe(path)} could not be read as a PyTorch file: {msg}") from None
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
            break
    if isinstance(obj, torch.Tensor):
        raise CheckpointError(f"weight file {_describe(path)} holds a single tensor, not a state dict")
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"weight file {_describe(path)} does not hold a dict of tensors")
    return dict(obj)


def read_tensor(path, *, device: str = "cpu") -> torch.Tensor:
    """Load a file that holds one tensor (e.g. an unconditional embedding)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"file {_describe(path)} does not exist")
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        sd = _read_safetensors(path, device)
        if len(sd) != 1:
            raise CheckpointError(f"{_describe(path)} should hold one tensor, it holds {len(sd)}")
        return next(iter(sd.values()))
    try:
        obj = torch.load(str(path), map_location=device, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"file {_describe(path)} could not be read as a PyTorch tensor file: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(obj, torch.Tensor):
        raise CheckpointError(f"file {_describe(path)} holds a {type(obj).__name__}, not a tensor")
    return obj


def first(items: Iterable[str], n: int = 5) -> str:
    items = sorted(items)
    shown = ", ".join(items[:n])
    return shown + (f" ... ({len(items)} in all)" if len(items) > n else "")


def check_keys_and_shapes(
    sd: Mapping[str, torch.Tensor],
    expected: Mapping[str, Tuple[int, ...]],
    *,
    what: str,
    path=None,
) -> None:
    """Raise a ``CheckpointError`` naming the first missing / unexpected / mis-shaped keys."""
    where = f" in {_describe(path)}" if path is not None else ""
    missing = set(expected) - set(sd)
    unexpected = set(sd) - set(expected)
    problems = []
    if missing:
        problems.append(f"missing keys: {first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {first(unexpected)}")
    wrong = [
        f"{k} {tuple(sd[k].shape)} (expected {tuple(expected[k])})"
        for k in sorted(set(sd) & set(expected))
        if tuple(sd[k].shape) != tuple(expected[k])
    ]
    if wrong:
        problems.append(f"wrong shapes: {', '.join(wrong[:5])}" + (f" ... ({len(wrong)} in all)" if len(wrong) > 5 else ""))
    if problems:
        raise CheckpointError(f"{what}{where} does not match the model: " + "; ".join(problems))
