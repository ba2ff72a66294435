"""The command line (``prompt-free`` / ``python -m prompt_free``) and the PNG metadata it writes:
real runs on the tiny profile, read back and redone from the PNG."""

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


# ----------------------------------------------------------------------------- Multi-Reference, edit, options
def _half_mask(path, size=(64, 64)):
    m = np.zeros((size[1], size[0]), np.uint8)
    m[:, size[0] // 2:] = 255
    Image.fromarray(m).save(path)
    return path


def test_multi_reference_with_a_mask_is_redone_from_its_png(tmp_path, capsys):
    """Two references, regions blend, reference 2's mask given after it: the record names both
    references, the weights and the mask; --from-png (the mask moved: --input) gives the same pixels."""
    mask = _half_mask(tmp_path / "right.png")
    code, out, err = run(["generate", "--reference", EXAMPLES / "chelsea.jpg", "--reference", EXAMPLES / "rocket.jpg",
                          "--mask", mask, "--weight", 1, "--weight", 0.8, "--blend", "regions", *TINY,
                          "--out", tmp_path / "D"], capsys)
    assert code == 0, err
    png = tmp_path / "D" / "chelsea-multi-s20.png"
    assert sorted(p.name for p in (tmp_path / "D").iterdir()) == [png.name] and str(png) in out
    rec = metadata.read(png)
    assert rec["task"] == "multi_reference" and rec["settings"]["blend"] == "regions"
    refs = rec["call"]["references"]
    assert [r["weight"] for r in refs] == [1.0, 0.8] and refs[0]["mask"] is None
    assert refs[1]["image"]["sha256"] == metadata.file_sha256(EXAMPLES / "rocket.jpg")
    assert refs[1]["mask"]["sha256"] == metadata.file_sha256(mask)
    moved = tmp_path / "moved.png"
    mask.rename(moved)
    code, _, err = run(["generate", "--from-png", png, "--out", tmp_path / "D2"], capsys)
    assert code == 1 and "give it with --input references[1].mask=PATH" in err
    code, _, err = run(["generate", "--from-png", png, "--input", f"references[1].mask={moved}",
                        "--out", tmp_path / "D2"], capsys)
    assert code == 0, err
    assert np.array_equal(pixels(png), pixels(tmp_path / "D2" / png.name))


def test_multi_reference_run_is_the_library_call(tmp_path, capsys):
    """--reference x2 with --weight, --mask K=PATH and --blend is multi_reference with those References."""
    from prompt_free.engine import Engine
    from prompt_free.tasks import MultiReferenceSettings, Reference, multi_reference

    mask = _half_mask(tmp_path / "m.png")
    a, b = EXAMPLES / "coffee.jpg", EXAMPLES / "astronaut.jpg"
    code, _, err = run(["generate", "--reference", a, "--reference", b, "--mask", f"2={mask}", "--weight", 0.5,
                        "--blend", "concatenate", "--seed", 3, *TINY, "--out", tmp_path / "D"], capsys)
    assert code == 0, err
    engine = Engine.from_profile("tiny")
    s = MultiReferenceSettings(seed=3, steps=2, width=64, height=64, blend="concatenate")
    want = multi_reference(engine, [Reference(str(a), 0.5), Reference(str(b), 1.0, str(mask))], s).images[0]
    assert np.array_equal(pixels(tmp_path / "D" / "coffee-multi-s3.png"), np.asarray(want.convert("RGB")))


def test_edit_writes_its_pictures_and_is_redone_from_its_png(tmp_path, capsys):
    photo, reference = EXAMPLES / "chelsea.jpg", EXAMPLES / "rocket.jpg"
    w, h = Image.open(photo).size
    mask = tmp_path / "mask.png"
    m = np.zeros((h, w), np.uint8)
    m[h // 4: h // 2, w // 4: w // 2] = 255
    Image.fromarray(m).save(mask)
    code, out, err = run(["edit", "--photo", photo, "--mask", mask, "--reference", reference, "--max-side", 128,
                          "--reference-strength", 0.7, "--profile", "tiny", "--steps", 2, "--out", tmp_path / "E"], capsys)
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "E").iterdir())
    assert names == ["chelsea-edit-s20-extra1.png", "chelsea-edit-s20-extra2.png", "chelsea-edit-s20.png"]
    png = tmp_path / "E" / "chelsea-edit-s20.png"
    rec = metadata.read(png)
    assert rec["task"] == "edit_with_reference" and rec["settings"]["reference_strength"] == 0.7
    assert rec["call"]["mask"]["sha256"] == metadata.file_sha256(mask) and rec["call"]["photo"]["path"] == str(photo)
    assert Image.open(png).size == (w, h) and "wrote 3 file(s)" in out
    code, _, err = run(["generate", "--from-png", png, "--out", tmp_path / "E2"], capsys)
    assert code == 0, err
    assert np.array_equal(pixels(png), pixels(tmp_path / "E2" / png.name))


