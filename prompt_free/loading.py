"""How each kind of model is built from its ``checkpoints.yaml`` entry: tiny builders, official
files, single files and diffusers folders or repos. The engine decides *when* (caching, memory
budget, locks); this module knows *how*. Every module is placed with ``engine.place``, which
makes room within the memory budget before anything reaches the device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch

from . import tiny
from .errors import CheckpointError, ModelUnavailableError
from .registry import Entry
from .settings import hub_offline

log = logging.getLogger(__name__)


@dataclass
class LoadedSeeCoder:
    name: str
    model: torch.nn.Module
    unconditional: torch.Tensor  # (1, 148, C) on the device, model dtype


@dataclass
class BaseModel:
    name: str
    unet: torch.nn.Module
    vae: torch.nn.Module
    inpainting: bool = False

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def build_seecoder(engine, entry: Entry) -> LoadedSeeCoder:
    if entry.full_random:
        from .full_random import full_seecoder

        model = full_seecoder(entry.tiny == "seecoder_pa_full", seed=entry.option("seed", 0), dtype=engine.dtype)
    elif entry.tiny is not None:
        model = tiny.tiny_seecoder(entry.tiny == "seecoder_pa", seed=entry.option("seed", 0))
    else:
        from .seecoder import load_seecoder

        path = engine.registry.resolve_file(entry.sources, entry.label, engine.allow_download)
        model = load_seecoder(path, dtype=engine.dtype)
    model = engine.place(model)
    uncond = _unconditional(engine, entry, model)
    return LoadedSeeCoder(entry.name, model, uncond.to(engine.device, engine.dtype))


def _unconditional(engine, entry: Entry, model) -> torch.Tensor:
    from .seecoder import load_unconditional_embedding, zero_unconditional

    spec = entry.option("unconditional", "zeros")
    cfg = model.config
    if spec == "zeros":
        return zero_unconditional(cfg)
    if spec == "tiny":
        return tiny.tiny_anime_unconditional()
    path = engine.registry.resolve_file(spec, f"{entry.label} unconditional embedding", engine.allow_download)
    return load_unconditional_embedding(path, cfg.num_tokens, cfg.out_dim)


def build_base_model(engine, entry: Entry) -> BaseModel:
    unet, vae = _base_parts(engine, entry)
    inpainting = bool(entry.option("inpainting", False))
    if inpainting != (unet.config.in_channels == 9):
        raise CheckpointError(
            f"{entry.label}: 'inpainting: {inpainting}' in checkpoints.yaml but its UNet has "
            f"{unet.config.in_channels} input channels"
        )
    return BaseModel(entry.name, engine.place(unet), engine.place(vae), inpainting)


def _base_parts(engine, entry: Entry):
    seed = entry.option("seed", 1)
    if entry.full_random:  # built on the device, in the engine's dtype
        from .full_random import full_unet, full_vae

        where = dict(device=engine.device, dtype=engine.dtype)
        return full_unet(seed, inpainting=bool(entry.option("inpainting")), **where), full_vae(seed + 100, **where)
    if entry.tiny is not None:
        return tiny.tiny_unet(seed, inpainting=bool(entry.option("inpainting"))), tiny.tiny_vae(seed + 100)
    from . import formats

    fmt = entry.format
    if fmt == "diffusers":
        return (_from_diffusers(engine, entry, "UNet2DConditionModel", "unet"),
                _from_diffusers(engine, entry, "AutoencoderKL", "vae"))
    path = engine.registry.resolve_file(entry.sources, entry.label, engine.allow_download)
    unet_cfg, vae_cfg = entry.option("unet_config"), entry.option("vae_config")
    if fmt == "single_file":
        return formats.load_single_file_pipeline_parts(path, unet_cfg, vae_cfg, dtype=engine.dtype)
    unet = formats.load_unet(path, unet_cfg, dtype=engine.dtype)
    vae_src = entry.option("vae")
    if vae_src[0].is_single_file:
        vae_path = engine.registry.resolve_file(vae_src, f"{entry.label} VAE", engine.allow_download)
        vae = formats.load_vae(vae_path, vae_cfg, dtype=engine.dtype)
    else:
        vae = from_diffusers_source(engine, vae_src[0], "AutoencoderKL", None, f"{entry.label} VAE")
    return unet, vae


def build_controlnet(engine, entry: Entry) -> torch.nn.Module:
    if entry.full_random:
        from .full_random import full_controlnet

        return engine.place(full_controlnet(entry.option("seed", 2), device=engine.device, dtype=engine.dtype))
    if entry.tiny is not None:
        return engine.place(tiny.tiny_controlnet(entry.option("seed", 2)))
    src = entry.sources[0]
    if src.is_single_file:
        from . import formats

        path = engine.registry.resolve_file(entry.sources, entry.label, engine.allow_download)
        return engine.place(formats.load_controlnet(path, entry.option("config"), dtype=engine.dtype))
    return engine.place(from_diffusers_source(engine, src, "ControlNetModel", src.subfolder, entry.label))


def build_preview_decoder(engine, entry: Entry) -> torch.nn.Module:
    """A ``previews:`` entry: the tiny autoencoder (diffusers ``AutoencoderTiny``, e.g. TAESD) that
    decodes live previews, on the device in the engine's dtype."""
    if entry.full_random:
        from .full_random import full_taesd

        return engine.place(full_taesd(entry.option("seed", 41), device=engine.device, dtype=engine.dtype))
    if entry.tiny is not None:
        return engine.place(tiny.tiny_taesd(entry.option("seed", 6)))
    src = entry.sources[0]
    return engine.place(from_diffusers_source(engine, src, "AutoencoderTiny", src.subfolder, entry.label))


