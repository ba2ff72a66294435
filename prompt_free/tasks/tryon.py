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
  input channels. With a standard base model, latent blending: after every step the latents
  outside the mask are replaced by the original image's latents noised to the step's timestep
  (the same noise as the run's initial latents), and by the clean latents after the last step.
* Size: generation at the person photo's aspect ratio, both sides multiples of 64, the long
  side ``max(long side, 512)`` capped at ``max_side`` (default 768, at most 1536). The result is
  resized back to the photo's own size and pasted into it with the feathered paste alpha of
  ``masks.soften_mask``: pixels farther than dilation + feathering from the mask are the
  photo's own, bit for bit. Large photos (up to ``images.MAX_PIXELS``) are accepted: the
  generation runs at ``max_side`` and only the masked region is upscaled into the full-size
  photo (``info["notes"]`` says so).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np
from PIL import Image

from .. import masks as M
from ..errors import ConfigError, InputImageError, InvalidSettingError, ModelUnavailableError
from ..images import MIN_SIDE, image_to_tensor, load_image, prepare_reference
from .common import TaskResult

MASK_IMAGE = "mask image"  # mask mode meaning "use the given mask image"
MASK_CHOICES = (MASK_IMAGE,) + M.MASK_MODES
DEFAULT_MAX_SIDE = 768
MAX_SIDE_LIMIT = 1536
MIN_MAX_SIDE = 64
GEN_MIN_LONG_SIDE = 512  # small photos are generated at least this large (SD works poorly below)
DETECT_SIDE = 768  # the pose detector runs on a copy at most this large
METHOD_INPAINT, METHOD_BLEND = "inpainting UNet", "latent blending"

Progress = Optional[Callable[[int, int], None]]


@dataclass
class TryOnSettings:
    """Try-on settings. ``base_model`` None: the first ``inpainting: true`` base model of the
    registry when it can be loaded, else the profile's default (latent blending).
    ``controlnet`` None: the default ControlNet when it is an openpose one, else the first
    openpose ControlNet. ``mask_mode`` is used when no mask image is given."""

    base_model: Optional[str] = None
    seecoder: Optional[str] = None
    controlnet: Optional[str] = None
    pose_control: bool = True
    control_scale: float = 1.0
    mask_mode: str = M.UPPER_BODY
    dilation: int = 8
    feather: int = 8
    crop_garment: bool = True
    guidance: float = 2.0
    steps: int = 50
    seed: int = 20
    num_images: int = 1
    scheduler: str = "DDIM"
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
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise InvalidSettingError(f"maximum generation size must be a number, got {v!r}") from None
    if f != f or not MIN_MAX_SIDE <= f <= MAX_SIDE_LIMIT:
        raise InvalidSettingError(f"maximum generation size must be between {MIN_MAX_SIDE} and {MAX_SIDE_LIMIT} px, got {v!r}")
    return int(f)


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
    from .control import control_kind

    reg = engine.registry
    default = reg.defaults.get("controlnet")
    names = reg.names("controlnets")
    if default in names and control_kind(engine, default) == "openpose":
        return default
    return next((n for n in names if control_kind(engine, n) == "openpose"), None)


def load_person(person) -> Image.Image:
    img = load_image(person, "person photo")
    if min(img.size) < MIN_SIDE:
        raise InputImageError(f"person photo is too small ({img.width}x{img.height}); use at least {MIN_SIDE}x{MIN_SIDE} pixels")
    return img


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


def _blend_hook(engine, scheduler_name: str, steps: int, z0, noise, m):
    """after_step for standard UNets: keep the generated latents inside the mask and the
    original's, noised to where the sampler now is, outside."""
    import torch

    from ..sampling import make_scheduler

    sched = make_scheduler(scheduler_name)
    sched.set_timesteps(steps, device=z0.device)
    ts = sched.timesteps
    keep = 1.0 - m

    def after_step(i, t, latents):
        if i + 1 < len(ts):  # after step i the latents are at the next timestep of the schedule
            known = sched.add_noise(z0, noise, ts[i + 1 : i + 2])
        else:
            known = z0
        return m * latents + keep * known.to(latents.dtype)

    return after_step


# ----------------------------------------------------------------------------- the task
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
    import torch

    from ..engine import validate_settings
    from ..sampling import ControlInput

    s = settings or TryOnSettings()
    notes: List[str] = []
    steps, guidance, num_images, seed = validate_settings(s.steps, s.guidance, s.num_images, s.seed, s.scheduler)
    max_side = check_max_side(s.max_side)
    seecoder = s.seecoder or engine.defaults["seecoder"]
    engine.registry.entry("seecoders", seecoder)
    if s.base_model:
        engine.registry.entry("base_models", s.base_model)
    try:
        control_scale = float(s.control_scale)
    except (TypeError, ValueError):
        raise InvalidSettingError(f"pose control scale must be a number, got {s.control_scale!r}") from None
    if not 0 <= control_scale <= 2:
        raise InvalidSettingError(f"pose control scale must be between 0 and 2, got {s.control_scale!r}")
    controlnet = None
    if s.pose_control:
        controlnet = s.controlnet or pose_controlnet(engine)
        if controlnet is None:
            raise ConfigError("no openpose ControlNet is configured in checkpoints.yaml: add one, or untick 'Keep pose'")
        engine.registry.entry("controlnets", controlnet)

    # ---- inputs (cheap checks first)
    if person is None:
        raise InputImageError("no person photo given: please upload a photo of the person to dress")
    person_img = load_person(person)
    if garment is None:
        raise InputImageError("no garment image given: please upload a photo of the garment")
    garment_img = load_image(garment, "garment image")
    mode = None
    if isinstance(mask, os.PathLike) or (isinstance(mask, str) and os.path.isfile(mask)):
        pass  # a mask image file
    elif isinstance(mask, str) or mask is None:
        mode_name = mask if isinstance(mask, str) else s.mask_mode
        if mode_name is None or str(mode_name).strip().lower() in (MASK_IMAGE, "", "none", "drawn", "painted"):
            raise M.EmptyMaskError(
                "no mask given: paint the region to change on the person photo, upload a mask image "
                f"(white = change), or choose an automatic mask ({', '.join(M.MASK_MODES)})"
            )
        mode = M.normalize_mode(mode_name)
        user_mask = None
    if mode is None:
        user_mask = M.load_mask(mask, person_img.size)
        if not user_mask.any():
            raise M.EmptyMaskError(
                "the mask is empty: paint the region to change (or upload a mask with the region in white), "
                "or choose an automatic mask"
            )
    M.check_soften(s.dilation, s.feather)

    t_start = time.perf_counter()
    timings = {}
    # ---- pose and mask
    people = None
    if mode is not None or controlnet is not None:
        t0 = time.perf_counter()
        people = detect_people(person_img, s.annotator_dir, engine=engine, auto_mask=mode is not None, pose_control=controlnet is not None)
        timings["pose"] = time.perf_counter() - t0
    if mode is not None:
        mask_bool = M.mask_from_keypoints(people, person_img.size, mode)
    else:
        mask_bool = user_mask
    if controlnet is not None and M.pick_person(people) is None:
        notes.append("no person was found by the pose detector: generated without pose control")
        controlnet = None
    alpha = M.soften_mask(mask_bool, s.dilation, s.feather)

    # ---- sizes
    W, H = person_img.size
    gw, gh = generation_size(W, H, max_side)
    if max(W, H) > max_side:
        notes.append(f"the {W}x{H} photo was generated at {gw}x{gh}; the new region is upscaled into the full-size photo")
    person_gen = person_img.resize((gw, gh), Image.LANCZOS) if (gw, gh) != (W, H) else person_img
    interp = cv2_area if (gw * gh) < (W * H) else cv2_linear
    alpha_gen = interp(alpha, (gw, gh))
    gen_mask = alpha_gen > 0
    if not gen_mask.any():  # a sliver that vanished at generation size: keep at least its pixel
        ys, xs = np.nonzero(alpha)
        gen_mask[min(gh - 1, int(ys.mean() * gh / H)), min(gw - 1, int(xs.mean() * gw / W))] = True

    # ---- garment
    garment_used = garment_img
    if s.crop_garment:
        garment_used, box = M.crop_garment(garment_img)
        if box is None:
            notes.append("garment crop: no plain background found, the whole garment photo was used")
    garment_used = prepare_reference(garment_used, "garment image")

    # ---- models and conditioning
    base = _resolve_base(engine, s.base_model, notes)
    t0 = time.perf_counter()
    cond, uncond = engine.encode_reference(garment_used, seecoder)
    timings["encode"] = time.perf_counter() - t0
    f = base.vae_scale_factor
    if gw % f or gh % f:
        raise InvalidSettingError(f"generation size {gw}x{gh} is not a multiple of the VAE factor {f}")
    m_lat = _latent_mask(gen_mask, f).to(engine.device)
    controls = []
    hint_img = None
    if controlnet is not None:
        hint_img = pose_map(people, (gw, gh), person_img.size)
        controls.append(ControlInput(engine.controlnet(controlnet), image_to_tensor(hint_img), control_scale))

    person_t = image_to_tensor(person_gen)
    extra = after_step = None
    t0 = time.perf_counter()
    if base.inpainting:
        method = METHOD_INPAINT
        pix = torch.from_numpy(gen_mask.astype(np.float32))[None, None]
        masked = person_t * (1 - pix) + 0.5 * pix  # masked pixels -> 0 in [-1, 1]
        masked_lat = engine.encode_latents(base, masked)
        extra = torch.cat([m_lat.to(masked_lat), masked_lat], dim=1).expand(num_images, -1, -1, -1)
    else:
        method = METHOD_BLEND
        z0 = engine.encode_latents(base, person_t).to(engine.device, torch.float32)
        seeds = [seed + i for i in range(num_images)]
        noise = torch.cat([
            torch.randn((1, 4, gh // f, gw // f), generator=torch.Generator().manual_seed(sd)) for sd in seeds
        ]).to(engine.device)  # the engine's initial noise of these seeds
        after_step = _blend_hook(engine, s.scheduler, steps, z0.expand(num_images, -1, -1, -1), noise, m_lat.to(z0))
    timings["encode_image"] = time.perf_counter() - t0

    gen = engine.generate(
        base.name, cond, uncond, width=gw, height=gh, seed=seed, num_images=num_images,
        steps=steps, guidance=guidance, scheduler=s.scheduler, controls=controls, progress=progress,
        extra_unet_channels=extra, after_step=after_step,
    )
    t0 = time.perf_counter()
    images = [M.composite(person_img, img, alpha) for img in gen.images]
    timings["composite"] = time.perf_counter() - t0
    timings.update(gen.timings)
    timings["total"] = time.perf_counter() - t_start

    extras = [M.mask_to_image(alpha)]
    if hint_img is not None:
        extras.append(hint_img)
    extras.append(garment_used)
    info = {
        "seeds": gen.seeds, "width": W, "height": H, "generation_size": (gw, gh),
        "method": method, "base_model": base.name, "seecoder": seecoder,
        "controlnet": controlnet, "mask": mode or MASK_IMAGE, "steps": steps, "guidance": guidance,
        "scheduler": s.scheduler, "notes": notes, "timings": timings,
    }
    return TaskResult(images, extras, info)


def cv2_area(a: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(a, size, interpolation=cv2.INTER_AREA)


def cv2_linear(a: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(a, size, interpolation=cv2.INTER_LINEAR)


__all__ = [
    "MASK_CHOICES", "MASK_IMAGE", "TryOnSettings", "auto_mask", "detect_people", "generation_size",
    "inpainting_base_model", "pose_controlnet", "pose_map", "virtual_tryon",
]
