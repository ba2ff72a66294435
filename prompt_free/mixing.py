"""How contexts are combined before a run: the reference's strength, the text's weight, the
text + image concatenation and the blends of several references.

Each function returns new tensors (the engine's cached encodings are never changed in place)
and returns its input itself at the neutral value (strength 1, weight 1), without any
arithmetic, so a neutral option gives today's picture bit for bit rather than "the same up to
float rounding".

Strength and guidance are different knobs. ``strength`` moves the *conditional* context along
the line from the unconditional context to the reference's (``uncond + s * (cond - uncond)``):
it changes what the UNet's cross-attention sees. Guidance ``g`` extrapolates the two *noise
predictions* of a step (``e_u + g * (e_c - e_u)``, ``sampling.denoise``). At s = 0 the
reference has no influence at all, whatever the guidance; s > 1 exaggerates it inside the
model, where a higher guidance exaggerates the difference of the model's outputs.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

AVERAGE, CONCATENATE, REGIONS = "average", "concatenate", "regions"
BLENDS = (AVERAGE, CONCATENATE, REGIONS)


def lerp_from(base: torch.Tensor, target: torch.Tensor, t: float) -> torch.Tensor:
    """``base + t * (target - base)`` (computed in float32, returned in ``target``'s dtype);
    ``target`` itself when t == 1."""
    if float(t) == 1.0:
        return target
    b, x = base.float(), target.float()
    return (b + float(t) * (x - b)).to(target.dtype)


def with_strength(context: torch.Tensor, uncond: torch.Tensor, strength: float) -> torch.Tensor:
    """The reference's context at ``strength`` (0: the unconditional context, 1: unchanged)."""
    return lerp_from(uncond.to(context.device), context, strength)


def weighted_text(text: torch.Tensor, empty: torch.Tensor, weight: float) -> torch.Tensor:
    """The prompt's CLIP tokens at ``weight``: empty-prompt tokens + w * (prompt - empty).

    Interpolating from the empty prompt (rather than multiplying the tokens by w) keeps every
    token a CLIP embedding of the usual size: at 0 the text part equals the unconditional text
    part, so guidance gets no push from the text, while zeroed tokens would still draw attention."""
    return lerp_from(empty, text, weight)


def concat_text_image(
    text: Tuple[torch.Tensor, torch.Tensor], image: Tuple[torch.Tensor, torch.Tensor]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(cond, uncond) of the text tokens followed by the reference's tokens: (1, 77 + 148, C).

    ``text`` is (prompt tokens, empty-prompt tokens), ``image`` (SeeCoder context, its
    unconditional context). The unconditional half has the same layout as the conditional one,
    so guidance contrasts each part with its own "nothing": SD's empty prompt for the text
    tokens (what SD's caption dropout trained as unconditional), the SeeCoder's unconditional
    embedding (zeros, or the anime embedding) for the image tokens."""
    (t_c, t_u), (i_c, i_u) = text, image
    dtype, device = i_c.dtype, i_c.device
    cond = torch.cat([t_c.to(device, dtype), i_c], dim=1)
    uncond = torch.cat([t_u.to(device, dtype), i_u.to(device, dtype)], dim=1)
    return cond, uncond


def blend_contexts(contexts: Sequence[torch.Tensor], uncond: torch.Tensor, weights: Sequence[float],
                   blend: str) -> Tuple[torch.Tensor, torch.Tensor, List[slice]]:
    """(context, uncond, spans) of several references' contexts (each (1, N, C), one SeeCoder,
    so one ``uncond``); ``spans``: each reference's tokens in the context.

    * ``average``: the weighted mean (weights normalised to sum 1), N tokens, ``uncond``.
    * ``concatenate``: side by side, each scaled by its weight (K x N tokens); the unconditional
      context is ``uncond`` repeated, unscaled (one "no reference" per slot).
    * ``regions``: side by side, unscaled (the weights act per position, ``regions``)."""
    n = contexts[0].shape[1]
    dtype = contexts[0].dtype
    if blend == AVERAGE:
        total = float(sum(weights))
        mixed = None
        for c, w in zip(contexts, weights):
            part = c.float() * (w / total)
            mixed = part if mixed is None else mixed + part
        return mixed.to(dtype), uncond, [slice(0, n)]
    spans = [slice(k * n, (k + 1) * n) for k in range(len(contexts))]
    repeated = torch.cat([uncond] * len(contexts), dim=1)
    if blend == CONCATENATE:
        return torch.cat([(c.float() * float(w)).to(dtype) for c, w in zip(contexts, weights)], dim=1), repeated, spans
    return torch.cat(list(contexts), dim=1), repeated, spans


__all__ = ["AVERAGE", "BLENDS", "CONCATENATE", "REGIONS", "blend_contexts", "concat_text_image", "lerp_from",
           "weighted_text", "with_strength"]
