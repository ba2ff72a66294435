"""Test-wide setup and fixtures: the repository root on ``sys.path``, offline and fp32 by default,
and the ``app`` / ``client`` fixtures (the real app served in-process).

Helpers live in ``tests/helpers/`` (a test never imports another test module): ``app`` (serving the
app, Chromium, endpoint arguments), ``shared`` (the fixtures in ``../shared``), ``models`` (tiny
model files), ``cli``, ``tensors``, ``lora_files`` and ``uploads``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # plain `pytest` (not `python -m pytest`) from anywhere
    sys.path.insert(0, str(REPO_ROOT))

# Tests never reach the network: every model is built from configs or read from ../shared.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests run their models in fp32 (contiguous) on every machine unless a test asks otherwise:
# ``auto`` picks bf16 on CPUs with AMX or AVX-512 BF16 (prompt_free.precision), and the tests that
# compare loaded files or pictures with fp32 references must not depend on the machine's CPU.
# The tests of the rule itself (tests/unit/test_precision.py, tests/bench/test_precision_full_random.py,
# tests/unit/test_layout.py) clear or override it.
os.environ.setdefault("PFD_PRECISION", "fp32")


@pytest.fixture(scope="module")
def app():
    """The real app (tiny profile) served in-process for one test module: (engine, demo, url)."""
    from tests.helpers.app import running_app

    with running_app("tiny") as served:
        yield served


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app[2], verbose=False)


def pytest_terminal_summary(terminalreporter):
    """One line for the tests skipped because ``../shared`` is not beside this checkout."""
    from tests.helpers.shared import REQUIRE_ENV, SKIP_REASON, shared_dir

    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if SKIP_REASON in str(getattr(r, "longrepr", ""))]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} test(s) skipped: they need the parity fixtures and official data in {shared_dir()} "
            f"(not beside this checkout; CI requires them with {REQUIRE_ENV}=1)", yellow=True)
