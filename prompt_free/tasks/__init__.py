"""Tasks: user inputs -> engine calls -> images. One module per tab."""

from .common import TaskResult
from .variation import VariationSettings, image_variation

__all__ = ["TaskResult", "VariationSettings", "image_variation"]
