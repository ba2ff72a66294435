"""The command line (``prompt-free`` / ``python -m prompt_free``) and the PNG metadata it writes:
real runs on the tiny profile, read back and redone from the PNG."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from prompt_free import cli, metadata
from tests._app import EXAMPLES

pytestmark = pytest.mark.timeout(600)

TINY = ["--profile", "tiny", "--steps", "2", "--size", "64x64"]


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_generate_writes_pngs_with_both_chunks_and_says_where_and_how_long(tmp_path, capsys):
    code, out, err = run(["generate", "--reference", EXAMPLES / "chelsea.jpg", "--seed", 5, "--num-images", 2,
                          *TINY, "--out", tmp_path / "D"], capsys)
    assert code == 0, err
    files = sorted((tmp_path / "D").iterdir())
    assert [f.name for f in files] == ["chelsea-s5.png", "chelsea-s6.png"]
    assert f"wrote 2 file(s) to {tmp_path / 'D'} in " in out and str(files[0]) in out
    img = Image.open(files[1])
    params = img.info[metadata.PARAMETERS_CHUNK]
    assert params.startswith("Steps: 2, Sampler: DDIM, CFG scale: 2, Seed: 6, Size: 64x64, Model: Tiny SD, SeeCoder: SeeCoder")
    rec = json.loads(img.info[metadata.JSON_CHUNK])
    assert rec["task"] == "image_variation" and rec["profile"] == "tiny" and rec["seed"] == 6
    assert rec["output"] == {"kind": "images", "index": 1}
    assert rec["settings"]["seed"] == 5 and rec["settings"]["num_images"] == 2 and rec["settings"]["steps"] == 2
    ref = rec["call"]["reference"]
    assert ref["path"] == str(EXAMPLES / "chelsea.jpg") and ref["sha256"] == metadata.file_sha256(EXAMPLES / "chelsea.jpg")
    assert rec["models"]["base_model"] == {"name": "Tiny SD", "tiny": "sd", "seed": 1, "profile": "tiny"}
    assert rec["version"] == metadata.__version__


def test_from_png_redoes_the_picture_bit_for_bit(tmp_path, capsys):
    """Image 2 of a two-image run, redone from its PNG: identical pixels, same file name."""
    assert run(["generate", "--reference", EXAMPLES / "coffee.jpg", "--seed", 7, "--num-images", 2, *TINY,
                "--out", tmp_path / "D"], capsys)[0] == 0
    code, out, err = run(["generate", "--from-png", tmp_path / "D" / "coffee-s8.png", "--out", tmp_path / "D2"], capsys)
    assert code == 0, err
    assert np.array_equal(pixels(tmp_path / "D" / "coffee-s8.png"), pixels(tmp_path / "D2" / "coffee-s8.png"))
    assert "wrote 1 file(s)" in out


def test_from_png_with_control_maps_redoes_the_picture(tmp_path, capsys):
    code, _, err = run(["generate", "--reference", EXAMPLES / "coffee.jpg", "--control",
                        f"canny={EXAMPLES / 'canny_house.png'}", "--profile", "tiny", "--steps", "2", "--size", "64x64",
                        "--out", tmp_path / "D"], capsys)
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "D").iterdir())
    assert names == ["coffee-s20-map1.png", "coffee-s20.png"]
    rec = metadata.read(tmp_path / "D" / "coffee-s20.png")
    spec = rec["call"]["controls"][0]
    assert spec["controlnet"] == "canny" and spec["image"]["sha256"] == metadata.file_sha256(EXAMPLES / "canny_house.png")
    assert 'ControlNet 0: "Module: none, Model: canny, Weight: 1' in Image.open(tmp_path / "D" / "coffee-s20.png").info["parameters"]
    assert run(["generate", "--from-png", tmp_path / "D" / "coffee-s20.png", "--out", tmp_path / "D2"], capsys)[0] == 0
    assert np.array_equal(pixels(tmp_path / "D" / "coffee-s20.png"), pixels(tmp_path / "D2" / "coffee-s20.png"))


def test_from_png_finds_moved_inputs_through_options_and_checks_their_hashes(tmp_path, capsys):
    ref = tmp_path / "ref.jpg"
    shutil.copy(EXAMPLES / "rocket.jpg", ref)
    assert run(["generate", "--reference", ref, *TINY, "--out", tmp_path / "D"], capsys)[0] == 0
    ref.unlink()
    png = tmp_path / "D" / "ref-s20.png"
    code, _, err = run(["generate", "--from-png", png, "--out", tmp_path / "D2"], capsys)
    assert code == 1 and "reference image 'ref.jpg'" in err and "give it with --reference PATH" in err
    code, _, err = run(["generate", "--from-png", png, "--reference", EXAMPLES / "coffee.jpg", "--out", tmp_path / "D2"], capsys)
    assert code == 1 and "is not the file the picture was made from" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    moved = tmp_path / "elsewhere.jpg"
    shutil.copy(EXAMPLES / "rocket.jpg", moved)
    assert run(["generate", "--from-png", png, "--reference", moved, "--out", tmp_path / "D2"], capsys)[0] == 0
    assert np.array_equal(pixels(png), pixels(tmp_path / "D2" / "ref-s20.png"))


@pytest.mark.parametrize("argv, code, message", [
    (["generate", "--reference", "missing.jpg", "--out", "{tmp}"], 2, "error: reference image 'missing.jpg' does not exist"),
    (["generate", "--reference", EXAMPLES / "coffee.jpg", "--size", "12xx", "--out", "{tmp}"], 2,
     "error: --size must be WIDTHxHEIGHT"),
    (["generate", "--reference", EXAMPLES / "coffee.jpg", "--control", "canny", "--out", "{tmp}"], 2,
     "error: --control must be NAME=PATH"),
    (["generate", "--reference", EXAMPLES / "coffee.jpg", "--profile", "tiny", "--base-model", "SD 9", "--out", "{tmp}"], 1,
     "error: unknown base model 'SD 9'"),
    (["generate", "--reference", EXAMPLES / "coffee.jpg", "--profile", "tiny", "--steps", "500", "--out", "{tmp}"], 1,
     "error: steps must be between 1 and 150, got 500"),
    (["generate", "--from-png", EXAMPLES / "canny_house.png", "--out", "{tmp}"], 1,
     "error: 'canny_house.png' carries no Prompt-Free settings"),
    (["generate", "--reference-dir", EXAMPLES / "LICENSE.md", "--out", "{tmp}"], 2, "is not a folder"),
])
def test_bad_input_is_one_clear_line_and_a_nonzero_exit(argv, code, message, tmp_path, capsys):
    got, out, err = run([str(a).replace("{tmp}", str(tmp_path / "o")) for a in argv], capsys)
    assert got == code
    assert message in err and "Traceback" not in err
    problems = [line for line in err.strip().splitlines() if not line.startswith("profile tiny:")]  # the notice
    assert len(problems) == 1, err


def test_reference_dir_writes_one_output_per_reference_with_a_progress_bar(tmp_path, capsys):
    """Images of the folder only; a broken one is reported and skipped, the others are done."""
    refs = tmp_path / "refs"
    refs.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg"):
        shutil.copy(EXAMPLES / name, refs / name)
    (refs / "notes.txt").write_text("not an image")
    (refs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, out, err = run(["generate", "--reference-dir", refs, *TINY, "--out", tmp_path / "D"], capsys)
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "D").iterdir()) == ["chelsea-s20.png", "coffee-s20.png"]
    assert "references: 100%" in err and "3/3" in err  # tqdm's bar
    assert "skipped broken.png: reference image could not be read as an image" in err and "Traceback" not in err
    assert "wrote 2 file(s)" in out


def test_tryon_writes_the_pictures_and_its_record(tmp_path, capsys):
    person, garment = EXAMPLES / "tryon_person.png", EXAMPLES / "tryon_garment_shirt.png"
    mask = tmp_path / "mask.png"
    m = np.zeros((Image.open(person).height, Image.open(person).width), np.uint8)
    m[m.shape[0] // 4: m.shape[0] // 2, m.shape[1] // 4: 3 * m.shape[1] // 4] = 255
    Image.fromarray(m).save(mask)
    code, out, err = run(["tryon", "--person", person, "--garment", garment, "--mask", mask, "--no-pose",
                          "--profile", "tiny", "--steps", "2", "--max-side", "128", "--out", tmp_path / "T"], capsys)
    assert code == 0, err
    png = tmp_path / "T" / "tryon_person-tryon-s20.png"
    rec = metadata.read(png)
    assert rec["task"] == "virtual_tryon" and rec["call"]["mask"]["sha256"] == metadata.file_sha256(mask)
    moved = tmp_path / "moved-mask.png"
    mask.rename(moved)
    code, _, err = run(["generate", "--from-png", png, "--out", tmp_path / "T2"], capsys)
    assert code == 1 and "give it with --input mask=PATH" in err
    assert run(["generate", "--from-png", png, "--input", f"mask={moved}", "--out", tmp_path / "T2"], capsys)[0] == 0
    assert np.array_equal(pixels(png), pixels(tmp_path / "T2" / png.name))


def test_download_is_delegated(capsys):
    code, out, _ = run(["download", "--profile", "tiny"], capsys)
    assert code == 0 and "needs no files" in out
