"""The material beside the checkout in ``../shared`` (spec, key lists, parity fixtures, official
data). Tests read it from there; it is never copied into the project.

A clone with nothing beside it has none of it: a test that needs it is skipped with one reason
naming the missing file, and the run ends with a summary line (``conftest.py``). CI
(``.ci/run``) sets ``PFD_REQUIRE_FIXTURES=1``: there a missing fixture FAILS the test, since a
silently skipped parity test protects nothing. ``PFD_SHARED_DIR`` points to another folder.

Use it in a test module with ``from tests.helpers.shared import shared_file``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REQUIRE_ENV = "PFD_REQUIRE_FIXTURES"
SKIP_REASON = "needs the shared fixtures beside the checkout"  # the start of every such skip's reason


def shared_dir() -> Path:
    """The ``shared/`` folder beside the project checkout (or ``PFD_SHARED_DIR``)."""
    return Path(os.environ.get("PFD_SHARED_DIR") or Path(__file__).resolve().parents[2].parent / "shared")


def fixtures_required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


def missing_fixture(what: str) -> None:
    """Skip (or, with ``PFD_REQUIRE_FIXTURES=1``, fail) because ``what`` is not there."""
    if not fixtures_required():
        pytest.skip(f"{SKIP_REASON}: {what} is missing")
    pytest.fail(f"needed test fixture {what} is missing; it comes with the shared material beside the checkout "
                f"({REQUIRE_ENV}=1 makes it required, as in CI)", pytrace=False)


def shared_file(*parts: str) -> Path:
    """Path of a file under ``shared/`` (e.g. ``shared_file("spec", "keys", "x.json")``); a
    missing one skips the calling test, or fails it in CI (see ``missing_fixture``)."""
    path = shared_dir().joinpath(*parts)
    if not path.is_file():
        missing_fixture(f"'{path}'")
    return path
