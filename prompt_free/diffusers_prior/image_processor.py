"""``SeeCoderImageProcessor``: a reference image as SeeCoder reads it, through the engine's own
steps (``prompt_free.images.prepare_reference`` then ``image_to_tensor``), as a transformers image
processor so that a diffusers pipeline saves and loads it (``preprocessor_config.json``)."""

from __future__ import annotations

from typing import List

import torch
from transformers.image_processing_utils import BaseImageProcessor, ImageProcessingMixin  # noqa: F401

# diffusers' pipeline loader finds a custom component's load method by looking its base classes
# up by name in the component's own module: ``ImageProcessingMixin`` must be importable from here
# (``seecoder_model`` has ``ModelMixin`` the same way).

from ..images import image_to_tensor, prepare_reference


class SeeCoderImageProcessor(BaseImageProcessor):
    r"""
    Prepares reference images for `SeeCoderModel` exactly as Prompt-Free Diffusion's engine does: RGB at
    native size (EXIF orientation applied, alpha on white, longer side bounded by
    `prompt_free.settings.MAX_REFERENCE_SIDE`), values in [0, 1], no resize to a fixed size and no
    mean/std normalisation (the official app's input). It has no options.
    """

    model_input_names = ["pixel_values"]

    def preprocess(self, images, **kwargs) -> List[torch.Tensor]:
        """One image (a path, PIL image, array or bytes) or a list of them -> a list of (1, 3, H, W)
        float32 tensors (one per image: their sizes may differ, SeeCoder reads each at its own).
        A missing, unreadable or too small image is an `prompt_free.errors.InputImageError`."""
        if kwargs:
            raise TypeError(f"SeeCoderImageProcessor.preprocess takes no options, got {sorted(kwargs)}")
        items = images if isinstance(images, (list, tuple)) else [images]
        return [image_to_tensor(prepare_reference(img, f"reference image {i + 1}" if len(items) > 1 else "reference image"))
                for i, img in enumerate(items)]


__all__ = ["SeeCoderImageProcessor"]
