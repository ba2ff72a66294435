"""``PromptFreePriorPipeline``: reference image(s) -> ``prompt_embeds`` / ``negative_prompt_embeds`` for
any SD 1.x diffusers pipeline, the shape of FLUX.1 Redux's prior for SeeCoder.

The arithmetic is the engine's (``prompt_free.mixing``): several references are mixed by the
Multi-Reference ``average`` blend (``blend_contexts``), then the strength is applied
(``with_strength``), in the order of ``tasks.reference.build``; one reference at strength 1 is the
encoded tensor itself, as in the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.utils import BaseOutput, replace_example_docstring

from .. import settings
from ..errors import InvalidSettingError
from ..mixing import AVERAGE, blend_contexts, with_strength
from .image_processor import SeeCoderImageProcessor
from .seecoder_model import SeeCoderModel

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from diffusers import StableDiffusionPipeline
        >>> from prompt_free import PromptFreePriorPipeline

        >>> # folders written by `prompt-free export --out pfd-export`
        >>> prior = PromptFreePriorPipeline.from_pretrained("pfd-export/prior")
        >>> pipe = StableDiffusionPipeline.from_pretrained("pfd-export/base", text_encoder=None, tokenizer=None)
        >>> embeds = prior("reference.jpg")
        >>> image = pipe(prompt_embeds=embeds.prompt_embeds, negative_prompt_embeds=embeds.negative_prompt_embeds,
        ...              guidance_scale=2.0, generator=torch.Generator().manual_seed(20)).images[0]

        >>> # two references mixed 3:1, at 80 % strength
        >>> embeds = prior(["cat.jpg", "sketch.png"], reference_weights=[0.75, 0.25], reference_strength=0.8)
        ```
"""

NO_TEXT_ENCODER = (
    "PromptFreePriorPipeline has no text encoder, so it takes no prompt: the reference image is the prompt. "
    "For text + image, encode the prompt with SD's CLIP text encoder and put its tokens before the prior's "
    "(torch.cat([text, prompt_embeds], 1), and the empty prompt's before negative_prompt_embeds; docs/diffusers.md), "
    "or use `prompt-free generate --prompt`"
)


@dataclass
class PromptFreePriorPipelineOutput(BaseOutput):
    """
    Output of `PromptFreePriorPipeline`.

    Args:
        prompt_embeds (`torch.Tensor`): (batch, 148, C) SeeCoder context, the `prompt_embeds` of an SD 1.x pipeline.
        negative_prompt_embeds (`torch.Tensor`): (batch, 148, C) SeeCoder's unconditional context, its
            `negative_prompt_embeds` (zeros, or the anime embedding).
    """

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor


