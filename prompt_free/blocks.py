"""Cross-attention blocks by name, and a UNet patch that gives chosen blocks their own context.

Style-only control ("InstantStyle", Wang et al. 2024, arXiv:2404.02733): a reference sent only
to the blocks that carry style keeps its colours, materials and atmosphere but not its layout;
sent only to the layout blocks it keeps the composition. The SD-1.5 block sets are the ones the
InstantStyle authors published for SD 1.5 (``infer_style_sd15.py`` in their repository):
style = ``up_blocks.1`` (the first, lowest-resolution cross-attention up block); style + layout
= ``down_blocks.2``, ``mid_block``, ``up_blocks.1``, so layout = ``down_blocks.2`` and
``mid_block`` (the deepest cross-attention down block and the middle block). For SDXL they use
``up_blocks.0.attentions.1`` (style) and ``down_blocks.2.attentions.1`` (layout); diffusers
exposes the same choice as per-block ``set_ip_adapter_scale`` dictionaries. We find the blocks
from a UNet's config by that structural rule, so any SD-1.x-layout UNet (also the tiny
profile's, where they are ``up_blocks.1`` and ``down_blocks.0`` + ``mid_block``) gets the
corresponding blocks.

How the contexts reach their blocks: the run's context is the concatenation of every context
the run needs, along the tokens (e.g. [reference 148 | other 77]); ``BlockRouting`` installs,
for one run, attention processors that hand each cross-attention the token range of its own
context and then run the UNet's own processor. The sampler's classifier-free guidance batching
([unconditional; conditional], ``sampling.denoise``) therefore needs nothing new: the
unconditional run context is the concatenation of the unconditional contexts in the same
layout, so every block's unconditional half is its own context's unconditional counterpart.
Blocks may see different numbers of tokens (cross-attention takes any number). ControlNets
get the chosen blocks' range (``ContextSlice``): the context they see without routing.

Per block group weights (down, mid, up: ``GroupCopies``) reuse the same processors: the run's
context holds one copy of the layout per distinct weight and each group reads its own copy. A
layout image is one more routed range (``BlockRouting.extra``: the layout blocks).

"all blocks" installs no patch at all (today's run, bit for bit).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Sequence, Tuple

import torch

from .conditioning import AttentionProcessors
from .errors import InvalidSettingError

ALL, STYLE, LAYOUT = "all", "style", "layout"
PRESET_LABELS = {ALL: "all blocks", STYLE: "style only", LAYOUT: "layout only"}
PRESETS = tuple(PRESET_LABELS)
CROSS_ATTENTION = "attn2.processor"  # diffusers' BasicTransformerBlock: attn1 self, attn2 cross


def normalise_preset(name) -> str:
    """"all" | "style" | "layout" (also the labels "all blocks", "style only" ...)."""
    key = str(name if name is not None else ALL).strip().lower().replace("_", " ").replace("-", " ")
    for preset, label in PRESET_LABELS.items():
        if key in (preset, label):
            return preset
    raise InvalidSettingError(f"unknown block preset {name!r}; choose one of: {', '.join(PRESETS)} "
                              f"({', '.join(PRESET_LABELS.values())})")


def block_prefixes(config, preset: str) -> Tuple[str, ...]:
    """Module-name prefixes of the blocks of ``preset`` in a UNet with diffusers ``config``
    (SD 1.5: style -> ("up_blocks.1.",), layout -> ("down_blocks.2.", "mid_block."))."""
    preset = normalise_preset(preset)
    get = config.get if hasattr(config, "get") else lambda k, d=None: getattr(config, k, d)
    down = [i for i, t in enumerate(get("down_block_types") or ()) if "CrossAttn" in t]
    up = [i for i, t in enumerate(get("up_block_types") or ()) if "CrossAttn" in t]
    mid = "CrossAttn" in str(get("mid_block_type", "UNetMidBlock2DCrossAttn"))
    if preset == ALL:
        return ()
    if not down or not up:
        raise InvalidSettingError("this UNet has no cross-attention down and up blocks to choose style or layout blocks from")
    if preset == STYLE:
        return (f"up_blocks.{up[0]}.",)
    return (f"down_blocks.{down[-1]}.",) + (("mid_block.",) if mid else ())


class _RangeProcessor:
    """Runs the UNet's own attention processor with the cross-attention context cut to tokens
    [lo, hi) of the run's context."""

    def __init__(self, inner, lo: int, hi: int):
        self.inner, self.lo, self.hi = inner, lo, hi

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        return self.inner(attn, hidden_states, encoder_hidden_states[:, self.lo:self.hi], *args, **kwargs)


class ContextSlice:
    """A ControlNet fed tokens [lo, hi) of the run's context. Holds the shared ControlNet itself."""

    def __init__(self, controlnet, lo: int, hi: int):
        self.controlnet, self.lo, self.hi = controlnet, lo, hi

    def __call__(self, x, t, *, encoder_hidden_states, **kwargs):
        return self.controlnet(x, t, encoder_hidden_states=encoder_hidden_states[:, self.lo:self.hi], **kwargs)


class _RangedPatch:
    """A ``UNetPatch`` whose cross-attention processors each see a token range (``ranges``)."""

    def processors(self, unet) -> Dict[str, object]:
        return ranged_processors(unet, self.ranges(unet))

    @contextlib.contextmanager
    def applied(self, unet) -> Iterator[None]:
        with AttentionProcessors(self.processors(unet)).applied(unet):
            yield


