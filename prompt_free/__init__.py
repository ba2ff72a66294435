"""Prompt-Free Diffusion: image generation conditioned on a reference image instead of text.

The public API, listed once (``__all__``); each name is imported on first use, so
``import prompt_free.settings`` stays light.

Running tasks
    Engine                 models, device memory and caches; ``Engine.from_profile("real" | "tiny" | "auto")``
    image_variation        new images with the content and style of a reference (``VariationSettings``)
    reference_control      reference + one or two ControlNets (``ControlSettings``, ``ControlSpec``)
    multi_reference        several references blended (``MultiReferenceSettings``, ``Reference``)
    compare                Prompt-Free beside the Dual-ControlNet / IP-Adapter baselines (``CompareSettings``)
    edit_with_reference    fill a masked region of a photo with a reference (``EditSettings``)
    virtual_tryon          dress a person in a garment (``TryOnSettings``)
    TaskResult             what every task returns: ``images``, ``extras``, ``info`` (``CompareResult`` for compare)
    (the tasks are listed once, in ``prompt_free.catalog.TASKS``)

Pictures that say how they were made (``prompt_free.metadata``)
    read_metadata          the JSON record of a PNG written by the app or the CLI
    redo_call              the task call that makes a recorded picture again

Models, lower level
    load_seecoder, SeeCoder, SeeCoderConfig, build_seecoder    the image encoder
    load_unet, load_controlnet                                  SD-1.x UNets / ControlNets from any supported layout
    sample_latents                                              the paper's DDIM sampler

With diffusers (``prompt_free.diffusers_prior``, docs/diffusers.md; ``prompt-free export`` writes the folders)
    PromptFreePriorPipeline    reference image(s) -> ``prompt_embeds`` for any SD 1.x diffusers pipeline
    SeeCoderModel              SeeCoder as a diffusers model (``from_pretrained``, ``from_single_file``)

Errors (every one a user can cause; the message says how to fix it)
    PromptFreeError and its subclasses CheckpointError, ConfigError, UnknownModelError,
    ModelUnavailableError, InputImageError, InvalidSettingError, MetadataError

The command line is ``prompt-free`` / ``python -m prompt_free`` (``prompt_free.cli``).
"""

from __future__ import annotations

import importlib

from .catalog import public_names
from .version import __version__

# public name -> the module that defines it; the tasks' names come from their one list
_PUBLIC = {
    "Engine": ".engine",
    **{name: ".tasks" for name in public_names() if not name.isupper() and name not in ("TaskSpec", "TaskRequest")},
    "read_metadata": ".metadata",
    "redo_call": ".metadata",
    "MetadataError": ".metadata",
    "SeeCoder": ".seecoder",
    "SeeCoderConfig": ".seecoder",
    "build_seecoder": ".seecoder",
    "load_seecoder": ".seecoder",
    "load_unet": ".formats",
    "load_controlnet": ".formats",
    "sample_latents": ".sampling",
    "PromptFreePriorPipeline": ".diffusers_prior",
    "SeeCoderModel": ".diffusers_prior",
    "PromptFreeError": ".errors",
    "CheckpointError": ".errors",
    "ConfigError": ".errors",
    "UnknownModelError": ".errors",
    "ModelUnavailableError": ".errors",
    "InputImageError": ".errors",
    "InvalidSettingError": ".errors",
}
_RENAMED = {"read_metadata": "read"}  # public name -> name in its module

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'prompt_free' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name], __name__), _RENAMED.get(name, name))
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
