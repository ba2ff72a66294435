"""Cancelling a running generation between two denoising steps.

A ``CancelToken`` is a flag: ``cancel()`` sets it (from any thread), ``check()`` raises
``Cancelled`` once it is set. A caller makes a token current for the work it starts with
``cancellable(token)`` (a context variable, so it follows the work into the engine without
being passed through every task); ``sampling.denoise`` calls ``check()`` before every step, the
one place the library looks. Nothing is killed: the step in progress finishes, the loop raises,
and the engine's run lock and the request's models are released on the way out.

Reading the flag is a Python attribute read: no device synchronisation, no change to pictures.

Stop also reaches the work before and after the steps: ``check()`` is called at every boundary of
it (an image read, a preprocessor run, each forward pass through ``Engine.on_device``, each
picture the VAE decodes). A token may carry a time limit for the work before the first step
(reading images, preprocessors, encoding the references; model loading does not count:
``paused()``): past it, the next boundary raises ``TimeLimitError``. The steps have no time
limit (their number is the user's, bounded by the work limit).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from typing import Callable, Iterator, Optional

from .errors import Cancelled, TimeLimitError

__all__ = ["CancelToken", "Cancelled", "TimeLimitError", "cancellable", "check", "current", "paused", "reachable",
           "steps_started"]


class CancelToken:
    """``limit_s``: seconds the work before the first denoising step may take (None: no limit)."""

    def __init__(self, limit_s: Optional[float] = None) -> None:
        self._event = threading.Event()
        self.limit_s = limit_s
        self._deadline = None if limit_s is None else time.monotonic() + limit_s
        self._pauses = 0
        self._listeners: list = []
        self._lock = threading.Lock()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener()

    def on_cancel(self, listener) -> "Callable[[], None]":
        """Call ``listener()`` once when the token is cancelled (at once if it already is): work
        that waits elsewhere (a call to another process) is cancelled with it. Returns a function
        that removes the listener (the work ended first)."""
        with self._lock:
            if not self._event.is_set():
                self._listeners.append(listener)
                return lambda: self._remove(listener)
        listener()
        return lambda: None

    def _remove(self, listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("the request was cancelled")
        if self._deadline is not None and not self._pauses and time.monotonic() > self._deadline:
            raise TimeLimitError(
                f"the work before sampling (reading the images, preprocessors, encoding the references) took longer "
                f"than {self.limit_s:g} s, this server's limit (PFD_PREPARE_LIMIT): try smaller images")

    def steps_started(self) -> None:
        """The steps begin: the time limit of the work before them no longer applies."""
        self._deadline = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent in the block (loading a model) does not count towards the limit."""
        t0 = time.monotonic()
        self._pauses += 1
        try:
            yield
        finally:
            self._pauses -= 1
            if self._deadline is not None:
                self._deadline += time.monotonic() - t0


_current: contextvars.ContextVar[Optional[CancelToken]] = contextvars.ContextVar("prompt_free_cancel", default=None)


def current() -> Optional[CancelToken]:
    return _current.get()


@contextlib.contextmanager
def cancellable(token: CancelToken) -> Iterator[CancelToken]:
    """Make ``token`` the one ``check()`` looks at while the block runs (in this thread/context)."""
    reset = _current.set(token)
    try:
        yield token
    finally:
        _current.reset(reset)


def check() -> None:
    """Raise ``Cancelled`` if the current token (if any) was cancelled."""
    token = _current.get()
    if token is not None:
        token.check()


def steps_started() -> None:
    """The current request's steps begin (``CancelToken.steps_started``)."""
    token = _current.get()
    if token is not None:
        token.steps_started()


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Model loading: its time does not count towards the current request's limit."""
    token = _current.get()
    if token is None:
        yield
    else:
        with token.paused():
            yield


def reachable(module):
    """Stop (and the time limit) reach inside one long forward pass of ``module`` (a SeeCoder
    encode of a large reference, a VAE decode): ``check()`` before each layer of its layer lists.
    Once per module; eager runs only (a compiled module would break its graph on the hook)."""
    import torch

    if not getattr(module, "_pfd_cancel_hooks", False):
        for layers in (m for m in module.modules() if isinstance(m, torch.nn.ModuleList)):
            for layer in layers:
                layer.register_forward_pre_hook(lambda _module, _args: check())
        module._pfd_cancel_hooks = True
    return module
