"""The offline ``tiny`` profile: every component built from small configs with fixed seeds.

Used by the tests and by the app when no real weights are available. The structure is the
real one (SD-1.x UNet block layout, 4-level VAE with the SD /8 latent scale, SeeCoder with its
three parts, ControlNet matching the UNet), only narrower, so every code path is the real one.
Outputs are not meaningful pictures.
"""

from __future__ import annotations

import torch

from .seecoder import SeeCoderConfig, build_seecoder
from .seecoder.config import DecoderConfig, QueryTransformerConfig, SwinConfig

TINY_CONTEXT_DIM = 64

TINY_SEECODER = SeeCoderConfig(
    swin=SwinConfig(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)),
    decoder=DecoderConfig(in_channels=(("res3", 16), ("res4", 32), ("res5", 64)), dim=64, ffn_dim=128),
    qtransformer=QueryTransformerConfig(dim=TINY_CONTEXT_DIM, ffn_dim=128),
)
TINY_SEECODER_PA = TINY_SEECODER.with_position_encoding()

# SD-1.x block structure at small widths (the e2e parity fixture's layout, narrower).
TINY_UNET_CONFIG = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=TINY_CONTEXT_DIM,
    attention_head_dim=8,
    norm_num_groups=32,
)
TINY_INPAINT_UNET_CONFIG = dict(TINY_UNET_CONFIG, in_channels=9)

TINY_CONTROLNET_CONFIG = dict(
    in_channels=4,
    block_out_channels=TINY_UNET_CONFIG["block_out_channels"],
    layers_per_block=TINY_UNET_CONFIG["layers_per_block"],
    down_block_types=TINY_UNET_CONFIG["down_block_types"],
    cross_attention_dim=TINY_CONTEXT_DIM,
    attention_head_dim=8,
    norm_num_groups=32,
    conditioning_embedding_out_channels=(16, 32, 96, 256),
    conditioning_channels=3,
)

# Four levels so the latent is image/8 like SD's VAE.
TINY_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(8, 16, 16, 16),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=64,
    scaling_factor=0.18215,
)

# The live previews' decoder (a TAESD-like AutoencoderTiny): the same latent scale (/8), narrow.
TINY_TAESD_CONFIG = dict(
    encoder_block_out_channels=(8, 8, 8, 8),
    decoder_block_out_channels=(8, 8, 8, 8),
    num_encoder_blocks=(1, 1, 1, 1),
    num_decoder_blocks=(1, 1, 1, 1),
    latent_channels=4,
)

TINY_CLIP_TEXT_CONFIG = dict(
    vocab_size=1000,
    hidden_size=TINY_CONTEXT_DIM,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    bos_token_id=998,  # the tiny tokenizer's special tokens (prompt_free.text)
    eos_token_id=999,
    pad_token_id=999,
)


def _seeded(seed: int, build):
    # Fork the RNG so building a tiny model never disturbs the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def tiny_seecoder(position_aware: bool = False, seed: int = 0):
    cfg = TINY_SEECODER_PA if position_aware else TINY_SEECODER
    return build_seecoder(cfg, seed=seed)


def tiny_unet(seed: int = 1, inpainting: bool = False):
    from diffusers import UNet2DConditionModel

    cfg = TINY_INPAINT_UNET_CONFIG if inpainting else TINY_UNET_CONFIG
    return _seeded(seed, lambda: UNet2DConditionModel(**cfg)).eval()


def tiny_controlnet(seed: int = 2):
    from diffusers import ControlNetModel

    model = _seeded(seed, lambda: ControlNetModel(**TINY_CONTROLNET_CONFIG))
    # diffusers zero-initialises the zero-convs; give them weights so the control has an effect.
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1000)
        for name, p in model.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                p.normal_(0, 0.05)
    return model.eval()


def tiny_vae(seed: int = 3):
    from diffusers import AutoencoderKL

    return _seeded(seed, lambda: AutoencoderKL(**TINY_VAE_CONFIG)).eval()


def tiny_taesd(seed: int = 6):
    from diffusers import AutoencoderTiny

    return _seeded(seed, lambda: AutoencoderTiny(**TINY_TAESD_CONFIG)).eval()


def tiny_text_encoder(seed: int = 4):
    from transformers import CLIPTextConfig, CLIPTextModel

    return _seeded(seed, lambda: CLIPTextModel(CLIPTextConfig(**TINY_CLIP_TEXT_CONFIG))).eval()


def tiny_anime_unconditional(seed: int = 5) -> torch.Tensor:
    """Stand-in for anime_ug: 77 random rows zero-padded to 148, like the real file."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(1, 148, TINY_CONTEXT_DIM)
    out[0, :77] = torch.randn(77, TINY_CONTEXT_DIM, generator=g)
    return out
