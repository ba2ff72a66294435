"""Torch's CPU threads: one per physical core (hyperthreads share a core's matrix units, so
more threads than cores only adds contention), ``PFD_THREADS`` to override, and an explicit
``OMP_NUM_THREADS`` respected."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Tuple

from . import settings

log = logging.getLogger(__name__)


def physical_cores(cpuinfo: Optional[str] = None, usable: Optional[int] = None) -> int:
    """Physical cores in /proc/cpuinfo (or the text ``cpuinfo``): distinct (physical id, core id)
    pairs, at most ``usable`` (the CPUs this process may run on; default its affinity). Where
    cpuinfo says nothing about cores, the usable CPU count."""
    if usable is None:
        try:
            usable = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            usable = os.cpu_count() or 1
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    cores, physical = set(), "0"
    for line in cpuinfo.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "physical id":
            physical = value
        elif key == "core id":
            cores.add((physical, value))
    return max(1, min(len(cores), usable) if cores else usable)


def choose_threads(pfd_threads: Optional[int], omp_threads: Optional[int], cores: int) -> Tuple[int, str]:
    """(threads, why): ``PFD_THREADS`` first, then ``OMP_NUM_THREADS``, else the physical cores."""
    if pfd_threads:
        return pfd_threads, "PFD_THREADS"
    if omp_threads:
        return omp_threads, "OMP_NUM_THREADS"
    return cores, "physical cores"


def configure() -> int:
    """Sets torch's CPU threads by ``choose_threads`` for this machine and logs it."""
    import torch

    n, why = choose_threads(settings.threads(), settings.omp_num_threads(), physical_cores())
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    log.info("torch uses %d CPU thread(s) (%s)", n, why)
    return n
