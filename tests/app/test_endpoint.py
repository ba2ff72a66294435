"""prompt_free.app.endpoint: the public parameters of an endpoint are written down (names, order, no
defaults) and the handler receives grouped values; no server needed."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import gradio as gr
import pytest

from prompt_free.app.endpoint import InputGroup, endpoint


@dataclass
class Pair(InputGroup):
    left: gr.Number
    right: gr.Number
    extra: gr.Number = None  # None: not part of this tab

    API_NAMES = {"left": "lhs"}


def final(gen):
    """The last value a cancellable endpoint generator yields (what Gradio shows)."""
    out = [v for v in gen if not (isinstance(v, dict) and v.get("__type__") == "update")]
    assert len(out) == 1
    return out[0]


def _build(handler):
    with gr.Blocks() as demo:
        a, b, c = gr.Number(1), gr.Number(2), gr.Textbox("x")
        out = gr.Textbox()
        api = endpoint(handler, Pair(a, b).suffixed("1"), ("label", c))
        gr.Button().click(api.fn, inputs=api.inputs, outputs=[out], api_name="pair")
    return demo, api, (a, b, c)


def test_signature_names_order_and_progress():
    seen = {}

    def handler(pair, label, progress):
        seen.update(pair=pair, label=label, progress=progress)
        return f"{label}: {pair.left + pair.right}"

    demo, api, (a, b, c) = _build(handler)
    assert api.inputs == [a, b, c] and api.parameter_names == ["lhs1", "right1", "label"]
    params = list(inspect.signature(api.fn).parameters.values())
    assert [p.name for p in params] == ["lhs1", "right1", "label", "progress"]
    assert all(p.default is inspect.Parameter.empty for p in params[:-1])
    assert isinstance(params[-1].default, gr.Progress)
    assert inspect.isgeneratorfunction(api.fn)  # Gradio can close it (cancel)
    info = demo.get_api_info()["named_endpoints"]["/pair"]
    assert [p["parameter_name"] for p in info["parameters"]] == ["lhs1", "right1", "label"]
    assert info["description"] == ""
    # Gradio passes the values positionally, the progress tracker last
    assert final(api.fn(3, 4, "sum", "PROGRESS")) == "sum: 7"
    assert seen["pair"] == Pair(3, 4) and seen["label"] == "sum" and seen["progress"] == "PROGRESS"
    assert api.fn.__name__ == "handler"


def test_library_errors_become_gradio_errors():
    from prompt_free.errors import InvalidSettingError

    def handler(pair, label, progress):
        raise InvalidSettingError("steps must be between 1 and 150")

    _, api, _ = _build(handler)
    with pytest.raises(gr.Error, match="steps must be between 1 and 150"):
        final(api.fn(1, 2, "x", None))


def test_duplicate_names_are_refused():
    with gr.Blocks():
        a, b = gr.Number(), gr.Number()
        with pytest.raises(ValueError, match="duplicate"):
            endpoint(lambda *a, **k: None, ("lhs", a), Pair(a, b))


def test_errors_are_logged_with_the_request_and_no_server_directories(caplog, tmp_path):
    import logging

    from prompt_free.images import load_image
    from prompt_free.app.endpoint import handle_errors

    upload = tmp_path / "cache" / "abc123" / "holiday.png"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"")

    @handle_errors
    def generate(pair, label, progress=None):
        load_image(pair.left, "reference image")

    @handle_errors
    def broken(pair, label, progress=None):
        return {}["missing"]

    caplog.set_level(logging.INFO, logger="prompt_free.ui")
    with pytest.raises(gr.Error) as err:
        generate(Pair(str(upload), 7), "x")
    assert str(err.value.message) == "reference image could not be read as an image (empty file)"
    refused = [r for r in caplog.records if r.levelno == logging.INFO and "generate refused" in r.getMessage()]
    assert refused and "file 'holiday.png'" in refused[0].getMessage() and "'right': 7" in refused[0].getMessage()
    assert str(tmp_path) not in refused[0].getMessage() and refused[0].exc_info is None
    with pytest.raises(gr.Error, match="Unexpected error \\(KeyError\\)"):
        broken(Pair(1, 2), "x")
    unexpected = [r for r in caplog.records if "unexpected error in broken" in r.getMessage()]
    assert unexpected and unexpected[0].levelno == logging.ERROR and unexpected[0].exc_info is not None


def test_each_refusal_is_one_log_line_and_gradio_prints_no_traceback(caplog):
    """A refusal (the library's or the tab's own gr.Error) is one INFO line; Gradio is told not to
    print the exception again (its queue prints a traceback unless ``print_exception`` is off)."""
    import logging

    from prompt_free.app.endpoint import handle_errors
    from prompt_free.errors import InvalidSettingError

    @handle_errors
    def library(pair, label, progress=None):
        raise InvalidSettingError("steps must be between 1 and 150, got 0")

    @handle_errors
    def tab(pair, label, progress=None):
        raise gr.Error("Upload the photo first.")

    @handle_errors
    def broken(pair, label, progress=None):
        return {}["missing"]

    caplog.set_level(logging.INFO, logger="prompt_free.ui")
    for handler in (library, tab, broken):
        with pytest.raises(gr.Error) as err:
            handler(Pair(1, 2), "x")
        assert err.value.print_exception is False, handler.__name__
        lines = [r for r in caplog.records if handler.__name__ in r.getMessage()]
        assert len(lines) == 1, (handler.__name__, [r.getMessage() for r in lines])
    assert [r.levelno for r in caplog.records if "refused" in r.getMessage()] == [logging.INFO, logging.INFO]


def test_closing_the_generator_cancels_the_work_at_its_next_step():
    """What Gradio's cancel does (closes the generator) reaches the work as a cancelled token."""
    import threading
    import time

    from prompt_free import cancel

    steps, stopped = [], threading.Event()

    def handler(pair, label, progress):
        try:
            for i in range(200):
                cancel.check()  # what sampling.denoise does before every step
                steps.append(i)
                time.sleep(0.02)
        except cancel.Cancelled:
            stopped.set()
            raise
        return "done"

    _, api, _ = _build(handler)
    gen = api.fn(1, 2, "x", None)
    assert next(gen)["__type__"] == "update"  # still running: Gradio gets "no change"
    gen.close()
    assert stopped.wait(5) and len(steps) < 100


