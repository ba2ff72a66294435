"""``prompt_free.memory_release``: freed heap handed back after large work only, and nothing
breaks where the C library has no ``malloc_trim`` (macOS, musl, Windows)."""

from __future__ import annotations

import pytest

from prompt_free import memory_release as M


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(M, "_level", None)
    trims = []
    monkeypatch.setattr(M, "release", lambda: trims.append(1) or 0.001)
    monkeypatch.setattr(M, "available", lambda: True)
    return trims


def test_trims_only_after_the_rss_grew_by_growth(fresh, monkeypatch):
    level = [1000 * 2**20]
    monkeypatch.setattr(M, "rss", lambda: level[0])
    M.after_request()  # the first request: no level yet
    assert len(fresh) == 1
    level[0] += M.GROWTH // 2  # an ordinary request
    assert M.after_request() is None and len(fresh) == 1
    level[0] += M.GROWTH  # a large one
    M.after_request()
    assert len(fresh) == 2


def test_a_lower_rss_becomes_the_level(fresh, monkeypatch):
    level = [1000 * 2**20]
    monkeypatch.setattr(M, "rss", lambda: level[0])
    M.after_request()
    level[0] -= 300 * 2**20  # a model evicted meanwhile
    M.after_request()
    level[0] += M.GROWTH + 1
    M.after_request()
    assert len(fresh) == 2


def test_no_malloc_trim_is_no_error(monkeypatch):
    monkeypatch.setattr(M, "_trim", None)  # as on macOS or musl
    assert not M.available()
    assert M.release() is None
    assert M.after_request() is None


def test_release_runs_here():
    seconds = M.release()
    assert seconds is None or 0 <= seconds < 5
    assert M.rss() is None or M.rss() > 0