@pytest.mark.parametrize("options, settings", [
    (["--reference-strength", 0.5], dict(reference_strength=0.5)),
    (["--prompt", "a red house", "--prompt-mode", "style", "--prompt-weight", 0.8],
     dict(prompt="a red house", prompt_mode="style", prompt_weight=0.8)),
    (["--blocks", "layout"], dict(blocks="layout")),
])
def test_options_reach_the_task_bit_for_bit(options, settings, tmp_path, capsys):
    """Each option gives the library call with that setting, and a picture other than the default's."""
    from prompt_free.engine import Engine
    from prompt_free.tasks import VariationSettings, image_variation

    ref = EXAMPLES / "chelsea.jpg"
    code, _, err = run(["generate", "--reference", ref, *options, *TINY, "--out", tmp_path / "D"], capsys)
    assert code == 0, err
    engine = Engine.from_profile("tiny")
    want = image_variation(engine, str(ref), VariationSettings(steps=2, width=64, height=64, **settings)).images[0]
    default = image_variation(engine, str(ref), VariationSettings(steps=2, width=64, height=64)).images[0]
    got = pixels(tmp_path / "D" / "chelsea-s20.png")
    assert np.array_equal(got, np.asarray(want.convert("RGB")))
    assert not np.array_equal(got, np.asarray(default.convert("RGB")))


def test_lora_option_applies_the_lora_of_checkpoints_yaml(tmp_path, capsys):
    from prompt_free.engine import Engine
    from prompt_free.tasks import VariationSettings, image_variation
    from tests.helpers.lora_files import lora_layers, write_checkpoints, write_kohya

    yaml_path = write_checkpoints(tmp_path / "checkpoints.yaml",
                                  {"Style": write_kohya(tmp_path / "style.safetensors", lora_layers(1))})
    ref = EXAMPLES / "coffee.jpg"
    code, _, err = run(["generate", "--reference", ref, "--lora", "Style=0.7", "--checkpoints", yaml_path, *TINY,
                        "--out", tmp_path / "D"], capsys)
    assert code == 0, err
    png = tmp_path / "D" / "coffee-s20.png"
    assert metadata.read(png)["settings"]["loras"] == [["Style", 0.7]]
    engine = Engine.from_profile("tiny", str(yaml_path))
    want = image_variation(engine, str(ref), VariationSettings(steps=2, width=64, height=64,
                                                                loras=(("Style", 0.7),))).images[0]
    none = image_variation(engine, str(ref), VariationSettings(steps=2, width=64, height=64)).images[0]
    assert np.array_equal(pixels(png), np.asarray(want.convert("RGB")))
    assert not np.array_equal(pixels(png), np.asarray(none.convert("RGB")))
    assert run(["generate", "--from-png", png, "--checkpoints", yaml_path, "--out", tmp_path / "D2"], capsys)[0] == 0
    assert np.array_equal(pixels(png), pixels(tmp_path / "D2" / png.name))


_C, _R = EXAMPLES / "coffee.jpg", EXAMPLES / "rocket.jpg"


