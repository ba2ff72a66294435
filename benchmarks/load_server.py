"""The app as ``benchmarks/bench_load.py`` serves it: ``app.py``'s own ``main`` in this process,
plus one hook for measuring memory. On SIGUSR1 the process collects garbage and returns freed
heap to the OS (glibc's ``malloc_trim``; otherwise RSS shows the allocator's high-water mark,
not what the server holds), then writes the number of trims done so far to the file named by
``PFD_LOAD_TRIM_FILE``; the benchmark reads the RSS from ``/proc/<pid>/status`` after that.

    python benchmarks/load_server.py --profile tiny --port 7861   # the same arguments as app.py
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_trims = 0


def _trim(signum, frame) -> None:
    global _trims
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS is read as it is
        pass
    _trims += 1
    reply = os.environ.get("PFD_LOAD_TRIM_FILE")
    if reply:
        tmp = f"{reply}.tmp"
        Path(tmp).write_text(str(_trims))
        os.replace(tmp, reply)


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, _trim)
    import app

    sys.exit(app.main(sys.argv[1:]))
