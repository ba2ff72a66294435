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
  (``regions.RegionalAttention``, the masks at the output size).

``build`` runs the steps in this order, one function each; each next control is its option in
``ReferenceOptions`` plus one of them (a source mask or saved embeddings: ``_encode``; a
negative reference: its encoding as the unconditional context handed to ``_place``; a reference
window: ``_finish``, where the run's context is made):

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
4. strength (``mixing.with_strength``).
5. ``_place``: text, blocks or regions; ``_finish``: the ``Conditioning``.

Neutral values build exactly today's conditioning: at strength 1 the encoded tensor itself (no
arithmetic), no text encoder without a prompt, no patch for "all blocks".
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..balance import Balance, check_balance
from ..blocks import ALL, STYLE, normalise_preset, route
from ..conditioning import Conditioning
from ..errors import InvalidSettingError
from ..images import AS_IS, FRAMINGS, MASK_FRAME, check_min_side, frame_reference, limit_side, prepare_reference
from ..masks import crop_mask, fit_source_mask, source_mask
from ..settings import REFERENCE_MIN_ENCODE_SIDE
from ..mixing import AVERAGE, BLENDS, REGIONS, blend_contexts, concat_text_image, weighted_text, with_strength
from ..regions import RegionalAttention
from ..text import check_prompt, text_encoder
from .common import timed

CONCAT, STYLE_MODE = "concat", "style"
PROMPT_MODES = (CONCAT, STYLE_MODE)

Pair = Tuple[torch.Tensor, torch.Tensor]  # (context, unconditional context), each (1, N, C)


def normalise_mode(mode) -> str:
    key = str(mode if mode is not None else CONCAT).strip().lower()
    if key not in PROMPT_MODES:
        raise InvalidSettingError(f"unknown prompt mode {mode!r}; choose one of: {', '.join(PROMPT_MODES)}")
    return key


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
    balance: Optional[float] = None  # text vs reference attention (``prompt_free.balance``); None: off

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
        mask, framing, max_side = _source_options(s)
        balance = check_balance(getattr(s, "balance", None), prompt, mode, blocks, blend)
        return cls(s.reference_strength, prompt, mode, weight, blocks, blend, mask, framing, max_side, balance)

    def within(self, size: Tuple[int, int], box) -> "ReferenceOptions":
        """These options for the reference of ``size`` cut to ``box`` (a subject crop, ``box``
        None: uncut): the source mask cut the same way."""
        if self.mask is None or box is None:
            return self
        return replace(self, mask=crop_mask(self.mask, size, box))

    def image_only(self) -> "ReferenceOptions":
        """These options without the text and the blocks (the comparison's Prompt-Free column)."""
        return replace(self, prompt=None, mode=CONCAT, weight=1.0, blocks=None, balance=None)

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
    text = _text(engine, s.base_model, options, timings) if options.prompt else None
    notes: List[str] = []
    prepared = _prepare(options, references, size)
    if embedding is not None:
        if options.mask is not None:
            raise InvalidSettingError("reference_mask applies to a reference image, not to a saved embedding "
                                      "(make the embedding with the mask: prompt-free embed --reference-mask)")
        encoded = [_saved(engine, s, embedding, notes)]
    else:
        encoded = _encode(engine, s.seecoder, prepared, timings)
    context, uncond, spans = _blend(encoded, options.blend, weights)
    image = (with_strength(context, uncond, options.strength), uncond)
    conditioning = _finish(_place(options, text, image, list(controls), weights, spans, regions))
    info = {**options.info(), **(_prepared_info(options, references, prepared) if prepared else {})}
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


