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
from typing import Optional

from .. import settings as limits
from ..balance import BALANCE
from ..blocks import ALL, PRESETS
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


__all__ = ["BLOCKS_HELP", "BalanceSettings", "CONCAT", "PROMPT_MODES", "STYLE_MODE", "TextImageSettings", "blocks_setting",
           "normalise_mode"]
