"""Helpers shared by the tests that compare tensors of two code paths.

``one_thread``: import it into a test module (``from tests.helpers.tensors import one_thread``) and that
module runs with one torch thread (an autouse fixture): a thread count changes the order of float
reductions, and these tests compare two paths run one after the other. ``rel``: the relative
deviation max|a - b| / max|b|."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()
