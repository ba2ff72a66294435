"""SeeCoder decoder (``imdecoder``): a transformer over the three backbone levels. Spec a.3."""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from .config import DecoderConfig

# The decoder's token order and level_embed rows run coarse to fine.
DECODER_ORDER = ("res5", "res4", "res3")


class ConvNorm(nn.Conv2d):
    """1x1 conv without bias followed by GroupNorm; key layout ``<name>.weight``, ``<name>.norm.*``."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, kernel_size=1, bias=False)
        self.norm = nn.GroupNorm(32, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class PerTokenEncoderLayer(nn.Module):
    """Post-norm encoder layer whose "self-attention" lets each token attend only to itself.

    The official decoder hands batch-major tensors to a sequence-first ``nn.MultiheadAttention``,
    so attention runs over the batch axis, per token. For one image (what the official app
    always encodes) a token's only key is itself, the softmax is 1 and the result is exactly
    ``out_proj(W_v x + b_v)``: Wq and Wk have no effect. We compute that per image, so a batch
    of N images gives exactly the N single-image results (the official batched output would
    leak between images, ~0.09 on the fixtures). ``self_attn`` only holds the official weights.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    # Adapted from Prompt-Free-Diffusion (SHI-Labs, official code), lib/model_zoo/seecoder.py: DecoderLayer.forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = x.shape[-1]
        attn = self.self_attn
        v = F.linear(x, attn.in_proj_weight[2 * dim :], attn.in_proj_bias[2 * dim :])
        x = self.norm1(x + self.dropout(attn.out_proj(v)))
        return self.norm2(x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x))))))


class _Layers(nn.Module):
    """Holds the layers under the official name ``transformer.layers``."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            PerTokenEncoderLayer(cfg.dim, cfg.num_heads, cfg.ffn_dim, cfg.dropout) for _ in range(cfg.num_layers)
        )


class SeeCoderDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.inproj_layers = nn.ModuleDict(
            {lvl: nn.Sequential(nn.Conv2d(cfg.channels(lvl), cfg.dim, 1), nn.GroupNorm(32, cfg.dim)) for lvl in ("res3", "res4", "res5")}
        )
        self.level_embed = nn.Parameter(torch.zeros(len(DECODER_ORDER), cfg.dim))
        self.transformer = _Layers(cfg)
        self.lateral_layers = nn.ModuleDict({lvl: ConvNorm(cfg.channels(lvl), cfg.dim) for lvl in ("res3", "res4", "res5")})

    # Adapted from Prompt-Free-Diffusion (SHI-Labs, official code), lib/model_zoo/seecoder.py: Decoder.forward
    def forward(self, feats: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        tokens, shapes = [], []
        for k, lvl in enumerate(DECODER_ORDER):
            y = self.inproj_layers[lvl](feats[lvl])
            shapes.append(y.shape[-2:])
            tokens.append(y.flatten(2).transpose(1, 2) + self.level_embed[k])
        x = torch.cat(tokens, dim=1)
        for layer in self.transformer.layers:
            x = layer(x)
        out, start = {}, 0
        for lvl, (h, w) in zip(DECODER_ORDER, shapes):
            t = x[:, start : start + h * w].transpose(1, 2).reshape(x.shape[0], -1, h, w)
            start += h * w
            out[lvl] = t + self.lateral_layers[lvl](feats[lvl])
        return out
