"""Start from the reference (img2img): ``denoise_strength`` in (0, 1], declared once for the
tasks that make a picture from scratch (Image Variation, Reference + ControlNet and the
comparison through its settings, Multi-Reference).

At 1 (neutral) nothing is made: no image is read, no VAE runs, ``Engine.generate`` gets no
``start`` and the loop starts from pure noise exactly as before. Below 1 the init image (the
``init_image`` argument, else the reference; Multi-Reference: its first reference) is resized to
the output size (PIL Lanczos, as diffusers' ``VaeImageProcessor``; a different aspect is
stretched), encoded by the base model's VAE (the posterior's mean) and the run starts part way
into the schedule with the run's own seeded noise added there (``sampling.Start``: diffusers'
img2img rule). The inpainting tasks (Edit, Try-On) do not take it: they already start from their
own photo's latents and keep its unmasked part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from PIL import Image

from .. import settings as limits
from ..errors import InputImageError, InvalidSettingError
from ..images import image_to_tensor, load_image
from ..sampling import Start, no_step_message, start_index
from .fields import APPENDED, setting


@dataclass
class StartSettings:
    """Mixed into a task's settings (``class X(StartSettings, ..., SamplerSettings)``)."""

    denoise_strength: float = setting(
        limits.DENOISE_STRENGTH.default, range=limits.DENOISE_STRENGTH, section=APPENDED, cli="--denoise-strength",
        metavar="S", label="Denoise strength (start from the image)",
        help="start from the reference (or --init-image), noised part way, instead of pure noise: the part of the "
             "steps that is run (img2img); low keeps the image, 1 (default) is pure noise, as without it",
        ui_info="1 = pure noise (as without it). Lower: start from the init image (default: the reference) and keep "
                "more of it; 0.1 changes it a little",
        note="denoise strength {value}", png_note=("Denoising strength", "{value}"))


def wanted(s) -> bool:
    """Whether ``s`` asks to start from an image (a strength below 1)."""
    return float(getattr(s, "denoise_strength", 1.0)) != 1.0


def check_steps(s, sampler) -> None:
    """Refuse a strength that leaves no step of the sampler's to run (before any model loads)."""
    if wanted(s) and start_index(sampler.steps, s.denoise_strength) >= sampler.steps:
        raise InvalidSettingError(no_step_message(sampler.steps, float(s.denoise_strength)))


def start_from(engine, s, sampler, image: Any, what: str = "init image") -> Optional[Start]:
    """The run's ``Start`` from ``image`` at ``s.denoise_strength`` (None at 1: pure noise, the
    image not even read). ``image``: the init image or the reference (a path, bytes, PIL ...)."""
    if not wanted(s):
        return None
    if image is None:
        raise InputImageError("a denoise strength below 1 starts from an image: give an init image or a reference image")
    img = load_image(image, what)
    size = (sampler.width, sampler.height)
    if img.size != size:
        img = img.resize(size, Image.LANCZOS)
    base = engine.base_model(s.base_model)
    latents = engine.encode_latents(base, image_to_tensor(img))
    return Start(latents.float(), float(s.denoise_strength))


def start_info(s, init_image: Any) -> Dict[str, Any]:
    """What the run's info says about where it started (nothing at 1)."""
    if not wanted(s):
        return {}
    return {"start_from": "init image" if init_image is not None else "reference"}


__all__ = ["StartSettings", "check_steps", "start_from", "start_info", "wanted"]
