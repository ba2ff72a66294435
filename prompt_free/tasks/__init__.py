"""Tasks: user inputs -> engine calls -> images. One module per tab."""

from .common import TaskResult
from .compare import CompareResult, CompareSettings, compare
from .control import ControlSettings, ControlSpec, reference_control
from .edit import EditSettings, edit_with_reference
from .tryon import TryOnSettings, virtual_tryon
from .variation import VariationSettings, image_variation

__all__ = [
    "CompareResult",
    "CompareSettings",
    "ControlSettings",
    "ControlSpec",
    "EditSettings",
    "TaskResult",
    "TryOnSettings",
    "VariationSettings",
    "compare",
    "edit_with_reference",
    "image_variation",
    "reference_control",
    "virtual_tryon",
]
