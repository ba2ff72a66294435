"""ZeroGPU (Hugging Face Spaces): generation handlers run in ``spaces.GPU`` workers.

On a ZeroGPU Space (``SPACES_ZERO_GPU`` set, the ``spaces`` package installed) ``gpu(handler)``
wraps every endpoint's handler (``prompt_free.app.endpoint.endpoint``) in ``spaces.GPU(duration=...)``, the
duration estimated from the request itself (steps, size, images, ControlNets, comparison
columns; ``estimate_seconds``). ZeroGPU runs the decorated call in a forked worker that loses what
it loads, so every model a user can select is loaded at start and placed on ``cuda`` (which
ZeroGPU emulates at that point): ``place_models``. Anywhere else both are no-ops and nothing
changes. ``import spaces`` must come before torch: app.py does it first.
"""

from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace
from typing import Any, Callable, Optional, Sequence

from prompt_free import settings

log = logging.getLogger("prompt_free.ui")
UNKNOWN_SIDE = 768  # a size the request leaves to an image (follow the control image, try-on): assume this


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


def _groups(args: Sequence[Any]):
    return [a for a in args if dataclasses.is_dataclass(a) and not isinstance(a, type)]


def estimate_seconds(args: Sequence[Any]) -> int:
    """GPU seconds for a handler's arguments (its input groups holding values): the request's work
    (``tasks.common.work``: pixels x steps x images x (1 + ControlNets), times the comparison's
    columns) at ``settings.ZEROGPU_S_PER_WORK`` plus ``ZEROGPU_OVERHEAD_S``, within
    [``ZEROGPU_MIN_S``, ``ZEROGPU_MAX_S``]."""
    from prompt_free.tasks.common import work

    groups = _groups(args)
    sampler = next((g for g in groups if hasattr(g, "steps") and hasattr(g, "guidance")), None)
    if sampler is None:
        return settings.ZEROGPU_MAX_S

    def number(v, default):
        try:
            return int(v) if v is not None else default
        except (TypeError, ValueError):
            return default

    controlnets = sum(1 for g in groups if hasattr(g, "kind") and getattr(g, "image", None) is not None)
    controlnets += sum(1 for g in groups if getattr(g, "keep_pose", False))  # try-on's pose ControlNet
    columns = next((len(g.methods()) for g in groups if callable(getattr(g, "methods", None))), 1)
    run = SimpleNamespace(width=number(getattr(sampler, "width", None), UNKNOWN_SIDE),
                          height=number(getattr(sampler, "height", None), UNKNOWN_SIDE),
                          steps=number(sampler.steps, int(settings.STEPS.default)),
                          num_images=number(getattr(sampler, "num_images", None), 1))
    seconds = settings.ZEROGPU_OVERHEAD_S + settings.ZEROGPU_S_PER_WORK * work(run, controlnets) * max(1, columns)
    return int(min(settings.ZEROGPU_MAX_S, max(settings.ZEROGPU_MIN_S, round(seconds))))


def gpu(handler: Callable) -> Callable:
    """``handler`` in ``spaces.GPU(duration=estimate)`` on ZeroGPU; ``handler`` itself elsewhere."""
    spaces = spaces_module()
    if spaces is None:
        return handler

    def duration(*args, **kwargs) -> int:
        return estimate_seconds(args)

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
