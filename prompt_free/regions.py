"""Regional cross-attention: each reference's attention output is used only inside its mask.

The context of a regional run is the references' contexts side by side, ``(B, K * N, C)``
(``spans`` say which tokens belong to which reference). In every cross-attention layer
(``attn2`` of the UNet, and of the run's ControlNets) ``RegionalCrossAttention`` computes the
query once and, per reference, the attention over that reference's tokens only; the outputs
are mixed per position by ``alphas`` and then projected out, as the layer's own processor does.
Self-attention layers keep their processors.

Mixing (``region_alphas``), per position x at each attention resolution: the masks m_k (white
= 1) are area-averaged to that resolution, so edges are soft there; reference k gets
``a_k = w_k m_k / max(1, sum_j w_j m_j)`` (where masks overlap they share by weight; a weight
below 1 lets the background show through), and the remainder ``1 - sum_k a_k``, where no mask
covers, goes to the first reference. The first reference is the picture's background: a scene
plus a masked second reference paints that reference into its region with one mask, whereas
an equal blend of the remainder would average unrelated attention outputs into a mix nobody
drew, and would make every uncovered pixel change when a fifth region is added. The weights of
all positions sum to 1, so the blend of outputs before the output projection equals the blend
after it.

Exactness: mask 1 all white and the others all black gives a_1 = 1 and a_k = 0, so the output
is ``1 * o_1 + 0 * o_k`` = o_1 bit for bit, computed by the same operations as the default
processor on the same tokens: the picture of reference 1 alone.

Resolutions: the latent of an H x W picture is H/8 x W/8 and every UNet level halves it
(rounding up, SD's stride-2 convolutions with padding 1). A layer's sequence length L is
matched to the level whose ceil(H/s) * ceil(W/s) == L (s a power of two), so wide and tall
pictures map their tokens to the right grid; the mixing weights of every level are made once,
when the patch is applied, not per step.

Classifier-free guidance: the loop batches [unconditional, conditional] (``sampling.denoise``)
along the batch dimension; the weights depend on the position only and broadcast over the
batch, and the unconditional context is the unconditional tokens repeated per reference, so
both halves are split and mixed the same way.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError

CROSS_ATTENTION = "attn2.processor"  # diffusers' name of a transformer block's cross-attention
LATENT_FACTOR = 8  # SD-1.x VAEs: the latent is the picture / 8


def level_sizes(height: int, width: int, first: int = LATENT_FACTOR) -> List[Tuple[int, int]]:
    """(h, w) of the latent of an H x W picture and of every halving of it (rounding up), down
    to 1 x 1: the grids the UNet's attention layers work on."""
    sizes, s = [], first
    while True:
        h, w = -(-height // s), -(-width // s)
        sizes.append((h, w))
        if h == 1 and w == 1:
            return sizes
        s *= 2


def region_alphas(masks: np.ndarray, weights: Sequence[float], size: Tuple[int, int]) -> torch.Tensor:
    """The mixing weights at one resolution ``size`` (h, w): float32 (K, h * w), summing to 1
    at every position. ``masks``: (K, H, W) in [0, 1] at the output size; ``weights``: (K,)."""
    m = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32))[:, None]
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m, size=size, mode="area")
    m = m.flatten(1)  # (K, h * w)
    w = torch.tensor([float(x) for x in weights], dtype=torch.float32)[:, None]
    wm = w * m
    alphas = wm / wm.sum(0, keepdim=True).clamp(min=1.0)
    rest = (1.0 - alphas.sum(0)).clamp(min=0.0)  # where no mask covers: the first reference
    alphas[0] += rest
    return alphas



def check_plain_cross_attention(attn, hidden_states, encoder_hidden_states, attention_mask, what: str) -> None:
    """The layers our own cross-attention processors (regions, balance) compute: SD-1.x's (3-D
    tokens, no attention mask, no extra norms); anything else is a ``ConfigError`` naming ``what``."""
    if encoder_hidden_states is None or hidden_states.ndim != 3 or attention_mask is not None:
        raise ConfigError(f"{what} works on SD-1.x cross-attention only (3-D tokens, no attention mask)")
    if attn.spatial_norm is not None or attn.group_norm is not None or attn.norm_cross or \
            attn.norm_q is not None or attn.norm_k is not None:
        raise ConfigError(f"{what} does not support this base model's attention layers (extra norms)")

class RegionalCrossAttention:
    """A cross-attention processor that attends to each reference's tokens separately and mixes
    the outputs per position (see the module docstring). ``alphas``: sequence length -> (K, 1, L, 1)
    weights on the layer's device and dtype. Supports the SD-1.x cross-attention layout."""

    def __init__(self, spans: Sequence[slice], alphas: Dict[int, torch.Tensor]):
        self.spans = list(spans)
        self.alphas = alphas

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        check_plain_cross_attention(attn, hidden_states, encoder_hidden_states, attention_mask, "the regions blend")
        batch, length, _ = hidden_states.shape
        alphas = self.alphas.get(length)
        if alphas is None:
            raise ConfigError(f"the regions blend found an attention layer of {length} positions, which matches no "
                              f"resolution of the output (known: {sorted(self.alphas)})")
        residual = hidden_states
        query = attn.to_q(hidden_states)
        heads = attn.heads
        mixed = None
        for k, span in enumerate(self.spans):
            tokens = encoder_hidden_states[:, span].contiguous()
            key, value = attn.to_k(tokens), attn.to_v(tokens)
            head_dim = key.shape[-1] // heads
            q = query.view(batch, -1, heads, head_dim).transpose(1, 2)
            key = key.view(batch, -1, heads, head_dim).transpose(1, 2)
            value = value.view(batch, -1, heads, head_dim).transpose(1, 2)
            out = F.scaled_dot_product_attention(q, key, value, attn_mask=None, dropout_p=0.0, is_causal=False)
            out = out.transpose(1, 2).reshape(batch, -1, heads * head_dim)
            part = alphas[k] * out
            mixed = part if mixed is None else mixed + part
        hidden_states = mixed.to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@dataclass
class RegionalAttention:
    """The ``conditioning.UNetPatch`` of a regions blend: ``RegionalCrossAttention`` in every
    cross-attention layer of the UNet and of ``extra_modules`` (the run's ControlNets, which see
    the same context), for one run; the modules' own processors are put back afterwards.

    masks: (K, H, W) float in [0, 1] at the output size; weights: (K,); spans: the tokens of
    each reference in the context."""

    masks: np.ndarray
    weights: Sequence[float]
    spans: Sequence[slice]
    extra_modules: Sequence[torch.nn.Module] = ()

    def alphas_for(self, device, dtype) -> Dict[int, torch.Tensor]:
        """Sequence length -> (K, 1, L, 1) weights for every resolution of the output."""
        height, width = self.masks.shape[-2:]
        out = {}
        for h, w in level_sizes(height, width):
            a = region_alphas(self.masks, self.weights, (h, w))
            out[h * w] = a[:, None, :, None].to(device=device, dtype=dtype)
        return out

    @contextlib.contextmanager
    def applied(self, unet) -> Iterator[None]:
        processor = RegionalCrossAttention(self.spans, self.alphas_for(unet.device, unet.dtype))
        modules = [unet] + [m for m in self.extra_modules if m is not unet]
        saved = [m.attn_processors for m in modules]
        try:
            for m, procs in zip(modules, saved):
                m.set_attn_processor({name: (processor if name.endswith(CROSS_ATTENTION) else p)
                                      for name, p in procs.items()})
            yield
        finally:
            for m, procs in zip(modules, saved):
                m.set_attn_processor(dict(procs))