def test_every_output_picture_is_a_tracked_file_of_its_own():
    """prompt_free.app.cache_files: Gradio's save of an output picture (Image, Gallery, arrays) writes a new
    file in a folder of its own, tracked for the cleanup, whose folder goes with it."""
    import os
    import tempfile

    import numpy as np
    from gradio import processing_utils
    from PIL import Image

    from prompt_free.app import cache_files

    cache_files.install()
    assert processing_utils.save_pil_to_cache is cache_files.save_pil_to_cache
    img = Image.new("RGB", (32, 16), (10, 200, 30))
    with tempfile.TemporaryDirectory() as cache:
        tracked = cache_files.app_files(cache)
        a = processing_utils.save_pil_to_cache(img, cache, format="png")
        b = processing_utils.save_img_array_to_cache(np.asarray(img), cache, format="png")
        assert a != b and os.path.dirname(a) != os.path.dirname(b)  # the same picture, two files
        assert Image.open(a).size == (32, 16)
        assert os.path.getsize(a) == os.path.getsize(b) == len(processing_utils.encode_pil_to_bytes(img, "png"))
        assert {a, b} <= tracked
        for path in tracked:  # what Gradio's cleanup does: remove while iterating, then "-="
            tracked.add(path + ".x")  # a request adding meanwhile does not stop the iteration
        os.remove(a)
        tracked -= {a}
        assert a not in tracked and not os.path.exists(os.path.dirname(a)) and os.path.exists(b)


def test_appended_parameters_follow_previews_and_reach_the_handler():
    """Parameters added after the endpoints were published come after ``previews``: the ones
    published before keep their places; the handler gets the appended values after the others."""
    from prompt_free.app.previews import LivePreviews

    seen = {}

    def handler(pair, label, later, progress):
        seen.update(pair=pair, label=label, later=later)
        return f"{label}: {pair.left + pair.right} {later}"

    with gr.Blocks():
        a, b, c, d = gr.Number(1), gr.Number(2), gr.Textbox("x"), gr.Number(0)
        live = LivePreviews(gr.Checkbox(True), outputs=1, enabled=False)
        api = endpoint(handler, Pair(a, b), ("label", c), previews=live, appended=[("later", d)])
    assert api.parameter_names == ["lhs", "right", "label", "previews", "later"]
    assert api.inputs == [a, b, c, live.checkbox, d]
    assert final(api.fn(3, 4, "sum", True, 9, None)) == "sum: 7 9"
    assert seen == {"pair": Pair(3, 4), "label": "sum", "later": 9}


def test_the_request_log_names_declared_settings_by_value():
    from prompt_free.app.endpoint import request_summary
    from prompt_free.app.fields import SettingsGroup
    from prompt_free.tasks.common import SamplerSettings
    from prompt_free.tasks.fields import declared

    infos = dict(declared(SamplerSettings))
    group = SettingsGroup({"deep_cache": 2}, {"deep_cache": infos["deep_cache"]})
    assert request_summary([group]) == "[{'deep_cache': 2}]"