def _from_diffusers(engine, entry: Entry, cls_name: str, subfolder: str):
    src = entry.sources[0]
    sub = f"{src.subfolder}/{subfolder}" if src.subfolder else subfolder
    return from_diffusers_source(engine, src, cls_name, sub, entry.label)


def from_diffusers_source(engine, src, cls_name: str, subfolder: Optional[str], what: str):
    """A diffusers model class from a local folder or a hub repo, in the engine's dtype (no fp32
    copy first), on the CPU."""
    import diffusers

    cls = getattr(diffusers, cls_name)
    location = str(src.path) if src.path is not None else src.repo
    if src.path is not None and not src.path.exists():
        raise ModelUnavailableError(f"{what}: local path '{src.path}' does not exist")
    sub = subfolder if subfolder is not None else src.subfolder
    try:
        return cls.from_pretrained(
            location, subfolder=sub, revision=src.revision, torch_dtype=engine.dtype,
            local_files_only=not engine.allow_download or hub_offline(),
        )
    except (OSError, EnvironmentError, ValueError) as e:
        if src.path is not None:
            raise CheckpointError(f"{what}: '{location}' is not a diffusers model folder ({str(e).splitlines()[0][:160]})") from None
        raise ModelUnavailableError(
            f"{what} is not available: '{location}' ({sub or 'root'}) is not in the local cache and could not "
            "be downloaded. Download it where the Hugging Face Hub is reachable, or point a `path:` at a local "
            "copy in checkpoints.yaml."
        ) from None


def build_lora(engine, entry: Entry):
    """A ``loras:`` entry: its safetensors file read into ``lora.LoraWeights`` on the device."""
    from .lora import read_lora

    path = engine.registry.resolve_file(entry.sources, entry.label, engine.allow_download)
    weights = read_lora(path, entry.name)
    if weights.ignored_text_encoder:
        log.info(
            "%s: its %d text-encoder layers are ignored (prompt-free generation uses no text encoder)",
            entry.label, weights.ignored_text_encoder)
    if not entry.validated:
        log.warning("%s", entry.lora_note())  # e.g. a few-step LoRA: not validated with SeeCoder context
    return engine.place(weights)
