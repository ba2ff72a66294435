"""The tqdm bar of the denoising steps (``prompt_free.progress``): in the library when asked (or
when stderr is a terminal), in the CLI unless ``--no-progress``, never changing a pixel."""

from __future__ import annotations

import io

import numpy as np
import pytest

from prompt_free import VariationSettings, image_variation
from prompt_free.engine import Engine
from prompt_free.errors import InvalidSettingError
from prompt_free.progress import shown
from tests.helpers.app import EXAMPLES
from tests.helpers.cli import TINY, pixels, run

pytestmark = pytest.mark.timeout(600)

SMALL = VariationSettings(seed=4, steps=3, width=64, height=64)
BAR = "3/3"  # tqdm's count of the 3 steps


class Terminal(io.StringIO):
    """A stream that says it is a terminal (as stderr in a shell)."""

    def isatty(self) -> bool:
        return True


def _without_bars(text: str):
    return [line for line in text.splitlines() if line.strip() and "%|" not in line]


def variation(engine, **kwargs):
    return np.asarray(image_variation(engine, EXAMPLES / "chelsea.jpg", SMALL, **kwargs).images[0])


@pytest.fixture(scope="module")
def engine():
    return Engine.from_profile("tiny")


def test_the_bar_shows_when_asked_goes_when_disabled_and_changes_no_pixel(engine, capsys):
    engine.set_progress_bar_config(disable=False)
    steps = []
    shown_picture = variation(engine, progress=lambda i, n: steps.append((i, n)))
    err = capsys.readouterr().err
    assert BAR in err and "100%" in err and "step" in err, err
    assert steps == [(1, 3), (2, 3), (3, 3)]  # the caller's callback still gets every step

    engine.set_progress_bar_config(disable=True)
    hidden_picture = variation(engine)
    assert capsys.readouterr().err == ""
    assert np.array_equal(shown_picture, hidden_picture)


def test_by_default_the_bar_shows_only_on_a_terminal(engine, capsys):
    engine.set_progress_bar_config(disable=None)
    variation(engine)
    assert BAR not in capsys.readouterr().err  # pytest's captured stderr is no terminal

    terminal = Terminal()
    engine.set_progress_bar_config(file=terminal, desc="variation")
    variation(engine)
    assert "variation: 100%" in terminal.getvalue() and BAR in terminal.getvalue()
    assert shown({"file": terminal}) and not shown({"file": io.StringIO()}) and not shown({"file": terminal, "disable": True})
    engine.set_progress_bar_config(file=None, desc=None)


def test_engine_option_and_bad_options():
    assert Engine.from_profile("tiny", progress_bar=False).progress_bar_config["disable"] is True
    assert Engine.from_profile("tiny", progress_bar=True).progress_bar_config["disable"] is False
    with pytest.raises(InvalidSettingError, match="unknown progress bar option.*colour_me"):
        Engine.from_profile("tiny").set_progress_bar_config(colour_me="red")


def test_the_cli_shows_each_run_s_steps_unless_no_progress(tmp_path, capsys):
    ref = EXAMPLES / "chelsea.jpg"
    code, out, err = run(["generate", "--reference", ref, *TINY, "--out", tmp_path / "A"], capsys)
    assert code == 0, err
    assert "2/2" in err and "100%" in err, err  # TINY: 2 steps
    code, quiet_out, quiet_err = run(["generate", "--reference", ref, *TINY, "--no-progress", "--out", tmp_path / "B"],
                                     capsys)
    assert code == 0, quiet_err
    assert "%|" not in quiet_err and "2/2" not in quiet_err, quiet_err
    assert _without_bars(quiet_err) == _without_bars(err)  # the other stderr lines (notices) stay
    # stdout is the same lines: the file, then where and how long
    assert [line.split(" in ")[0] for line in quiet_out.replace(str(tmp_path / "B"), "D").splitlines()] == \
        [line.split(" in ")[0] for line in out.replace(str(tmp_path / "A"), "D").splitlines()]
    assert np.array_equal(pixels(tmp_path / "A" / "chelsea-s20.png"), pixels(tmp_path / "B" / "chelsea-s20.png"))


def test_a_note_before_the_first_step_shows_on_the_bar_and_reaches_a_callback_that_takes_it():
    from prompt_free.progress import step_bar

    stream, calls = io.StringIO(), []
    with step_bar({"disable": False, "file": stream}, lambda i, n, note=None: calls.append((i, n, note))) as on_step:
        on_step(0, 2, "compiling (once)")  # what sampling.denoise reports before a compiled first step
        on_step(1, 2)
        on_step(2, 2)
    assert "compiling (once)" in stream.getvalue() and "2/2" in stream.getvalue()
    assert calls == [(0, 2, "compiling (once)"), (1, 2, None), (2, 2, None)]
    with step_bar({"disable": True}, None) as off:
        assert off is None  # no bar, no callback: the loop does nothing per step
