"""Live previews in the tabs: the "Live previews" checkbox and what a preview updates.

A tab gives ``endpoint(..., previews=LivePreviews(...))``: its checkbox becomes the endpoint's
last parameter, ``previews`` (default on, so a ``gradio_client`` call that leaves it out gets
the final outputs it always got). While the worker thread samples, the engine hands each
preview (``prompt_free.previews``) to a ``Latest`` box; the endpoint's generator, which wakes
every ``endpoint.POLL_S`` anyway, yields the newest one as an update of one output (by default
the tab's result gallery, its first output: one captioned picture per image of the run) and
"no change" for the others, then the final outputs as before. The preview pictures are saved
by Gradio like every output, so ``prompt_free.app.cache_files`` tracks and deletes them like the others.

Off for the whole server with ``app.py --no-previews`` / ``PFD_PREVIEWS=0`` (the engine's
``previews``), in a profile without a ``previews:`` entry, and on ZeroGPU, where the handler runs
in a forked process that cannot hand pictures back while it runs: the checkbox is then hidden
and unticked, and a ``previews=True`` from the API does nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import gradio as gr

from prompt_free import settings
from prompt_free.previews import Preview


def available(engine) -> bool:
    """Whether this server shows previews at all."""
    return bool(engine.previews) and engine.registry.defaults.get("preview") is not None and not settings.zero_gpu()


def in_gallery(preview: Preview) -> Tuple[int, Any]:
    """The first output (the tab's result gallery): the run's pictures, captioned with the step."""
    return 0, [(image, preview.caption) for image in preview.images]


@dataclass(frozen=True)
class LivePreviews:
    """A tab's checkbox, how many outputs its event has, and ``show``: a preview -> (the index of
    the output it updates, the value), or None to show nothing for it."""

    checkbox: gr.Checkbox
    outputs: int
    enabled: bool
    show: Callable[[Preview], Optional[Tuple[int, Any]]] = in_gallery

    def update(self, preview: Preview):
        """The event's outputs for ``preview``: one output's value, "no change" for the others."""
        shown = self.show(preview)
        if shown is None:
            return None
        index, value = shown
        values = [gr.skip()] * self.outputs
        values[index] = value
        return tuple(values)


def live_previews(engine, elem_prefix: str, outputs: int,
                  show: Callable[[Preview], Optional[Tuple[int, Any]]] = in_gallery) -> LivePreviews:
    """The tab's "Live previews" checkbox (place it where the call is made) for an event with
    ``outputs`` outputs."""
    on = available(engine)
    box = gr.Checkbox(on, label="Live previews", visible=on, interactive=on, elem_id=f"{elem_prefix}-previews",
                      info="A quick picture every few steps while it runs (the final picture is the same)")
    return LivePreviews(box, outputs, on, show)


class Latest:
    """The newest preview not shown yet: the worker thread puts, the endpoint's generator takes
    (a preview that came while an older one waited replaces it: the tab shows the run as it is)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._preview: Optional[Preview] = None

    def put(self, preview: Preview) -> None:
        with self._lock:
            self._preview = preview

    def take(self) -> Optional[Preview]:
        with self._lock:
            preview, self._preview = self._preview, None
        return preview