@pytest.mark.parametrize("argv, code, message", [
    (["generate", "--reference", _C, "--profile", "tiny", "--reference-strength", "3", "--out", "{tmp}"], 1,
     "error: reference strength must be between 0 and 2, got 3.0"),
    (["generate", "--reference", _C, "--lora", "Style=strong", "--out", "{tmp}"], 2,
     "error: --lora 'Style=strong': the scale after '=' must be a number"),
    (["generate", "--reference", _C, "--profile", "tiny", "--lora", "Nope", "--out", "{tmp}"], 1,
     "error: unknown LoRA 'Nope'"),
    (["generate", "--reference", _C, "--blend", "mix", "--out", "{tmp}"], 2, "argument --blend: invalid choice: 'mix'"),
    (["generate", "--reference", _C, "--blocks", "middle", "--out", "{tmp}"], 2, "argument --blocks: invalid choice"),
    (["generate", "--reference", _C, "--weight", "0.5", "--out", "{tmp}"], 2, "give two or more --reference"),
    (["generate", "--reference", _C, "--reference", _R, "--mask", f"3={_C}", "--out", "{tmp}"], 2,
     "error: --mask 3=...: there is no reference 3 (there are 2)"),
    (["generate", "--mask", _C, "--reference", _C, "--reference", _R, "--out", "{tmp}"], 2,
     "give it after the --reference it belongs to"),
    (["generate", *["--reference", _C] * 5, "--out", "{tmp}"], 2, "error: at most 4 --reference can be blended, got 5"),
    (["generate", "--reference", _C, "--reference", _R, "--prompt", "a cat", "--out", "{tmp}"], 2,
     "Multi-Reference (several --reference) takes no prompt"),
    (["generate", "--reference", _C, "--reference", _R, "--weight", "0", "--weight", "0", "--profile", "tiny",
      "--out", "{tmp}"], 1, "error: all reference weights are 0"),
    (["generate", "--reference", _C, "--reference", _R, "--blend", "regions", "--profile", "tiny", "--out", "{tmp}"], 1,
     "error: reference 2 has no region mask"),
    (["edit", "--photo", _C, "--mask", "missing.png", "--reference", _R, "--out", "{tmp}"], 2,
     "error: mask image 'missing.png' does not exist"),
    (["edit", "--photo", _C, "--reference", _R, "--out", "{tmp}"], 2, "the following arguments are required: --mask"),
    (["edit", "--photo", _C, "--mask", _C, "--reference", _R, "--profile", "tiny", "--feather", "-1", "--out", "{tmp}"], 1,
     "error: mask feathering (px) must be between 0 and 256, got -1"),
])
def test_bad_new_options_are_one_clear_line_and_a_nonzero_exit(argv, code, message, tmp_path, capsys):
    got, out, err = run([str(a).replace("{tmp}", str(tmp_path / "o")) for a in argv], capsys)
    assert got == code, err
    assert message in err and "Traceback" not in err
    problems = [line for line in err.strip().splitlines() if not line.startswith("profile tiny:")]
    assert len(problems) == 1, err


def test_multi_reference_under_a_controlnet_is_redone_and_finds_a_moved_map(tmp_path, capsys):
    """Multi-Reference keeps its ControlSpecs in its settings: they are recorded with the map's
    hash (and the ControlNet among the models), and --control finds a moved map on --from-png."""
    edges = tmp_path / "edges.png"
    shutil.copy(EXAMPLES / "canny_house.png", edges)
    code, _, err = run(["generate", "--reference", EXAMPLES / "coffee.jpg", "--reference", EXAMPLES / "rocket.jpg",
                        "--control", f"canny={edges}", *TINY, "--out", tmp_path / "D"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "D").iterdir()) == ["coffee-multi-s20-map1.png", "coffee-multi-s20.png"]
    png = tmp_path / "D" / "coffee-multi-s20.png"
    rec = metadata.read(png)
    assert rec["settings"]["controls"][0]["image"]["sha256"] == metadata.file_sha256(edges)
    assert [m["name"] for m in rec["models"]["controlnets"]] == ["canny"]
    assert 'ControlNet 0: "Module: none, Model: canny' in Image.open(png).info["parameters"]
    moved = tmp_path / "moved.png"
    edges.rename(moved)
    code, _, err = run(["generate", "--from-png", png, "--out", tmp_path / "D2"], capsys)
    assert code == 1 and "give it with --control NAME=PATH" in err and len(err.strip().splitlines()) == 1
    assert run(["generate", "--from-png", png, "--control", f"canny={moved}", "--out", tmp_path / "D2"], capsys)[0] == 0
    assert np.array_equal(pixels(png), pixels(tmp_path / "D2" / png.name))
