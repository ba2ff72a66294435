"""The one reference builder: every task's reference conditioning and what it reports about it.

Image Variation, Reference + ControlNet, the comparison's Prompt-Free columns, Edit with a
reference (and Try-On through it) and Multi-Reference all call it:

    options = ReferenceOptions.of(s)          # checked, before any model loads
    built = build(engine, s, [reference], options, controls=..., timings=timings)
    engine.generate(s.base_model, built.conditioning, sampler)
    info = {..., **built.info}

``ReferenceOptions.of`` reads the reference's options the task's settings declare (a task
without a prompt, blocks or blend simply has none: none is applied, none reported):

* ``reference_strength`` (every task): ``uncond + s (cond - uncond)``, ``mixing.with_strength``;
* ``prompt`` + ``prompt_mode`` + ``prompt_weight``: ``concat`` puts the prompt's 77 CLIP tokens
  (weighted from the empty prompt, ``mixing.weighted_text``) before the SeeCoder tokens
  (``mixing.concat_text_image``); ``style`` sends the reference to the style blocks and the text
  to the others ("all" blocks become "style" then); ``balance`` (concat, all blocks, one
  reference): the text tokens' attention share, a ``balance.Balance`` patch calibrated by the run;
* ``blocks`` ("all" | "style" | "layout", ``prompt_free.blocks``): the blocks the reference goes
  to; the others get the text (with a prompt) or the unconditional context;
* ``blend`` (several references, ``mixing.blend_contexts``): average, concatenate, or regions
  (``regions.RegionalAttention``, the masks at the output size);
* ``reference_start`` / ``reference_end`` (every task): the reference window. Outside it the
  run's conditional context is the one built with the reference replaced by SeeCoder's
  unconditional tokens (a prompt's part stays) and the unconditional context is today's (no
  negative): both pairs are built here once and ``conditioning.ReferenceWindow`` picks one per
  step (``Conditioning.schedule``); the window (0, 1) builds no schedule at all;
* ``negative_image`` / ``negative_mode`` + ``negative_strength`` (every task): the negative's
  SeeCoder context replaces the reference's unconditional tokens, ``uncond + s (neg - uncond)``
  (``_negative``); ``noise`` encodes each reference shuffled in blocks (``images.shuffled_blocks``).
  The reference strength stays relative to SeeCoder's own unconditional tokens, and the blocks
  that do not get the reference keep them in both guidance halves.
* ``reference_weight_down`` / ``_mid`` / ``_up``: the reference's weight per block group (each
  group's cross-attention context is ``uncond + w (cond - uncond)``): one copy of the placement per
  distinct weight, each group routed to its copy (``blocks.GroupCopies``); 1, 1, 1: no copy, no patch;
* ``layout_image``: a second image; the reference goes to the style blocks, the layout image to
  the layout blocks, the others get the unconditional context (``blocks.route`` with ``extra``).

``build`` runs the steps in this order, one function each; each next control is its option in
``ReferenceOptions`` plus one of them (a source mask or saved embeddings: ``_encode``; a
negative reference: ``_negative``, its encoding as the unconditional context handed to
``_place``; the reference window: ``_finish``, where the run's context is made):

1. ``_text``: the prompt's tokens. The text encoder loads only with a prompt; a prompt over its
   77 tokens is refused (``TextEncoder.check_length``) before the reference is encoded.
2. ``_prepare``: the framing (``reference_framing``: ``images.frame_reference`` to the output's
   aspect, or to the source mask's box) and the encode size (``reference_max_side``:
   ``images.limit_side``), the source mask cut with the image; ``_encode``: each reference
   through ``engine.encode_reference`` (timed as "encode"), the first with its source mask
   (``reference_mask``: the query transformer reads only the features under it; one mask, for
   the first reference: Multi-Reference's others are used whole); or a saved embedding
   (``prompt_free.embeddings``) in its place: the saved tensors themselves (no encoding; its
   width checked against the base model's), so saved-then-loaded = encoded.
3. ``_blend``: several references mixed; one reference is used as encoded.
4. strength (``mixing.with_strength``); ``_negative``: the unconditional tokens the negative replaces.
5. ``_place``: text, blocks or regions; ``_finish``: the ``Conditioning`` (with the window's schedule).

Neutral values build exactly today's conditioning: at strength 1 the encoded tensor itself (no
arithmetic), no text encoder without a prompt, no patch for "all blocks", no schedule for the
window (0, 1), nothing encoded without a negative (or at negative strength 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..balance import Balance, check_balance
from ..blocks import ALL, LAYOUT, STYLE, GroupCopies, normalise_preset, route
from ..conditioning import Conditioning, ReferenceWindow
from ..errors import InvalidSettingError
from ..images import AS_IS, prepare_reference, shuffled_blocks
from ..masks import crop_mask
from ..mixing import (AVERAGE, BLENDS, REGIONS, blend_contexts, concat_text_image, lerp_from, weighted_text,
                      with_strength)
from ..regions import RegionalAttention
from ..text import check_prompt, text_encoder
from .common import timed
from .reference_prep import Prepared, prepare, prepare_one, prepared_info, source_options

CONCAT, STYLE_MODE = "concat", "style"
NEUTRAL_WEIGHTS = (1.0, 1.0, 1.0)
WEIGHT_NAMES = ("reference_weight_down", "reference_weight_mid", "reference_weight_up")
PROMPT_MODES = (CONCAT, STYLE_MODE)
NO_NEGATIVE, NOISE = "none", "noise"  # negative_mode's values (tasks.common.NEGATIVE_MODES)

Pair = Tuple[torch.Tensor, torch.Tensor]  # (context, unconditional context), each (1, N, C)


def normalise_mode(mode) -> str:
    key = str(mode if mode is not None else CONCAT).strip().lower()
    if key not in PROMPT_MODES:
        raise InvalidSettingError(f"unknown prompt mode {mode!r}; choose one of: {', '.join(PROMPT_MODES)}")
    return key


def normalise_negative_mode(mode) -> str:
    key = str(mode if mode is not None else NO_NEGATIVE).strip().lower()
    if key not in (NO_NEGATIVE, NOISE):
        raise InvalidSettingError(f"unknown negative mode {mode!r}; choose one of: {NO_NEGATIVE}, {NOISE}")
    return key


def check_window(start, end) -> Tuple[float, float]:
    """The reference window (each in [0, 1]: ``begin`` checked its range) with start < end."""
    start, end = float(start), float(end)
    if not start < end:
        raise InvalidSettingError(f"the reference window must start before it ends: reference_start ({start:g}) "
                                  f"must be below reference_end ({end:g})")
    return start, end


def normalise_blend(blend: Optional[str]) -> str:
    key = str(blend or AVERAGE).strip().lower()
    if key not in BLENDS:
        raise InvalidSettingError(f"unknown blend {blend!r}; choose one of: {', '.join(BLENDS)}")
    return key


@dataclass(frozen=True)
class ReferenceOptions:
    """The reference's checked options. ``None``: not an option of the task (nothing applied,
    nothing reported); ``prompt`` "": no text; ``blocks``: the preset actually used."""

    strength: float = 1.0  # as given, so the info reports the value the caller set
    prompt: Optional[str] = None
    mode: str = CONCAT
    weight: float = 1.0
    blocks: Optional[str] = None
    blend: Optional[str] = None  # None: one reference
    mask: Optional[np.ndarray] = field(default=None, compare=False)  # the source mask (bool, True = use); None: whole
    framing: str = AS_IS
    max_side: int = 0  # 0: as given
    start: float = 0.0  # the reference window (fractions of the run)
    end: float = 1.0
    negative: Any = None  # the negative image (None: none)
    negative_mode: str = NO_NEGATIVE
    negative_strength: float = 1.0
    weights: Tuple[float, float, float] = NEUTRAL_WEIGHTS  # the reference's weight in the down, mid, up blocks
    layout: Any = field(default=None, compare=False)  # the layout image (PIL), or None
    balance: Optional[float] = None  # text vs reference attention (``prompt_free.balance``); None: off

    @property
    def windowed(self) -> bool:
        """Whether the reference acts in part of the run only (the window (0, 1): no schedule)."""
        return not (self.start == 0.0 and self.end == 1.0)

    @property
    def has_negative(self) -> bool:
        """Whether a negative replaces the unconditional tokens (nothing is encoded otherwise)."""
        return float(self.negative_strength) != 0.0 and (self.negative is not None or self.negative_mode == NOISE)

    @classmethod
    def of(cls, s) -> "ReferenceOptions":
        """The options settings ``s`` declare, checked before anything is loaded (the order of
        the checks: blend, prompt, prompt mode, blocks; the text weight's range is checked by ``begin``)."""
        blend = normalise_blend(s.blend) if hasattr(s, "blend") else None
        prompt = check_prompt(s.prompt, "prompt").strip() if hasattr(s, "prompt") else None
        mode = normalise_mode(getattr(s, "prompt_mode", CONCAT))
        weight = float(getattr(s, "prompt_weight", 1.0))  # in range: its declaration is checked by ``begin``
        blocks = normalise_preset(s.blocks) if hasattr(s, "blocks") else None
        if prompt and mode == STYLE_MODE and blocks == ALL:
            blocks = STYLE  # style mode: the text needs blocks of its own
        if blend == REGIONS and blocks not in (None, ALL):
            raise InvalidSettingError(
                "style-only / layout-only blocks work with the average and concatenate blends, not with regions "
                "(both need their own cross-attention processors); choose all blocks or another blend")
        if blend == REGIONS and prompt:
            raise InvalidSettingError("the regions blend takes no prompt (its spans are the references' tokens)")
        start, end = check_window(getattr(s, "reference_start", 0.0), getattr(s, "reference_end", 1.0))
        negative = getattr(s, "negative_image", None)
        negative = None if isinstance(negative, str) and not negative.strip() else negative
        negative_mode = normalise_negative_mode(getattr(s, "negative_mode", NO_NEGATIVE))
        if negative is not None and negative_mode == NOISE:
            raise InvalidSettingError("choose one negative: a negative image, or negative mode 'noise' (the reference "
                                      "with its layout destroyed), not both")
        mask, framing, max_side = source_options(s)
        weights, layout = _block_options(s, prompt, blocks, blend)
        balance = check_balance(getattr(s, "balance", None), prompt, mode, blocks, blend)
        if balance is not None and (weights != NEUTRAL_WEIGHTS or layout is not None or start > 0.0):
            raise InvalidSettingError("balance calibrates the text against the one reference on the first step: not "
                                      "with block weights, a layout image or a reference window starting after 0")
        return cls(s.reference_strength, prompt, mode, weight, blocks, blend, mask, framing, max_side, start, end,
                   negative, negative_mode, float(getattr(s, "negative_strength", 1.0)), weights, layout, balance)

    def within(self, size: Tuple[int, int], box) -> "ReferenceOptions":
        """These options for the reference of ``size`` cut to ``box`` (a subject crop, ``box``
        None: uncut): the source mask cut the same way."""
        if self.mask is None or box is None:
            return self
        return replace(self, mask=crop_mask(self.mask, size, box))

    def image_only(self) -> "ReferenceOptions":
        """These options without the text and the blocks (the comparison's Prompt-Free column)."""
        return replace(self, prompt=None, mode=CONCAT, weight=1.0, blocks=None, weights=NEUTRAL_WEIGHTS, layout=None,
                       balance=None)

    def info(self) -> Dict[str, Any]:
        """The entries a task's ``info`` reports about the reference (the UI and the PNG
        metadata read them)."""
        out: Dict[str, Any] = {} if self.blend is None else {"blend": self.blend}
        out["reference_strength"] = self.strength
        if self.prompt is not None:
            out.update(prompt=self.prompt, prompt_mode=self.mode if self.prompt else None,
                       prompt_weight=self.weight if self.prompt else None)
        if self.blocks is not None:
            out["blocks"] = self.blocks
        if self.framing != AS_IS:
            out["reference_framing"] = self.framing
        if self.max_side:
            out["reference_max_side"] = self.max_side
        if self.weights != NEUTRAL_WEIGHTS:
            out.update(zip(WEIGHT_NAMES, self.weights))
        if self.layout is not None:
            out["layout_image"] = "{}x{}".format(*self.layout.size)
        if self.balance is not None:
            out["balance"] = self.balance  # and "balance_bias", written by the run (``balance.Balance``)
        return out

    def notes(self) -> List[str]:
        """Short notes of the non-neutral options of the reference itself, e.g. "strength 0.5"."""
        return [f"strength {float(self.strength):g}"] if float(self.strength) != 1.0 else []


@dataclass(frozen=True)
class BuiltReference:
    """What ``build`` made: the run's ``Conditioning`` and the info entries of the reference."""

    conditioning: Conditioning
    info: Dict[str, Any]


def build(
    engine,
    s,
    references: Sequence,
    options: ReferenceOptions,
    *,
    controls: Sequence = (),
    weights: Optional[Sequence[float]] = None,
    regions: Optional[np.ndarray] = None,
    timings: Optional[Dict[str, float]] = None,
    size: Optional[Tuple[int, int]] = None,
    embedding=None,
) -> BuiltReference:
    """The conditioning of ``references`` (prepared images, encoded with ``s.seecoder``; the text
    with ``s.base_model``'s encoder) under ``options``. ``controls``: the run's ControlInputs;
    ``weights``: one per reference (a blend); ``regions``: (K, H, W) masks at the output size
    (the regions blend); ``size``: the output's (width, height) (the crop and pad framings);
    ``embedding``: a loaded ``embeddings.Embedding`` used instead of encoding (then
    ``references`` is empty)."""
    timings = {} if timings is None else timings
    negatives = _negative_images(options, references)  # opened first: a bad file fails before any model work
    text = _text(engine, s.base_model, options, timings) if options.prompt else None
    notes: List[str] = []
    prepared = prepare(options, references, size)
    if embedding is not None:
        if options.mask is not None or (options.has_negative and options.negative is None):
            raise InvalidSettingError("reference_mask and negative mode 'noise' need the reference image, not a saved "
                                      "embedding (make the embedding with the mask: prompt-free embed --reference-mask)")
        encoded = [_saved(engine, s, embedding, notes)]
    else:
        encoded = _encode(engine, s.seecoder, prepared, timings)
    context, uncond, spans = _blend(encoded, options.blend, weights)
    negative = _negative(engine, s.seecoder, negatives, options, uncond, weights, len(encoded), timings)
    image = (with_strength(context, uncond, options.strength), uncond if negative is None else negative)
    layout = _layout(engine, s.seecoder, options, size, timings)
    placed = _place(options, text, image, list(controls), weights, spans, regions, layout, null=uncond)
    outside = _outside_window(options, text, uncond, weights, spans, regions) if options.windowed else None
    conditioning = _finish(placed, options, outside)
    info = {**options.info(), **(prepared_info(options, references, prepared) if prepared else {})}
    if isinstance(conditioning.unet_patch, Balance):
        conditioning.unet_patch.report = info  # the run reports its calibrated bias here
    if options.blend is not None:
        info["tokens"] = int(conditioning.context.shape[1])
    if embedding is not None:
        info["embedding"] = embedding.name
    if notes:
        info["notes"] = notes
    return BuiltReference(conditioning, info)


def reference_or_saved(reference, embedding) -> Tuple[list, Any]:
    """(the prepared references to encode, the loaded embedding or None) of a one-reference task:
    a saved embedding (a file, its bytes, or an ``embeddings.Embedding``) is used instead of
    encoding the reference, which is then optional (it may still be the init image); without
    one, the reference as today (its own "no reference image" message)."""
    if embedding is None:
        return [prepare_reference(reference)], None
    from ..embeddings import Embedding, load

    return [], embedding if isinstance(embedding, Embedding) else load(embedding, "embedding")


def encode_text(engine, base_model: str, prompt: str, weight: float, timings: Dict[str, float]) -> Pair:
    """(weighted prompt tokens, empty-prompt tokens), each (1, 77, C), with ``base_model``'s
    CLIP text encoder (loaded here, on first use)."""
    with timed(timings, "load"):
        te = text_encoder(engine, base_model)
    te.check_length(prompt)
    with timed(timings, "text"):
        text, empty = te.encode(prompt), te.encode("")
    return weighted_text(text, empty, weight), empty


def _text(engine, base_model: str, options: ReferenceOptions, timings: Dict[str, float]) -> Pair:
    return encode_text(engine, base_model, options.prompt, options.weight, timings)


def _encode(engine, seecoder: str, prepared: Sequence[Prepared], timings: Dict[str, float]) -> List[Pair]:
    """(context, unconditional context) of each prepared reference, as the engine encodes (and
    caches) it; no mask: the unmasked call itself."""
    with timed(timings, "encode"):
        return [engine.encode_reference(r, seecoder) if m is None else engine.encode_reference(r, seecoder, mask=m)
                for r, m in prepared]


def _saved(engine, s, embedding, notes: List[str]) -> Pair:
    """A saved embedding's (context, uncond) as the run uses them: the base model's context width
    checked, on the engine's device and dtype (``embeddings.for_run``)."""
    from ..embeddings import for_run

    width = engine.base_model(s.base_model).unet.config.cross_attention_dim
    return for_run(embedding, width, s.seecoder, s.base_model, engine.device, engine.dtype, notes)


def _blend(encoded: Sequence[Pair], blend: Optional[str], weights: Optional[Sequence[float]]):
    """(context, uncond, spans): one reference as encoded (the tensors themselves), several blended."""
    if blend is None:
        if len(encoded) != 1:
            raise ValueError(f"{len(encoded)} references need a blend")
        (context, uncond), = encoded
        return context, uncond, [slice(0, context.shape[1])]
    if weights is None or len(weights) != len(encoded):
        raise ValueError("a blend needs one weight per reference")
    return blend_contexts([c for c, _ in encoded], encoded[0][1], weights, blend)


def _negative_images(options: ReferenceOptions, references: Sequence) -> list:
    """The images to encode as the negative: none (no negative, or strength 0), the negative
    image, or (``noise``) each reference shuffled in blocks."""
    if not options.has_negative:
        return []
    if options.negative is not None:
        return [prepare_reference(options.negative, "negative image")]
    return [shuffled_blocks(prepare_reference(r)) for r in references]


def _negative(engine, seecoder: str, images: Sequence, options: ReferenceOptions, uncond: torch.Tensor,
              weights: Optional[Sequence[float]], slots: int, timings: Dict[str, float]) -> Optional[torch.Tensor]:
    """The reference's unconditional tokens moved to the negative's, ``uncond + s (neg - uncond)``
    (None: no negative, nothing encoded). Several shuffled references are blended as the
    references are; one negative image goes to every reference's slot (``slots``)."""
    if not images:
        return None
    negatives = [c for c, _ in _encode(engine, seecoder, [(im, None) for im in images], timings)]
    if options.blend in (None, AVERAGE):
        tokens = negatives[0] if len(negatives) == 1 else blend_contexts(negatives, uncond, weights, AVERAGE)[0]
    else:  # concatenate / regions: one unconditional slot per reference, so one negative per slot
        tokens = torch.cat(negatives * slots if len(negatives) == 1 else negatives, dim=1)
    return lerp_from(uncond.to(tokens.device), tokens, options.negative_strength)


def _block_options(s, prompt, blocks, blend) -> Tuple[Tuple[float, float, float], Any]:
    """(weights per block group, layout image or None) of settings ``s``, checked (the weights'
    ranges by ``begin``); the layout image is read here."""
    weights = tuple(float(getattr(s, name, 1.0)) for name in WEIGHT_NAMES)
    given = getattr(s, "layout_image", None)
    layout = None if given is None or (isinstance(given, str) and not given.strip()) else prepare_reference(
        given, "layout image")
    if blend == REGIONS and (weights != NEUTRAL_WEIGHTS or layout is not None):
        raise InvalidSettingError("block weights and a layout image work with the average and concatenate blends, "
                                  "not with regions")
    if layout is not None and (prompt or blocks not in (None, ALL)):
        raise InvalidSettingError("a layout image splits the blocks itself (the reference to the style blocks, the "
                                  "layout image to the layout blocks): give no prompt and keep blocks 'all'")
    return weights, layout


def _layout(engine, seecoder: str, options: ReferenceOptions, size, timings: Dict[str, float]) -> Optional[Pair]:
    """The layout image's (context, uncond), framed and sized as the reference; None without one."""
    if options.layout is None:
        return None
    img, _ = prepare_one(options.layout, None, options, size)
    with timed(timings, "encode"):
        return engine.encode_reference(img, seecoder)


def _place(options: ReferenceOptions, text: Optional[Pair], image: Pair, controls: list, weights, spans, regions,
           layout: Optional[Pair] = None, null: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, list, Any]:
    """(run context, run unconditional context, controls, UNet patch or None): where the
    reference (and the text) go; with per-group weights, one copy of that placement per distinct
    weight (the reference and the layout image at that weight, ``mixing.with_strength``), each
    block group routed to its copy (``blocks.GroupCopies``). ``null``: SeeCoder's unconditional
    tokens, which the blocks without the reference get in both halves and the weights are
    measured from (default: ``image``'s, which a negative replaces)."""
    if options.weights == NEUTRAL_WEIGHTS:
        return _route(options, text, image, controls, weights, spans, regions, layout, null)
    distinct = list(dict.fromkeys(options.weights))
    copies = [_route(options, text, _at(image, w, null), [], weights, spans, regions,
                     None if layout is None else _at(layout, w, null), null)
              for w in distinct]
    width = copies[0][0].shape[1]
    offsets = tuple(distinct.index(w) * width for w in options.weights)
    patch = GroupCopies(copies[0][3], width, offsets, control_offset=offsets[0])  # ControlNets: the down blocks' copy
    context = torch.cat([c for c, _, _, _ in copies], dim=1)
    uncond = torch.cat([u for _, u, _, _ in copies], dim=1)
    return context, uncond, patch.for_controls(controls), patch


def _at(pair: Pair, weight: float, null: Optional[torch.Tensor]) -> Pair:
    """``pair`` at ``weight`` from SeeCoder's unconditional tokens (``null``; default: its own)."""
    return with_strength(pair[0], pair[1] if null is None else null, weight), pair[1]


def _route(options: ReferenceOptions, text: Optional[Pair], image: Pair, controls: list, weights, spans, regions,
           layout: Optional[Pair], null: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, list, Any]:
    blocks = options.blocks or ALL
    context, uncond = image
    null = uncond if null is None else null
    if options.blend == REGIONS:
        extra = [getattr(c.controlnet, "controlnet", c.controlnet) for c in controls]  # they see the regions too
        return context, uncond, controls, RegionalAttention(regions, weights, spans, extra)
    if layout is not None:  # style from the reference, layout from the layout image, the others unconditional
        ctx, unc, patch = route(STYLE, [image, layout, (null, null)], (0, 1), (2, 3), extra=[(LAYOUT, (1, 2))])
        return ctx, unc, patch.for_controls(controls), patch
    if text is None:
        if blocks == ALL:
            return context, uncond, controls, None
        # no text: the other blocks get the unconditional context in both guidance halves
        segments, chosen, other = [image, (null, null)], (0, 1), (1, 2)
    elif options.mode == CONCAT:
        if blocks == ALL:
            balance = None if options.balance is None else Balance(options.balance, text[0].shape[1])
            return (*concat_text_image(text, image), controls, balance)
        segments, chosen, other = [text, image], (0, 2), (0, 1)  # chosen: [text | image], others: text
    else:
        segments, chosen, other = [image, text], (0, 1), (1, 2)
    ctx, unc, patch = route(blocks, segments, chosen, other)
    return ctx, unc, patch.for_controls(controls), patch


def _outside_window(options: ReferenceOptions, text: Optional[Pair], null: torch.Tensor, weights, spans,
                    regions) -> Tuple[torch.Tensor, torch.Tensor]:
    """The run's (context, unconditional context) outside the reference window: placed as the
    reference's, with the reference (and its negative) replaced by SeeCoder's unconditional
    tokens, so a prompt's part stays; built once, before the run."""
    if options.blend == REGIONS:  # the regions' spans over unconditional tokens only: no reference anywhere
        return null, null
    layout = None if options.layout is None else (null, null)  # the same shape: the patch stays the run's
    context, uncond, _, _ = _place(options, text, (null, null), [], weights, spans, regions, layout, null)
    return context, uncond


def _finish(placed, options: ReferenceOptions, outside: Optional[Tuple[torch.Tensor, torch.Tensor]]) -> Conditioning:
    context, uncond, controls, patch = placed
    schedule = None if outside is None else ReferenceWindow(options.start, options.end, (context, uncond), outside)
    return Conditioning(context, uncond, controls, unet_patch=patch, schedule=schedule)


__all__ = ["BuiltReference", "CONCAT", "NOISE", "NO_NEGATIVE", "PROMPT_MODES", "ReferenceOptions", "STYLE_MODE", "build",
           "check_window", "encode_text", "normalise_blend", "normalise_mode", "normalise_negative_mode",
           "reference_or_saved"]
