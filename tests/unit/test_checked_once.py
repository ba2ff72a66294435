"""A request checks each of its settings once: the sampler's where the task starts (``begin``),
the size where the task decides it, nothing again in the engine."""

from __future__ import annotations

from collections import Counter

import pytest

from prompt_free import settings
from prompt_free.engine import Engine
from prompt_free.tasks import EditSettings, VariationSettings, edit_with_reference, image_variation
from tests.helpers.app import EXAMPLES


@pytest.fixture(scope="module")
def engine():
    return Engine.from_profile("tiny")


@pytest.fixture
def checks(monkeypatch):
    """Counts ``Range.check`` calls by what the range is (a spy: the real check still runs)."""
    seen = Counter()
    original = settings.Range.check

    def counting(self, value, what=None):
        seen[self.what] += 1
        return original(self, value, what)

    monkeypatch.setattr(settings.Range, "check", counting)
    return seen


def test_variation_checks_each_sampler_setting_once(engine, checks):
    image_variation(engine, EXAMPLES / "coffee.jpg", VariationSettings(width=64, height=64, steps=2, deep_cache=2))
    for what in ("steps", "guidance", "seed", "number of images", "deep cache interval", "reference strength"):
        assert checks[what] == 1, (what, checks)


def test_a_size_decided_later_is_checked_without_the_rest(engine, checks):
    from PIL import Image

    photo = Image.new("RGB", (96, 64), "white")
    mask = Image.new("L", (96, 64), 0)
    mask.paste(255, (20, 20, 60, 50))
    edit_with_reference(engine, photo, mask, EXAMPLES / "chelsea.jpg",
                        EditSettings(steps=2, max_side=64, base_model="Tiny SD"))
    assert checks["steps"] == 1 and checks["guidance"] == 1, checks


def test_a_bad_value_is_still_refused_by_name(engine):
    from prompt_free.errors import InvalidSettingError

    with pytest.raises(InvalidSettingError, match="steps must be between 1 and 150"):
        image_variation(engine, EXAMPLES / "coffee.jpg", VariationSettings(steps=0))
    with pytest.raises(InvalidSettingError, match="deep cache interval"):
        image_variation(engine, EXAMPLES / "coffee.jpg", VariationSettings(deep_cache=11))
