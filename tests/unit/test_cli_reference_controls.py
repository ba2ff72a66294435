"""The reference window and the negative reference from the command line (issue 26, controls 1
and 2): the options reach the library call bit for bit, the PNG records them (the negative image
by name and sha256) and ``--from-png`` redoes the picture bit for bit, finding a moved negative
image through ``--negative-image`` (checked against its hash); bad values are one clear line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from prompt_free import metadata
from tests.helpers.app import EXAMPLES
from tests.helpers.cli import TINY, pixels, run

pytestmark = pytest.mark.timeout(600)

REF, NEG = EXAMPLES / "chelsea.jpg", EXAMPLES / "coffee.jpg"


def test_the_options_reach_the_task_bit_for_bit(tmp_path, capsys):
    from prompt_free.engine import Engine
    from prompt_free.tasks import VariationSettings, image_variation

    options = ["--reference-start", 0.25, "--reference-end", 0.75, "--negative-image", NEG, "--negative-strength", 0.5]
    code, _, err = run(["generate", "--reference", REF, *options, *TINY, "--steps", 4, "--out", tmp_path / "D"], capsys)
    assert code == 0, err
    engine = Engine.from_profile("tiny")
    s = VariationSettings(steps=4, width=64, height=64, reference_start=0.25, reference_end=0.75,
                          negative_image=str(NEG), negative_strength=0.5)
    want = np.asarray(image_variation(engine, str(REF), s).images[0].convert("RGB"))
    default = np.asarray(image_variation(engine, str(REF), VariationSettings(steps=4, width=64, height=64)).images[0])
    got = pixels(tmp_path / "D" / "chelsea-s20.png")
    assert np.array_equal(got, want) and not np.array_equal(got, default)


def test_the_png_records_them_and_from_png_redoes_the_picture(tmp_path, capsys):
    neg = tmp_path / "negative.jpg"
    shutil.copy(NEG, neg)
    code, _, err = run(["generate", "--reference", REF, "--reference-end", 0.5, "--negative-image", neg,
                        "--negative-strength", 1.5, *TINY, "--out", tmp_path / "D"], capsys)
    assert code == 0, err
    png = tmp_path / "D" / "chelsea-s20.png"
    rec = metadata.read(png)
    recorded = rec["settings"]["negative_image"]
    assert recorded["name"] == "negative.jpg" and recorded["sha256"] == metadata.file_sha256(neg)
    assert rec["settings"]["reference_end"] == 0.5 and rec["settings"]["negative_strength"] == 1.5
    params = Image.open(png).info[metadata.PARAMETERS_CHUNK]
    assert "Reference end: 0.5" in params and "Negative reference: image" in params and "Negative strength: 1.5" in params
    assert run(["generate", "--from-png", png, "--out", tmp_path / "D2"], capsys)[0] == 0
    assert np.array_equal(pixels(png), pixels(tmp_path / "D2" / png.name))
    neg.unlink()  # gone: the message says how to give it again, a wrong file is refused, the right one redoes it
    code, _, err = run(["generate", "--from-png", png, "--out", tmp_path / "D3"], capsys)
    assert code == 1 and "negative image 'negative.jpg'" in err and "--input negative_image=PATH" in err
    code, _, err = run(["generate", "--from-png", png, "--negative-image", REF, "--out", tmp_path / "D3"], capsys)
    assert code == 1 and "is not the file the picture was made from" in err
    moved = tmp_path / "elsewhere.jpg"
    shutil.copy(NEG, moved)
    assert run(["generate", "--from-png", png, "--negative-image", moved, "--out", tmp_path / "D3"], capsys)[0] == 0
    assert np.array_equal(pixels(png), pixels(tmp_path / "D3" / png.name))
    json.dumps(rec)  # the record stays plain JSON


def test_noise_mode_is_recorded_and_redone(tmp_path, capsys):
    code, _, err = run(["generate", "--reference", REF, "--negative-mode", "noise", *TINY, "--out", tmp_path / "D"],
                       capsys)
    assert code == 0, err
    png = tmp_path / "D" / "chelsea-s20.png"
    assert metadata.read(png)["settings"]["negative_mode"] == "noise"
    code, _, err = run(["generate", "--from-png", png, "--negative-image", NEG, "--out", tmp_path / "D2"], capsys)
    assert code == 2 and "made without a negative image" in err
    assert run(["generate", "--from-png", png, "--out", tmp_path / "D2"], capsys)[0] == 0
    assert np.array_equal(pixels(png), pixels(tmp_path / "D2" / png.name))


@pytest.mark.parametrize("options, code, message", [
    (["--reference-start", 0.7, "--reference-end", 0.3], 1, "reference_start (0.7) must be below reference_end (0.3)"),
    (["--reference-end", 2], 1, "reference end must be between 0 and 1, got 2"),
    (["--negative-mode", "blur"], 2, "argument --negative-mode: invalid choice: 'blur'"),
    (["--negative-mode", "noise", "--negative-image", NEG], 1, "choose one negative"),
    (["--negative-image", "/nonexistent/neg.png"], 1, "negative image"),
])
def test_bad_values_are_one_clear_line(options, code, message, tmp_path, capsys):
    got, _, err = run(["generate", "--reference", REF, *options, *TINY, "--out", tmp_path / "D"], capsys)
    assert got == code and message in err, err
    assert "Traceback" not in err
