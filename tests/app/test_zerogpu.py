"""ZeroGPU: with ``SPACES_ZERO_GPU`` set and a ``spaces`` package, every endpoint's handler runs
inside ``spaces.GPU(duration=...)`` with a duration estimated from the request, and every
selectable model is loaded at start; without it nothing is wrapped. ``spaces`` here is a stand-in
that records what the app asks of it (the real one needs Hugging Face's infrastructure)."""

from __future__ import annotations

import sys
import types

import pytest

from prompt_free import settings
from tests.helpers.app import EXAMPLES, variation_args

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def stand_in_spaces(monkeypatch):
    """A ``spaces`` module whose GPU(duration=f) records the decorated handlers and, at each
    call, the duration ZeroGPU would be asked for (f called with the call's own arguments)."""
    module = types.ModuleType("spaces")
    module.wrapped, module.calls = [], []

    def GPU(fn=None, duration=60):
        def decorate(f):
            module.wrapped.append(f.__name__)

            def run(*args, **kwargs):
                module.calls.append((f.__name__, duration(*args, **kwargs) if callable(duration) else duration))
                return f(*args, **kwargs)

            run.__name__ = f.__name__
            return run

        return decorate(fn) if fn is not None else decorate

    module.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", module)
    return module


def test_off_zerogpu_nothing_is_wrapped(stand_in_spaces, monkeypatch):
    from prompt_free.app.zerogpu import gpu

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)

    def handler():
        return 1

    assert gpu(handler) is handler
    assert stand_in_spaces.wrapped == []


def test_zerogpu_wraps_every_endpoint_loads_every_model_and_asks_for_the_estimated_duration(stand_in_spaces, monkeypatch):
    from gradio_client import Client

    from tests.helpers.app import running_app
    from prompt_free.catalog import TASKS, spec
    from prompt_free.app.zerogpu import seconds_for
    from prompt_free.tasks import VariationSettings

    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    with running_app("tiny") as (engine, demo, url):
        assert sorted(stand_in_spaces.wrapped) == sorted(t.name for t in TASKS)  # one per tab, named by its task
        reg = engine.registry
        for kind in ("seecoders", "base_models", "controlnets"):
            assert all(engine.load_counts[(kind, n)] == 1 for n in reg.names(kind)), (kind, engine.load_counts)
        client = Client(url, verbose=False)
        gallery, _, _ = client.predict(*variation_args(EXAMPLES / "coffee.jpg", steps=2, size=64, n=2),
                                       api_name="/image_variation")
        assert len(gallery) == 2
    want = seconds_for(spec("image_variation").work(VariationSettings(steps=2, width=64, height=64, num_images=2)))
    assert stand_in_spaces.calls == [("image_variation", want)]
    assert engine.load_counts[("base_models", "Tiny SD")] == 1  # the request found its model loaded


def test_duration_grows_with_steps_size_images_controlnets_and_columns():
    from prompt_free.catalog import spec
    from prompt_free.app.zerogpu import seconds_for
    from prompt_free.tasks import CompareSettings, ControlSettings, ControlSpec, TryOnSettings, VariationSettings

    def seconds(task, settings, call=None):
        return seconds_for(spec(task).work(settings, call))

    big = dict(steps=50, width=768, height=768, num_images=2)
    # 768 x 768 / 1e6 x 50 steps x 2 images = 58.98 megapixel-steps; x 2 with one ControlNet
    assert seconds("image_variation", VariationSettings(**big)) == round(
        settings.ZEROGPU_OVERHEAD_S + settings.ZEROGPU_S_PER_WORK * 58.9824)
    canny = ControlSpec("canny", "map.png")
    assert seconds("reference_control", ControlSettings(**big), {"controls": [canny]}) == round(
        settings.ZEROGPU_OVERHEAD_S + settings.ZEROGPU_S_PER_WORK * 2 * 58.9824)
    # a size left to the control image counts as 768 x 768
    assert spec("reference_control").work(ControlSettings(steps=50, num_images=2), {"controls": [canny]}) == \
        spec("reference_control").work(ControlSettings(**big), {"controls": [canny]})
    one = spec("compare").work(CompareSettings(**big, methods=("prompt_free",)))
    assert spec("compare").work(CompareSettings(**big, methods=("prompt_free", "dual_controlnet"))) == 2 * one
    assert spec("virtual_tryon").work(TryOnSettings(steps=50)) == 2 * spec("virtual_tryon").work(
        TryOnSettings(steps=50, pose_control=False))
    assert seconds("image_variation", VariationSettings(steps=1, width=64, height=64)) == settings.ZEROGPU_MIN_S
    assert seconds("image_variation", VariationSettings(steps=150, width=1536, height=1536, num_images=8)) == \
        settings.ZEROGPU_MAX_S
    assert seconds_for(None) == settings.ZEROGPU_MAX_S
