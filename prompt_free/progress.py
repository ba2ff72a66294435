"""A tqdm bar of the denoising steps of every run, like diffusers' pipelines show.

``Engine.generate`` wraps the loop's progress callback (``sampling.denoise`` calls it after every
step) in ``step_bar(config, progress)``: the bar advances by a Python call per step, reading no
tensor, so it adds no device synchronisation and changes no picture. ``config`` holds tqdm's
keyword arguments (``Engine.set_progress_bar_config``); its ``disable`` is tqdm's: True off,
False on, None (the default) on only when the bar's stream (stderr) is a terminal, so logs and
captured test output stay clean.

A disabled bar is never constructed: Gradio's ``Progress(track_tqdm=True)`` tracks every tqdm
made in a request, disabled or not, and the app shows its own progress.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from typing import Callable, Dict, Iterator, Optional

from .errors import InvalidSettingError
from .sampling import report_progress

# What a step bar looks like unless the config says otherwise. ``leave=None``: a bar nested under
# another one (the CLI's folder bar) disappears when done, a bar of its own stays.
DEFAULTS: Dict[str, object] = {"unit": "step", "leave": None, "dynamic_ncols": True}


def checked_config(config: Dict[str, object]) -> Dict[str, object]:
    """``config`` if every key is one of tqdm's keyword arguments, else ``InvalidSettingError``
    naming the unknown ones (found now, not in the middle of a run)."""
    from tqdm import tqdm

    # Gradio's track_tqdm replaces tqdm's __init__ with a narrower one and keeps tqdm's own here
    init = getattr(tqdm, "__init__orig__", tqdm.__init__)
    known = {name for name, p in inspect.signature(init).parameters.items()
             if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)} - {"self", "iterable", "total"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise InvalidSettingError(f"unknown progress bar option(s) {', '.join(unknown)}; tqdm's options are "
                                  f"{', '.join(sorted(known))}")
    return dict(config)


def shown(config: Dict[str, object]) -> bool:
    """Whether a bar with ``config`` is shown (tqdm's ``disable`` rule, decided without making one)."""
    disable = config.get("disable")
    if disable is not None:
        return not disable
    stream = config.get("file") or sys.stderr
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class _StepBar:
    """The loop's progress callback: the bar made at the first call (when the step count is known),
    then the caller's own callback."""

    def __init__(self, config: Dict[str, object], forward: Optional[Callable[..., None]]):
        self._config, self._forward = config, forward
        self._bar, self._note = None, None

    def __call__(self, done: int, total: int, note: Optional[str] = None) -> None:
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, **{**DEFAULTS, **self._config, "disable": False})
        if note != self._note:  # e.g. "compiling (once)" before a long first step: shown now, cleared after it
            self._bar.set_postfix_str(note or "", refresh=bool(note))
            self._note = note
        self._bar.update(done - self._bar.n)
        report_progress(self._forward, done, total, note)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@contextlib.contextmanager
def step_bar(config: Dict[str, object], progress: Optional[Callable[..., None]] = None) -> Iterator[Optional[Callable]]:
    """The progress callback for one run: ``progress`` itself when the bar is off, else a callback
    that moves the bar and calls ``progress``. The bar is closed on the way out (also on error)."""
    if not shown(config):
        yield progress
        return
    bar = _StepBar(config, progress)
    try:
        yield bar
    finally:
        bar.close()
