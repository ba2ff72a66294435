"""Torch's CPU threads: physical cores, not hyperthreads; PFD_THREADS and OMP_NUM_THREADS win."""

from __future__ import annotations

import pytest

from prompt_free import settings
from prompt_free.errors import InvalidSettingError
from prompt_free.threads import choose_threads, physical_cores

# 2 sockets x 2 cores x 2 hyperthreads = 8 logical CPUs, 4 physical cores.
HYPERTHREADED = "".join(
    f"processor\t: {i}\nphysical id\t: {i // 4}\ncore id\t\t: {(i // 2) % 2}\n\n" for i in range(8))


def test_physical_cores_count_cores_not_hyperthreads():
    assert physical_cores(HYPERTHREADED, usable=8) == 4
    assert physical_cores(HYPERTHREADED, usable=2) == 2  # at most the CPUs this process may use
    assert physical_cores("processor\t: 0\n\nprocessor\t: 1\n", usable=2) == 2  # no core ids: the usable CPUs
    assert physical_cores("", usable=3) == 3


def test_choice_order():
    assert choose_threads(None, None, 4) == (4, "physical cores")
    assert choose_threads(None, 1, 4) == (1, "OMP_NUM_THREADS")
    assert choose_threads(6, 1, 4) == (6, "PFD_THREADS")


def test_thread_settings_from_the_environment(monkeypatch):
    monkeypatch.delenv("PFD_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert settings.threads() is None and settings.omp_num_threads() is None
    monkeypatch.setenv("PFD_THREADS", "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert settings.threads() == 3 and settings.omp_num_threads() == 2
    for bad in ("0", "-1", "many"):
        monkeypatch.setenv("PFD_THREADS", bad)
        with pytest.raises(InvalidSettingError, match="PFD_THREADS must be"):
            settings.threads()
