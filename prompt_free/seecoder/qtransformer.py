"""SeeCoder query transformer (``qtransformer``) and the PA position encoding. Spec a.4, a.5."""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import PositionEncodingConfig, QueryTransformerConfig

MEMORY_ORDER = ("res3", "res4", "res5")  # level i of level_embed; layer j reads level j % 3
KEEP_COVERAGE = 0.5  # a memory cell is read when at least half of its pixels are under the source mask

KeepMasks = Dict[str, Optional[torch.Tensor]]  # level -> (B, h*w) bool, True = read; None: every cell


def level_keep(mask: torch.Tensor, size: Sequence[int], stride: int) -> Optional[torch.Tensor]:
    """The cells of a (h, w) memory level of ``stride`` pixels that a pixel mask (B, H, W) bool
    lets the cross-attention read: (B, h*w) bool, or None when it keeps every cell.

    A cell covers the pixels [i*stride, (i+1)*stride) of the image (the backbone pads bottom and
    right, so the last cells are partly padding, which counts as neither). It is kept when at
    least ``KEEP_COVERAGE`` of its real pixels are under the mask; at a level where no cell
    reaches that (a small mask on a coarse level), the cells of the largest coverage are kept,
    so every level informs the tokens and a non-empty mask never empties a level."""
    h, w = int(size[0]), int(size[1])
    H, W = mask.shape[-2:]
    pad = (0, w * stride - W, 0, h * stride - H)
    m = F.pad(mask[:, None].float(), pad)
    real = F.pad(torch.ones_like(mask[:, None], dtype=torch.float32), pad)
    cover = F.avg_pool2d(m, stride) / F.avg_pool2d(real, stride).clamp_min(1e-12)  # (B, 1, h, w)
    cover = cover.flatten(1)
    keep = cover >= KEEP_COVERAGE
    best = cover.amax(1, keepdim=True)
    keep = torch.where(keep.any(1, keepdim=True), keep, cover >= best)
    return None if bool(keep.all()) else keep


class PositionEncoding(nn.Module):
    """SeeCoder-PA: sinusoidal row/column features of each memory position through an MLP.

    Depends only on the map size (h, w): coordinates are centred and scaled by 2*pi/min(h, w),
    frequencies run geometrically from 1 to ``freq_max`` (default min(h, w)/2).
    """

    def __init__(self, cfg: PositionEncodingConfig):
        super().__init__()
        self.cfg = cfg
        layers, cin = [], 4 * cfg.freq_num
        for i in range(cfg.mlp_layers):
            layers.append(nn.Linear(cin, cfg.out_channels))
            if i < cfg.mlp_layers - 1:
                layers.append(nn.SiLU())
            cin = cfg.out_channels
        self.mlp = nn.Sequential(*layers)

    # Adapted from Prompt-Free-Diffusion (SHI-Labs, official code), lib/model_zoo/seecoder.py: PPE_MLP.forward
    def features(self, h: int, w: int, device) -> torch.Tensor:
        """(h*w, 4*freq_num) float32 features, row-major positions."""
        m = min(h, w)
        jitter = torch.rand(2, device=device) - 0.5 if self.training else torch.zeros(2, device=device)
        y = (torch.arange(h, device=device, dtype=torch.float32) + 0.5 + jitter[0] - h / 2) * 2 * math.pi / m
        x = (torch.arange(w, device=device, dtype=torch.float32) + 0.5 + jitter[1] - w / 2) * 2 * math.pi / m
        fmax = self.cfg.freq_max if self.cfg.freq_max is not None else m / 2
        freqs = fmax ** torch.linspace(0, 1, self.cfg.freq_num, device=device, dtype=torch.float32)
        fy, fx = y[:, None] * freqs, x[:, None] * freqs  # (h, F), (w, F)
        fy = torch.cat([fy.sin(), fy.cos()], -1)[:, None, :].expand(h, w, -1)
        fx = torch.cat([fx.sin(), fx.cos()], -1)[None, :, :].expand(h, w, -1)
        return torch.cat([fy, fx], -1).reshape(h * w, -1)

    def forward(self, h: int, w: int) -> torch.Tensor:  # (1, h*w, C)
        p = next(self.mlp.parameters())
        return self.mlp(self.features(h, w, p.device).to(p.dtype))[None]


class CrossAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    # Adapted from Prompt-Free-Diffusion (SHI-Labs, official code), lib/model_zoo/seecoder.py: CrossAttentionLayer.forward_post
    def forward(self, q, qpos, mem, mem_pos: Optional[torch.Tensor], keep: Optional[torch.Tensor] = None):
        """``keep`` (B, L) bool: the memory cells the queries may read (a source mask); None: all,
        the official call itself (no mask argument at all, so the unmasked encode is unchanged)."""
        k = mem if mem_pos is None else mem + mem_pos
        if keep is None:
            out = self.multihead_attn(q + qpos, k, mem, need_weights=False)[0]
        else:
            out = self.multihead_attn(q + qpos, k, mem, key_padding_mask=~keep, need_weights=False)[0]
        return self.norm(q + out)


class SelfAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    # Adapted from Prompt-Free-Diffusion (SHI-Labs, official code), lib/model_zoo/seecoder.py: SelfAttentionLayer.forward_post
    def forward(self, t, pos):
        qk = t + pos
        return self.norm(t + self.self_attn(qk, qk, t, need_weights=False)[0])


class FeedForwardLayer(nn.Module):
    def __init__(self, dim: int, ffn_dim: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm = nn.LayerNorm(dim)

    # Adapted from Prompt-Free-Diffusion (SHI-Labs, official code), lib/model_zoo/seecoder.py: FeedForwardLayer.forward_post
    def forward(self, t):
        return self.norm(t + self.linear2(F.relu(self.linear1(t))))


class QueryTransformer(nn.Module):
    def __init__(self, cfg: QueryTransformerConfig, pe: Optional[PositionEncodingConfig] = None):
        super().__init__()
        self.num_global = cfg.num_queries[0]
        n = sum(cfg.num_queries)
        self.transformer_selfatt_layers = nn.ModuleList(SelfAttentionLayer(cfg.dim, cfg.num_heads) for _ in range(cfg.num_layers))
        self.transformer_crossatt_layers = nn.ModuleList(CrossAttentionLayer(cfg.dim, cfg.num_heads) for _ in range(cfg.num_layers))
        self.transformer_feedforward_layers = nn.ModuleList(FeedForwardLayer(cfg.dim, cfg.ffn_dim) for _ in range(cfg.num_layers))
        self.init_query = nn.Embedding(n, cfg.dim)
        self.query_pos_embedding = nn.Embedding(n, cfg.dim)
        self.level_embed = nn.Embedding(cfg.num_levels, cfg.dim)
        self.pe_layer = PositionEncoding(pe) if pe is not None else None

    # Adapted from Prompt-Free-Diffusion (SHI-Labs, official code), lib/model_zoo/seecoder.py: QueryTransformer.forward
    def forward(self, feats: Dict[str, torch.Tensor], keep: Optional[KeepMasks] = None) -> torch.Tensor:
        """``keep``: per level, the memory cells the local queries' cross-attention reads
        (``level_keep``; a source mask); None or a level's None: every cell, as the official model."""
        keep = keep or {}
        B = feats[MEMORY_ORDER[0]].shape[0]
        mems, mem_pos = [], []
        for i, lvl in enumerate(MEMORY_ORDER):
            f = feats[lvl]
            mems.append(f.flatten(2).transpose(1, 2) + self.level_embed.weight[i])
            # PA: position encoding on the cross-attention keys only.
            mem_pos.append(self.pe_layer(*f.shape[-2:]) if self.pe_layer is not None else None)
        g_n = self.num_global
        query = self.init_query.weight[None].expand(B, -1, -1)
        qpos = self.query_pos_embedding.weight[None].expand(B, -1, -1)
        g, l = query[:, :g_n], query[:, g_n:]
        pos_l = qpos[:, g_n:]
        for j, (cross, selfatt, ffn) in enumerate(
            zip(self.transformer_crossatt_layers, self.transformer_selfatt_layers, self.transformer_feedforward_layers)
        ):
            lvl = j % len(mems)
            l = cross(l, pos_l, mems[lvl], mem_pos[lvl], keep.get(MEMORY_ORDER[lvl]))  # global queries skip it
            t = ffn(selfatt(torch.cat([g, l], 1), qpos))
            g, l = t[:, :g_n], t[:, g_n:]
        return torch.cat([g, l], 1)