def _source_options(s) -> Tuple[Optional[np.ndarray], str, int]:
    """(source mask or None, framing, max side) of settings ``s``, checked; the mask image is
    read here (an empty one refused before any model loads)."""
    given = getattr(s, "reference_mask", None)
    mask = source_mask(given)
    framing = str(getattr(s, "reference_framing", None) or AS_IS).strip().lower()
    if framing not in FRAMINGS:
        raise InvalidSettingError(f"unknown reference framing {framing!r}; choose one of: {', '.join(FRAMINGS)}")
    if framing == MASK_FRAME and (given is None or (isinstance(given, str) and not given.strip())):
        raise InvalidSettingError("reference framing 'mask' crops the reference to its mask's box: give a reference "
                                  "mask (reference_mask), or choose as-is, crop or pad")
    max_side = int(getattr(s, "reference_max_side", 0) or 0)  # in range: checked by ``begin``
    if 0 < max_side < REFERENCE_MIN_ENCODE_SIDE:
        raise InvalidSettingError(f"reference max side must be 0 (as given) or at least {REFERENCE_MIN_ENCODE_SIDE} px, "
                                  f"got {max_side}")
    return mask, framing, max_side


Prepared = Tuple[Any, Optional[np.ndarray]]  # (the reference as encoded, its source mask or None)


def _prepare(options: ReferenceOptions, references: Sequence, size: Optional[Tuple[int, int]]) -> List[Prepared]:
    """Each reference framed and sized for SeeCoder; the first with the source mask, cut alike.
    Neutral options: the references themselves, no mask."""
    return [_prepare_one(r, options.mask if i == 0 else None, options, size) for i, r in enumerate(references)]


def _prepare_one(img, mask: Optional[np.ndarray], options: ReferenceOptions, size) -> Prepared:
    if mask is not None:
        mask = fit_source_mask(mask, img.size)
    framing = options.framing if (options.framing != MASK_FRAME or mask is not None) else AS_IS  # the unmasked ones
    if framing == AS_IS and not options.max_side:
        return img, mask
    if framing != AS_IS and size is None:
        raise ValueError(f"reference framing {framing!r} needs the output size")
    out, mask = frame_reference(img, framing, size[0] / size[1] if size else 1.0, mask)
    out = limit_side(out, options.max_side)
    if out is not img:
        check_min_side(out, f"the reference as framed ({framing}, at most {options.max_side or 'any'} px)")
    return out, mask


def _prepared_info(options: ReferenceOptions, references: Sequence, prepared: Sequence[Prepared]) -> Dict[str, Any]:
    """What the preparation changed, for the info line: the source mask's share, the encoded size."""
    out: Dict[str, Any] = {}
    img, mask = prepared[0]
    if mask is not None:
        out["reference_mask"] = f"{100 * float(fit_source_mask(mask, img.size).mean()):.0f}% of the reference"
    if img is not references[0]:
        out["reference_size"] = list(img.size)
    return out


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


def _place(options: ReferenceOptions, text: Optional[Pair], image: Pair, controls: list,
           weights, spans, regions) -> Tuple[torch.Tensor, torch.Tensor, list, Any]:
    """(run context, run unconditional context, controls, UNet patch or None): where the
    reference (and the text) go."""
    blocks = options.blocks or ALL
    context, uncond = image
    if options.blend == REGIONS:
        extra = [getattr(c.controlnet, "controlnet", c.controlnet) for c in controls]  # they see the regions too
        return context, uncond, controls, RegionalAttention(regions, weights, spans, extra)
    if text is None:
        if blocks == ALL:
            return context, uncond, controls, None
        # no text: the other blocks get the unconditional context in both guidance halves
        segments, chosen, other = [image, (uncond, uncond)], (0, 1), (1, 2)
    elif options.mode == CONCAT:
        if blocks == ALL:
            balance = None if options.balance is None else Balance(options.balance, text[0].shape[1])
            return (*concat_text_image(text, image), controls, balance)
        segments, chosen, other = [text, image], (0, 2), (0, 1)  # chosen: [text | image], others: text
    else:
        segments, chosen, other = [image, text], (0, 1), (1, 2)
    ctx, unc, patch = route(blocks, segments, chosen, other)
    return ctx, unc, patch.for_controls(controls), patch


def _finish(placed) -> Conditioning:
    context, uncond, controls, patch = placed
    return Conditioning(context, uncond, controls, unet_patch=patch)


__all__ = ["BuiltReference", "CONCAT", "PROMPT_MODES", "ReferenceOptions", "STYLE_MODE", "build", "encode_text",
           "reference_or_saved",
           "normalise_blend", "normalise_mode"]