class PromptFreePriorPipeline(DiffusionPipeline):
    r"""
    Prompt-Free Diffusion's prior (Xu et al., CVPR 2024): SeeCoder turns reference images into the text
    embeddings of a Stable Diffusion 1.x pipeline, which then runs without a text encoder.

    This model inherits from [`DiffusionPipeline`]. Check the superclass documentation for the generic methods
    implemented for all pipelines (downloading, saving, running on a particular device, etc.).

    Args:
        seecoder ([`SeeCoderModel`]): the image encoder, with its unconditional context.
        image_processor ([`SeeCoderImageProcessor`]): prepares the references as the engine does.
    """

    model_cpu_offload_seq = "seecoder"

    def __init__(self, seecoder: SeeCoderModel, image_processor: SeeCoderImageProcessor):
        super().__init__()
        self.register_modules(seecoder=seecoder, image_processor=image_processor)

    def check_inputs(self, image, reference_strength, prompt, reference_weights, num_images_per_prompt) -> List:
        """The references as a list, after checking every argument (nothing is encoded before)."""
        if prompt is not None:
            raise InvalidSettingError(NO_TEXT_ENCODER)
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        if not images or any(i is None for i in images):
            raise InvalidSettingError("give a reference image (a path, a PIL image, an array or bytes), or a list of them")
        if len(images) > settings.MAX_REFERENCES:
            raise InvalidSettingError(f"at most {settings.MAX_REFERENCES} references are mixed, got {len(images)}")
        weights = [1.0] * len(images) if reference_weights is None else list(reference_weights)
        if len(weights) != len(images):
            raise InvalidSettingError(f"reference_weights has {len(weights)} values for {len(images)} image(s): give one each")
        for i, w in enumerate(weights):
            settings.REFERENCE_WEIGHT.check(w, f"reference_weights[{i}]")
        if not any(float(w) > 0 for w in weights):
            raise InvalidSettingError("all reference_weights are 0: give at least one reference a weight above 0")
        settings.REFERENCE_STRENGTH.check(reference_strength)
        settings.NUM_IMAGES.check(num_images_per_prompt, "num_images_per_prompt")
        return [(img, float(w)) for img, w in zip(images, weights) if float(w) > 0]

    @torch.no_grad()
    def encode_image(self, image) -> torch.Tensor:
        """One reference -> its (1, 148, C) SeeCoder context."""
        pixels = self.image_processor.preprocess(image)[0]
        return self.seecoder(pixels.to(self._execution_device, self.seecoder.dtype))

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        image: Union[object, Sequence[object]],
        reference_strength: float = 1.0,
        prompt: Optional[str] = None,
        reference_weights: Optional[Sequence[float]] = None,
        num_images_per_prompt: int = 1,
        return_dict: bool = True,
    ):
        r"""
        Function invoked when calling the pipeline for generation.

        Args:
            image (`str`, `PIL.Image.Image`, `np.ndarray`, `bytes` or a list of them):
                The reference image(s). Several are mixed into one context by Prompt-Free Diffusion's
                Multi-Reference "average" blend: the weighted mean of their contexts (weights normalised to sum 1).
            reference_strength (`float`, *optional*, defaults to 1.0):
                How much of the reference the context carries, in [0, 2]: `uncond + s * (cond - uncond)`.
                0 is no reference at all, 1 the reference as encoded, above 1 exaggerates it (the app's
                "Reference strength"). It is not the guidance scale, which the SD pipeline applies.
            prompt (`str`, *optional*):
                Must be None: this prior has no text encoder (the error says how to combine text and image).
            reference_weights (`List[float]`, *optional*):
                One weight per image, each in [0, 2] (0 leaves an image out); default 1 each. Like FLUX Redux's
                `prompt_embeds_scale`, but normalised: only the ratios count.
            num_images_per_prompt (`int`, *optional*, defaults to 1):
                Rows of the returned embeddings (the same context repeated), for a batch of pictures.
            return_dict (`bool`, *optional*, defaults to `True`):
                Return a [`PromptFreePriorPipelineOutput`] instead of a plain tuple.

        Examples:

        Returns:
            [`PromptFreePriorPipelineOutput`] or `tuple`: `prompt_embeds` and `negative_prompt_embeds`, each
            (num_images_per_prompt, 148, C) in the SeeCoder's dtype, for `StableDiffusionPipeline(prompt_embeds=...,
            negative_prompt_embeds=..., guidance_scale=2.0)` and the other SD 1.x pipelines.
        """
        references = self.check_inputs(image, reference_strength, prompt, reference_weights, num_images_per_prompt)
        contexts = [self.encode_image(img) for img, _ in references]
        uncond = self.seecoder.unconditional.to(contexts[0].device, contexts[0].dtype)
        context = contexts[0]
        if len(contexts) > 1:  # one reference is used as encoded (tasks.reference._blend)
            context, uncond, _ = blend_contexts(contexts, uncond, [w for _, w in references], AVERAGE)
        context = with_strength(context, uncond, reference_strength)
        n = int(num_images_per_prompt)
        prompt_embeds, negative = context.repeat(n, 1, 1), uncond.repeat(n, 1, 1)
        self.maybe_free_model_hooks()
        if not return_dict:
            return prompt_embeds, negative
        return PromptFreePriorPipelineOutput(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative)


__all__ = ["PromptFreePriorPipeline", "PromptFreePriorPipelineOutput", "NO_TEXT_ENCODER"]
