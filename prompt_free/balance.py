"""Balance of text and reference: how much of the cross-attention goes to the prompt's tokens.

With a prompt in concat mode the context is [77 text tokens | the reference's tokens]
(``mixing.concat_text_image``). ``balance`` in [0, 1] sets the text tokens' share of the
attention mass: 0.5 means the text tokens and the reference tokens receive equal attention mass,
averaged over the UNet's cross-attention layers, as measured on the run's first step; 0 is the
reference only (the text tokens masked), 1 the text only (the reference's tokens masked).

Mechanism: an additive logit bias ``b`` on the text tokens' keys in every cross-attention layer
of the UNet (``BalancedCrossAttention``; self-attention and the ControlNets keep their own). With
the unbiased logits of query i, its text share is ``T_i = sum_text p / sum p``; with the bias it
is ``sigmoid(b + logit T_i)``, monotonic in b. Calibration (once per run, no host sync): each
layer, at its first call of the run (the first step, at the run's size, with the run's own
latents, timestep, guidance halves and ControlNet residuals), computes its logits once in float32
and solves ``mean_i sigmoid(b + logit T_i) = balance`` by bisection on the device (a fixed number
of halvings, ``torch.where``: nothing is read back in the loop). So every layer's share on the
first step is the balance (over all its queries, heads and both guidance halves), and so is
their average; the layers' inputs already carry the earlier layers' biases. The bias is then a
per-layer constant for the remaining steps (one broadcast (1, 1, 1, N) mask for
``scaled_dot_product_attention``: no per-step work). Quick mode's first step is a full one, so
every layer calibrates there too. After the run the biases are read once and reported
(``balance_bias``: their mean, in the info line and the PNG); the calibration is deterministic,
so a redo gets the same biases and the same picture.

Neutral: no balance (None) installs nothing: today's picture bit for bit.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional

import torch
import torch.nn.functional as F

from .regions import CROSS_ATTENTION, check_plain_cross_attention
from .settings import Range

BALANCE = Range("balance", 0.0, 1.0, 0.5, step=0.05)
BRACKET = 40.0  # |b| searched: e^40 outweighs any realistic count of tokens
HALVINGS = 40  # 80 / 2^40: far below float32's resolution of b


def solve_bias(z: torch.Tensor, target: float) -> torch.Tensor:
    """The b (a 0-d float32 tensor on ``z``'s device) with ``mean(sigmoid(b + z)) == target``;
    ``z``: the per-query logits of the text share. Bisection without reading anything back."""
    z = z.float().flatten()
    lo = torch.full((), -BRACKET, device=z.device)
    hi = torch.full((), BRACKET, device=z.device)
    for _ in range(HALVINGS):
        mid = (lo + hi) / 2
        above = torch.sigmoid(z + mid).mean() > target
        hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
    return (lo + hi) / 2


def text_share_logits(query: torch.Tensor, key: torch.Tensor, text_tokens: int) -> torch.Tensor:
    """logit of each query's attention share on the first ``text_tokens`` keys (unbiased),
    (B, H, L), float32; query/key (B, H, L or N, D)."""
    logits = torch.matmul(query.float(), key.float().transpose(-1, -2)) * query.shape[-1] ** -0.5
    return torch.logsumexp(logits[..., :text_tokens], -1) - torch.logsumexp(logits[..., text_tokens:], -1)


def text_share(query: torch.Tensor, key: torch.Tensor, text_tokens: int, bias) -> torch.Tensor:
    """The mean attention share of the text tokens with the logit ``bias`` on them (a 0-d tensor)."""
    return torch.sigmoid(text_share_logits(query, key, text_tokens) + bias).mean()


class BalancedCrossAttention:
    """SD-1.x cross-attention with a logit bias on the first ``text_tokens`` keys: ``fixed``
    (balance 0 or 1: -inf on the text or on the reference), else calibrated at the first call
    (see the module docstring)."""

    def __init__(self, text_tokens: int, balance: float, fixed: Optional[float]):
        self.text_tokens, self.balance, self.fixed = text_tokens, balance, fixed
        self.bias: Optional[torch.Tensor] = None  # 0-d, float32, once calibrated
        self.mask: Optional[torch.Tensor] = None  # (1, 1, 1, N) in the layer's dtype

    def _make_mask(self, query, key) -> torch.Tensor:
        n, t = key.shape[-2], self.text_tokens
        if self.fixed is not None:
            bias = torch.zeros(n, device=query.device, dtype=query.dtype)
            bias[slice(0, t) if self.fixed == 0.0 else slice(t, n)] = float("-inf")  # 0: no text, 1: text only
            return bias.view(1, 1, 1, n)
        self.bias = solve_bias(text_share_logits(query, key, t), self.balance)
        zeros = torch.zeros(n - t, device=query.device, dtype=query.dtype)
        return torch.cat([self.bias.to(query.dtype).expand(t), zeros]).view(1, 1, 1, n)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        check_plain_cross_attention(attn, hidden_states, encoder_hidden_states, attention_mask, "the balance")
        batch = hidden_states.shape[0]
        residual = hidden_states
        query, key, value = attn.to_q(hidden_states), attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        heads = attn.heads
        head_dim = key.shape[-1] // heads
        q, k, v = (x.view(batch, -1, heads, head_dim).transpose(1, 2) for x in (query, key, value))
        if self.mask is None:  # the run's first call of this layer: calibrate (see the module docstring)
            self.mask = self._make_mask(q, k)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, dropout_p=0.0, is_causal=False)
        hidden_states = out.transpose(1, 2).reshape(batch, -1, heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def fixed_bias(balance: float) -> Optional[float]:
    """0 or 1 (a mask, no calibration) for the ends of the range; None in between."""
    return float(balance) if float(balance) in (0.0, 1.0) else None


@dataclass
class Balance:
    """The ``conditioning.UNetPatch`` of a balance: ``BalancedCrossAttention`` in every
    cross-attention layer of the UNet for one run (its own processors put back afterwards).
    ``report``: the info dict where the run's calibrated bias is written (``balance_bias``)."""

    balance: float
    text_tokens: int
    report: Dict[str, Any] = field(default_factory=dict)
    layers: List[BalancedCrossAttention] = field(default_factory=list, repr=False)

    @contextlib.contextmanager
    def applied(self, unet) -> Iterator[None]:
        saved = unet.attn_processors
        fixed = fixed_bias(self.balance)
        self.layers = []

        def make():
            self.layers.append(BalancedCrossAttention(self.text_tokens, float(self.balance), fixed))
            return self.layers[-1]

        unet.set_attn_processor({name: (make() if name.endswith(CROSS_ATTENTION) else p) for name, p in saved.items()})
        try:
            yield
            self.report["balance_bias"] = self.bias()  # read once, after the loop
        finally:
            unet.set_attn_processor(dict(saved))

    def bias(self) -> Any:
        """The calibrated bias, the layers' mean (a float, 4 decimals); "-inf" / "+inf" at 0 / 1
        (the text / the reference masked); None before a run."""
        fixed = fixed_bias(self.balance)
        if fixed is not None:
            return "-inf" if fixed == 0.0 else "+inf"
        biases = [layer.bias for layer in self.layers if layer.bias is not None]
        return round(float(torch.stack(biases).mean()), 4) if biases else None


def check_balance(balance, prompt: Optional[str], mode: str, blocks: Optional[str], blend: Optional[str]) -> Optional[float]:
    """The checked balance (None: off). It needs a prompt in concat mode with all blocks and one
    reference's context; anything else is refused with what to change."""
    from .errors import InvalidSettingError

    if balance is None or (isinstance(balance, str) and not balance.strip()):
        return None
    value = BALANCE.check(balance)
    if not prompt:
        raise InvalidSettingError("balance weighs the prompt's tokens against the reference's: give a prompt "
                                  "(or leave balance empty)")
    if mode != "concat":
        raise InvalidSettingError("balance works with prompt mode concat (style mode routes text and reference to "
                                  "different blocks); choose concat or leave balance empty")
    if blocks not in (None, "all") or blend is not None:
        raise InvalidSettingError("balance works with the reference in all blocks (one reference); choose all "
                                  "blocks or leave balance empty")
    return float(value)


__all__ = ["BALANCE", "Balance", "BalancedCrossAttention", "check_balance", "solve_bias", "text_share",
           "text_share_logits"]
