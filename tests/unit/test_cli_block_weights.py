"""``--reference-weight-down/-mid/-up`` and ``--layout-image`` on the command line (tiny profile):
they change the picture, are recorded in the PNG (the layout image by name and sha256) and
``--from-png`` redoes the picture bit for bit (a moved layout image found with ``--input``)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from prompt_free import metadata
from tests.helpers.app import EXAMPLES
from tests.helpers.cli import TINY, pixels, run

pytestmark = pytest.mark.timeout(600)


def test_block_weights_and_layout_image_options_and_redo(tmp_path, capsys):
    ref = EXAMPLES / "coffee.jpg"
    layout = tmp_path / "layout.jpg"
    shutil.copy(EXAMPLES / "chelsea.jpg", layout)
    assert run(["generate", "--reference", ref, *TINY, "--out", tmp_path / "A"], capsys)[0] == 0
    code, _, err = run(["generate", "--reference", ref, *TINY, "--reference-weight-up", 0.5, "--reference-weight-mid", 0,
                        "--layout-image", layout, "--out", tmp_path / "B"], capsys)
    assert code == 0, err
    png = tmp_path / "B" / "coffee-s20.png"
    assert not np.array_equal(pixels(tmp_path / "A" / "coffee-s20.png"), pixels(png))
    rec = metadata.read(png)
    assert rec["settings"]["reference_weight_up"] == 0.5 and rec["settings"]["reference_weight_mid"] == 0
    assert rec["settings"]["layout_image"]["sha256"] == metadata.file_sha256(layout)
    assert run(["generate", "--from-png", png, "--out", tmp_path / "C"], capsys)[0] == 0
    assert np.array_equal(pixels(png), pixels(tmp_path / "C" / "coffee-s20.png"))
    moved = tmp_path / "moved.jpg"
    shutil.move(layout, moved)
    code, _, err = run(["generate", "--from-png", png, "--out", tmp_path / "D"], capsys)
    assert code == 1 and "layout_image" in err
    assert run(["generate", "--from-png", png, "--input", f"layout_image={moved}", "--out", tmp_path / "D"],
               capsys)[0] == 0
    assert np.array_equal(pixels(png), pixels(tmp_path / "D" / "coffee-s20.png"))


def test_bad_weight_is_a_clear_error(tmp_path, capsys):
    code, _, err = run(["generate", "--reference", EXAMPLES / "coffee.jpg", *TINY, "--reference-weight-down", 5,
                        "--out", tmp_path / "A"], capsys)
    assert code != 0 and "reference weight down" in err and "Traceback" not in err
