"""ZeroGPU (Hugging Face Spaces): generation handlers run in ``spaces.GPU`` workers.

On a ZeroGPU Space (``SPACES_ZERO_GPU`` set, the ``spaces`` package installed) ``gpu(handler)``
wraps every endpoint's handler (``prompt_free.app.endpoint.endpoint``) in ``spaces.GPU(duration=...)``, the
duration estimated from the request itself (its task's ``TaskSpec.work``: steps, size, images,
ControlNets, comparison columns; ``seconds_for``). ZeroGPU runs the decorated call in a forked worker that loses what
it loads, so every model a user can select is loaded at start and placed on ``cuda`` (which
ZeroGPU emulates at that point): ``place_models``. Anywhere else both are no-ops and nothing
changes. ``import spaces`` must come before torch: app.py does it first.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

from prompt_free import settings

log = logging.getLogger("prompt_free.ui")


def spaces_module():
    """The ``spaces`` package on a ZeroGPU Space, else None."""
    if not settings.zero_gpu():
        return None
    try:
        import spaces
    except ImportError:
        log.warning("SPACES_ZERO_GPU is set but the 'spaces' package is not installed: running without ZeroGPU")
        return None
    return spaces


def seconds_for(work: Optional[float]) -> int:
    """GPU seconds for a request of ``work`` megapixel-steps (``TaskSpec.work``: pixels x steps x
    images x (1 + ControlNets) x columns) at ``settings.ZEROGPU_S_PER_WORK`` plus
    ``ZEROGPU_OVERHEAD_S``, within [``ZEROGPU_MIN_S``, ``ZEROGPU_MAX_S``]; unknown: the maximum."""
    if work is None:
        return settings.ZEROGPU_MAX_S
    seconds = settings.ZEROGPU_OVERHEAD_S + settings.ZEROGPU_S_PER_WORK * work
    return int(min(settings.ZEROGPU_MAX_S, max(settings.ZEROGPU_MIN_S, round(seconds))))


def gpu(handler: Callable, work: Optional[Callable[..., float]] = None) -> Callable:
    """``handler`` in ``spaces.GPU(duration=...)`` on ZeroGPU, the duration from ``work(*args)``
    (the request's work; the maximum when it cannot be told); ``handler`` itself elsewhere."""
    spaces = spaces_module()
    if spaces is None:
        return handler

    def duration(*args, **kwargs) -> int:
        try:
            return seconds_for(work(*args) if work is not None else None)
        except Exception:  # noqa: BLE001 - a bad request gets its message from the run, not from here
            return settings.ZEROGPU_MAX_S

    return spaces.GPU(duration=duration)(handler)


def place_models(engine, names: Optional[dict] = None) -> int:
    """On ZeroGPU: load every SeeCoder, base model and ControlNet of the profile now, on the
    engine's device (counts raised so none is evicted). Returns how many were loaded (0 elsewhere)."""
    if spaces_module() is None:
        return 0
    reg = engine.registry
    names = names or {k: reg.names(k) for k in ("seecoders", "base_models", "controlnets")}
    engine.max_counts["base_models"] = max(engine.max_counts["base_models"], len(names["base_models"]))
    engine.max_counts["controlnets"] = max(engine.max_counts["controlnets"], len(names["controlnets"]))
    loaders = {"seecoders": engine.seecoder, "base_models": engine.base_model, "controlnets": engine.controlnet}
    count = 0
    for kind, entries in names.items():
        for name in entries:
            loaders[kind](name)
            count += 1
    log.info("ZeroGPU: %d models loaded on %s at start", count, engine.device)
    return count
