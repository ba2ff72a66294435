"""Swin backbone of SeeCoder (``imencoder``), official block order on timm building blocks.

Why not timm's ``SwinTransformer`` as it is: for shifted blocks the official model pads the
feature map to a multiple of the window *before* the cyclic roll and builds the attention mask
over the padded grid; timm rolls the unpadded map. The two disagree by O(1) whenever a stage
size is not 0 or 6 mod 12 (a 512x512 input already). Spec section f. So the block below is our
own; window attention (relative position bias, SDPA), MLP and patch merging come from timm.

Module names follow the official checkpoint (``layers.i.blocks.j``, merging at the END of
stages 0-2 as ``layers.i.downsample``, output norms ``norm0..norm3``), so official weights
load without renaming.
"""

from __future__ import annotations

import collections
import threading
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from timm.models.swin_transformer import PatchMerging, WindowAttention
from torch import nn

from .config import SwinConfig


class PatchEmbed(nn.Module):
    """4x4 stride-4 conv then LayerNorm; zero-pads right/bottom to a multiple of the patch."""

    def __init__(self, cfg: SwinConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)
        self.norm = nn.LayerNorm(cfg.embed_dim)

    # Adapted from Prompt-Free-Diffusion (SHI-Labs, official code), lib/model_zoo/swin.py: PatchEmbed.forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, H/4, W/4, C)
        p = self.patch_size
        H, W = x.shape[-2:]
        x = F.pad(x, (0, (-W) % p, 0, (-H) % p))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


# Adapted from timm 1.0.31, timm/models/swin_transformer.py: window_partition (windows flattened)
def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, Hp, Wp, C) -> (B * nWindows, ws*ws, C), batch outermost (as timm's mask expects)."""
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, C)


# Adapted from timm 1.0.31, timm/models/swin_transformer.py: window_reverse
def window_merge(windows: torch.Tensor, ws: int, B: int, H: int, W: int) -> torch.Tensor:
    C = windows.shape[-1]
    x = windows.view(B, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, C)


# Adapted from timm 1.0.31, timm/models/swin_transformer.py: SwinTransformerBlock.get_attn_mask
# (over the padded grid, as Prompt-Free-Diffusion (SHI-Labs, official code), lib/model_zoo/swin.py: BasicLayer.forward)
def shifted_window_mask(Hp: int, Wp: int, ws: int, shift: int, device, dtype) -> torch.Tensor:
    """0 / -100 mask (nWindows, ws*ws, ws*ws) built over the PADDED grid (official order)."""
    labels = torch.zeros(1, Hp, Wp, 1, device=device)
    n = 0
    for hs in (slice(0, Hp - ws), slice(Hp - ws, Hp - shift), slice(Hp - shift, Hp)):
        for wsl in (slice(0, Wp - ws), slice(Wp - ws, Wp - shift), slice(Wp - shift, Wp)):
            labels[:, hs, wsl, :] = n
            n += 1
    win = window_partition(labels, ws).squeeze(-1)  # (nW, ws*ws)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return torch.zeros_like(diff, dtype=dtype).masked_fill(diff != 0, -100.0)


# Masks kept at most: 32 MiB in all (on the mask's device). One (size, dtype) takes
# nWindows * ws^4 * itemsize per stage: ~14 MB for a 512x512 reference in fp32, ~28 MB at 768, but
# ~77 MB at 1536x1024 (what a 42-megapixel upload is scaled to) and 85 MB for the first stage
# alone at 1536x1536. A count bound (lru_cache(64)) let a stream of reference sizes keep up to
# 64 such masks for good (issue 28: memory that large work keeps); a mask over the bound is
# built for its encode only (one build per stage: its shifted blocks still share it).
MASK_CACHE_BYTES = 32 * 1024 * 1024
MaskCacheInfo = collections.namedtuple("MaskCacheInfo", "hits misses maxsize currsize")


