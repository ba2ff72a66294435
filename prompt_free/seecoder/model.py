"""SeeCoder: image (B, 3, H, W) in [0, 1] -> (B, 148, C) context that replaces CLIP text tokens."""

from __future__ import annotations

from typing import Optional

import torch
from timm.models.swin_transformer import get_relative_position_index
from torch import nn

from .config import SeeCoderConfig
from .decoder import SeeCoderDecoder
from .qtransformer import MEMORY_ORDER, QueryTransformer, level_keep
from .swin import SwinBackbone


class SeeCoder(nn.Module):
    """Swin backbone -> decoder -> query transformer (4 global + 144 local queries).

    Input: RGB in [0, 1] at any size (no resize, no mean/std normalisation, as the official
    app). Every image of a batch is encoded independently of the others.
    Submodule names are the official ones (``imencoder``, ``imdecoder``, ``qtransformer``).
    """

    def __init__(self, config: Optional[SeeCoderConfig] = None):
        super().__init__()
        self.config = (config or SeeCoderConfig()).validate()
        self.imencoder = SwinBackbone(self.config.swin)
        self.imdecoder = SeeCoderDecoder(self.config.decoder)
        self.qtransformer = QueryTransformer(self.config.qtransformer, self.config.position_encoding)

    @property
    def dtype(self) -> torch.dtype:
        return self.qtransformer.init_query.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.qtransformer.init_query.weight.device

    def forward(self, images: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``mask`` (B, H, W) bool, True = use (a source mask; None: the whole image, the
        official model): only the masked part informs the tokens. Its pixels outside are replaced
        by the mean colour of the masked ones (``fill_outside``), so the backbone's receptive
        field carries nothing of them into the masked features, and the query transformer's
        cross-attention reads, at every level, only the cells under the mask (``level_keep``)."""
        if images.ndim != 4 or images.shape[1] != self.config.swin.in_chans:
            raise ValueError(f"SeeCoder expects (B, {self.config.swin.in_chans}, H, W) images, got {tuple(images.shape)}")
        if mask is None:
            return self.qtransformer(self.imdecoder(self.imencoder(images)))
        if mask.shape != (images.shape[0], *images.shape[-2:]) or mask.dtype != torch.bool:
            raise ValueError(f"a source mask must be (B, H, W) bool like the images, got {tuple(mask.shape)} {mask.dtype}")
        feats = self.imdecoder(self.imencoder(fill_outside(images, mask)))
        keep = {lvl: level_keep(mask, feats[lvl].shape[-2:], self.strides[lvl]) for lvl in MEMORY_ORDER}
        return self.qtransformer(feats, keep)

    @property
    def strides(self):
        """Pixels per cell of each memory level: res3 is stage 1 of the backbone (patch x 2), ..."""
        return {f"res{i + 2}": self.config.swin.patch_size * 2**i for i in range(1, 4)}

    @torch.no_grad()
    def encode(self, images: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Inference helper: casts/moves the input to the model and runs without gradients."""
        return self(images.to(self.device, self.dtype), None if mask is None else mask.to(self.device))

    def trainable_parameters(self):
        """What the paper trains: decoder and query transformer (the backbone stays frozen)."""
        return [p for m in (self.imdecoder, self.qtransformer) for p in m.parameters()]


def fill_outside(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``images`` with the pixels outside ``mask`` (B, H, W) set to the mean colour of the pixels
    inside (per image): the result depends on the masked pixels only."""
    m = mask[:, None].to(images.dtype)
    mean = (images * m).sum((2, 3), keepdim=True) / m.sum((2, 3), keepdim=True).clamp_min(1)
    return torch.where(mask[:, None], images, mean)


def init_seecoder_weights(model: SeeCoder, seed: int = 0) -> SeeCoder:
    """Deterministic random init (tiny profile, tests, training from scratch).

    Linear/conv weights N(0, 1/fan_in), small biases, unit-ish norms, N(0, 1) embeddings.
    Every parameter and buffer gets its value here (in place, no temporaries), so this also
    fully initialises a model materialised from the meta device with ``to_empty()``.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            # A model in another dtype (bf16) gets the fp32 values rounded, one parameter at a
            # time, so it never holds an fp32 copy of itself.
            p = param if param.dtype == torch.float32 else torch.empty(param.shape, device=param.device)
            p.normal_(generator=gen)  # the same draws as torch.randn(p.shape, generator=gen)
            if name.endswith("relative_position_bias_table"):
                p.mul_(0.02)
            elif any(k in name for k in ("init_query", "query_pos_embedding", "level_embed")):
                pass
            elif p.ndim >= 2:
                p.div_(p[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.mul_(0.1).add_(1)
            else:
                p.mul_(0.02)
            if p is not param:
                param.copy_(p)
        for name, b in model.named_buffers():
            if name.endswith("relative_position_index"):
                ws = model.config.swin.window_size
                b.copy_(get_relative_position_index(ws, ws))
    return model
