"""The offline ``full-random`` profile: SD-1.5-size UNet, VAE and ControlNets and a full-size
SeeCoder with random weights, built from their configs (nothing downloaded).

Its pictures are noise. It exists so that benchmarks and memory checks measure the real sizes
through the public engine (``Engine.from_profile("full-random")``) without private internals.

Speed of the build: the diffusers models are constructed on the meta device (no storage, no
default initialisers), materialised directly on the target device in the target dtype, and
filled in place with one uniform draw per weight tensor (PyTorch's default bound
1/sqrt(fan_in)), ones for norm weights and zeros for biases. ControlNets get weights in their
zero-convolutions too, so a control map changes the result.
"""

from __future__ import annotations

import torch

from .formats import SD15_CONTROLNET_CONFIG, SD15_UNET_CONFIG, SD15_VAE_CONFIG

SD15_INPAINT_UNET_CONFIG = dict(SD15_UNET_CONFIG, in_channels=9)
# CLIP ViT-L/14 text width and depth with the tiny tokenizer's vocabulary (the comparison's text
# columns; SD 1.5's real vocabulary would need the tokenizer files).
SD15_TEXT_CONFIG = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)


def random_init_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fill every parameter of ``module`` in place, on its device and in its dtype."""
    device = next(module.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                bound = p[0].numel() ** -0.5
                p.uniform_(-bound, bound, generator=gen)
            elif name.endswith("weight"):  # GroupNorm / LayerNorm scales
                p.fill_(1.0)
            else:
                p.zero_()
    return module


def _materialised(cls, config: dict, seed: int, device, dtype):
    with torch.device("meta"):
        model = cls(**config)
    # torch's Module.to: diffusers' own warns about fp32-kept modules these models do not have
    model = torch.nn.Module.to(model, dtype=dtype).to_empty(device=device)
    return random_init_(model, seed).eval().requires_grad_(False)


def full_unet(seed: int = 1, *, inpainting: bool = False, device="cpu", dtype=torch.float32):
    from diffusers import UNet2DConditionModel

    return _materialised(UNet2DConditionModel, SD15_INPAINT_UNET_CONFIG if inpainting else SD15_UNET_CONFIG,
                         seed, device, dtype)


def full_vae(seed: int = 101, *, device="cpu", dtype=torch.float32):
    from diffusers import AutoencoderKL

    return _materialised(AutoencoderKL, SD15_VAE_CONFIG, seed, device, dtype)


def full_controlnet(seed: int = 21, *, device="cpu", dtype=torch.float32):
    from diffusers import ControlNetModel

    return _materialised(ControlNetModel, SD15_CONTROLNET_CONFIG, seed, device, dtype)


def full_taesd(seed: int = 41, *, device="cpu", dtype=torch.float32):
    """TAESD's size (``AutoencoderTiny``'s defaults are madebyollin/taesd's config)."""
    from diffusers import AutoencoderTiny

    return _materialised(AutoencoderTiny, {}, seed, device, dtype)


def full_seecoder(position_aware: bool = False, seed: int = 0, *, dtype=torch.float32):
    """The released SeeCoder's size (Swin-L, decoder, 148 queries), random weights (CPU, built in
    ``dtype`` with its own deterministic initialiser; the engine then places it)."""
    from .seecoder import SeeCoderConfig, build_seecoder

    cfg = SeeCoderConfig()
    return build_seecoder(cfg.with_position_encoding() if position_aware else cfg, seed=seed, dtype=dtype)


def full_text_encoder(seed: int = 4, *, device="cpu", dtype=torch.float32):
    from transformers import CLIPTextConfig, CLIPTextModel

    from .tiny import TINY_CLIP_TEXT_CONFIG

    cfg = CLIPTextConfig(**dict(TINY_CLIP_TEXT_CONFIG, **SD15_TEXT_CONFIG))
    with torch.device("meta"):
        model = CLIPTextModel(cfg)
    model = torch.nn.Module.to(model, dtype=dtype).to_empty(device=device)
    with torch.no_grad():  # embeddings N(0, 0.02) as CLIP's; the position ids are a buffer
        random_init_(model, seed)
        gen = torch.Generator(device).manual_seed(seed + 1)
        for emb in (model.text_model.embeddings.token_embedding, model.text_model.embeddings.position_embedding):
            emb.weight.normal_(0, 0.02, generator=gen)
        n = model.config.max_position_embeddings
        model.text_model.embeddings.position_ids.copy_(torch.arange(n, device=device).expand(1, -1))
    return model.eval().requires_grad_(False)
