"""``export``: the folders of ``prompt-free export``. ``OUT/prior`` is a ``PromptFreePriorPipeline``
(the engine's SeeCoder and unconditional context); ``OUT/base`` the base model as a diffusers
``StableDiffusionPipeline`` (``StableDiffusionInpaintPipeline`` for an inpainting base) without text
encoder, tokenizer or safety checker, with the scheduler Image Variation uses by default
(``sampling.make_scheduler(DEFAULT_SCHEDULER)``); ``OUT/controlnets/NAME`` each ControlNet asked for.
Every model comes from the engine (``Engine.seecoder`` / ``base_model`` / ``controlnet``), so a
profile's models, tiny ones included, export offline as the engine builds them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence

from ..errors import InvalidSettingError
from ..sampling import DEFAULT_SCHEDULER, make_scheduler
from .model_card import base_card, prior_card


@dataclass
class Exported:
    """What ``export`` wrote: the folders and the names of the models in them."""

    prior: Path
    base: Path
    seecoder: str
    base_model: str
    controlnets: Dict[str, Path] = field(default_factory=dict)


def folder_name(name: str) -> str:
    """A model's name as a folder name ("Tiny SD (other seed)" -> "Tiny-SD-other-seed")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"


def export(engine, out, seecoder: Optional[str] = None, base_model: Optional[str] = None,
           controlnets: Sequence[str] = ()) -> Exported:
    """Write ``out/prior``, ``out/base`` and ``out/controlnets/<name>`` from ``engine``'s models
    (``seecoder`` / ``base_model`` None: the profile's defaults, the base model the SeeCoder's entry
    pairs it with first). Names are checked before anything is written."""
    registry = engine.registry
    seecoder = seecoder or registry.defaults["seecoder"]
    registry.entry("seecoders", seecoder)
    base_model = base_model or registry.base_model_for(seecoder)
    registry.entry("base_models", base_model)
    for name in controlnets:
        registry.entry("controlnets", name)
    if len(set(map(folder_name, controlnets))) != len(controlnets):
        raise InvalidSettingError(f"ControlNets named twice (or to the same folder): {', '.join(controlnets)}")
    out = Path(out)
    made = Exported(out / "prior", out / "base", seecoder, base_model)
    _write_prior(engine, made, list(controlnets))
    _write_base(engine, made)
    for name in controlnets:
        made.controlnets[name] = path = out / "controlnets" / folder_name(name)
        engine.controlnet(name).save_pretrained(path, safe_serialization=True)
    return made


def _write_prior(engine, made: Exported, controlnets) -> None:
    from .image_processor import SeeCoderImageProcessor
    from .pipeline import PromptFreePriorPipeline
    from .seecoder_model import SeeCoderModel

    loaded = engine.seecoder(made.seecoder)
    model = SeeCoderModel.from_seecoder(loaded.model, loaded.unconditional)
    prior = PromptFreePriorPipeline(seecoder=model, image_processor=SeeCoderImageProcessor())
    prior.save_pretrained(made.prior, safe_serialization=True)
    card = prior_card(made.seecoder, engine.profile, made.base_model, [folder_name(c) for c in controlnets])
    (made.prior / "README.md").write_text(card, encoding="utf-8")


def _write_base(engine, made: Exported) -> None:
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    base = engine.base_model(made.base_model)
    cls = StableDiffusionInpaintPipeline if base.inpainting else StableDiffusionPipeline
    pipe = cls(vae=base.vae, text_encoder=None, tokenizer=None, unet=base.unet, scheduler=make_scheduler(DEFAULT_SCHEDULER),
               safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # "text_encoder=None cannot be saved": no text encoder is the point
    try:
        pipe.save_pretrained(made.base, safe_serialization=True)
    finally:
        diffusers_logging.set_verbosity(level)
    (made.base / "README.md").write_text(base_card(made.base_model, engine.profile, DEFAULT_SCHEDULER), encoding="utf-8")


__all__ = ["Exported", "export", "folder_name"]
