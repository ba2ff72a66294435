"""IP-Adapter (the comparison's third column): its attention processors, image projection and
CLIP image encoder, loaded through the engine's cache for one base model's UNet layout, and the
image tokens of a reference. Only the plain ``ip-adapter_sd15`` layout (4 image tokens) is
supported. The UNet itself is never modified here: the processors reach it as a
``conditioning.AttentionProcessors`` patch, which the engine applies for one run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Tuple

import torch
from PIL import Image

from .errors import CheckpointError, ModelUnavailableError
from .images import image_to_tensor
from .settings import hub_offline

CLIP_IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class LoadedIPAdapter:
    name: str
    processors: Dict[str, torch.nn.Module]  # UNet attention processor name -> processor
    image_proj: torch.nn.Module
    image_encoder: torch.nn.Module
    num_tokens: int


def _read_ip_adapter_file(path: Path) -> Dict[str, Dict[str, torch.Tensor]]:
    """{"image_proj": {...}, "ip_adapter": {...}} from a .safetensors (prefixed keys) or a
    weights-only pickle (nested dicts, the original .bin layout)."""
    from .weights import PICKLE_SUFFIXES, read_state_dict

    if path.suffix.lower() in PICKLE_SUFFIXES:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"IP-Adapter file '{path}' could not be read: {str(e).splitlines()[0][:160]}") from None
        if isinstance(obj, dict) and isinstance(obj.get("image_proj"), dict) and isinstance(obj.get("ip_adapter"), dict):
            return {"image_proj": dict(obj["image_proj"]), "ip_adapter": dict(obj["ip_adapter"])}
        flat = obj if isinstance(obj, dict) else {}
    else:
        flat = read_state_dict(path)
    out: Dict[str, Dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for k, v in flat.items():
        head, _, rest = str(k).partition(".")
        if head in out and rest and isinstance(v, torch.Tensor):
            out[head][rest] = v
    if not out["image_proj"] or not out["ip_adapter"]:
        raise CheckpointError(f"'{path}' is not an IP-Adapter file: it needs 'image_proj.*' and 'ip_adapter.*' weights")
    return out


def image_encoder_source(entry):
    """The source of an IP-Adapter entry's CLIP image encoder (a transformers folder)."""
    from .registry import Source

    spec = entry.option("image_encoder")  # parsed to sources by the registry
    if spec is not None:
        return spec[0]
    # diffusers' convention: an `image_encoder` folder beside the weights
    src = entry.sources[0]
    if src.path is not None:
        folder = src.path.parent if src.path.is_file() or src.path.suffix else src.path
        return Source(path=folder / "image_encoder")
    sub = f"{src.subfolder}/image_encoder" if src.subfolder else "image_encoder"
    return Source(repo=src.repo, subfolder=sub, revision=src.revision)


def _load_image_encoder(engine, entry):
    from transformers import CLIPVisionModelWithProjection

    src = image_encoder_source(entry)
    location = str(src.path) if src.path is not None else src.repo
    key = ("ip_image_encoder", location, src.subfolder, src.revision)

    def build():
        if src.path is not None and not src.path.exists():
            raise ModelUnavailableError(f"{entry.label}: image encoder folder '{src.path}' does not exist")
        try:
            model = CLIPVisionModelWithProjection.from_pretrained(
                location, subfolder=src.subfolder or "", revision=src.revision,
                local_files_only=not engine.allow_download or hub_offline(),
            )
        except (OSError, EnvironmentError, ValueError) as e:
            raise ModelUnavailableError(
                f"{entry.label}: its CLIP image encoder ('{location}'{' ' + src.subfolder if src.subfolder else ''}) is not "
                f"available ({str(e).splitlines()[0][:160]}). Download it where the Hugging Face Hub is reachable, "
                "give an `image_encoder:` source in checkpoints.yaml, or switch the IP-Adapter column off."
            ) from None
        return engine.place(model)

    return engine.cached(key, build)


def load_ip_adapter(engine, name: str, base) -> LoadedIPAdapter:
    """An IP-Adapter's attention processors (for ``base``'s UNet layout), image projection and
    CLIP image encoder, cached by the engine. The UNet itself is not modified here."""
    entry = engine.registry.entry("ip_adapters", name)
    unet = base.unet

    def build():
        path = engine.registry.resolve_file(entry.sources, entry.label, engine.allow_download)
        sd = _read_ip_adapter_file(Path(path))
        if "proj.weight" not in sd["image_proj"]:
            raise CheckpointError(
                f"{entry.label}: only the plain IP-Adapter (image_proj.proj, 4 image tokens, e.g. ip-adapter_sd15) "
                "is supported in the comparison"
            )
        cross = unet.config.cross_attention_dim
        proj_out = sd["image_proj"]["proj.weight"].shape[0]
        if proj_out % 4 or proj_out // 4 != cross:
            raise CheckpointError(
                f"{entry.label}: made for {proj_out // 4}-wide cross-attention, but base model '{base.name}' uses {cross}"
            )
        try:
            processors = unet._convert_ip_adapter_attn_to_diffusers([sd], low_cpu_mem_usage=False)
            image_proj = unet._convert_ip_adapter_image_proj_to_diffusers(sd["image_proj"], low_cpu_mem_usage=False)
        except (KeyError, RuntimeError) as e:
            raise CheckpointError(f"{entry.label}: weights do not match base model '{base.name}' ({str(e).splitlines()[0][:160]})") from None
        processors = {k: (engine.place(p) if isinstance(p, torch.nn.Module) else p) for k, p in processors.items()}
        return LoadedIPAdapter(name, processors, engine.place(image_proj), None, image_proj.num_image_text_embeds)

    loaded = engine.cached(("ip_adapter", name, base.name), build)
    encoder = _load_image_encoder(engine, entry)
    return replace(loaded, image_encoder=encoder)


def clip_image_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """CLIP image preprocessing: shortest side to ``size`` (bicubic), centre crop, normalise."""
    w, h = image.size
    s = size / min(w, h)
    img = image.convert("RGB").resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = image_to_tensor(img)
    mean = torch.tensor(CLIP_IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_IMAGE_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class TextTokensOnly:
    """A ControlNet fed the text tokens only (the IP-Adapter's image tokens at the end of the
    context are cut off), as diffusers' ControlNet pipelines do. Holds the shared ControlNet
    itself, no copy."""

    def __init__(self, controlnet, num_tokens: int):
        self.controlnet = controlnet
        self.num_tokens = num_tokens

    def __call__(self, x, t, *, encoder_hidden_states, **kwargs):
        return self.controlnet(x, t, encoder_hidden_states=encoder_hidden_states[:, : -self.num_tokens], **kwargs)


def image_tokens(engine, ip: LoadedIPAdapter, reference: Image.Image, cond: torch.Tensor, uncond: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(cond, uncond) text contexts with the reference's image tokens appended (zeros' tokens for
    the unconditional half), computed as the engine's device work."""

    def encode():
        enc = ip.image_encoder
        pixels = clip_image_tensor(reference, int(enc.config.image_size)).to(engine.device, enc.dtype)
        embeds = enc(pixel_values=pixels).image_embeds
        ip_cond = ip.image_proj(embeds)
        ip_uncond = ip.image_proj(torch.zeros_like(embeds))
        return (torch.cat([cond.to(ip_cond.dtype), ip_cond], dim=1),
                torch.cat([uncond.to(ip_uncond.dtype), ip_uncond], dim=1))

    return engine.on_device(encode)
