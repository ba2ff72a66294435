"""Issue 13: concurrent clients over all four endpoints, every request answered with its own
pictures (the short version of benchmarks/bench_load.py; the server runs in its own process)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]


def test_eight_concurrent_clients_get_their_own_answers():
    from benchmarks.bench_load import run_load

    r = run_load(clients=8, requests=3, seeds=2, warmup=False)
    assert r["total"] == 24
    assert r["failures"] == 0, r["errors"]
    assert r["cross_talk"] == 0
    assert r["warmup_failures"] == 0
