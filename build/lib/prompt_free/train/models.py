"""The modules training needs: the frozen base model (UNet + VAE) and the SeeCoder to train.

``resolve_base_model`` is the one place where a base-model name becomes modules; once the
engine's registry exists it can delegate there (names from checkpoints.yaml).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..seecoder import SeeCoder, SeeCoderConfig, build_seecoder, load_seecoder, load_seecoder_state_dict
from ..seecoder.qtransformer import PositionEncoding
from ..weights import first, read_state_dict

logger = logging.getLogger(__name__)


@dataclass
class BaseModel:
    name: str
    unet: nn.Module
    vae: nn.Module
    seecoder_config: SeeCoderConfig  # the SeeCoder size that goes with it (seecoder.size: auto)


def resolve_base_model(spec: str) -> BaseModel:
    """``tiny`` (the offline tiny profile) or a diffusers model folder / Hub repo id with
    ``unet/`` and ``vae/`` subfolders."""
    if spec == "tiny":
        from ..tiny import TINY_SEECODER, tiny_unet, tiny_vae

        return BaseModel("tiny", tiny_unet(), tiny_vae(), TINY_SEECODER)
    path = Path(os.path.expanduser(spec))
    if path.is_file():
        raise ConfigError(
            f"base_model '{spec}' is a single file; the trainer reads 'tiny' or a diffusers folder "
            "(with unet/ and vae/ subfolders)"
        )
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from ..settings import hub_offline

    offline = hub_offline()
    kw = dict(local_files_only=offline or path.is_dir())
    try:
        unet = UNet2DConditionModel.from_pretrained(str(path) if path.is_dir() else spec, subfolder="unet", **kw)
        vae = AutoencoderKL.from_pretrained(str(path) if path.is_dir() else spec, subfolder="vae", **kw)
    except (OSError, ValueError, EnvironmentError) as e:
        raise ConfigError(f"base_model '{spec}' could not be loaded as a diffusers model: {str(e).splitlines()[0]}") from None
    return BaseModel(spec, unet.eval(), vae.eval(), SeeCoderConfig.official())


# ----------------------------------------------------------------------------- SeeCoder
def init_position_encoding(pe: PositionEncoding, seed: int = 0) -> PositionEncoding:
    """The official PA initialisation: xavier-normal weights, zero biases, zero last layer
    (so a PA model made from a plain one starts with exactly the plain model's output)."""
    linears = [m for m in pe.mlp if isinstance(m, nn.Linear)]
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for lin in linears:
            nn.init.xavier_normal_(lin.weight)
            nn.init.zeros_(lin.bias)
        nn.init.zeros_(linears[-1].weight)
    return pe


def attach_position_encoding(plain: SeeCoder, seed: int = 0) -> SeeCoder:
    """SeeCoder-PA = the plain model's weights (copied) + a new, zero-output ``pe_layer``."""
    if plain.config.position_aware:
        raise ConfigError("the SeeCoder is already position-aware (PA)")
    cfg = plain.config.with_position_encoding()
    pe = init_position_encoding(PositionEncoding(cfg.position_encoding), seed)
    sd = {k: v.detach().clone() for k, v in plain.state_dict().items()}
    sd.update({f"qtransformer.pe_layer.{k}": v.to(plain.dtype) for k, v in pe.state_dict().items()})
    return load_seecoder_state_dict(sd, cfg, device=plain.device)


def _official_size(size: str, default: SeeCoderConfig) -> SeeCoderConfig:
    if size == "official":
        return SeeCoderConfig.official()
    if size == "tiny":
        from ..tiny import TINY_SEECODER

        return TINY_SEECODER
    return default


def build_training_seecoder(section, default_config: SeeCoderConfig, seed: int) -> SeeCoder:
    """The SeeCoder to train (float32, on CPU) from the config's ``seecoder`` section."""
    if section.init:
        model = load_seecoder(section.init)
        if model.config.position_aware and section.variant == "plain":
            raise ConfigError(
                f"seecoder.init '{section.init}' is a SeeCoder-PA file; set seecoder.variant: pa to fine-tune it"
            )
    else:
        model = build_seecoder(_official_size(section.size, default_config), seed=seed)
        if section.variant == "pa":
            logger.warning("seecoder.variant is pa without seecoder.init: the paper starts PA from a trained plain SeeCoder")
    if section.backbone:
        load_backbone_weights(model, section.backbone)
    if section.variant == "pa" and not model.config.position_aware:
        model = attach_position_encoding(model, seed)
    return model.float()


# ----------------------------------------------------------------------------- backbone
_TIMM_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.(.*)$")


def _timm_to_official(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """timm ``SwinTransformer`` keys -> official ``imencoder`` keys (spec f): the patch merge
    moves from the start of stage i+1 to the end of stage i, the final ``norm`` is ``norm3``;
    index buffers and the classifier head are dropped."""
    out = {}
    for k, v in sd.items():
        if k.startswith("head") or k.endswith(("relative_position_index", "attn_mask")):
            continue
        m = _TIMM_DOWNSAMPLE.match(k)
        if m:
            k = f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
        elif k.startswith("norm."):
            k = "norm3." + k[len("norm."):]
        out[k] = v
    return out


def load_backbone_weights(model: SeeCoder, path) -> None:
    """Load the Swin backbone from ``path``: an official SeeCoder file (only its
    ``imencoder.*`` part is used) or a timm Swin state dict (e.g. swin_large_patch4_window12_384;
    its output norms of stages 0-2 do not exist there and start as identity LayerNorms)."""
    sd = read_state_dict(path)
    for prefix in ("ctx.image.imencoder.", "imencoder."):
        part = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if part:
            sd, timm_layout = part, False
            break
    else:
        for prefix in ("module.", "model.", "backbone."):
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
        if "patch_embed.proj.weight" not in sd:
            raise CheckpointError(
                f"seecoder.backbone '{path}' is neither a SeeCoder file nor a Swin state dict (first keys: {first(sd.keys(), 3)})"
            )
        timm_layout = "norm.weight" in sd and "norm3.weight" not in sd
        if timm_layout:
            sd = _timm_to_official(sd)
    enc = model.imencoder
    own = enc.state_dict()
    sd = {k: v for k, v in sd.items() if not k.endswith("relative_position_index")}
    allowed_missing = {k for k in own if k.endswith("relative_position_index")}
    if timm_layout:
        allowed_missing |= {k for k in own if re.match(r"^norm[012]\.", k)}
    missing = set(own) - set(sd) - allowed_missing
    unexpected = set(sd) - set(own)
    wrong = [k for k in set(sd) & set(own) if tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"seecoder.backbone '{path}' does not fit the SeeCoder backbone: "
            f"missing {first(missing, 3) if missing else 'none'}; unexpected {first(unexpected, 3) if unexpected else 'none'}; "
            f"wrong shapes {first(wrong, 3) if wrong else 'none'}"
        )
    with torch.no_grad():
        for k, v in sd.items():
            own[k].copy_(v.to(own[k].dtype))
        if timm_layout:
            for i in range(3):
                norm = getattr(enc, f"norm{i}")
                norm.weight.fill_(1.0)
                norm.bias.zero_()
