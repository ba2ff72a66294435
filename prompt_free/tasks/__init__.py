"""Tasks: user inputs -> engine calls -> images. One module per tab."""

from .common import TaskResult
from .variation import VariationSettings, image_variation

__all__ = ["TaskResult", "VariationSettings", "image_variation"]
from .control import ControlSettings, ControlSpec, reference_control  # noqa: E402

__all__ += ["ControlSettings", "ControlSpec", "reference_control"]
from .compare import CompareResult, CompareSettings, compare  # noqa: E402

__all__ += ["CompareResult", "CompareSettings", "compare"]
from .tryon import TryOnSettings, virtual_tryon  # noqa: E402

__all__ += ["TryOnSettings", "virtual_tryon"]
