"""Virtual Try-On: dress the person of a photo in the garment of another photo.

Inputs: a person photo, a garment photo and the region to change, either a mask image (white,
or painted pixels of a transparent layer, = change) or an automatic mask ("upper body",
"lower body", "full outfit") drawn from the person's OpenPose body keypoints
(``prompt_free.masks``).

Generation
* Condition: the SeeCoder embeddings of the garment photo (cropped to the garment itself when
  ``crop_garment``: background estimated from the border colour).
* Pose: an openpose ControlNet with the person's skeleton as hint keeps the body pose
  (``pose_control``; when the detector finds nobody the run goes on without it, with a note).
* Inpainting: with a 9-channel SD inpainting UNet (``inpainting: true`` in checkpoints.yaml;
  the first such base model is the default) the UNet gets [mask, masked-image latents] as extra
  input channels (``conditioning.MaskedImageChannels``). With a standard base model, latent
  blending (``conditioning.LatentBlend``): after every step the latents outside the mask are
  replaced by the original image's latents noised to the step's timestep (the run's own initial
  noise), and by the clean latents after the last step.
* Size: generation at the person photo's aspect ratio, both sides multiples of 64, the long
  side ``max(long side, 512)`` capped at ``max_side`` (default 768, at most 1536). The result is
  resized back to the photo's own size and pasted into it with the feathered paste alpha of
  ``masks.soften_mask``: pixels farther than dilation + feathering from the mask are the
  photo's own, bit for bit. Large photos (up to ``settings.MAX_IMAGE_PIXELS``) are accepted: the
  generation runs at ``max_side`` and only the masked region is upscaled into the full-size
  photo (``info["notes"]`` says so).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from .. import masks as M
from .. import settings
from ..conditioning import Conditioning, LatentBlend, MaskedImageChannels
from ..errors import ConfigError, InputImageError, ModelUnavailableError
from ..images import check_min_side, image_to_tensor, load_image, prepare_reference
from .common import Progress, SamplerSettings, TaskResult, begin, check_work, holds_models, sampler_for, timed
from ..sampling import ControlInput
from .controls import control_kind

MASK_IMAGE = "mask image"  # mask mode meaning "use the given mask image"
DEFAULT_MAX_SIDE = int(settings.TRYON_MAX_SIDE.default)
GEN_MIN_LONG_SIDE = 512  # small photos are generated at least this large (SD works poorly below)
DETECT_SIDE = 768  # the pose detector runs on a copy at most this large
METHOD_INPAINT, METHOD_BLEND = "inpainting UNet", "latent blending"


@dataclass
class TryOnSettings(SamplerSettings):
    """Try-on settings. ``base_model`` None: the first ``inpainting: true`` base model of the
    registry when it can be loaded, else the profile's default (latent blending).
    ``controlnet`` None: the default ControlNet when it is an openpose one, else the first
    openpose ControlNet. ``mask_mode`` is used when no mask image is given. The size is the
    person photo's (``max_side`` caps the generation), so width/height are not used."""

    width: Optional[int] = None
    height: Optional[int] = None
    controlnet: Optional[str] = None
    pose_control: bool = True
    control_scale: float = 1.0
    mask_mode: str = M.UPPER_BODY
    dilation: int = 8
    feather: int = 8
    crop_garment: bool = True
    max_side: int = DEFAULT_MAX_SIDE
    annotator_dir: Optional[str] = None  # pose detector weights; None: env PFD_ANNOTATOR_DIR, then the hub


# ----------------------------------------------------------------------------- helpers
def generation_size(width: int, height: int, max_side: int = DEFAULT_MAX_SIDE) -> Tuple[int, int]:
    """Generation size for a person photo: both sides multiples of 64, the photo's aspect
    ratio as closely as possible, the long side near max(long side, 512) but <= max_side."""
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


