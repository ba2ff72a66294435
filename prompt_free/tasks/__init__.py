"""Tasks: user inputs -> engine calls -> images. One module per tab."""

from .common import TaskResult
from .compare import CompareResult, CompareSettings, compare
from .control import ControlSettings, ControlSpec, reference_control
from .edit import EditSettings, edit_with_reference
from .multi_reference import BLENDS, MultiReferenceSettings, Reference, multi_reference
from .tryon import TryOnSettings, virtual_tryon
from .variation import VariationSettings, image_variation

__all__ = [
    "BLENDS",
    "CompareResult",
    "CompareSettings",
    "ControlSettings",
    "ControlSpec",
    "EditSettings",
    "MultiReferenceSettings",
    "Reference",
    "TaskResult",
    "TryOnSettings",
    "VariationSettings",
    "compare",
    "edit_with_reference",
    "image_variation",
    "multi_reference",
    "reference_control",
    "virtual_tryon",
]
