"""Endpoints whose public parameters are written down, not inferred from a long signature.

How Gradio (6.31) names an endpoint's API parameters, the names ``gradio_client`` users pass
and ``tests/pins/api.json`` pins: ``Blocks.set_event_trigger`` calls
``_get_input_parameter_names(fn, ...)``, which takes ``utils.get_positional_input_parameters(fn)``:
the leading positional parameters of ``inspect.signature(fn)``, minus those Gradio fills in itself
(a parameter whose default is a ``gr.Progress`` is one). The i-th input component gets the i-th
name; ``get_api_info`` reports it, and a parameter with default ``None`` makes the input optional.
When Gradio calls the function it passes every value positionally, with the ``gr.Progress``
inserted at its place in the signature.

``inspect.signature`` honours a function's ``__signature__``. So ``endpoint`` builds the function
Gradio sees with an explicit signature: the public names in the order of ``inputs``, no defaults,
then ``progress=gr.Progress()``; it regroups the positional values into the tab's input groups
before calling the handler. The handler takes one argument per part (a value, or a group of
values) and ``progress``.

Cancel (Stop, ``job.cancel()``): Gradio 6.31 closes a running *generator* handler but leaves a
plain function running. So the function Gradio sees is a generator: it runs the handler in a
worker thread under a ``prompt_free.cancel`` token, waits on it with a short timeout, yielding
"no change" (``gr.skip()``) at every timeout so Gradio can close it, and yields the handler's
outputs at the end. Closing it runs its ``finally``, which cancels the token; the engine's loop
checks the token before every step (``sampling.denoise``), so the work stops at the next step
and frees the run lock. How many jobs of these endpoints one session may have queued or
running is bounded at submission (``prompt_free.app.session_limit``).

An input group is a dataclass of components (``InputGroup``): while the UI is built it holds the
components; in the handler, the same class holds their values (``dataclasses.replace``). A field
that is ``None`` has no component in this tab and is no input.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import logging
import os
import queue
import threading
from typing import Any, Callable, ClassVar, List, Mapping, Optional, Sequence, Tuple, Union

import gradio as gr

from prompt_free.cancel import CancelToken, cancellable
from prompt_free.errors import PromptFreeError
from prompt_free.previews import showing

from . import session_limit
from .previews import Latest, LivePreviews
from .zerogpu import gpu

log = logging.getLogger("prompt_free.ui")


def handle_errors(fn):
    """Library errors become gr.Error messages and one INFO log line with the request's settings;
    a refusal of the tab's own (a ``gr.Error``) one INFO line; anything unexpected one ERROR line
    with its traceback and a brief message. Gradio prints none of them again (``print_exception``
    off: the log already says it). The server keeps serving either way."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error as e:
            log.info("%s refused: %s | request: %s", fn.__name__, e.message, request_summary(args))
            e.print_exception = False
            raise
        except PromptFreeError as e:
            log.info("%s refused: %s | request: %s", fn.__name__, e, request_summary(args))
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:  # noqa: BLE001 - last line of defence for the server
            if type(e).__name__ == "OutOfMemoryError":
                log.warning("%s: out of memory | request: %s", fn.__name__, request_summary(args))
                raise gr.Error("Out of GPU memory: try a smaller size or fewer images.", print_exception=False) from None
            log.exception("unexpected error in %s | request: %s", fn.__name__, request_summary(args))
            raise gr.Error(f"Unexpected error ({type(e).__name__}); details are in the server log.",
                           print_exception=False) from None

    return wrapper


def request_summary(values, limit: int = 2000) -> str:
    """A request's values for the log: groups by field, files by their name only (never the
    server's directories), images and arrays by their size, long texts cut."""

    def short(v):
        if isinstance(v, InputGroup):  # a group of values (a dataclass or declared settings)
            return {name: short(x) for name, x in v.items() if x is not None}
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: short(getattr(v, f.name)) for f in dataclasses.fields(v) if getattr(v, f.name) is not None}
        if isinstance(v, (list, tuple)):
            return [short(x) for x in v]
        if isinstance(v, dict):
            return {k: short(x) for k, x in v.items()}
        if isinstance(v, str):
            if os.sep in v or (os.altsep and os.altsep in v):
                return f"file {os.path.basename(v)!r}"
            return v if len(v) <= 80 else v[:77] + "..."
        if isinstance(v, bytes):
            return f"<{len(v)} bytes>"
        if hasattr(v, "shape"):
            return f"<array {tuple(v.shape)}>"
        if hasattr(v, "size") and hasattr(v, "mode"):
            return f"<image {v.size[0]}x{v.size[1]} {v.mode}>"
        if v is None or isinstance(v, (bool, int, float)):
            return v
        return f"<{type(v).__name__}>"

    text = repr([short(v) for v in values])
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InputGroup:
    """Base of the dataclasses that group a tab's input components.

    ``API_NAMES`` maps a field to its public parameter name where the two differ. A group that
    is part of a task's request says what its values are in ``contribute`` (``task_endpoint``):
    by default its ``settings()`` join the task's settings."""

    API_NAMES: ClassVar[Mapping[str, str]] = {}

    def items(self) -> List[Tuple[str, Any]]:
        """(field name, component or value) of the fields this tab has, in field order."""
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def components(self) -> list:
        """The components, in field order (the endpoint's order)."""
        return [c for _, c in self.items()]

    def api_names(self, suffix: str = "") -> List[str]:
        return [self.API_NAMES.get(name, name) + suffix for name, _ in self.items()]

    def with_values(self, values: Sequence[Any]):
        """The same group holding ``values`` (in ``components()`` order) instead of components."""
        present = self.items()
        if len(values) != len(present):
            raise ValueError(f"{type(self).__name__}: {len(present)} values expected, got {len(values)}")
        return dataclasses.replace(self, **{name: v for (name, _), v in zip(present, values)})

    def suffixed(self, suffix: str) -> "Suffixed":
        """This group as an endpoint part whose public names end in ``suffix`` (``type1`` ...)."""
        return Suffixed(self, suffix)

    def contribute(self, request) -> None:
        """Adds this group's values (of a handler's group) to ``request`` (a ``task_endpoint.Request``)."""
        request.settings.update(self.settings())


