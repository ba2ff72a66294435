"""Where the app's work runs: in this process on the app's engine (the default), or on the
model tier (``app.py --ray-replicas``, ``prompt_free.scale``) through its client.

A runner has ``task(engine, request, progress) -> (result, pictures)``: ``request`` a
``catalog.TaskRequest``, ``progress(i, n[, note])`` or None; the pictures tagged with how they
were made (``metadata.tag``); and ``call(engine, fn, *args)``: ``fn(engine, *args)`` for the
app's other model work (a saved embedding, an automatic mask), ``fn`` a library function.
``build_app`` makes one current while the tabs are built; ``task_endpoint`` and the other
handlers take it then, so every tab's work goes through it.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterator, List, Optional, Tuple

from prompt_free import previews
from prompt_free.metadata import tag


class InProcess:
    """The work on the app's own engine."""

    def task(self, engine, request, progress) -> Tuple[Any, List[Any]]:
        result = request.run(engine, progress=progress)
        # uploads are recorded by name only (no server paths)
        return result, tag(engine, result, request.task, request.settings, request.call, keep_paths=False)

    def call(self, engine, fn: Callable[..., Any], *args) -> Any:
        return fn(engine, *args)


class OnTier:
    """The work sent to the tier (``prompt_free.scale.client.TierClient``); the live previews the
    tab asked for (``previews.showing``) come back from the replica."""

    def __init__(self, client) -> None:
        self.client = client

    def task(self, engine, request, progress) -> Tuple[Any, List[Any]]:
        reply = self.client.run(request, progress=progress, preview=previews.current())
        return reply.result, reply.pictures

    def call(self, engine, fn: Callable[..., Any], *args) -> Any:
        return self.client.call(fn, *args)


_current: contextvars.ContextVar = contextvars.ContextVar("prompt_free_runner", default=InProcess())


def current():
    return _current.get()


@contextlib.contextmanager
def using(runner) -> Iterator[None]:
    """The handlers built in the block run their work with ``runner`` (None: in process)."""
    reset = _current.set(runner or InProcess())
    try:
        yield
    finally:
        _current.reset(reset)