def pose_controlnet(engine) -> Optional[str]:
    """The ControlNet used to keep the pose: the default one when it is an openpose
    ControlNet, else the first openpose ControlNet of the registry."""
    reg = engine.registry
    default = reg.defaults.get("controlnet")
    names = reg.names("controlnets")
    if default in names and control_kind(engine, default) == "openpose":
        return default
    return next((n for n in names if control_kind(engine, n) == "openpose"), None)


def load_person(person) -> Image.Image:
    return check_min_side(load_image(person, "person photo"), "person photo")


def detect_people(person: Image.Image, annotator_dir=None, *, engine, auto_mask: bool = True, pose_control: bool = False):
    """OpenPose body keypoints of ``person`` in its own pixel coordinates (detection runs on a
    copy at most DETECT_SIDE px, with the body network ``engine`` holds). Missing detector
    weights -> ModelUnavailableError that says how to do without (automatic mask, pose control)."""
    from ..detectors import pose_keypoints

    small = person
    if max(person.size) > DETECT_SIDE:
        s = DETECT_SIDE / max(person.size)
        small = person.resize((max(1, round(person.width * s)), max(1, round(person.height * s))), Image.BICUBIC)
    try:
        people = pose_keypoints(engine, small, annotator_dir)
    except ModelUnavailableError as e:
        needs, how = [], []
        if auto_mask:
            needs.append("the automatic mask")
            how.append("paint or upload the mask instead")
        if pose_control:
            needs.append("pose control")
            how.append("untick 'Keep pose' (pose_control=False) to run without pose control")
        # the detector's advice about ready-made control maps does not apply to try-on
        msg = getattr(e, "problem", str(e)).rstrip(". ")
        raise ModelUnavailableError(
            f"{msg}. The pose detector is needed for {' and for '.join(needs) or 'this'}: "
            f"{', and '.join(how) or 'provide its weights'}."
        ) from None
    return M.scale_keypoints(people, person.width / small.width, person.height / small.height)


@holds_models
def auto_mask(engine, person, mode: str = M.UPPER_BODY, *, annotator_dir=None, people=None) -> Image.Image:
    """The automatic mask of ``mode`` for a person photo, at the photo's size (white = change),
    e.g. to show it in an editor before generating. Raises NoPersonError when nobody is found."""
    img = person if isinstance(person, Image.Image) else load_person(person)
    mode = M.normalize_mode(mode)
    if people is None:
        people = detect_people(img, annotator_dir, engine=engine)
    return M.mask_to_image(M.mask_from_keypoints(people, img.size, mode))


def pose_map(people, size: Tuple[int, int], src_size: Tuple[int, int]) -> Image.Image:
    """An OpenPose body skeleton image (the openpose ControlNet's hint) at ``size`` from
    keypoints in ``src_size`` pixel coordinates; only the most prominent person is drawn."""
    from controlnet_aux.open_pose.body import Keypoint
    from controlnet_aux.open_pose.util import draw_bodypose

    w, h = size
    canvas = np.zeros((h, w, 3), np.uint8)
    p = M.pick_person(people)
    if p is not None:
        kps = [None if np.isnan(x) else Keypoint(x / src_size[0], y / src_size[1]) for x, y in p]
        canvas = draw_bodypose(canvas, kps)
    return Image.fromarray(canvas)


def _resolve_base(engine, requested: Optional[str], notes: List[str]):
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