@dataclass(frozen=True)
class BlockRouting(_RangedPatch):
    """A ``UNetPatch``: the cross-attention of the blocks of ``preset`` sees tokens ``chosen``
    (lo, hi) of the run's context, every other cross-attention tokens ``other``. ``extra``:
    further (preset, (lo, hi)) pairs, each checked before ``preset`` (the layout image's blocks)."""

    preset: str
    chosen: Tuple[int, int]
    other: Tuple[int, int]
    extra: Tuple[Tuple[str, Tuple[int, int]], ...] = ()

    def ranges(self, unet) -> Dict[str, Tuple[int, int]]:
        """Each cross-attention processor's token range (by processor name)."""
        rules = [(block_prefixes(unet.config, p), r) for p, r in self.extra]
        rules.append((block_prefixes(unet.config, self.preset), self.chosen))
        return {name: next((r for prefixes, r in rules if name.startswith(prefixes)), self.other)
                for name in unet.attn_processors if name.endswith(CROSS_ATTENTION)}

    def for_controls(self, controls: Sequence) -> list:
        """The run's ControlInputs with each ControlNet fed the chosen blocks' tokens."""
        return [dataclasses.replace(c, controlnet=ContextSlice(c.controlnet, *self.chosen)) for c in controls]


def ranged_processors(unet, ranges: Dict[str, Tuple[int, int]]) -> Dict[str, object]:
    """The UNet's processors, each cross-attention named in ``ranges`` cut to its token range."""
    return {name: _RangeProcessor(proc, *ranges[name]) if name in ranges else proc
            for name, proc in unet.attn_processors.items()}


# Block groups of the per-group reference weights (``reference_weight_down`` ...): module prefixes.
GROUPS = ("down", "mid", "up")
GROUP_PREFIXES = {"down": "down_blocks.", "mid": "mid_block.", "up": "up_blocks."}


@dataclass(frozen=True)
class GroupCopies(_RangedPatch):
    """A ``UNetPatch`` for per-group weights: the run's context holds one copy of a layout of
    ``width`` tokens per distinct weight, side by side; every cross-attention of block group g
    (down, mid, up) sees its usual range of that layout (``inner``'s routing, or all ``width``
    tokens) in the copy at ``offsets[g]``. ControlNets see the copy at ``control_offset``."""

    inner: Optional[BlockRouting]
    width: int
    offsets: Tuple[int, int, int]
    control_offset: int

    def ranges(self, unet) -> Dict[str, Tuple[int, int]]:
        base = self.inner.ranges(unet) if self.inner is not None else {
            name: (0, self.width) for name in unet.attn_processors if name.endswith(CROSS_ATTENTION)}
        out = {}
        for name, (lo, hi) in base.items():
            shift = next(o for g, o in zip(GROUPS, self.offsets) if name.startswith(GROUP_PREFIXES[g]))
            out[name] = (lo + shift, hi + shift)
        return out

    def for_controls(self, controls: Sequence) -> list:
        lo, hi = self.inner.chosen if self.inner is not None else (0, self.width)
        off = self.control_offset
        return [dataclasses.replace(c, controlnet=ContextSlice(c.controlnet, lo + off, hi + off)) for c in controls]


Pair = Tuple[torch.Tensor, torch.Tensor]  # (context, unconditional context), each (1, N, C)


def route(preset: str, segments: Sequence[Pair], chosen: Tuple[int, int], other: Tuple[int, int],
          extra: Sequence[Tuple[str, Tuple[int, int]]] = (),
          ) -> Tuple[torch.Tensor, torch.Tensor, Optional[BlockRouting]]:
    """(run context, run unconditional context, patch) for contexts ``segments`` laid side by
    side: the blocks of ``preset`` see segments ``chosen`` = (first, end) (a contiguous run of
    segment indices), the other blocks segments ``other``; ``extra``: (preset, segments) pairs
    routed first. ``preset == "all"``: no patch, the context of ``chosen`` alone."""
    preset = normalise_preset(preset)
    sizes = [c.shape[1] for c, _ in segments]
    if any(u.shape[1] != n for (_, u), n in zip(segments, sizes)):
        raise ValueError("every segment's unconditional context needs its context's number of tokens")
    starts = [sum(sizes[:i]) for i in range(len(sizes) + 1)]

    def tokens(seg: Tuple[int, int]) -> Tuple[int, int]:
        return starts[seg[0]], starts[seg[1]]

    if preset == ALL and not extra:
        used = segments[chosen[0]:chosen[1]]
        return _cat([c for c, _ in used]), _cat([u for _, u in used]), None
    ctx, unc = _cat([c for c, _ in segments]), _cat([u for _, u in segments])
    routed = tuple((normalise_preset(p), tokens(seg)) for p, seg in extra)
    return ctx, unc, BlockRouting(preset, tokens(chosen), tokens(other), routed)


def _cat(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    if len(parts) == 1:
        return parts[0]
    dtype, device = parts[0].dtype, parts[0].device
    batch = max(p.shape[0] for p in parts)
    return torch.cat([p.to(device, dtype).expand(batch, -1, -1) for p in parts], dim=1)


__all__ = ["ALL", "GROUPS", "GROUP_PREFIXES", "LAYOUT", "PRESETS", "PRESET_LABELS", "STYLE", "BlockRouting",
           "ContextSlice", "GroupCopies", "block_prefixes", "normalise_preset", "ranged_processors", "route"]
