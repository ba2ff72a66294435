"""Live previews: pictures of a run while it is denoised, for people who wait on a CPU.

Every ``settings.preview_interval(steps)`` steps ``sampling.denoise`` hands what the step
predicts the final latents to be (the step's predicted x0 where the scheduler gives one) to a
hook; the engine decodes it with the profile's tiny autoencoder (``previews:`` in
checkpoints.yaml, TAESD: far cheaper than the SD VAE, see benchmarks/README.md) and calls the request's
``PreviewCallback`` with a ``Preview``. Previews read the loop's tensors and never write them,
use no random numbers, and the final picture is decoded by the VAE as before: with or without
previews the pictures are the same, bit for bit.

A caller asks for previews with ``Engine.generate(..., preview=callback)`` or, for everything a
block of code runs (a task that calls ``generate`` several times, the app's worker thread), with
``showing(callback)``: a context variable, like ``prompt_free.cancel``, so it follows the work
into the engine without a parameter in every task.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from dataclasses import dataclass, replace
from typing import Callable, Iterator, List, Optional

from PIL import Image

from .images import tensor_to_images

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preview:
    """The run so far: one picture per image of the run, after ``step`` of ``total`` steps.
    ``part``: which run of a request it is when a request has several (a comparison's column)."""

    images: List[Image.Image]
    step: int
    total: int
    part: Optional[str] = None

    @property
    def caption(self) -> str:
        where = f"{self.part} · " if self.part else ""
        return f"preview · {where}step {self.step} of {self.total}"

    def labelled(self, part: str) -> "Preview":
        return replace(self, part=part)


PreviewCallback = Callable[[Preview], None]

_current: contextvars.ContextVar[Optional[PreviewCallback]] = contextvars.ContextVar("prompt_free_previews",
                                                                                      default=None)


def current() -> Optional[PreviewCallback]:
    """The callback ``showing`` made current here, or None (no previews)."""
    return _current.get()


@contextlib.contextmanager
def showing(callback: Optional[PreviewCallback]) -> Iterator[None]:
    """Every ``Engine.generate`` in the block (in this thread/context) sends its previews to
    ``callback`` (None: no previews)."""
    reset = _current.set(callback)
    try:
        yield
    finally:
        _current.reset(reset)


def labelled(callback: Optional[PreviewCallback], part: str) -> Optional[PreviewCallback]:
    """``callback`` receiving previews marked as ``part`` of the request (None stays None)."""
    if callback is None:
        return None
    return lambda p: callback(p.labelled(part))


def decoding_hook(decoder, callback: PreviewCallback, device):
    """``sampling.denoise``'s preview hook: the latents it is given decoded by ``decoder`` (the
    tiny autoencoder) into a ``Preview`` for ``callback``. It runs inside the loop (under the run
    lock, in inference mode) and reads the latents only; a failure stops the previews of this run
    (logged once) and never the run."""
    failed = []

    def show(step: int, total: int, latents) -> None:
        if failed:
            return
        try:
            x = decoder.decode(latents.to(device, decoder.dtype) / decoder.config.scaling_factor).sample
            callback(Preview(tensor_to_images((x.float() + 1) / 2), step, total))
        except Exception as e:  # noqa: BLE001 - a preview must never fail the request
            failed.append(e)
            log.warning("live previews stopped for this run (%s: %s)", type(e).__name__, str(e)[:300])

    return show
