"""The reference's conditioning with its options: strength, an optional text prompt, and the
blocks it goes to (Image Variation, Reference + ControlNet, the comparison's text column).

* ``reference_strength`` (every task, ``SamplerSettings``): ``mixing.with_strength``.
* ``prompt`` + ``prompt_mode``:
  - ``concat``: the prompt's 77 CLIP tokens (weighted by ``prompt_weight``, ``mixing.weighted_text``)
    followed by the 148 SeeCoder tokens (``mixing.concat_text_image``);
  - ``style``: the reference goes to the style blocks, the text to every other block
    (``blocks`` "all" becomes "style" then; "layout" sends the reference to the layout blocks).
* ``blocks`` ("all" | "style" | "layout", ``prompt_free.blocks``): the blocks the reference goes
  to; the others get the text (with a prompt) or the unconditional context (no reference).

Neutral values change nothing: strength 1, an empty (or blank) prompt and "all blocks" build
exactly today's ``Conditioning`` (no arithmetic, no patch, no text encoder loaded).
The CLIP text encoder is the base model's (``prompt_free.text``, held by the engine), loaded
only when a prompt is given. A prompt longer than the encoder's 77 tokens is refused with its
token count (``TextEncoder.check_length``), not cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

from .. import settings as limits
from ..blocks import ALL, PRESETS, STYLE, normalise_preset, route
from ..conditioning import Conditioning
from ..errors import InvalidSettingError
from ..mixing import concat_text_image, weighted_text, with_strength
from .common import timed
from .fields import REFERENCE, setting

CONCAT, STYLE_MODE = "concat", "style"
PROMPT_MODES = (CONCAT, STYLE_MODE)


@dataclass
class TextImageSettings:
    """Mixed into a task's settings after the sampler's fields (``class X(TextImageSettings,
    SamplerSettings)``): the optional prompt and where the reference goes."""

    prompt: str = setting("", section=REFERENCE, label="Prompt (optional)", cli="--prompt", metavar="TEXT",
                          help="an optional text prompt mixed with the reference (one reference only; default none)")
    prompt_mode: str = setting(CONCAT, section=REFERENCE, label="Prompt mode", cli="--prompt-mode", choices=PROMPT_MODES,
                               help="concat: the prompt's tokens before the reference's; style: the reference in the "
                                    "style blocks, the text in the others (default concat)")
    prompt_weight: float = setting(limits.PROMPT_WEIGHT.default, range=limits.PROMPT_WEIGHT, section=REFERENCE,
                                   label="Text weight", cli="--prompt-weight", metavar="W",
                                   help="weight of the prompt's tokens (default 1.0)")
    blocks: str = setting(ALL, section=REFERENCE, label="Reference goes to", cli="--blocks", choices=PRESETS,
                          help="the UNet blocks the reference goes to (default all)")


@dataclass(frozen=True)
class TextImage:
    """The checked options: ``prompt`` "" = no text; ``blocks`` the preset actually used."""

    prompt: str = ""
    mode: str = CONCAT
    weight: float = 1.0
    blocks: str = ALL

    def info(self, strength: float) -> Dict[str, object]:
        return {"reference_strength": strength, "prompt": self.prompt, "prompt_mode": self.mode if self.prompt else None,
                "prompt_weight": self.weight if self.prompt else None, "blocks": self.blocks}


def normalise_mode(mode) -> str:
    key = str(mode if mode is not None else CONCAT).strip().lower()
    if key not in PROMPT_MODES:
        raise InvalidSettingError(f"unknown prompt mode {mode!r}; choose one of: {', '.join(PROMPT_MODES)}")
    return key


def check_text_image(s) -> TextImage:
    """The options of ``s`` (a ``TextImageSettings``) checked, before anything is loaded."""
    from ..text import check_prompt

    prompt = check_prompt(getattr(s, "prompt", ""), "prompt").strip()
    mode = normalise_mode(getattr(s, "prompt_mode", CONCAT))
    weight = float(limits.PROMPT_WEIGHT.check(getattr(s, "prompt_weight", 1.0)))
    blocks = normalise_preset(getattr(s, "blocks", ALL))
    if prompt and mode == STYLE_MODE and blocks == ALL:
        blocks = STYLE  # style mode: the text needs blocks of its own
    return TextImage(prompt, mode, weight, blocks)


def encode_text(engine, base_model: str, prompt: str, weight: float, timings) -> Tuple:
    """(weighted prompt tokens, empty-prompt tokens), each (1, 77, C), with ``base_model``'s
    CLIP text encoder (loaded here, on first use)."""
    from ..text import text_encoder

    with timed(timings, "load"):
        te = text_encoder(engine, base_model)
    te.check_length(prompt)
    with timed(timings, "text"):
        text, empty = te.encode(prompt), te.encode("")
    return weighted_text(text, empty, weight), empty


def reference_conditioning(
    engine, reference, s, options: TextImage, controls: Sequence = (), timings: Optional[dict] = None,
) -> Conditioning:
    """The ``Conditioning`` of ``reference`` (a prepared image) with ``s.seecoder``,
    ``s.reference_strength`` and ``options``; ``controls`` are the run's ControlInputs."""
    timings = {} if timings is None else timings
    text = encode_text(engine, s.base_model, options.prompt, options.weight, timings) if options.prompt else None
    with timed(timings, "encode"):
        context, uncond = engine.encode_reference(reference, s.seecoder)
    image = (with_strength(context, uncond, s.reference_strength), uncond)
    if text is None:
        if options.blocks == ALL:
            return Conditioning(image[0], image[1], list(controls))
        # no text: the other blocks get the unconditional context in both guidance halves
        segments, chosen, other = [image, (uncond, uncond)], (0, 1), (1, 2)
    elif options.mode == CONCAT:
        if options.blocks == ALL:
            return Conditioning(*concat_text_image(text, image), list(controls))
        segments, chosen, other = [text, image], (0, 2), (0, 1)  # chosen: [text | image], others: text
    else:
        segments, chosen, other = [image, text], (0, 1), (1, 2)
    ctx, unc, patch = route(options.blocks, segments, chosen, other)
    return Conditioning(ctx, unc, patch.for_controls(controls), unet_patch=patch)


__all__ = ["CONCAT", "PROMPT_MODES", "STYLE_MODE", "TextImage", "TextImageSettings", "check_text_image",
           "encode_text", "normalise_mode", "reference_conditioning"]
