"""Quick mode (approximate): DeepCache-style reuse of the UNet's deep features across steps.

Adjacent denoising steps change the UNet's deep, low-resolution features little. With a reuse
interval N > 1 (``Sampler.deep_cache``, ``--deep-cache N``, ``settings.DEEP_CACHE``):

* a **full step** runs the whole UNet (``unet_keeping_deep``: the same modules in the same
  order as diffusers' forward, so its noise prediction is the UNet's own) and keeps the input
  of the last up block, i.e. everything the deep part produced (both halves of a guided batch:
  the cache has the batch of the step);
* the next N - 1 **reuse steps** run only the shallow path (``unet_shallow``): time embedding,
  ``conv_in``, the first down block's layers without its downsampler, the kept deep features,
  the last up block and the output layers.

ControlNets on reuse steps: they do not run (a ControlNet costs about as much as the UNet's
down half, so running it would undo most of the saving). The shallow skip connections get the
shallow residuals of the last full step (the ControlNets' outputs at the matching resolution);
the deep and middle residuals are inside the kept features already. A step whose set of active
ControlNets differs from the last full step's (a control window opens or closes) is always a
full step, so a window never acts through stale features; so is a step whose context (the
run's ``StepContext``) is another tensor than the last full step's.

N = 1 is off: ``denoise`` never builds a ``DeepCache`` and the loop is today's, bit for bit.
``DeepCache`` is a strategy of that loop: it wraps the run's eager or fast parts (their
ControlNets, scheduler step) and replaces the UNet call of the one guided step.
The result is not exact; the picture's metadata records the interval (a field of the sampler
settings), and every label that offers it says "approximate".
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from .errors import InvalidSettingError
from .steps import guided_eps


def supported(unet) -> bool:
    """A plain SD-1.x-style diffusers UNet (no class / addition / hidden-state projections, no
    GLIGEN, no input centring) whose last up block takes its skips from ``conv_in`` and the first
    down block's layers only: the UNets ``unet_shallow`` reproduces."""
    cfg = getattr(unet, "config", None)
    if cfg is None or not hasattr(unet, "up_blocks") or not hasattr(unet, "down_blocks"):
        return False
    if (getattr(unet, "class_embedding", None) is not None or cfg.get("addition_embed_type") is not None
            or getattr(unet, "time_embed_act", None) is not None or getattr(unet, "encoder_hid_proj", None) is not None
            or getattr(unet, "position_net", None) is not None or cfg.get("center_input_sample")):
        return False
    if len(unet.up_blocks) < 2 or len(unet.down_blocks) < 2:
        return False
    return skip_count(unet) <= 1 + len(unet.down_blocks[0].resnets)


def check_supported(unet, base_model: str) -> None:
    """``InvalidSettingError`` naming ``base_model`` (e.g. "'Tiny SD'") unless ``supported``."""
    if not supported(unet):
        raise InvalidSettingError(
            f"quick mode (deep cache) is not available for the base model {base_model}: its UNet is not the "
            "SD-1.x layout it reuses; set deep cache to 1 (off)")


def skip_count(unet) -> int:
    """How many skip connections the last up block takes (one per resnet)."""
    return len(unet.up_blocks[-1].resnets)


def _time_embedding(unet, x, t):
    timesteps = t[None].to(x.device).expand(x.shape[0]) if t.dim() == 0 else t.to(x.device).expand(x.shape[0])
    return unet.time_embedding(unet.time_proj(timesteps).to(dtype=x.dtype), None)


def _with_cross_attention(block, h, emb, context, **kwargs):
    if getattr(block, "has_cross_attention", False):
        return block(hidden_states=h, temb=emb, encoder_hidden_states=context, attention_mask=None,
                     cross_attention_kwargs=None, **kwargs)
    return block(hidden_states=h, temb=emb, **kwargs)


def _output(unet, h):
    if unet.conv_norm_out is not None:
        h = unet.conv_act(unet.conv_norm_out(h))
    return unet.conv_out(h)


