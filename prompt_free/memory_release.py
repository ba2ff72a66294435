"""Host memory given back to the system after a request (issue 28, item 4).

Where a large request's memory stayed (measured on the tiny app, 42-megapixel uploads; numbers
in benchmarks/README.md, "Soak"):

* glibc's malloc. Each request runs in a thread of its own, whose allocations come from one of
  malloc's per-thread arenas; freed memory there (and in the main heap above glibc's dynamic
  mmap threshold, which rises to 32 MB after large frees) stays mapped and resident. So the
  server held its worst moment: +28 % RSS after one such upload, +37 % after three.
  ``malloc_trim(0)`` hands back the free pages of every arena. It is not free (8 to 49 ms in
  the app, median ~18 ms, and the pages it returns fault in again on the next request), so
  ``after_request`` trims only when the RSS has grown by ``GROWTH`` since the last trim: after
  large work (a large upload, a large picture, a new model), not after every ordinary request.
* SeeCoder's shifted-window masks, cached per reference size by count; a 1536-pixel reference
  (what a 42-megapixel upload becomes) added 75 MB for good. Now bounded by bytes
  (``seecoder.swin.MASK_CACHE_BYTES``).
* Not Pillow: its block cache is off (``Image.core.get_blocks_max() == 0``) and a decode
  alone, freed, leaves nothing behind. Not the arena count: ``MALLOC_ARENA_MAX=2`` changed
  nothing measurable once trimmed, so no arena limit is set.

Only glibc has ``malloc_trim``; elsewhere (macOS, musl, Windows) ``release`` does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from typing import Optional

log = logging.getLogger("prompt_free.memory")

# RSS growth since the last trim that makes the end of a request trim: above what ordinary
# requests move (a few MB to 40 MB on the tiny app), below what a large decode leaves (a
# 42-megapixel picture is 126 MB of pixels; the app kept 230 MB after one).
GROWTH = 64 * 1024 * 1024
_lock = threading.Lock()
_level: Optional[int] = None  # the RSS after the last trim (or the lowest seen since)

_UNSET = object()
_trim = _UNSET  # libc's malloc_trim, or None where there is none


def _malloc_trim():
    """glibc's ``malloc_trim``, or None (another C library, or no C library ctypes can load)."""
    global _trim
    if _trim is _UNSET:
        try:
            fn = ctypes.CDLL(None).malloc_trim  # the process's own C library
            fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
            _trim = fn
        except (OSError, AttributeError, TypeError):  # macOS, musl without it, Windows
            _trim = None
    return _trim


def available() -> bool:
    """True where freed heap can be handed back (glibc)."""
    return _malloc_trim() is not None


def release() -> Optional[float]:
    """Hands the free pages of every malloc arena back to the system; returns the seconds it
    took, or None where there is nothing to call. Cheap: a walk over the free chunks, no
    garbage collection (reference counting has already freed a finished request's objects)."""
    trim = _malloc_trim()
    if trim is None:
        return None
    start = time.perf_counter()
    trim(0)
    seconds = time.perf_counter() - start
    log.debug("malloc_trim: %.1f ms", seconds * 1000)
    return seconds


def rss() -> Optional[int]:
    """This process's resident bytes (Linux ``/proc/self/statm``: a few microseconds), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def after_request() -> Optional[float]:
    """The end of a request (the app's endpoint calls it once the answer is handed over): trims
    when the RSS has grown by ``GROWTH`` since the last trim (always where the RSS is unknown);
    returns the trim's seconds, or None when there was none. Concurrent ends trim once."""
    global _level
    if not available() or not _lock.acquire(blocking=False):
        return None
    try:
        now = rss()
        if now is not None and _level is not None and now < _level + GROWTH:
            _level = min(_level, now)  # memory given back meanwhile (a model evicted): the new level
            return None
        seconds = release()
        _level = rss()
        return seconds
    finally:
        _lock.release()