@dataclasses.dataclass(frozen=True)
class Suffixed:
    group: InputGroup
    suffix: str


# A part of an endpoint: a single input (public name, component), a group, or a suffixed group.
Part = Union[Tuple[str, Any], InputGroup, Suffixed]


@dataclasses.dataclass(frozen=True)
class Endpoint:
    fn: Callable
    inputs: list
    parameter_names: List[str]


def _split(part: Part) -> Tuple[List[str], list, Callable[[list], Any]]:
    """(public names, components, values -> what the handler receives) of one part."""
    if isinstance(part, Suffixed):
        group = part.group
        return group.api_names(part.suffix), group.components(), group.with_values
    if isinstance(part, InputGroup):
        return part.api_names(), part.components(), part.with_values
    name, component = part
    return [name], [component], lambda values: values[0]


POLL_S = 0.2  # how often the generator returns to Gradio while the worker runs (cancel latency)


def run_cancellable(work: Callable[[], Any], pending: Optional[Callable[[], Any]] = None):
    """Generator: ``work()`` in a worker thread under a fresh ``CancelToken``; yields ``gr.skip()``
    every ``POLL_S`` while it runs (or ``pending()`` when that gives an update: a live preview),
    then its result (its exception is raised here). Closing the generator (Gradio's cancel)
    cancels the token; the worker stops at its next denoising step."""
    token = CancelToken()
    box: "queue.Queue" = queue.Queue(maxsize=1)
    context = contextvars.copy_context()  # gr.Progress and tqdm tracking follow the work

    def worker():
        try:
            with cancellable(token):
                box.put((True, work()))
        except BaseException as e:  # noqa: BLE001 - handed to the generator (or dropped after a cancel)
            box.put((False, e))

    thread = threading.Thread(target=context.run, args=(worker,), name="pfd-request", daemon=True)
    thread.start()
    try:
        while True:
            try:
                ok, value = box.get(timeout=POLL_S)
                break
            except queue.Empty:
                update = pending() if pending is not None else None
                yield gr.skip() if update is None else update
        if not ok:
            raise value
        yield value
    finally:
        token.cancel()  # a no-op once the work is done; after a cancel it stops at the next step


def endpoint(handler: Callable, *parts: Part, previews: Optional[LivePreviews] = None, appended: Sequence[Part] = (),
             work: Optional[Callable[..., float]] = None) -> Endpoint:
    """The function to give Gradio for ``handler`` and the ``inputs`` that go with it.

    ``handler(*per_part_values, progress=...)`` receives, for each part, its value (a single
    input) or its group holding values; library errors become ``gr.Error`` (``handle_errors``).
    The function is a cancellable generator (``run_cancellable``). ``previews``: the tab's live
    previews (``prompt_free.app.previews``): its checkbox is the parameter ``previews`` after the
    parts, consumed here (the handler does not see it); while the handler runs, its previews are
    yielded. ``appended``: parts added after the endpoints were published, public parameters
    after ``previews`` (the handler gets their values after the parts'), so calls that leave them
    out keep working. ``work(*per_part_values)``: the request's work in megapixel-steps (ZeroGPU).
    """
    names, inputs, spans = [], [], []

    def add(part_names, components, regroup=None):
        if regroup is not None:
            spans.append((len(inputs), len(inputs) + len(components), regroup))
        names.extend(part_names)
        inputs.extend(components)

    for part in parts:
        add(*_split(part))
    at = len(inputs) if previews is not None else None  # the previews checkbox's place
    if previews is not None:
        add(["previews"], [previews.checkbox])
    optional = len(names)  # the appended parameters: a call may leave each out, an empty image too
    for part in appended:
        add(*_split(part))
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate parameter names in {names}")
    checked = handle_errors(gpu(handler, work))  # on ZeroGPU in spaces.GPU; elsewhere the handler itself

    def call(*values):
        values, progress = list(values[:-1]), values[-1]
        if len(values) != len(inputs):
            raise TypeError(f"{handler.__name__}: {len(inputs)} values expected, got {len(values)}")
        args = [regroup(values[a:b]) for a, b, regroup in spans]
        latest = Latest() if at is not None and previews.enabled and bool(values[at]) else None

        def work():
            with showing(latest.put if latest is not None else None):  # in the worker: the engine's previews
                return checked(*args, progress=progress)

        def pending():
            preview = latest.take()
            return None if preview is None else previews.update(preview)

        yield from run_cancellable(work, pending if latest is not None else None)

    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    # Gradio makes a parameter whose component starts empty (an image) optional when its default
    # here is None; the others take their component's value as their default anyway.
    call.__signature__ = inspect.Signature(
        [inspect.Parameter(n, positional, **({"default": None} if i >= optional else {})) for i, n in enumerate(names)]
        + [inspect.Parameter("progress", positional, default=gr.Progress(track_tqdm=True))]  # downloads' bars too
    )
    call.__name__ = call.__qualname__ = handler.__name__
    call.__doc__ = None  # Gradio would show a docstring as the endpoint's API description
    setattr(call, session_limit.LIMITED, True)  # its jobs count against the session's limit
    return Endpoint(call, inputs, names)
