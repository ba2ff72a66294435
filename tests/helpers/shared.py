"""The material beside the checkout in ``../shared`` (spec, key lists, parity fixtures, official
data). Tests read it from there; it is never copied into the project. A missing fixture FAILS the
test (a silently skipped parity test protects nothing) unless ``PFD_ALLOW_MISSING_FIXTURES=1`` is
set, which turns it into a skip.

Use it in a test module with ``from tests.helpers.shared import shared_file``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ALLOW_MISSING_ENV = "PFD_ALLOW_MISSING_FIXTURES"


def shared_dir() -> Path:
    """The ``shared/`` folder beside the project checkout."""
    return Path(__file__).resolve().parents[2].parent / "shared"


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
