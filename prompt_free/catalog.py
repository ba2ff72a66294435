"""The one list of tasks: what each is called, what it takes, what it costs.

The public API (``prompt_free.__all__``, ``prompt_free.tasks``), PNG metadata and its redo
(``prompt_free.metadata``), the command line, the app's tabs and endpoints, ZeroGPU's duration
estimate and the pixel pins all read ``TASKS``. A new task is one module under
``prompt_free/tasks/`` and one ``TaskSpec`` here (and a tab under ``prompt_free/app/`` if it has one).

This module stays light (no torch): a spec names its module, function and settings class, and
imports them on first use.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from .errors import InvalidSettingError

UNKNOWN_SIDE = 768  # a size a request leaves to an image (follow the control image, try-on): assume this
DEFAULT_STEPS = 50


def _no_controlnets(settings, call) -> int:
    return 0


def _listed_controls(settings, call) -> int:
    return len(call.get("controls") or getattr(settings, "controls", None) or ())


def _one_structure(settings, call) -> int:
    return 1


def _pose(settings, call) -> int:
    return int(bool(getattr(settings, "pose_control", False)))


def _methods(settings) -> int:
    return max(1, len(getattr(settings, "methods", None) or ()))


@dataclass(frozen=True)
class TaskSpec:
    """One task.

    name: its function's public name, the ``task`` of its PNG records. inputs: the call's
    arguments that hold images (besides ``settings``), in order. endpoint: the app's API name.
    types: other dataclasses its call or settings hold (rebuilt from PNG records).
    controlnets(settings, call) and runs(settings): for the work estimate."""

    name: str
    module: str  # under prompt_free.tasks
    settings_name: str
    inputs: Tuple[str, ...]
    label: str
    endpoint: str
    types: Tuple[str, ...] = ()
    controlnets: Callable[[Any, Mapping[str, Any]], int] = _no_controlnets
    runs: Callable[[Any], int] = field(default=lambda settings: 1)

    def _module(self):
        return importlib.import_module(f"prompt_free.tasks.{self.module}")

    @property
    def fn(self) -> Callable:
        return getattr(self._module(), self.name)

    @property
    def settings_type(self) -> type:
        return getattr(self._module(), self.settings_name)

    def work(self, settings, call: Optional[Mapping[str, Any]] = None) -> float:
        """The request's work in megapixel-steps (``tasks.common.work``'s formula) before
        anything is read: a size left to an image counts as ``UNKNOWN_SIDE``."""

        def number(v, default):
            try:
                return int(v) if v is not None else default
            except (TypeError, ValueError):
                return default

        side = lambda name: number(getattr(settings, name, None), UNKNOWN_SIDE)  # noqa: E731
        pixels = side("width") * side("height")
        steps = number(getattr(settings, "steps", None), DEFAULT_STEPS)
        images = number(getattr(settings, "num_images", None), 1)
        per_run = pixels / 1e6 * steps * images * (1 + self.controlnets(settings, call or {}))
        return per_run * self.runs(settings)

    def run(self, engine, settings, call: Mapping[str, Any], progress=None):
        """``fn(engine, **call, settings=settings, progress=progress)``."""
        return self.fn(engine, **call, settings=settings, progress=progress)


TASKS: Tuple[TaskSpec, ...] = (
    TaskSpec("image_variation", "variation", "VariationSettings", ("reference", "embedding", "init_image"), "Image Variation",
             "image_variation"),
    TaskSpec("reference_control", "control", "ControlSettings", ("reference", "controls", "embedding", "init_image"),
             "Reference + ControlNet",
             "reference_control", types=("ControlSpec",), controlnets=_listed_controls),
    TaskSpec("multi_reference", "multi_reference", "MultiReferenceSettings", ("references", "init_image"), "Multi-Reference",
             "multi_reference", types=("Reference", "ControlSpec"), controlnets=_listed_controls),
    TaskSpec("compare", "compare", "CompareSettings", ("reference", "structure", "init_image"), "Dual-ControlNet Comparison",
             "compare",
             controlnets=_one_structure, runs=_methods),
    TaskSpec("edit_with_reference", "edit", "EditSettings", ("photo", "mask", "reference"), "Edit with a Reference",
             "edit_reference"),
    TaskSpec("virtual_tryon", "tryon", "TryOnSettings", ("person", "garment", "mask"), "Virtual Try-On",
             "virtual_tryon", controlnets=_pose),
)
BY_NAME: Dict[str, TaskSpec] = {t.name: t for t in TASKS}

# Other public names of prompt_free.tasks: name -> module under prompt_free.tasks
EXTRA_NAMES = {
    "TaskResult": "common",
    "CompareResult": "compare",
    "ControlSpec": "control",
    "Reference": "multi_reference",
    "BLENDS": "multi_reference",
}


def spec(name: str) -> TaskSpec:
    """The task called ``name`` (``InvalidSettingError`` naming the known ones)."""
    try:
        return BY_NAME[name]
    except (KeyError, TypeError):
        raise InvalidSettingError(f"unknown task {name!r}; the tasks are {', '.join(BY_NAME)}") from None


def public_names() -> Dict[str, str]:
    """Every public name of ``prompt_free.tasks`` -> its module (functions, settings classes, the rest)."""
    names = {}
    for t in TASKS:
        names[t.name] = t.module
        names[t.settings_name] = t.module
    names.update(EXTRA_NAMES)
    return names


# ----------------------------------------------------------------------------- requests
@dataclass
class TaskRequest:
    """A task run as plain data: the task's name, its settings and the call's other arguments.

    ``portable()`` replaces image files by their bytes, so the request can be pickled and run in
    another process or on another machine with the same pixels (the images are decoded there by
    the same opener)."""

    task: str
    settings: Any
    call: Dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> TaskSpec:
        return spec(self.task)

    def run(self, engine, progress=None):
        return self.spec.run(engine, self.settings, self.call, progress=progress)

    def work(self) -> float:
        return self.spec.work(self.settings, self.call)

    def portable(self) -> "TaskRequest":
        """The same request with every image argument that is a file given as its bytes."""
        inputs = set(self.spec.inputs)
        call = {k: portable_value(v) if k in inputs else v for k, v in self.call.items()}
        settings = self.settings
        if getattr(settings, "controls", None):  # Multi-Reference's ControlSpecs hold images too
            settings = dataclasses.replace(settings, controls=tuple(portable_value(c) for c in settings.controls))
        from .tasks.fields import image_fields  # the image settings (e.g. the negative reference image)

        images = {name: portable_value(getattr(settings, name)) for name in image_fields(settings)}
        if images:
            settings = dataclasses.replace(settings, **images)
        return TaskRequest(self.task, settings, call)


IMAGE_FIELDS = ("image", "mask")
SETTING_KEY = "prompt_free.setting"  # tasks.fields.KEY (not imported: the catalog stays light)  # the fields of ControlSpec / Reference that hold images


class FileBytes(bytes):
    """An image file's bytes that remember the file: a run elsewhere records the input as the
    file it was (``fingerprints.input_record``: its name, and its path where paths are kept), so
    its PNG metadata is the one an in-process run writes."""

    def __new__(cls, data: bytes, path: str) -> "FileBytes":
        made = super().__new__(cls, data)
        made.path = path
        return made

    def __reduce__(self):
        return FileBytes, (bytes(self), self.path)


def portable_value(value):
    """``value`` as it travels to another process: a file as its bytes (``FileBytes``, which keep
    its path for the PNG record), lists, tuples and ``ControlSpec``-like dataclasses item by item;
    anything else as it is."""
    if isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
        with open(value, "rb") as f:
            return FileBytes(f.read(), os.fspath(value))
    if isinstance(value, (list, tuple)):
        return type(value)(portable_value(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = {f.name for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **{n: portable_value(getattr(value, n)) for n in IMAGE_FIELDS if n in names})
    return value
