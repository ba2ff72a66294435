"""Where a model's weights come from, before any layout is known: a weight file, a diffusers
model folder (one file or shards, or a pipeline folder's subfolder) or a Hugging Face Hub repo
id. ``formats`` maps what is read here to diffusers models. Files are read by
``weights.read_state_dict`` (safetensors first, pickles only with ``weights_only=True``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import torch

from .errors import CheckpointError, ModelUnavailableError
from .settings import hub_offline
from .weights import read_state_dict

WEIGHT_NAMES = (  # in a diffusers model folder, in order of preference
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.fp16.safetensors.index.json",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.bin",
    "diffusion_pytorch_model.bin.index.json",
)


def is_repo_id(path) -> bool:
    """Whether ``path`` names a Hub repo (``owner/name``) rather than a local file or folder."""
    if isinstance(path, Path):
        return False
    s = str(path)
    if os.path.exists(s) or os.path.isabs(s) or s.startswith((".", "~")):
        return False
    if Path(s).suffix.lower() in (".safetensors", ".pth", ".pt", ".ckpt", ".bin"):
        return False
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", s) is not None


def diffusers_folder(path: Path, subfolder: str) -> Path:
    """The model folder ``path`` is, or its ``subfolder`` in a pipeline folder."""
    if (path / "config.json").is_file():
        return path
    if (path / subfolder / "config.json").is_file():
        return path / subfolder
    raise CheckpointError(
        f"folder '{path}' is not a diffusers model folder: it has neither config.json nor {subfolder}/config.json"
    )


def _read_weights(folder: Path, name: str) -> Dict[str, torch.Tensor]:
    f = folder / name
    if not name.endswith(".index.json"):
        return read_state_dict(f)
    try:
        shards = sorted(set(json.loads(f.read_text())["weight_map"].values()))
    except Exception as e:
        raise CheckpointError(f"'{f}' is not a valid shard index: {str(e)[:200]}") from None
    sd: Dict[str, torch.Tensor] = {}
    for shard in shards:
        sd.update(read_state_dict(folder / shard))
    return sd


def read_diffusers_folder(folder: Path, cls_name: str, config: Optional[Mapping]):
    """(config, state dict) of a diffusers model folder holding a ``cls_name``; ``config``,
    when given, replaces the folder's own."""
    try:
        folder_config = json.loads((folder / "config.json").read_text())
    except Exception as e:
        raise CheckpointError(f"'{folder / 'config.json'}' is not a valid JSON config: {str(e)[:200]}") from None
    found = folder_config.get("_class_name")
    if found and found != cls_name:
        raise CheckpointError(f"folder '{folder}' holds a {found}, not a {cls_name}")
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return (config if config is not None else folder_config), _read_weights(folder, name)
    raise CheckpointError(f"folder '{folder}' has a config.json but no diffusion_pytorch_model weights")


def read_any(path, cls_name: str, subfolder: str, config):
    """(config or None, state dict, source description) of a local file or diffusers folder."""
    p = Path(path)
    if p.is_dir():
        folder = diffusers_folder(p, subfolder)
        cfg, sd = read_diffusers_folder(folder, cls_name, config)
        return cfg, sd, folder
    return config, read_state_dict(p), p


def from_hub(cls, repo: str, subfolders: Tuple[Optional[str], ...], what: str):
    """``cls.from_pretrained`` of ``repo``, trying each subfolder (None: the repo's root) in turn."""
    errors = []
    for sub in subfolders:
        try:
            kwargs = {"subfolder": sub} if sub else {}
            return cls.from_pretrained(repo, **kwargs)
        except Exception as e:
            errors.append(str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
    mode = " (offline mode: HF_HUB_OFFLINE is set, only the local cache is used)" if hub_offline() else ""
    raise ModelUnavailableError(
        f"could not load the {what} '{repo}' from the Hugging Face Hub{mode}: {errors[-1]}. "
        "No local file or folder has that name either: download it first, or give the path of a "
        "local file or folder."
    )
