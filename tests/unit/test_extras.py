"""A missing extra is one line saying what to install: ``prompt-free app`` and ``python app.py``
without gradio (a real process where ``import gradio`` fails as it does when it is not installed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from prompt_free.extras import MissingExtraError, require
from tests.helpers.app import ROOT

pytestmark = pytest.mark.timeout(300)

MESSAGE = 'needs the app extra (gradio is not installed): pip install ".[app]"'


@pytest.fixture
def without_gradio(tmp_path):
    """An environment whose ``import gradio`` fails like a missing package's (a folder first on
    PYTHONPATH holding a ``gradio`` that raises what Python raises for an absent module)."""
    blocker = tmp_path / "blocker" / "gradio"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ModuleNotFoundError("No module named \'gradio\'", name="gradio")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(ROOT)]), "HF_HUB_OFFLINE": "1"}
    return env


@pytest.mark.parametrize("argv, who", [
    (["-m", "prompt_free", "app", "--profile", "tiny"], "prompt-free app"),
    ([str(ROOT / "app.py"), "--profile", "tiny"], "python app.py"),
])
def test_the_app_without_gradio_says_what_to_install(without_gradio, argv, who):
    done = subprocess.run([sys.executable, *argv], env=without_gradio, cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [f"error: {who} {MESSAGE} (in the checkout)"]
    assert done.stdout == ""


def test_require_is_an_import_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # Python's own "import of gradio halted"
    with pytest.raises(ImportError, match=re.escape(f"the tool {MESSAGE}")):
        require("app", "the tool")
    with pytest.raises(MissingExtraError):
        require("app", "the tool")


def test_a_module_that_fails_to_import_is_named_with_its_error(tmp_path, monkeypatch):
    (tmp_path / "gradio").mkdir()
    (tmp_path / "gradio" / "__init__.py").write_text('raise ImportError("libexample.so: cannot open shared object")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "gradio", raising=False)
    with pytest.raises(MissingExtraError, match="gradio does not import: libexample.so: cannot open shared object"):
        require("app", "the tool")
