"""The one list of tasks: every spec resolves to its function and settings, the public API and
``prompt_free.tasks`` list them, and a task request is plain data that runs anywhere with the same
pixels (picklable once ``portable()``)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import prompt_free
from prompt_free import tasks
from prompt_free.catalog import TASKS, TaskRequest, spec
from prompt_free.engine import Engine
from prompt_free.errors import InvalidSettingError
from tests.helpers.app import EXAMPLES


def test_every_task_resolves_and_is_public():
    for t in TASKS:
        assert callable(t.fn) and t.fn.__name__ == t.name
        assert t.settings_type.__name__ == t.settings_name
        assert getattr(prompt_free, t.name) is t.fn and getattr(tasks, t.settings_name) is t.settings_type


def test_an_unknown_task_is_a_clear_error():
    with pytest.raises(InvalidSettingError, match="unknown task 'paint'; the tasks are image_variation"):
        spec("paint")
    with pytest.raises(InvalidSettingError):
        TaskRequest("paint", None).run(None)


def test_a_portable_request_pickles_and_gives_the_same_pixels():
    engine = Engine.from_profile("tiny")
    settings = tasks.ControlSettings(steps=2, width=64, height=64, seed=4)
    controls = [tasks.ControlSpec("openpose", str(EXAMPLES / "pose_standing.png"))]
    request = TaskRequest("reference_control", settings, {"reference": str(EXAMPLES / "chelsea.jpg"), "controls": controls})
    moved = pickle.loads(pickle.dumps(request.portable()))
    assert isinstance(moved.call["reference"], bytes) and isinstance(moved.call["controls"][0].image, bytes)
    direct = tasks.reference_control(engine, EXAMPLES / "chelsea.jpg", controls, settings)
    assert np.array_equal(np.asarray(moved.run(engine).images[0]), np.asarray(direct.images[0]))
    assert moved.work() == request.work() > 0


def test_a_portable_file_is_recorded_as_the_file_it_was():
    from prompt_free.fingerprints import input_record

    path = str(EXAMPLES / "chelsea.jpg")
    request = TaskRequest("image_variation", tasks.VariationSettings(), {"reference": path})
    moved = pickle.loads(pickle.dumps(request.portable())).call["reference"]
    assert isinstance(moved, bytes) and moved == open(path, "rb").read()
    for keep in (False, True):
        assert input_record(moved, keep) == input_record(path, keep)
    assert input_record(bytes(moved), False)["input"] == "bytes"  # plain bytes stay bytes
