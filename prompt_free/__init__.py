"""Prompt-Free Diffusion: image generation conditioned on a reference image instead of text."""

from .errors import (
    CheckpointError,
    ConfigError,
    InputImageError,
    InvalidSettingError,
    ModelUnavailableError,
    PromptFreeError,
    UnknownModelError,
)
from .formats import load_controlnet, load_unet
from .sampling import sample_latents
from .seecoder import SeeCoder, SeeCoderConfig, build_seecoder, load_seecoder

__all__ = [
    "CheckpointError",
    "ConfigError",
    "InputImageError",
    "InvalidSettingError",
    "ModelUnavailableError",
    "PromptFreeError",
    "SeeCoder",
    "SeeCoderConfig",
    "UnknownModelError",
    "build_seecoder",
    "load_controlnet",
    "load_seecoder",
    "load_unet",
    "sample_latents",
]
