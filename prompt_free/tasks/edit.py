"""Edit with a reference (exemplar inpainting): fill the masked region of any photo with the
content of a reference image (an object, a texture, a garment). Virtual Try-On
(``tasks/tryon.py``) is one use of it: a garment as reference, a pose mask, a pose ControlNet.

Inputs: a photo, a mask (white, or painted pixels of a transparent layer, = change; a mask of
another size is resized to the photo and ``info["notes"]`` says so) and a reference image.

Generation (``fill_masked_region``, the part both tasks share)
* Condition: the SeeCoder embeddings of the reference (cropped to its subject first when
  ``crop_reference``: background estimated from the border colour), with its strength, through
  the reference builder (``tasks.reference``).
* Inpainting: with a 9-channel SD inpainting UNet (``inpainting: true`` in checkpoints.yaml;
  the first such base model is the default) the UNet gets [mask, masked-image latents] as extra
  input channels (``conditioning.MaskedImageChannels``). With a standard base model, latent
  blending (``conditioning.LatentBlend``): after every step the latents outside the mask are
  replaced by the original image's latents noised to the step's timestep (the run's own initial
  noise), and by the clean latents after the last step.
* Size: generation at the photo's aspect ratio, both sides multiples of 64, the long side
  ``max(long side, 512)`` capped at ``max_side`` (default 768, at most 1536). The result is
  resized back to the photo's own size and pasted into it with the feathered paste alpha of
  ``masks.soften_mask``: pixels farther than dilation + feathering from the mask are the
  photo's own, bit for bit. Large photos (up to ``settings.MAX_IMAGE_PIXELS``) are accepted:
  the generation runs at ``max_side`` and only the masked region is upscaled into the
  full-size photo (``info["notes"]`` says so).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .. import masks as M
from .. import settings
from ..conditioning import LatentBlend, MaskedImageChannels
from ..errors import InputImageError, ModelUnavailableError
from ..images import check_min_side, image_to_tensor, load_image, prepare_reference
from ..sampling import ControlInput, Sampler
from .common import Progress, SamplerSettings, TaskResult, begin, check_work, holds_models, lora_info, sampler_for, timed
from .reference import ReferenceOptions, build

DEFAULT_MAX_SIDE = int(settings.TRYON_MAX_SIDE.default)
GEN_MIN_LONG_SIDE = 512  # small photos are generated at least this large (SD works poorly below)
METHOD_INPAINT, METHOD_BLEND = "inpainting UNet", "latent blending"
MASK_IMAGE = "mask image"  # what info["mask"] says when the mask was given as an image


@dataclass
class FillSettings(SamplerSettings):
    """What filling a masked region takes (Edit with a reference, Virtual Try-On).
    ``base_model`` None: the first ``inpainting: true`` base model of the registry when it can
    be loaded, else the profile's default (latent blending). The size is the photo's
    (``max_side`` caps the generation), so width/height are not used. ``dilation`` /
    ``feather``: the mask grows by ``dilation`` px and its paste-back edge fades over
    ``feather`` px more; farther out the photo is kept bit for bit."""

    width: Optional[int] = None
    height: Optional[int] = None
    dilation: int = 8
    feather: int = 8
    max_side: int = DEFAULT_MAX_SIDE


@dataclass
class EditSettings(FillSettings):
    """Edit-with-a-reference settings; ``crop_reference``: SeeCoder sees the reference cropped
    to its subject (a plain background around it is cut off)."""

    crop_reference: bool = False


# ----------------------------------------------------------------------------- helpers
def generation_size(width: int, height: int, max_side: int = DEFAULT_MAX_SIDE) -> Tuple[int, int]:
    """Generation size for a photo: both sides multiples of 64, the photo's aspect ratio as
    closely as possible, the long side near max(long side, 512) but <= max_side."""
    max_side = check_max_side(max_side)
    long_side, short_side = max(width, height), min(width, height)
    target = min(max_side, max(long_side, GEN_MIN_LONG_SIDE))
    top = max(64, target // 64 * 64)
    ratio = short_side / long_side
    best, best_score = None, None
    for L in range(top, max(63, top // 2 - 1), -64):
        S = min(L, max(64, int(round(L * ratio / 64)) * 64))
        score = abs(math.log((S / L) / ratio)) + 0.3 * (1 - L / top)  # ~5% aspect error per 64 px step
        if best_score is None or score < best_score - 1e-9:
            best, best_score = (L, S), score
    L, S = best
    return (L, S) if width >= height else (S, L)


def check_max_side(v) -> int:
    return int(settings.TRYON_MAX_SIDE.check(v))


def inpainting_base_model(engine) -> Optional[str]:
    """The first base model marked ``inpainting: true`` in checkpoints.yaml (None: none)."""
    reg = engine.registry
    for name in reg.names("base_models"):
        if reg.entry("base_models", name).option("inpainting", False):
            return name
    return None


def load_photo(photo, what: str = "photo") -> Image.Image:
    if photo is None:
        raise InputImageError(f"no {what} given: please upload the {what} to edit")
    return check_min_side(load_image(photo, what), what)


def check_edit_work(s: FillSettings, photo: Image.Image, max_side: int, controlnets: int = 0) -> None:
    """The work limit (``common.check_work``) of an edit of ``photo``, before any model loads."""
    check_work([(sampler_for(s, *generation_size(*photo.size, max_side)), controlnets)])


def reference_as_encoded(img: Image.Image, crop: bool, notes: List[str], what: str = "reference image",
                         options: Optional[ReferenceOptions] = None):
    """The reference as SeeCoder sees it: cropped to its subject (plain background) when asked.
    With ``options``: (the reference, ``options`` with the source mask cut to the same crop)."""
    size, box = img.size, None
    if crop:
        img, box = M.crop_garment(img)
        if box is None:
            name = what.split()[0]  # "garment", "reference"
            notes.append(f"{name} crop: no plain background found, the whole {name} photo was used")
    img = prepare_reference(img, what)
    return img if options is None else (img, options.within(size, box))


def edit_mask(mask, size: Tuple[int, int], notes: List[str]) -> np.ndarray:
    """The mask of an edit as a bool array at the photo's ``size``; one of another size is
    resized (a note says so). None or an empty mask: ``EmptyMaskError``."""
    if mask is None or (isinstance(mask, str) and not mask.strip()):
        raise M.EmptyMaskError(
            "no mask given: draw or upload a mask (the region to fill, painted on the photo or white in a mask image)")
    m, note = M.fit_mask(M.load_mask(mask), size)
    if note:
        notes.append(note)
    if not m.any():
        raise M.EmptyMaskError(
            "the mask is empty: draw or upload a mask with the region to fill painted (or white in a mask image)")
    return m


def resolve_base(engine, requested: Optional[str], notes: List[str]):
    """The base model asked for; when none: the inpainting one if it can be loaded, else the default."""
    if requested:
        return engine.base_model(requested)
    name = inpainting_base_model(engine)
    if name is not None:
        try:
            return engine.base_model(name)
        except ModelUnavailableError:
            notes.append(f"the inpainting model '{name}' is not available (not downloaded); "
                         "latent blending with the default base model was used instead")
    return engine.base_model(engine.defaults["base_model"])


def latent_mask(mask: np.ndarray, f: int):
    """bool (H, W) at generation size -> (1, 1, H/f, W/f) float: 1 where any pixel of the
    f x f block changes."""
    import torch

    h, w = mask.shape
    m = mask.reshape(h // f, f, w // f, f).any(axis=(1, 3))
    return torch.from_numpy(m.astype(np.float32))[None, None]


def generation_inputs(photo: Image.Image, alpha: np.ndarray, max_side: int, notes: List[str]):
    """((gw, gh), the photo at generation size, the bool mask at generation size)."""
    W, H = photo.size
    gw, gh = generation_size(W, H, max_side)
    if max(W, H) > max_side:
        notes.append(f"the {W}x{H} photo was generated at {gw}x{gh}; the new region is upscaled into the full-size photo")
    photo_gen = photo.resize((gw, gh), Image.LANCZOS) if (gw, gh) != (W, H) else photo
    interp = cv2_area if (gw * gh) < (W * H) else cv2_linear
    gen_mask = interp(alpha, (gw, gh)) > 0
    if not gen_mask.any():  # a sliver that vanished at generation size: keep at least its pixel
        ys, xs = np.nonzero(alpha)
        gen_mask[min(gh - 1, int(ys.mean() * gh / H)), min(gw - 1, int(xs.mean() * gw / W))] = True
    return (gw, gh), photo_gen, gen_mask


def inpainting_hook(engine, base, photo_gen: Image.Image, gen_mask: np.ndarray):
    """(method name, the conditioning's inpainting hook) for ``base``'s UNet."""
    import torch

    f = base.vae_scale_factor
    m_lat = latent_mask(gen_mask, f).to(engine.device)
    photo_t = image_to_tensor(photo_gen)
    if base.inpainting:
        pix = torch.from_numpy(gen_mask.astype(np.float32))[None, None]
        masked = photo_t * (1 - pix) + 0.5 * pix  # masked pixels -> 0 in [-1, 1]
        return METHOD_INPAINT, MaskedImageChannels(m_lat, engine.encode_latents(base, masked))
    z0 = engine.encode_latents(base, photo_t).to(engine.device, torch.float32)
    return METHOD_BLEND, LatentBlend(z0, m_lat)


def cv2_area(a: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(a, size, interpolation=cv2.INTER_AREA)


def cv2_linear(a: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(a, size, interpolation=cv2.INTER_LINEAR)


# ----------------------------------------------------------------------------- the shared core
@dataclass
class FilledRegion:
    """What ``fill_masked_region`` made: the pictures pasted into the photo and how."""

    images: List[Image.Image]  # at the photo's own size
    alpha: np.ndarray  # the paste alpha (photo size)
    generation_size: Tuple[int, int]
    method: str  # METHOD_INPAINT | METHOD_BLEND
    base_model: str
    sampler: Sampler
    seeds: List[int]
    timings: Dict[str, float] = field(default_factory=dict)
    reference: Dict[str, Any] = field(default_factory=dict)  # the reference builder's info entries


# Extra ControlNets of a run, made once the generation size (w, h) is known (try-on's pose).
ControlsAt = Callable[[Tuple[int, int]], Sequence[ControlInput]]


def fill_masked_region(
    engine,
    s: FillSettings,
    photo: Image.Image,
    mask: np.ndarray,
    reference: Image.Image,
    *,
    requested_base: Optional[str],
    max_side: int,
    notes: List[str],
    timings: Dict[str, float],
    controls: Optional[ControlsAt] = None,
    progress: Progress = None,
    options: Optional[ReferenceOptions] = None,
) -> FilledRegion:
    """The region ``mask`` (bool, photo size) of ``photo`` filled with the content of
    ``reference`` (as encoded), one ``Engine.generate`` call; every input already checked.
    ``requested_base`` None: the inpainting model when configured (see ``resolve_base``);
    ``options``: the reference's (default: ``ReferenceOptions.of(s)``)."""
    alpha = M.soften_mask(mask, s.dilation, s.feather)
    (gw, gh), photo_gen, gen_mask = generation_inputs(photo, alpha, max_side, notes)
    sampler = sampler_for(s, gw, gh)
    base = resolve_base(engine, requested_base, notes)
    control_inputs = list(controls((gw, gh))) if controls is not None else []
    options = ReferenceOptions.of(s) if options is None else options
    built = build(engine, s, [reference], options, controls=control_inputs, timings=timings, size=(gw, gh))
    with timed(timings, "encode_image"):
        method, inpainting = inpainting_hook(engine, base, photo_gen, gen_mask)
    conditioning = replace(built.conditioning, inpainting=inpainting)
    gen = engine.generate(base.name, conditioning, sampler, progress=progress)
    with timed(timings, "composite"):
        images = [M.composite(photo, img, alpha) for img in gen.images]
    timings.update(gen.timings)
    return FilledRegion(images, alpha, (gw, gh), method, base.name, sampler, gen.seeds, timings, built.info)


def region_info(s: FillSettings, photo: Image.Image, filled: FilledRegion, notes: List[str]) -> dict:
    """The part of ``TaskResult.info`` both edit tasks report."""
    sampler = filled.sampler
    return {
        "seeds": filled.seeds, "width": photo.width, "height": photo.height,
        "generation_size": filled.generation_size, "method": filled.method, "base_model": filled.base_model,
        "seecoder": s.seecoder, "steps": sampler.steps, "guidance": sampler.guidance,
        "scheduler": sampler.scheduler, **filled.reference, "notes": notes,
        "timings": filled.timings, **lora_info(sampler),
    }


# ----------------------------------------------------------------------------- the task
@holds_models
def edit_with_reference(
    engine,
    photo,
    mask,
    reference,
    settings: Optional[EditSettings] = None,
    progress: Progress = None,
) -> TaskResult:
    """Fill the region ``mask`` of ``photo`` with the content of ``reference``. ``mask``: a
    mask image (an existing file path, PIL, array; white or painted = change), resized to the
    photo when its size differs. Returns the edited images at the photo's size, and as
    ``extras`` the paste mask and the reference as encoded."""
    requested = settings or EditSettings()
    s = begin(engine, requested)
    max_side = check_max_side(s.max_side)
    M.check_soften(s.dilation, s.feather)
    notes: List[str] = []

    photo_img = load_photo(photo)
    check_edit_work(s, photo_img, max_side)
    if reference is None:
        raise InputImageError("no reference image given: please upload the image whose content fills the mask")
    reference_img = load_image(reference, "reference image")
    mask_bool = edit_mask(mask, photo_img.size, notes)

    t_start = time.perf_counter()
    timings: Dict[str, float] = {}
    reference_used, options = reference_as_encoded(reference_img, s.crop_reference, notes,
                                                   options=ReferenceOptions.of(s))
    filled = fill_masked_region(
        engine, s, photo_img, mask_bool, reference_used, requested_base=requested.base_model,
        max_side=max_side, notes=notes, timings=timings, progress=progress, options=options,
    )
    timings["total"] = time.perf_counter() - t_start
    info = {**region_info(s, photo_img, filled, notes), "mask": MASK_IMAGE}
    return TaskResult(filled.images, [M.mask_to_image(filled.alpha), reference_used], info)


__all__ = [
    "EditSettings", "FillSettings", "FilledRegion", "METHOD_BLEND", "METHOD_INPAINT", "edit_with_reference",
    "fill_masked_region", "generation_size", "inpainting_base_model",
]
