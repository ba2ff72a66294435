"""Small LoRA files for the tiny base model, written by the tests in both real layouts.

The same random weights are written as a kohya / A1111 file (``lora_unet_<module>.lora_down
.weight``, ``.lora_up.weight``, ``.alpha``) and as a diffusers/PEFT file (``unet.<module>.lora_A
.weight`` / ``.lora_B.weight``, alpha in the adapter metadata as diffusers writes it), so the
two must give the same pictures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Tuple

import torch
import yaml
from safetensors.torch import save_file

from prompt_free.registry import DEFAULT_CHECKPOINTS
from prompt_free.tiny import tiny_unet

RANK = 4


def lora_layers(seed: int, *, rank: int = RANK, std: float = 0.3, width_extra: int = 0) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """{module: (down, up)} for every Linear and Conv2d of the tiny UNet's attention blocks
    (the layers kohya trains on SD 1.x: proj_in/out as 1x1 convs, attention and feed-forward).
    ``width_extra`` makes every down matrix that much too wide (a LoRA for another model)."""
    unet = tiny_unet()
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in unet.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and ".attentions." in f".{name}":
            w = m.weight
            down = torch.randn((rank, w.shape[1] + width_extra, *w.shape[2:]), generator=g) * std
            up = torch.randn((w.shape[0], rank, *([1, 1] if w.dim() == 4 else [])), generator=g) * std
            out[name] = (down, up)
    return out


def write_kohya(path: Path, layers, alpha: float = RANK, text_encoder: bool = False) -> Path:
    sd = {}
    for name, (down, up) in layers.items():
        key = "lora_unet_" + name.replace(".", "_")
        sd[f"{key}.lora_down.weight"] = down.contiguous()
        sd[f"{key}.lora_up.weight"] = up.contiguous()
        sd[f"{key}.alpha"] = torch.tensor(float(alpha))
    if text_encoder:  # a text-encoder layer, as kohya files for SD 1.x usually have
        g = torch.Generator().manual_seed(99)
        key = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
        sd[f"{key}.lora_down.weight"] = torch.randn(RANK, 64, generator=g)
        sd[f"{key}.lora_up.weight"] = torch.randn(64, RANK, generator=g)
        sd[f"{key}.alpha"] = torch.tensor(float(alpha))
    save_file(sd, str(path))
    return path


def write_peft(path: Path, layers, alpha=None, up_factor: float = 1.0) -> Path:
    """diffusers' ``save_lora_weights`` layout; ``alpha`` goes into the adapter metadata."""
    sd = {}
    for name, (down, up) in layers.items():
        sd[f"unet.{name}.lora_A.weight"] = down.contiguous()
        sd[f"unet.{name}.lora_B.weight"] = (up * up_factor).contiguous()
    metadata = {"format": "pt"}
    if alpha is not None:
        metadata["lora_adapter_metadata"] = json.dumps({"unet.r": RANK, "unet.lora_alpha": alpha})
    save_file(sd, str(path), metadata=metadata)
    return path


def tiny_data_with_loras(loras: Dict[str, Path]) -> dict:
    """The tiny profile of the project's checkpoints.yaml plus a ``loras:`` section."""
    data = yaml.safe_load(DEFAULT_CHECKPOINTS.read_text())["profiles"]["tiny"]
    data["loras"] = {name: {"path": str(p)} for name, p in loras.items()}
    return data


def write_checkpoints(path: Path, loras: Dict[str, Path]) -> Path:
    path.write_text(yaml.safe_dump({"profiles": {"tiny": tiny_data_with_loras(loras)}}, sort_keys=False))
    return path
