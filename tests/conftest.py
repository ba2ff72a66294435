"""Shared test helpers.

Material that every developer and CI run has beside the checkout lives in ``../shared``
(spec, key lists, parity fixtures, official data). Tests read it from there; it is never
copied into the project. A missing fixture FAILS the test (a silently skipped parity test
protects nothing) unless ``PFD_ALLOW_MISSING_FIXTURES=1`` is set, which turns it into a skip.

Import the helpers in a test module with ``from conftest import shared_dir, shared_file``.
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
# The tests of the rule itself (tests/test_precision*.py, test_layout.py) clear or override it.
os.environ.setdefault("PFD_PRECISION", "fp32")

ALLOW_MISSING_ENV = "PFD_ALLOW_MISSING_FIXTURES"


def shared_dir() -> Path:
    """The ``shared/`` folder beside the project checkout."""
    return Path(__file__).resolve().parents[1].parent / "shared"


def missing_fixture(what: str) -> None:
    """Fail (or, with PFD_ALLOW_MISSING_FIXTURES=1, skip) because ``what`` is not there."""
    msg = (
        f"needed test fixture {what} is missing; it comes with the shared material beside the "
        f"checkout (set {ALLOW_MISSING_ENV}=1 to skip such tests instead of failing)"
    )
    if os.environ.get(ALLOW_MISSING_ENV) == "1":
        pytest.skip(msg)
    pytest.fail(msg, pytrace=False)


def shared_file(*parts: str) -> Path:
    """Path of a file under ``shared/`` (e.g. ``shared_file("spec", "keys", "x.json")``),
    failing the calling test when it does not exist (see ``missing_fixture``)."""
    path = shared_dir().joinpath(*parts)
    if not path.is_file():
        missing_fixture(f"'{path}'")
    return path



@pytest.fixture(scope="module")
def app():
    """The real app (tiny profile) served in-process for one test module: (engine, demo, url)."""
    from tests._app import running_app

    with running_app("tiny") as served:
        yield served


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app[2], verbose=False)
