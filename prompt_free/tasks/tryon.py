"""Virtual Try-On: dress the person of a photo in the garment of another photo.

Inputs: a person photo, a garment photo and the region to change, either a mask image (white,
or painted pixels of a transparent layer, = change) or an automatic mask ("upper body",
"lower body", "full outfit") drawn from the person's OpenPose body keypoints
(``prompt_free.masks``).

Generation: the shared core of "Edit with a reference" (``tasks/edit.py:
fill_masked_region``, where the inpainting methods, generation size and bit-exact paste-back
are described) with the garment as reference, plus what try-on adds:
* the garment photo cropped to the garment itself when ``crop_garment`` (background estimated
  from the border colour);
* the automatic mask from the pose;
* pose: an openpose ControlNet with the person's skeleton as hint keeps the body pose
  (``pose_control``; when the detector finds nobody the run goes on without it, with a note).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from .. import masks as M
from .. import settings
from ..errors import ConfigError, InputImageError, ModelUnavailableError
from ..images import image_to_tensor, load_image
from ..sampling import ControlInput
from .common import Progress, TaskResult, begin, holds_models, timed
from .controls import control_kind
from .reference import ReferenceOptions
from .edit import (  # noqa: F401 - generation_size, inpainting_base_model, METHOD_*: try-on's public names too
    DEFAULT_MAX_SIDE,
    MASK_IMAGE,
    FillSettings,
    METHOD_BLEND,
    METHOD_INPAINT,
    check_edit_work,
    check_max_side,
    fill_masked_region,
    generation_size,
    inpainting_base_model,
    latent_mask as _latent_mask,
    load_photo,
    reference_as_encoded,
    region_info,
)

DETECT_SIDE = 768  # the pose detector runs on a copy at most this large


@dataclass
class TryOnSettings(FillSettings):
    """Try-on settings (base model, size, dilation and feathering: see ``FillSettings``).
    ``controlnet`` None: the default ControlNet when it is an openpose one, else the first
    openpose ControlNet. ``mask_mode`` is used when no mask image is given."""

    controlnet: Optional[str] = None
    pose_control: bool = True
    control_scale: float = 1.0
    mask_mode: str = M.UPPER_BODY
    crop_garment: bool = True
    annotator_dir: Optional[str] = None  # pose detector weights; None: env PFD_ANNOTATOR_DIR, then the hub


# ----------------------------------------------------------------------------- helpers
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
    return load_photo(person, "person photo")


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
    check_edit_work(s, person_img, max_side, int(controlnet is not None))
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
    garment_used, options = reference_as_encoded(garment_img, s.crop_garment, notes, "garment image",
                                                 ReferenceOptions.of(s))

    # ---- the shared edit, with the pose ControlNet made at the generation size
    hints: List[Image.Image] = []

    def pose_control(size):
        if controlnet is None:
            return []
        hints.append(pose_map(people, size, person_img.size))
        return [ControlInput(engine.controlnet(controlnet), image_to_tensor(hints[0]), control_scale)]

    filled = fill_masked_region(
        engine, s, person_img, mask_bool, garment_used, requested_base=requested.base_model,
        max_side=max_side, notes=notes, timings=timings,
        controls=pose_control, progress=progress, options=options,
    )
    timings["total"] = time.perf_counter() - t_start

    extras = [M.mask_to_image(filled.alpha)] + hints + [garment_used]
    info = {**region_info(s, person_img, filled, notes), "controlnet": controlnet, "mask": mode or MASK_IMAGE}
    return TaskResult(filled.images, extras, info)


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


__all__ = [
    "MASK_IMAGE", "TryOnSettings", "auto_mask", "detect_people", "generation_size",
    "inpainting_base_model", "pose_controlnet", "pose_map", "virtual_tryon",
]