# Adapted from diffusers 0.42.1, src/diffusers/models/unets/unet_2d_condition.py: UNet2DConditionModel.forward
# (the SD-1.x branch only, returning the last up block's input as well).
def unet_keeping_deep(unet, x, t, context, down_add: Optional[Sequence[torch.Tensor]] = None,
                      mid_add: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(noise prediction, input of the last up block) of the whole UNet, with ControlNet
    residuals ``down_add`` / ``mid_add`` added where diffusers adds them. ``t``: 0-dim tensor."""
    emb = _time_embedding(unet, x, t)
    h = unet.conv_in(x)
    skips: List[torch.Tensor] = [h]
    for block in unet.down_blocks:
        h, res = _with_cross_attention(block, h, emb, context)
        skips.extend(res)
    if down_add is not None:
        skips = [s + a for s, a in zip(skips, down_add)]
    if unet.mid_block is not None:
        if getattr(unet.mid_block, "has_cross_attention", False):
            h = unet.mid_block(h, emb, encoder_hidden_states=context, attention_mask=None, cross_attention_kwargs=None)
        else:
            h = unet.mid_block(h, emb)
    if mid_add is not None:
        h = h + mid_add
    # An upsampler is told its output size when the latent is not a multiple of the overall factor.
    odd = any(d % 2 ** unet.num_upsamplers for d in x.shape[-2:])
    last = len(unet.up_blocks) - 1
    deep = h
    for i, block in enumerate(unet.up_blocks):
        n = len(block.resnets)
        res, skips = tuple(skips[-n:]), skips[:-n]
        size = skips[-1].shape[2:] if odd and i < last else None
        if i == last:
            deep = h
        h = _with_cross_attention(block, h, emb, context, res_hidden_states_tuple=res, upsample_size=size)
    return _output(unet, h), deep


# Adapted from diffusers 0.42.1, src/diffusers/models/unets/unet_2d_condition.py: UNet2DConditionModel.forward
# (the SD-1.x branch: the first down block's layers and the last up block only).
def unet_shallow(unet, x, t, context, deep: torch.Tensor,
                 skip_add: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
    """The noise prediction from the shallow path and ``deep`` (kept by ``unet_keeping_deep``):
    ``conv_in`` and the first down block's layers give the last up block's skips (plus the
    ControlNets' shallow residuals ``skip_add``); the deep blocks do not run."""
    emb = _time_embedding(unet, x, t)
    h = unet.conv_in(x)
    skips = [h]
    first = unet.down_blocks[0]
    attentions = getattr(first, "attentions", None)
    n = skip_count(unet)
    for j, resnet in enumerate(first.resnets[: n - 1]):  # its downsampler feeds only the deep part
        h = resnet(h, emb)
        if attentions is not None:
            h = attentions[j](h, encoder_hidden_states=context, return_dict=False)[0]
        skips.append(h)
    if skip_add is not None:
        skips = [s + a for s, a in zip(skips, skip_add)]
    out = _with_cross_attention(unet.up_blocks[-1], deep, emb, context, res_hidden_states_tuple=tuple(skips),
                                upsample_size=None)
    return _output(unet, out)


class DeepCache:
    """Quick mode's strategy for one run: the wrapped ``parts`` (``steps.EagerParts`` or
    ``fast.FastParts``) for the ControlNets and the scheduler, the whole UNet on full steps and
    the shallow path on reuse steps; which steps are full, the kept deep features and the
    ControlNets' shallow residuals of the last full step. ``fast`` (a ``FastPath``) compiles both
    forwards on its compile path."""

    def __init__(self, interval: int, parts, unet, ts, fast=None):
        if interval < 2:
            raise ValueError("a DeepCache reuses features: interval >= 2 (1 is off and builds none)")
        check_supported(unet, "of this run")  # again here: a run's UNet patch could have changed it
        self.interval, self.parts, self.unet, self.ts = int(interval), parts, unet, ts
        self.n_skips = skip_count(unet)
        self._full = fast.function(unet_keeping_deep) if fast is not None else unet_keeping_deep
        self._shallow = fast.function(unet_shallow) if fast is not None else unet_shallow
        if fast is not None:
            fast.lay_out(unet)
        self._deep = self._skip_add = self._active = self._context = None
        self._since = 0
        self.full_steps: List[int] = []  # the steps that ran the whole UNet (for tests and reports)

    def reuses(self, active: Tuple[int, ...], context) -> bool:
        """Whether the coming step reuses the kept features (decided before its ControlNets run)."""
        return (self._deep is not None and self._since < self.interval and active == self._active
                and context is self._context)

    def eps(self, x, i: int, down, mid, active: Tuple[int, ...], reuse: bool, context):
        t = self.ts[i]
        if reuse:
            self._since += 1
            return self._shallow(self.unet, x, t, context, self._deep, self._skip_add)
        eps, self._deep = self._full(self.unet, x, t, context, down, mid)
        self._skip_add = None if down is None else list(down[: self.n_skips])
        self._active, self._context, self._since = active, context, 1
        self.full_steps.append(i)
        return eps

    # -- the strategy (``steps.EagerParts``' interface)
    def scale_input(self, x, i: int):
        return self.parts.scale_input(x, i)

    def guided_eps(self, x, extra, i: int, active: Tuple[int, ...], guidance: Optional[float], context):
        """The one guided step with this UNet call; a reuse step takes the last full step's
        shallow residuals, not the ControlNets'."""
        reuse = self.reuses(active, context)
        return guided_eps(lambda k: self.parts.control(k, x, i, context),
                          lambda unet_in, down, mid: self.eps(unet_in, i, down, mid, active, reuse, context),
                          x, extra, () if reuse else active, guidance)

    def step(self, eps, i: int, latents):
        return self.parts.step(eps, i, latents)

    def finish(self) -> None:
        self._deep = self._skip_add = self._context = None
        self.parts.finish()