def _latent_mask(mask: np.ndarray, f: int):
    """bool (H, W) at generation size -> (1, 1, H/f, W/f) float: 1 where any pixel of the
    f x f block changes."""
    import torch

    h, w = mask.shape
    m = mask.reshape(h // f, f, w // f, f).any(axis=(1, 3))
    return torch.from_numpy(m.astype(np.float32))[None, None]


# ----------------------------------------------------------------------------- the task
@holds_models
def virtual_tryon(
    engine,
    person,
    garment,
    mask=None,
    settings: Optional[TryOnSettings] = None,
    progress: Progress = None,
) -> TaskResult:
    """Dress ``person`` in ``garment``. ``mask``: a mask image (an existing file path, PIL,
    array; white or painted = change), or a mask mode string (upper body / lower body / full
    outfit; "mask image" without an image is an error); None uses ``settings.mask_mode``.
    Returns the try-on images at the person photo's size, and as ``extras`` the paste mask,
    the pose hint (when used) and the garment as encoded."""
    requested = settings or TryOnSettings()
    s = begin(engine, requested)
    max_side = check_max_side(s.max_side)
    control_scale, controlnet = _check_pose_control(engine, s)
    notes: List[str] = []

    # ---- inputs
    if person is None:
        raise InputImageError("no person photo given: please upload a photo of the person to dress")
    person_img = load_person(person)
    check_work([(sampler_for(s, *generation_size(*person_img.size, max_side)), int(controlnet is not None))])
    if garment is None:
        raise InputImageError("no garment image given: please upload a photo of the garment")
    garment_img = load_image(garment, "garment image")
    mode, user_mask = _mask_request(mask, s.mask_mode, person_img.size)
    M.check_soften(s.dilation, s.feather)

    t_start = time.perf_counter()
    timings = {}
    # ---- pose and mask
    people = None
    if mode is not None or controlnet is not None:
        with timed(timings, "pose"):
            people = detect_people(person_img, s.annotator_dir, engine=engine, auto_mask=mode is not None,
                                   pose_control=controlnet is not None)
    mask_bool = M.mask_from_keypoints(people, person_img.size, mode) if mode is not None else user_mask
    if controlnet is not None and M.pick_person(people) is None:
        notes.append("no person was found by the pose detector: generated without pose control")
        controlnet = None
    alpha = M.soften_mask(mask_bool, s.dilation, s.feather)
    (gw, gh), person_gen, gen_mask = _generation_inputs(person_img, alpha, max_side, notes)
    sampler = sampler_for(s, gw, gh)
    garment_used = _garment(garment_img, s.crop_garment, notes)

    # ---- conditioning
    base = _resolve_base(engine, requested.base_model, notes)
    with timed(timings, "encode"):
        context, uncond = engine.encode_reference(garment_used, s.seecoder)
    controls, hint_img = [], None
    if controlnet is not None:
        hint_img = pose_map(people, (gw, gh), person_img.size)
        controls.append(ControlInput(engine.controlnet(controlnet), image_to_tensor(hint_img), control_scale))
    with timed(timings, "encode_image"):
        method, inpainting = _inpainting(engine, base, person_gen, gen_mask)

    gen = engine.generate(base.name, Conditioning(context, uncond, controls, inpainting=inpainting), sampler,
                          progress=progress)
    with timed(timings, "composite"):
        images = [M.composite(person_img, img, alpha) for img in gen.images]
    timings.update(gen.timings)
    timings["total"] = time.perf_counter() - t_start

    extras = [M.mask_to_image(alpha)] + ([hint_img] if hint_img is not None else []) + [garment_used]
    info = {
        "seeds": gen.seeds, "width": person_img.width, "height": person_img.height, "generation_size": (gw, gh),
        "method": method, "base_model": base.name, "seecoder": s.seecoder,
        "controlnet": controlnet, "mask": mode or MASK_IMAGE, "steps": sampler.steps, "guidance": sampler.guidance,
        "scheduler": sampler.scheduler, "notes": notes, "timings": timings,
    }
    return TaskResult(images, extras, info)


def _check_pose_control(engine, s: TryOnSettings) -> Tuple[float, Optional[str]]:
    """(scale, name) of the pose ControlNet; the name is None without pose control."""
    control_scale = float(settings.CONTROL_SCALE.check(s.control_scale, "pose control scale"))
    if not s.pose_control:
        return control_scale, None
    controlnet = s.controlnet or pose_controlnet(engine)
    if controlnet is None:
        raise ConfigError("no openpose ControlNet is configured in checkpoints.yaml: add one, or untick 'Keep pose'")
    engine.registry.entry("controlnets", controlnet)
    return control_scale, controlnet


def _mask_request(mask, mask_mode: str, size: Tuple[int, int]) -> Tuple[Optional[str], Optional[np.ndarray]]:
    """(automatic mask mode, None) or (None, the given mask at the photo's size)."""
    is_file = isinstance(mask, os.PathLike) or (isinstance(mask, str) and os.path.isfile(mask))
    if not is_file and (isinstance(mask, str) or mask is None):
        mode_name = mask if isinstance(mask, str) else mask_mode
        if mode_name is None or str(mode_name).strip().lower() in (MASK_IMAGE, "", "none", "drawn", "painted"):
            raise M.EmptyMaskError(
                "no mask given: paint the region to change on the person photo, upload a mask image "
                f"(white = change), or choose an automatic mask ({', '.join(M.MASK_MODES)})"
            )
        return M.normalize_mode(mode_name), None
    user_mask = M.load_mask(mask, size)
    if not user_mask.any():
        raise M.EmptyMaskError(
            "the mask is empty: paint the region to change (or upload a mask with the region in white), "
            "or choose an automatic mask"
        )
    return None, user_mask


def _generation_inputs(person: Image.Image, alpha: np.ndarray, max_side: int, notes: List[str]):
    """((gw, gh), the photo at generation size, the bool mask at generation size)."""
    W, H = person.size
    gw, gh = generation_size(W, H, max_side)
    if max(W, H) > max_side:
        notes.append(f"the {W}x{H} photo was generated at {gw}x{gh}; the new region is upscaled into the full-size photo")
    person_gen = person.resize((gw, gh), Image.LANCZOS) if (gw, gh) != (W, H) else person
    interp = cv2_area if (gw * gh) < (W * H) else cv2_linear
    gen_mask = interp(alpha, (gw, gh)) > 0
    if not gen_mask.any():  # a sliver that vanished at generation size: keep at least its pixel
        ys, xs = np.nonzero(alpha)
        gen_mask[min(gh - 1, int(ys.mean() * gh / H)), min(gw - 1, int(xs.mean() * gw / W))] = True
    return (gw, gh), person_gen, gen_mask


def _garment(garment: Image.Image, crop: bool, notes: List[str]) -> Image.Image:
    """The garment as SeeCoder sees it: cropped to the garment itself when asked."""
    if crop:
        garment, box = M.crop_garment(garment)
        if box is None:
            notes.append("garment crop: no plain background found, the whole garment photo was used")
    return prepare_reference(garment, "garment image")


def _inpainting(engine, base, person_gen: Image.Image, gen_mask: np.ndarray):
    """(method name, the conditioning's inpainting hook) for ``base``'s UNet."""
    import torch

    f = base.vae_scale_factor
    m_lat = _latent_mask(gen_mask, f).to(engine.device)
    person_t = image_to_tensor(person_gen)
    if base.inpainting:
        pix = torch.from_numpy(gen_mask.astype(np.float32))[None, None]
        masked = person_t * (1 - pix) + 0.5 * pix  # masked pixels -> 0 in [-1, 1]
        return METHOD_INPAINT, MaskedImageChannels(m_lat, engine.encode_latents(base, masked))
    z0 = engine.encode_latents(base, person_t).to(engine.device, torch.float32)
    return METHOD_BLEND, LatentBlend(z0, m_lat)


def cv2_area(a: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(a, size, interpolation=cv2.INTER_AREA)


def cv2_linear(a: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(a, size, interpolation=cv2.INTER_LINEAR)


__all__ = [
    "MASK_IMAGE", "TryOnSettings", "auto_mask", "detect_people", "generation_size",
    "inpainting_base_model", "pose_controlnet", "pose_map", "virtual_tryon",
]
