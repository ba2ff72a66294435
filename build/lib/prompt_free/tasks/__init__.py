"""Tasks: user inputs -> engine calls -> images. One module per tab."""

from .common import TaskResult
from .compare import CompareResult, CompareSettings, compare
from .control import ControlSettings, ControlSpec, reference_control
from .tryon import TryOnSettings, virtual_tryon
from .variation import VariationSettings, image_variation

__all__ = [
    "CompareResult",
    "CompareSettings",
    "ControlSettings",
    "ControlSpec",
    "TaskResult",
    "TryOnSettings",
    "VariationSettings",
    "compare",
    "image_variation",
    "reference_control",
    "virtual_tryon",
]