class _MaskCache:
    """Shifted-window masks by (padded size, window, shift, device, dtype), least recently used
    first out, bounded by bytes (``MASK_CACHE_BYTES``) rather than by count."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._masks: "collections.OrderedDict[tuple, torch.Tensor]" = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, Hp: int, Wp: int, ws: int, shift: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (Hp, Wp, ws, shift, device, dtype)
        with self._lock:
            mask = self._masks.get(key)
            if mask is not None:
                self._masks.move_to_end(key)
                self.hits += 1
                return mask
            self.misses += 1
        # A plain tensor (not an inference tensor, no autograd history), so an encode under
        # ``inference_mode`` and a training forward can share it; nobody writes into it.
        with torch.inference_mode(False), torch.no_grad():
            mask = shifted_window_mask(Hp, Wp, ws, shift, device, dtype)
        nbytes = mask.numel() * mask.element_size()
        if nbytes <= self.max_bytes:
            with self._lock:
                self._masks[key] = mask
                while self._bytes() > self.max_bytes:
                    self._masks.popitem(last=False)
        return mask

    def _bytes(self) -> int:
        return sum(m.numel() * m.element_size() for m in self._masks.values())

    def cache_info(self) -> MaskCacheInfo:
        with self._lock:
            return MaskCacheInfo(self.hits, self.misses, self.max_bytes, self._bytes())

    def cache_clear(self) -> None:
        with self._lock:
            self._masks.clear()
            self.hits = self.misses = 0


_MASKS = _MaskCache(MASK_CACHE_BYTES)


def window_mask(Hp: int, Wp: int, ws: int, shift: int, device, dtype) -> torch.Tensor:
    """``shifted_window_mask``, built once per (padded size, window, shift, device, dtype) and
    shared by every later forward (the same tensor: the values depend on nothing else), while
    the masks kept stay within ``MASK_CACHE_BYTES``. Under ``torch.compile`` it is built in the
    graph (a constant there)."""
    if torch.compiler.is_compiling():
        return shifted_window_mask(Hp, Wp, ws, shift, device, dtype)
    return _MASKS.get(Hp, Wp, ws, shift, torch.device(device), dtype)


window_mask.cache_clear = _MASKS.cache_clear
window_mask.cache_info = _MASKS.cache_info


class SwinBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, cfg: SwinConfig, shifted: bool, drop_path: float):
        super().__init__()
        self.window_size = cfg.window_size
        # Window 12 and shift 6 are used at every feature size, never clamped (spec a.2).
        self.shift = cfg.window_size // 2 if shifted else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size=cfg.window_size, qkv_bias=cfg.qkv_bias)
        # The official checkpoint stores the index; keep it a persistent buffer so the state
        # dict is the official one (and meta-device builds get it from the file).
        index = self.attn.relative_position_index
        del self.attn.relative_position_index
        self.attn.register_buffer("relative_position_index", index, persistent=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), act_layer=nn.GELU)

    # Adapted from Prompt-Free-Diffusion (SHI-Labs, official code), lib/model_zoo/swin.py: SwinTransformerBlock.forward
    # (timm 1.0.31, swin_transformer.py: SwinTransformerBlock._attn rolls before padding)
    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        B, H, W, C = x.shape
        ws = self.window_size
        # Official order: norm, zero-pad to the window grid, roll the PADDED map, attend, un-roll, crop.
        h = F.pad(self.norm1(x), (0, 0, 0, (-W) % ws, 0, (-H) % ws))
        Hp, Wp = h.shape[1:3]
        if self.shift:
            h = torch.roll(h, (-self.shift, -self.shift), dims=(1, 2))
        h = self.attn(window_partition(h, ws), mask if self.shift else None)
        h = window_merge(h, ws, B, Hp, Wp)
        if self.shift:
            h = torch.roll(h, (self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(h[:, :H, :W, :])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinStage(nn.Module):
    """Blocks, then (stages 0-2) the 2x2 patch merging into the next stage's width."""

    def __init__(self, dim: int, depth: int, num_heads: int, cfg: SwinConfig, drop_paths: List[float], downsample: bool):
        super().__init__()
        self.window_size = cfg.window_size
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, cfg, shifted=j % 2 == 1, drop_path=drop_paths[j]) for j in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    # Adapted from Prompt-Free-Diffusion (SHI-Labs, official code), lib/model_zoo/swin.py: BasicLayer.forward
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Returns (pre-merge tokens for this stage's output norm, merged input of the next stage)."""
        ws = self.window_size
        Hp, Wp = -(-x.shape[1] // ws) * ws, -(-x.shape[2] // ws) * ws
        # One mask per stage and size, shared by its shifted blocks and by every later encode. (The
        # relative-position index is a buffer, built once; the bias gathered from it is learned.)
        mask = window_mask(Hp, Wp, ws, ws // 2, x.device, x.dtype) if len(self.blocks) > 1 else None
        for block in self.blocks:
            x = block(x, mask)
        return x, (self.downsample(x) if self.downsample is not None else None)


class SwinBackbone(nn.Module):
    """Returns ``{res3, res4, res5}`` as (B, C, h, w) maps, each after its output norm."""

    def __init__(self, cfg: SwinConfig):
        super().__init__()
        self.patch_embed = PatchEmbed(cfg)
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        start = 0
        for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
            dim = cfg.embed_dim * 2**i
            self.layers.append(
                SwinStage(dim, depth, heads, cfg, rates[start : start + depth], downsample=i < len(cfg.depths) - 1)
            )
            start += depth
        for i in range(len(cfg.depths)):
            # norm0 (res2) is in the official file but unused downstream; kept for strict loading.
            self.add_module(f"norm{i}", nn.LayerNorm(cfg.embed_dim * 2**i))

    # Adapted from Prompt-Free-Diffusion (SHI-Labs, official code), lib/model_zoo/swin.py: SwinTransformer.forward
    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.patch_embed(x)
        feats = {}
        for i, stage in enumerate(self.layers):
            out, x = stage(x)
            if i >= 1:  # res3, res4, res5
                feats[f"res{i + 2}"] = getattr(self, f"norm{i}")(out).permute(0, 3, 1, 2).contiguous()
        return feats
