"""Saved embeddings (``prompt_free.embeddings``, ``prompt-free embed``): saved-then-loaded gives
the pixels of the reference bit for bit through the CLI and the PNG redo, the combine modes'
arithmetic, a SeeCoder mismatch noted, bad files refused clearly."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from prompt_free import embeddings as E
from prompt_free.engine import Engine
from prompt_free.errors import InputImageError, InvalidSettingError
from prompt_free.tasks import VariationSettings, image_variation
from tests.helpers.cli import TINY, pixels, run

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def engine():
    return Engine.from_profile("tiny", device="cpu")


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    path = tmp_path_factory.mktemp("emb") / "ref.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(path)
    return str(path)


def emb(seed: int, n=148, c=64, seecoder="SeeCoder") -> E.Embedding:
    g = torch.Generator().manual_seed(seed)
    return E.Embedding(torch.randn(1, n, c, generator=g), torch.zeros(1, n, c), seecoder, f"{seed:064x}", {}, f"e{seed}")


# ----------------------------------------------------------------------------- the CLI, bit for bit
def test_embed_then_generate_embedding_equals_generate_reference(ref, tmp_path, capsys):
    e = tmp_path / "ref.safetensors"
    code, _, err = run(["embed", "--reference", ref, "--profile", "tiny", "--out", e], capsys)
    assert code == 0, err
    saved = E.load(e)
    assert saved.seecoder == "SeeCoder" and saved.reference_sha256 and saved.settings["made_by"] == "encode"
    code, _, err = run(["generate", "--reference", ref, *TINY, "--out", tmp_path / "a"], capsys)
    assert code == 0, err
    code, _, err = run(["generate", "--embedding", e, *TINY, "--out", tmp_path / "b"], capsys)
    assert code == 0, err
    (a,), (b,) = sorted((tmp_path / "a").glob("*.png")), sorted((tmp_path / "b").glob("*.png"))
    assert np.array_equal(pixels(a), pixels(b))
    # the PNG of the --embedding run redoes it bit for bit (the embedding is a recorded input)
    code, _, err = run(["generate", "--from-png", b, "--profile", "tiny", "--out", tmp_path / "redo"], capsys)
    assert code == 0, err
    assert np.array_equal(pixels(b), pixels(tmp_path / "redo" / b.name))


def test_embed_with_a_source_mask_equals_generate_with_the_mask(ref, tmp_path, capsys):
    mask = np.zeros((80, 96), np.uint8)
    mask[:, :48] = 255  # the left half of the reference
    m = tmp_path / "left.png"
    Image.fromarray(mask).save(m)
    e = tmp_path / "left.safetensors"
    code, _, err = run(["embed", "--reference", ref, "--reference-mask", m, "--profile", "tiny", "--out", e], capsys)
    assert code == 0, err
    assert E.load(e).settings["reference_mask_sha256"]
    code, _, err = run(["generate", "--reference", ref, "--reference-mask", m, *TINY, "--out", tmp_path / "a"], capsys)
    assert code == 0, err
    code, _, err = run(["generate", "--embedding", e, *TINY, "--out", tmp_path / "b"], capsys)
    assert code == 0, err
    code, _, err = run(["generate", "--reference", ref, *TINY, "--out", tmp_path / "whole"], capsys)
    assert code == 0, err
    (a,), (b,), (w,) = (sorted((tmp_path / d).glob("*.png")) for d in ("a", "b", "whole"))
    assert np.array_equal(pixels(a), pixels(b)) and not np.array_equal(pixels(a), pixels(w))
    code, _, err = run(["embed", "--combine", e, e, "--reference-mask", m, "--out", tmp_path / "c.safetensors"], capsys)
    assert code == 2 and "--reference-mask are for --reference" in err


def test_cli_combine_and_bad_file(ref, tmp_path, capsys):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    emb(1).save(a)
    emb(2).save(b)
    out = tmp_path / "avg.safetensors"
    code, _, err = run(["embed", "--combine", a, b, "--weights", "1", "3", "--mode", "average", "--out", out], capsys)
    assert code == 0, err
    got = E.load(out)
    assert torch.allclose(got.context, (emb(1).context + 3 * emb(2).context) / 4)
    assert got.settings == {"made_by": "combine", "mode": "average", "weights": [1.0, 3.0],
                            "inputs": [{"name": "a.safetensors", "reference_sha256": f"{1:064x}"},
                                       {"name": "b.safetensors", "reference_sha256": f"{2:064x}"}]}
    fake = tmp_path / "evil.safetensors"
    fake.write_bytes(pickle.dumps({"context": torch.zeros(1, 148, 32)}))
    code, _, err = run(["generate", "--embedding", fake, *TINY, "--out", tmp_path / "x"], capsys)
    assert code == 1 and "is not a safetensors file" in err


# ----------------------------------------------------------------------------- combining
def test_combine_arithmetic():
    a, b = emb(1), emb(2)
    assert torch.equal(E.combine([a, a], mode="average").context, a.context)
    assert torch.equal(E.combine([a, a], mode="subtract").context, torch.zeros_like(a.context))
    assert torch.allclose(E.combine([a, b], [2, 0.5], "add").context, 2 * a.context + 0.5 * b.context)
    assert torch.allclose(E.combine([a, b, b], [1, 1, 1], "subtract").context, a.context - 2 * b.context)
    assert torch.allclose(E.combine([a, a], mode="norm_average").context, a.context, atol=1e-6)
    mixed = E.combine([a, b], [1, 3], "norm_average").context
    target = (a.context.norm(dim=-1) + 3 * b.context.norm(dim=-1)) / 4
    assert torch.allclose(mixed.norm(dim=-1), target, atol=1e-5)
    plain = E.combine([a, b], [1, 3], "average").context
    assert (plain.norm(dim=-1) < target).all()  # averaging shortens the tokens; norm_average restores them
    cos = torch.nn.functional.cosine_similarity(mixed, plain, dim=-1)
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5)  # same directions


def test_combine_refusals():
    a = emb(1)
    with pytest.raises(InvalidSettingError, match="two or more"):
        E.combine([a])
    with pytest.raises(InvalidSettingError, match="same shape"):
        E.combine([a, emb(2, n=10)])
    with pytest.raises(InvalidSettingError, match="one SeeCoder"):
        E.combine([a, emb(2, seecoder="SeeCoder-PA")])
    with pytest.raises(InvalidSettingError, match="sum above 0"):
        E.combine([a, emb(2)], [1, -1], "average")
    with pytest.raises(InvalidSettingError, match="one weight per embedding"):
        E.combine([a, emb(2)], [1])
    with pytest.raises(InvalidSettingError, match="unknown combine mode"):
        E.combine([a, emb(2)], mode="median")


# ----------------------------------------------------------------------------- loading
def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    a = emb(3)
    a.settings = {"made_by": "encode", "reference_size": [1, 2]}
    path = a.save(tmp_path / "a.safetensors")
    got = E.load(path)
    assert torch.equal(got.context, a.context) and torch.equal(got.uncond, a.uncond)
    assert (got.seecoder, got.reference_sha256, got.settings, got.name) == (a.seecoder, a.reference_sha256, a.settings,
                                                                          "a.safetensors")
    assert torch.equal(E.load(a.to_bytes()).context, a.context)


def test_bad_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    pickled = tmp_path / "renamed.safetensors"
    torch.save({"context": torch.zeros(1, 148, 32)}, pickled)
    with pytest.raises(InputImageError, match="'renamed.safetensors' is not a safetensors file"):
        E.load(pickled)
    flat = tmp_path / "flat.safetensors"
    save_file({"context": torch.zeros(148, 32), "uncond": torch.zeros(148, 32)}, flat)
    with pytest.raises(InputImageError, match=r"its context is \(148, 32\), expected \(1, N, C\)"):
        E.load(flat)
    odd = tmp_path / "odd.safetensors"
    save_file({"context": torch.zeros(1, 148, 32), "uncond": torch.zeros(1, 10, 32)}, odd)
    with pytest.raises(InputImageError, match="same shape"):
        E.load(odd)
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, other)
    with pytest.raises(InputImageError, match="not a Prompt-Free embedding"):
        E.load(other)
    with pytest.raises(InputImageError, match="does not exist"):
        E.load(tmp_path / "missing.safetensors")


def test_width_mismatch_refused_and_seecoder_mismatch_noted(engine, ref):
    s = VariationSettings(width=64, height=64, steps=2)
    wide = emb(1, c=32)
    with pytest.raises(InvalidSettingError, match="is 32 wide but base model 'Tiny SD' expects 64"):
        image_variation(engine, None, s, embedding=wide)
    pa = E.encode(engine, ref, "SeeCoder-PA")
    got = image_variation(engine, None, s, embedding=pa)
    assert any("SeeCoder 'SeeCoder-PA'" in n for n in got.info["notes"])


def test_no_reference_and_no_embedding_is_refused(engine):
    with pytest.raises(InputImageError):
        image_variation(engine, None, VariationSettings(width=64, height=64, steps=2))
