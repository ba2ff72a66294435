"""What a PNG record says about models and inputs, from the registry's sources: a local file's
sha256, a hub file's blob hash and revision from a Hugging Face cache laid out as the hub's."""

from __future__ import annotations

import hashlib
import os

import pytest
from PIL import Image

from prompt_free import metadata
from prompt_free.registry import Registry


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face cache holding owner/seecoder's seecoder.safetensors at revision abc123...,
    laid out as huggingface_hub writes it (refs, snapshots linking to blobs named by sha256)."""
    import huggingface_hub.constants as C

    data = b"weights of a SeeCoder"
    sha = hashlib.sha256(data).hexdigest()
    repo = tmp_path / "hub" / "models--owner--seecoder"
    commit = "abc123" + "0" * 34
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / sha).write_bytes(data)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    os.symlink(f"../../blobs/{sha}", repo / "snapshots" / commit / "seecoder.safetensors")
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return sha, commit


def test_model_records_name_what_the_registry_can_tell_without_downloading(tmp_path, hub_cache):
    sha, commit = hub_cache
    local = tmp_path / "model.safetensors"
    local.write_bytes(b"a single-file base model")
    reg = Registry.from_dict({
        "seecoders": {"Hub SeeCoder": {"repo": "owner/seecoder", "file": "seecoder.safetensors"},
                      "Pinned": {"repo": "owner/other", "file": "x.safetensors", "sha256": "f" * 64},
                      "Not here": {"repo": "owner/missing", "file": "y.safetensors"}},
        "base_models": {"Local": {"path": str(local)}},
    }, profile="real")
    assert metadata.model_record(reg, "seecoders", "Hub SeeCoder") == {
        "name": "Hub SeeCoder", "repo": "owner/seecoder", "revision": commit, "sha256": sha}
    assert metadata.model_record(reg, "seecoders", "Pinned") == {"name": "Pinned", "sha256": "f" * 64}
    assert metadata.model_record(reg, "seecoders", "Not here") == {
        "name": "Not here", "source": "owner/missing/y.safetensors (hub)"}
    assert metadata.model_record(reg, "base_models", "Local") == {
        "name": "Local", "file": "model.safetensors", "sha256": hashlib.sha256(b"a single-file base model").hexdigest()}


def test_inputs_are_recorded_by_file_hash_or_pixel_hash(tmp_path):
    img = Image.new("RGB", (4, 3), (10, 20, 30))
    path = tmp_path / "ref.png"
    img.save(path)
    rec = metadata.input_record(str(path), keep_path=False)
    assert rec == {"input": "file", "name": "ref.png", "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert metadata.input_record(img)["pixels_sha256"] == metadata.pixels_sha256(Image.open(path).convert("RGB"))
    assert metadata.input_record(img)["pixels_sha256"] != metadata.pixels_sha256(Image.new("RGB", (4, 3)))


def test_a_record_from_a_newer_format_or_without_chunk_is_refused(tmp_path):
    img = Image.new("RGB", (8, 8))
    img.info[metadata.JSON_CHUNK] = '{"format": 99, "task": "image_variation", "settings": {}, "version": "9"}'
    metadata.save_png(img, tmp_path / "new.png")
    with pytest.raises(metadata.MetadataError, match="newer version"):
        metadata.read(tmp_path / "new.png")
    plain = Image.new("RGB", (8, 8))
    plain.info["parameters"] = "Steps: 20, Sampler: Euler a"
    metadata.save_png(plain, tmp_path / "a1111.png")
    with pytest.raises(metadata.MetadataError, match="A1111 'parameters' chunk from another tool"):
        metadata.read(tmp_path / "a1111.png")


def test_unknown_settings_in_a_record_are_refused_by_name():
    rec = {"task": "image_variation", "settings_type": "VariationSettings", "settings": {"seed": 1, "lora_scale": 0.5},
           "call": {}}
    with pytest.raises(metadata.MetadataError, match="settings this version does not know: lora_scale"):
        metadata.redo_call(rec)


def test_a_comparison_column_is_redone_from_its_png(tmp_path):
    """The record is generic: the comparison (its own settings dataclass and call) is redone
    from a PNG of its second column with the same pixels."""
    import numpy as np

    from prompt_free.engine import Engine
    from prompt_free.tasks import CompareSettings, compare
    from tests.helpers.app import EXAMPLES

    engine = Engine.from_profile("tiny")
    s = CompareSettings(steps=1, width=64, height=64, seed=4)
    call = {"reference": str(EXAMPLES / "coffee.jpg"), "structure": str(EXAMPLES / "canny_house.png"),
            "controlnet": "canny", "mode": "use as-is", "preprocessor": None}
    result = compare(engine, **call, settings=s)
    metadata.tag(engine, result, "compare", s, call, keep_paths=False)
    metadata.save_png(result.images[1], tmp_path / "column.png")

    rec = metadata.read(tmp_path / "column.png")
    assert rec["settings_type"] == "CompareSettings" and rec["output"] == {"kind": "images", "index": 1}
    with pytest.raises(metadata.InputImageError, match="give it with --reference PATH"):
        metadata.redo_call(rec)  # the app records names only
    redo = metadata.redo_call(rec, {"reference": call["reference"], "structure": call["structure"]})
    _, picture = redo.run(engine)
    assert np.array_equal(np.asarray(picture), np.asarray(Image.open(tmp_path / "column.png")))


def test_a_multi_reference_picture_is_redone_from_its_png(tmp_path):
    """The record covers the tabs added later too: a Multi-Reference run (references with
    weights and a mask, as dataclasses in the call) is redone bit for bit from its PNG."""
    import numpy as np

    from prompt_free.engine import Engine
    from prompt_free.tasks import MultiReferenceSettings, Reference, multi_reference
    from tests.helpers.app import EXAMPLES

    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64))
    mask.save(tmp_path / "right.png")
    engine = Engine.from_profile("tiny")
    s = MultiReferenceSettings(steps=1, width=64, height=64, seed=3, blend="regions")
    refs = [Reference(str(EXAMPLES / "coffee.jpg"), 1.0), Reference(str(EXAMPLES / "chelsea.jpg"), 0.8, str(tmp_path / "right.png"))]
    result = multi_reference(engine, refs, s)
    metadata.tag(engine, result, "multi_reference", s, {"references": refs})
    metadata.save_png(result.images[0], tmp_path / "multi.png")

    rec = metadata.read(tmp_path / "multi.png")
    assert rec["task"] == "multi_reference" and rec["settings"]["blend"] == "regions"
    _, picture = metadata.redo_call(rec).run(engine)
    assert np.array_equal(np.asarray(picture), np.asarray(Image.open(tmp_path / "multi.png")))


def test_an_edit_with_a_reference_is_redone_from_its_png(tmp_path):
    import numpy as np

    from prompt_free.engine import Engine
    from prompt_free.tasks import EditSettings, edit_with_reference
    from tests.helpers.app import EXAMPLES

    mask = Image.new("L", (96, 64), 0)
    mask.paste(255, (20, 10, 60, 50))
    mask.save(tmp_path / "mask.png")
    Image.open(EXAMPLES / "rocket.jpg").convert("RGB").resize((96, 64)).save(tmp_path / "photo.png")
    engine = Engine.from_profile("tiny")
    s = EditSettings(steps=1, seed=2, max_side=128, reference_strength=1.5)
    call = {"photo": str(tmp_path / "photo.png"), "mask": str(tmp_path / "mask.png"),
            "reference": str(EXAMPLES / "coffee.jpg")}
    result = edit_with_reference(engine, **call, settings=s)
    metadata.tag(engine, result, "edit_with_reference", s, call)
    metadata.save_png(result.images[0], tmp_path / "edit.png")

    rec = metadata.read(tmp_path / "edit.png")
    assert rec["settings"]["reference_strength"] == 1.5
    _, picture = metadata.redo_call(rec).run(engine)
    assert np.array_equal(np.asarray(picture), np.asarray(Image.open(tmp_path / "edit.png")))
