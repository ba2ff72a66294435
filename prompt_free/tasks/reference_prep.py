"""The reference as SeeCoder reads it (issue 26): its source mask (``reference_mask``), framing
(``reference_framing``) and encode size (``reference_max_side``), for the one reference builder
(``tasks.reference``: ``ReferenceOptions.of`` reads them, ``build`` prepares before encoding)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InvalidSettingError
from ..images import AS_IS, FRAMINGS, MASK_FRAME, check_min_side, frame_reference, limit_side
from ..masks import fit_source_mask, source_mask
from ..settings import REFERENCE_MIN_ENCODE_SIDE


def source_options(s) -> Tuple[Optional[np.ndarray], str, int]:
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


def prepare(options, references: Sequence, size: Optional[Tuple[int, int]]) -> List[Prepared]:
    """Each reference framed and sized for SeeCoder; the first with the source mask, cut alike.
    Neutral options: the references themselves, no mask."""
    return [prepare_one(r, options.mask if i == 0 else None, options, size) for i, r in enumerate(references)]


def prepare_one(img, mask: Optional[np.ndarray], options, size) -> Prepared:
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


def prepared_info(options, references: Sequence, prepared: Sequence[Prepared]) -> Dict[str, Any]:
    """What the preparation changed, for the info line: the source mask's share, the encoded size."""
    out: Dict[str, Any] = {}
    img, mask = prepared[0]
    if mask is not None:
        out["reference_mask"] = f"{100 * float(fit_source_mask(mask, img.size).mean()):.0f}% of the reference"
    if img is not references[0]:
        out["reference_size"] = list(img.size)
    return out
