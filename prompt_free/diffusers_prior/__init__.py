"""Prompt-Free Diffusion as a diffusers prior: ``SeeCoderModel`` (the encoder, a diffusers model),
``SeeCoderImageProcessor`` (the engine's reference preprocessing), ``PromptFreePriorPipeline``
(reference images -> ``prompt_embeds`` for any SD 1.x pipeline) and ``export`` (the folders
``prompt-free export`` writes). docs/diffusers.md explains the recipe and its parity with the engine."""

from .image_processor import SeeCoderImageProcessor
from .pipeline import PromptFreePriorPipeline, PromptFreePriorPipelineOutput
from .seecoder_model import SeeCoderModel

__all__ = ["PromptFreePriorPipeline", "PromptFreePriorPipelineOutput", "SeeCoderImageProcessor", "SeeCoderModel"]
