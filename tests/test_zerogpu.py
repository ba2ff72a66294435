"""ZeroGPU: with ``SPACES_ZERO_GPU`` set and a ``spaces`` package, every endpoint's handler runs
inside ``spaces.GPU(duration=...)`` with a duration estimated from the request, and every
selectable model is loaded at start; without it nothing is wrapped. ``spaces`` here is a stand-in
that records what the app asks of it (the real one needs Hugging Face's infrastructure)."""

from __future__ import annotations

import sys
import types

import pytest

from prompt_free import settings
from tests._app import EXAMPLES
from tests.test_app_variation import variation_args

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

    from tests._app import running_app
    from prompt_free.app.zerogpu import estimate_seconds
    from prompt_free.app.widgets import SamplerControls

    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    with running_app("tiny") as (engine, demo, url):
        assert sorted(stand_in_spaces.wrapped) == ["generate"] * 5 + ["run_compare"]  # one per tab
        reg = engine.registry
        for kind in ("seecoders", "base_models", "controlnets"):
            assert all(engine.load_counts[(kind, n)] == 1 for n in reg.names(kind)), (kind, engine.load_counts)
        client = Client(url, verbose=False)
        gallery, _, _ = client.predict(*variation_args(EXAMPLES / "coffee.jpg", steps=2, size=64, n=2),
                                       api_name="/image_variation")
        assert len(gallery) == 2
    sampler = SamplerControls(2.0, 2, 64, 64, 3, False, 2, "DDIM")
    assert stand_in_spaces.calls == [("generate", estimate_seconds([sampler]))]
    assert engine.load_counts[("base_models", "Tiny SD")] == 1  # the request found its model loaded


def test_duration_grows_with_steps_size_images_and_controlnets():
    from prompt_free.app.control import ControlInputs
    from prompt_free.app.widgets import SamplerControls
    from prompt_free.app.zerogpu import estimate_seconds

    def sampler(steps=50, size=768, n=2):
        return SamplerControls(2.0, steps, size, size, 20, False, n, "DDIM")

    # 768 x 768 / 1e6 x 50 steps x 2 images = 58.98 megapixel-steps; x 2 with one ControlNet
    assert estimate_seconds([sampler()]) == round(settings.ZEROGPU_OVERHEAD_S + settings.ZEROGPU_S_PER_WORK * 58.9824)
    with_control = ControlInputs("canny", "map.png", "use as-is", "canny", 1.0, 0.0, 1.0)
    assert estimate_seconds([sampler(), with_control]) == round(
        settings.ZEROGPU_OVERHEAD_S + settings.ZEROGPU_S_PER_WORK * 2 * 58.9824)
    assert estimate_seconds([sampler(steps=1, size=64, n=1)]) == settings.ZEROGPU_MIN_S
    assert estimate_seconds([sampler(steps=150, size=1536, n=8)]) == settings.ZEROGPU_MAX_S
