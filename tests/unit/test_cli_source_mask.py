"""``--reference-mask``, ``--reference-framing``, ``--reference-max-side`` on the command line
(tiny profile): they change the picture, are recorded in the PNG and ``--from-png`` redoes the
picture bit for bit (a moved mask found again with ``--reference-mask``, checked by its hash)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from prompt_free import metadata
from tests.helpers.app import EXAMPLES
from tests.helpers.cli import TINY, pixels, run

pytestmark = pytest.mark.timeout(600)


def _half_mask(path, size):
    a = np.zeros((size[1], size[0]), np.uint8)
    a[:, : size[0] // 2] = 255
    Image.fromarray(a).save(path)
    return path


def test_source_mask_framing_and_max_side_options_and_redo(tmp_path, capsys):
    ref = EXAMPLES / "coffee.jpg"
    mask = _half_mask(tmp_path / "m.png", Image.open(ref).size)
    assert run(["generate", "--reference", ref, *TINY, "--out", tmp_path / "A"], capsys)[0] == 0
    code, _, err = run(["generate", "--reference", ref, *TINY, "--reference-mask", mask, "--reference-framing", "mask",
                        "--reference-max-side", 128, "--out", tmp_path / "B"], capsys)
    assert code == 0, err
    png = tmp_path / "B" / "coffee-s20.png"
    assert not np.array_equal(pixels(tmp_path / "A" / "coffee-s20.png"), pixels(png))
    rec = metadata.read(png)
    assert rec["settings"]["reference_framing"] == "mask" and rec["settings"]["reference_max_side"] == 128
    assert rec["settings"]["reference_mask"]["sha256"] == metadata.file_sha256(mask)
    params = Image.open(png).info["parameters"]
    assert "Reference mask hash" in params and "Reference framing: mask" in params and "Reference max side: 128" in params
    assert run(["generate", "--from-png", png, "--out", tmp_path / "C"], capsys)[0] == 0
    assert np.array_equal(pixels(png), pixels(tmp_path / "C" / "coffee-s20.png"))
    moved = tmp_path / "moved.png"
    shutil.move(mask, moved)
    code, _, err = run(["generate", "--from-png", png, "--out", tmp_path / "D"], capsys)
    assert code == 1 and "reference mask 'm.png'" in err and "--input reference_mask=PATH" in err
    assert run(["generate", "--from-png", png, "--reference-mask", moved, "--out", tmp_path / "D"], capsys)[0] == 0
    assert np.array_equal(pixels(png), pixels(tmp_path / "D" / "coffee-s20.png"))


def test_mask_framing_without_a_mask_is_a_clear_error(tmp_path, capsys):
    code, _, err = run(["generate", "--reference", EXAMPLES / "coffee.jpg", *TINY, "--reference-framing", "mask",
                        "--out", tmp_path / "A"], capsys)
    assert code != 0 and "reference_mask" in err and "Traceback" not in err
    code, _, err = run(["generate", "--reference", EXAMPLES / "coffee.jpg", *TINY, "--reference-framing", "zoom",
                        "--out", tmp_path / "A"], capsys)
    assert code == 2 and "zoom" in err
