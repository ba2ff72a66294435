"""The one handler of every tab: its inputs' values -> a task request -> the task of the one list
(``prompt_free.catalog``) -> PNGs that say how they were made -> the tab's outputs.

A tab lists its endpoint's parts in parameter order; each says where its values go:

* an ``InputGroup`` (models, sampler, LoRAs, declared settings ...): ``group.contribute(request)``,
  by default its ``settings()`` join the task's settings;
* ``(name, component)``: the setting ``name``;
* ``ToCall(name, component, arg)``: the task call's argument ``arg`` (an image, a mode ...);
* ``Joined(parts, contribute)``: several parts whose values make one contribution together
  (the ControlNet panel's specs).

Settings declared after the endpoints were published (section ``APPENDED``) follow the
``previews`` parameter (``appended``), so the parameters published before keep their places.

The task runs where ``runner.current()`` said when the endpoint was built (in this process, or
on the model tier). The tab gives ``present(result, pictures, settings)``, the event's outputs. ZeroGPU's duration
comes from the same request (``TaskSpec.work``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from prompt_free.catalog import TaskRequest
from prompt_free.catalog import spec as task_spec

from . import runner as runners
from .endpoint import Endpoint, InputGroup, Suffixed, endpoint
from .previews import LivePreviews
from .widgets import progress_callback


@dataclass
class Request:
    """What a handler's values ask for: the task's settings (keywords) and its call's arguments."""

    settings: Dict[str, Any] = field(default_factory=dict)
    call: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToCall:
    """A single input that is an argument of the task call (public parameter ``name``)."""

    name: str
    component: Any
    arg: str


@dataclass(frozen=True)
class Joined:
    """Endpoint parts whose values make one contribution: ``contribute(request, *values)``."""

    parts: Tuple[Any, ...]
    contribute: Callable[..., None]


def _flatten(parts: Sequence[Any]) -> Tuple[List[Any], List[Tuple[int, int, Any]]]:
    """The endpoint's parts and, per tab part, the span of its values among them."""
    flat, spans = [], []
    for part in parts:
        inner = list(part.parts) if isinstance(part, Joined) else [
            (part.name, part.component) if isinstance(part, ToCall) else part]
        spans.append((len(flat), len(flat) + len(inner), part))
        flat += inner
    return flat, spans


def _contribute(part, values: Sequence[Any], request: Request) -> None:
    if isinstance(part, Joined):
        part.contribute(request, *values)
    elif isinstance(part, ToCall):
        request.call[part.arg] = values[0]
    elif isinstance(part, (InputGroup, Suffixed)):
        values[0].contribute(request)
    else:
        request.settings[part[0]] = values[0]


def task_endpoint(engine, task: str, *parts: Any, present: Callable[..., tuple],
                  check: Optional[Callable[[Request], None]] = None, previews: Optional[LivePreviews] = None,
                  appended: Optional[InputGroup] = None, progress_label: str = "Sampling") -> Endpoint:
    """The endpoint of the task ``task`` (``catalog.TASKS``) over ``parts`` (see the module docstring);
    ``check(request)`` may refuse a request the tab knows is impossible (``gr.Error``) before it runs.
    ``appended``: the controls of the settings added after the endpoints were published
    (``fields.APPENDED``), public parameters after ``previews``."""
    spec = task_spec(task)
    runner = runners.current()  # in this process, or on the model tier (app.py --ray-replicas)
    tail = [appended] if appended is not None and appended.items() else []
    flat, spans = _flatten([*parts, *tail])

    def request_of(values: Sequence[Any]) -> Request:
        request = Request()
        for a, b, part in spans:
            _contribute(part, values[a:b], request)
        if check is not None:
            check(request)
        return request

    def handler(*values, progress=None):
        request = request_of(values)
        settings = spec.settings_type(**request.settings)
        # the PNGs carry how they were made; uploads are recorded by name only (no server paths)
        result, pictures = runner.task(engine, TaskRequest(spec.name, settings, request.call),
                                       progress_callback(progress, progress_label))
        return present(result, pictures, settings)

    def work(*values) -> float:
        request = request_of(values)
        return spec.work(spec.settings_type(**request.settings), request.call)

    handler.__name__ = handler.__qualname__ = spec.name
    head = flat[: len(flat) - len(tail)]
    return endpoint(handler, *head, previews=previews, appended=tail, work=work)
