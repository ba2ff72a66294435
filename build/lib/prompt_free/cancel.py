"""Cancelling a running generation between two denoising steps.

A ``CancelToken`` is a flag: ``cancel()`` sets it (from any thread), ``check()`` raises
``Cancelled`` once it is set. A caller makes a token current for the work it starts with
``cancellable(token)`` (a context variable, so it follows the work into the engine without
being passed through every task); ``sampling.denoise`` calls ``check()`` before every step, the
one place the library looks. Nothing is killed: the step in progress finishes, the loop raises,
and the engine's run lock and the request's models are released on the way out.

Reading the flag is a Python attribute read: no device synchronisation, no change to pictures.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from typing import Iterator, Optional

from .errors import Cancelled

__all__ = ["CancelToken", "Cancelled", "cancellable", "check", "current"]


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        self._event.set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("the request was cancelled")


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
