"""The front end's side of the model tier: a task request in, the task's result out.

``TierClient.run(request, progress=..., preview=...)`` sends a ``catalog.TaskRequest`` (made
portable: image files as bytes) over a streaming handle, keyed by its base model
(``multiplexed_model_id``), hands each progress step and live preview to the callbacks as they
come, and returns the result and its tagged pictures as the in-process run would give them.

Cancel: when the caller's ``CancelToken`` (``prompt_free.cancel``: the app's worker thread runs
under one) is cancelled, the Serve call is cancelled; the replica stops before its next step.
Errors come back as the library's: the user's own (``PromptFreeError``) as raised in the
replica, an overfull tier as ``TierBusyError``, a replica lost mid-request as
``TierUnavailableError``; never a hang (a lost replica ends the stream with an error).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from .. import cancel
from ..errors import Cancelled, PromptFreeError, TierBusyError, TierUnavailableError
from . import payload

log = logging.getLogger("prompt_free.tier")

BUSY = "The model tier is busy (every replica working, its queue full): try again in a moment."
LOST = ("The model replica running this request stopped (it is being restarted): try again in a moment.")


@dataclass
class TierReply:
    """A finished request: the task's result and its tagged pictures (as in-process), and which
    replica ran it (``{"replica": Serve's replica id, "pid": its process}``)."""

    result: Any
    pictures: List[Any]
    replica: Dict[str, Any]


def routing_key(engine, request) -> str:
    """The request's base model as the task resolves it (``tasks.common.resolve_defaults``): the
    replicas that ran it before are preferred. ``engine``: the front end's (registry only)."""
    from ..tasks.common import resolve_defaults

    try:
        return resolve_defaults(engine, request.settings).base_model or ""
    except Exception:  # noqa: BLE001 - a bad name is the task's to report; any replica will do
        return ""


class TierClient:
    """Calls the tier's replicas through ``handle`` (``tier.start(...).handle``). Thread-safe:
    one client serves every request of the front end. ``served`` counts the requests each replica
    answered (by Serve's replica id); ``pids`` maps a replica id to its process."""

    def __init__(self, handle, engine=None) -> None:
        self._stream = handle.options(method_name="run", stream=True)
        self._apply = handle.options(method_name="apply")
        self.engine = engine
        self.served: collections.Counter = collections.Counter()
        self.pids: Dict[str, int] = {}
        self._lock = threading.Lock()

    def run(self, request, progress: Optional[Callable[..., None]] = None,
            preview: Optional[Callable[[Any], None]] = None, key: Optional[str] = None) -> TierReply:
        """Runs ``request`` (a ``catalog.TaskRequest``) on a replica; see the module docstring.
        ``key``: the routing key (default: ``routing_key`` with this client's engine)."""
        if key is None:
            key = routing_key(self.engine, request) if self.engine is not None else ""
        # no key (no engine, or a name the task will refuse): any replica; Serve refuses an empty id
        stream = self._stream.options(multiplexed_model_id=key) if key else self._stream
        call = stream.remote(request.portable(), preview is not None)
        token = cancel.current()
        remove = token.on_cancel(call.cancel) if token is not None else (lambda: None)
        replica: Dict[str, Any] = {}
        reply: Optional[TierReply] = None
        try:
            with _translated():
                for kind, value in call:  # read to its end: Serve counts the request until then
                    if kind == "replica":
                        replica = value
                    elif kind == "progress" and progress is not None:
                        progress(*value)
                    elif kind == "preview" and preview is not None:
                        preview(value)
                    elif kind == "error":
                        raise value
                    elif kind == "result":
                        reply = TierReply(*payload.unpack(value), replica)
        finally:
            remove()
        if reply is None:
            raise TierUnavailableError(LOST)  # the stream ended without a result
        with self._lock:
            self.served[replica.get("replica")] += 1
            self.pids[replica.get("replica")] = replica.get("pid")
        log.info("%s ran on replica %s (pid %s)", request.task, replica.get("replica"), replica.get("pid"))
        return reply

    def call(self, fn: Callable[..., Any], *args, timeout_s: float = 600.0) -> Any:
        """``fn(engine, *args)`` on a replica (``fn``: a library function, pickled by name); image
        files among ``args`` travel as their bytes. The same errors as ``run``."""
        from ..catalog import portable_value as portable  # the one rule of what a request's file becomes

        with _translated():
            return self._apply.remote(fn, tuple(portable(a) for a in args)).result(timeout_s=timeout_s)


@contextlib.contextmanager
def _translated():
    """Serve's and Ray's errors in the block as the library's."""
    from ray import exceptions as ray_errors
    from ray.serve import exceptions as serve_errors

    try:
        yield
    except ray_errors.RayTaskError as e:  # a plain call's error, raised in the replica
        if isinstance(e.cause, PromptFreeError):
            raise e.cause from None
        raise
    except serve_errors.BackPressureError:
        raise TierBusyError(BUSY) from None
    except serve_errors.RequestCancelledError:
        raise Cancelled("the request was cancelled") from None
    except (ray_errors.RayActorError, ray_errors.ActorUnavailableError, serve_errors.DeploymentUnavailableError):
        raise TierUnavailableError(LOST) from None
