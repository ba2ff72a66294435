"""The text + image options of the tasks with one reference (Image Variation, Reference +
ControlNet, the comparison), declared once (``tasks.fields``): an optional prompt, how it mixes
with the reference, and the blocks the reference goes to; and (``BalanceSettings``, appended) the
text/reference balance of attention (``prompt_free.balance``). What they do, and the reference's
conditioning that applies them, is the reference builder's (``tasks.reference``).

Neutral values change nothing: an empty (or blank) prompt and "all blocks" build exactly today's
``Conditioning`` (no arithmetic, no patch, no text encoder loaded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .. import settings as limits
from ..balance import BALANCE
from ..blocks import ALL, GROUPS, PRESETS
from ..settings import Range
from .fields import APPENDED, REFERENCE, setting
from .reference import CONCAT, PROMPT_MODES, STYLE_MODE, normalise_mode

BLOCKS_HELP = "the UNet blocks the reference goes to (default all)"


def blocks_setting():
    """The ``blocks`` field (every task whose reference can go to some blocks only)."""
    return setting(ALL, section=REFERENCE, label="Reference goes to", cli="--blocks", choices=PRESETS, help=BLOCKS_HELP)


@dataclass
class TextImageSettings:
    """Mixed into a task's settings after the sampler's fields (``class X(TextImageSettings,
    SamplerSettings)``): the optional prompt and where the reference goes."""

    prompt: str = setting(
        "", section=REFERENCE, label="Prompt (optional)", cli="--prompt", metavar="TEXT",
        help="an optional text prompt mixed with the reference (one reference only; default none)")
    prompt_mode: str = setting(
        CONCAT, section=REFERENCE, label="Prompt mode", cli="--prompt-mode", choices=PROMPT_MODES,
        help="concat: the prompt's tokens before the reference's; style: the reference in the style blocks, "
             "the text in the others (default concat)")
    prompt_weight: float = setting(
        1.0, range=limits.PROMPT_WEIGHT, section=REFERENCE, label="Text weight", cli="--prompt-weight", metavar="W",
        help="weight of the prompt's tokens (default 1.0)")
    blocks: str = blocks_setting()


# Per block group: the reference's context in that group's cross-attention is uncond + w (cond - uncond).
BLOCK_WEIGHTS = {g: Range(f"reference weight {g}", 0.0, 2.0, 1.0, step=0.05) for g in GROUPS}


def _group_weight(group: str):
    where = {"down": "down blocks (the encoder: coarse layout)", "mid": "middle block",
             "up": "up blocks (the decoder: style, detail)"}[group]
    return setting(
        1.0, range=BLOCK_WEIGHTS[group], section=APPENDED, cli=f"--reference-weight-{group}", metavar="W",
        label=f"Reference weight, {group} blocks",
        help=f"the reference's weight in the {where}: their cross-attention context is uncond + W * (reference - "
             "uncond) (0: none, 1: as elsewhere; default 1)",
        ui_info=f"The reference's weight in the {where}: 0 none, 1 as elsewhere (default), up to 2 exaggerated",
        note=f"{group} blocks weight {{value}}", png_note=(f"Reference weight {group}", "{value}"))


@dataclass
class BlockWeightSettings:
    """Mixed in first (``class X(BlockWeightSettings, StartSettings, ...)``: appended after the
    existing settings): the reference's weight per block group and the optional layout image
    (``tasks.reference``: ``_place``). Neutral (1, 1, 1, no layout image): no patch, today's run."""

    reference_weight_down: float = _group_weight("down")
    reference_weight_mid: float = _group_weight("mid")
    reference_weight_up: float = _group_weight("up")
    layout_image: Any = setting(
        None, image=True, section=APPENDED, cli="--layout-image", metavar="PATH",
        label="Layout image (optional): the composition; the reference gives the style",
        help="a second image whose SeeCoder context goes to the layout blocks while the reference's goes to the "
             "style blocks (InstantStyle's split); the other blocks get the unconditional context; default none",
        note="layout from the layout image ({value})")


@dataclass
class BalanceSettings:
    """The text/reference balance (``prompt_free.balance``), mixed in first (``class
    X(BalanceSettings, StartSettings, TextImageSettings, SamplerSettings)``) so its endpoint
    parameter follows the appended settings already published."""

    balance: Optional[float] = setting(
        None, range=BALANCE, neutral=None, section=APPENDED, cli="--balance", metavar="B",
        label="Balance: text vs reference (empty: off)",
        help="with a prompt in concat mode: the text tokens' share of the cross-attention, measured on the first "
             "step (0.5: text and reference equal; 0: the reference only; 1: the text only); default none: off",
        ui_info="Empty = off (as without it). Needs a prompt (concat mode, all blocks). 0 = reference only, "
                "0.5 = equal attention, 1 = text only",
        note="balance {value}", png_note=("Balance", "{value}"))


__all__ = ["BLOCKS_HELP", "BLOCK_WEIGHTS", "BalanceSettings", "BlockWeightSettings", "CONCAT", "PROMPT_MODES", "STYLE_MODE", "TextImageSettings", "blocks_setting",
           "normalise_mode"]
