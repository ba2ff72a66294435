"""``prompt_free.diffusers_prior``: SeeCoderModel and PromptFreePriorPipeline as diffusers objects
(save/load bit for bit, the official file layout, the engine's own encodings and arithmetic),
their input checks, and ``prompt-free export`` (the folders it writes, its errors)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from diffusers import ControlNetModel, StableDiffusionPipeline
from PIL import Image
from safetensors.torch import load_file

from prompt_free import Engine, InvalidSettingError, PromptFreePriorPipeline, SeeCoderModel, tiny
from prompt_free.mixing import AVERAGE, blend_contexts, with_strength
from prompt_free.seecoder import load_seecoder, load_unconditional_embedding, save_seecoder
from prompt_free.seecoder.config import SeeCoderConfig
from tests.helpers.cli import run
from tests.helpers.diffusers_export import small_references, base_pipeline, export_tiny
from tests.helpers.shared import shared_file



@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    return small_references(tmp_path_factory.mktemp("refs"))


@pytest.fixture(scope="module")
def engine():
    return Engine.from_profile("tiny", device="cpu")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_tiny(tmp_path_factory.mktemp("export") / "pfd-export", "--seecoder", "SeeCoder-Anime",
                       "--base-model", "Tiny SD", "--controlnet", "canny")


@pytest.fixture(scope="module")
def prior(exported):
    return PromptFreePriorPipeline.from_pretrained(exported / "prior")


def test_export_writes_a_prior_a_base_without_text_encoder_and_controlnets(exported, engine):
    index = json.loads((exported / "prior" / "model_index.json").read_text())
    assert index["_class_name"] == "PromptFreePriorPipeline"
    assert index["seecoder"][1] == "SeeCoderModel" and index["image_processor"][1] == "SeeCoderImageProcessor"
    assert (exported / "prior" / "seecoder" / "diffusion_pytorch_model.safetensors").is_file()
    card = (exported / "prior" / "README.md").read_text()
    for said in ("Prompt-Free Diffusion: Taking 'Text' out of Text-to-Image Diffusion Models", "CVPR 2024",
                 "license: mit", "PromptFreePriorPipeline.from_pretrained", "SeeCoder-Anime"):
        assert said in card
    base = json.loads((exported / "base" / "model_index.json").read_text())
    assert base["_class_name"] == "StableDiffusionPipeline"
    assert base["text_encoder"] == [None, None] and base["tokenizer"] == [None, None]
    assert base["safety_checker"] == [None, None] and base["requires_safety_checker"] is False
    pipe = base_pipeline(StableDiffusionPipeline, exported)
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert pipe.scheduler.config.timestep_spacing == "leading" and pipe.scheduler.config.steps_offset == 1
    ours = engine.base_model("Tiny SD")
    assert all(torch.equal(v, pipe.unet.state_dict()[k]) for k, v in ours.unet.state_dict().items())
    cn = ControlNetModel.from_pretrained(exported / "controlnets" / "canny")
    assert all(torch.equal(v, cn.state_dict()[k]) for k, v in engine.controlnet("canny").state_dict().items())


def test_the_model_card_s_usage_runs(exported, refs, monkeypatch):
    """The card's snippet as written, from the export's parent folder (64x64, 2 steps instead of 50)."""
    card = (exported / "prior" / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert "num_inference_steps=50" in snippet
    monkeypatch.chdir(exported.parent)
    Image.open(refs[0]).save(exported.parent / "reference.jpg")
    namespace = {}
    exec(compile(snippet.replace("num_inference_steps=50", "num_inference_steps=2, height=64, width=64"), "card", "exec"),
         namespace)
    assert namespace["image"].size == (64, 64)


def test_the_prior_encodes_as_the_engine_does(prior, engine, refs):
    """The same encoder, preprocessing, unconditional context and arithmetic: bit for bit."""
    A, B = refs
    ctx, uncond = engine.encode_reference(A, "SeeCoder-Anime")
    out = prior(A)
    assert torch.equal(out.prompt_embeds, ctx) and torch.equal(out.negative_prompt_embeds, uncond)
    assert bool(uncond.any()), "SeeCoder-Anime's unconditional context is the anime embedding, not zeros"
    assert torch.equal(prior(A, reference_strength=0.6).prompt_embeds, with_strength(ctx, uncond, 0.6))
    ctx_b, _ = engine.encode_reference(B, "SeeCoder-Anime")
    mixed, _, _ = blend_contexts([ctx, ctx_b], uncond, [1.0, 0.5], AVERAGE)
    got = prior([A, B], reference_weights=[1.0, 0.5], reference_strength=1.5)
    assert torch.equal(got.prompt_embeds, with_strength(mixed, uncond, 1.5))
    assert torch.equal(prior([A, B], reference_weights=[1.0, 0]).prompt_embeds, ctx)  # weight 0: left out
    two = prior(A, num_images_per_prompt=2, return_dict=False)
    assert two[0].shape == (2, 148, tiny.TINY_CONTEXT_DIM) and torch.equal(two[0][1:], ctx)


def test_save_pretrained_then_from_pretrained_gives_the_same_embeddings(prior, refs, tmp_path):
    prior.save_pretrained(tmp_path / "again")
    again = PromptFreePriorPipeline.from_pretrained(tmp_path / "again")
    for kwargs in ({}, {"reference_strength": 0.3}):
        first, second = prior(list(refs), **kwargs), again(list(refs), **kwargs)
        assert torch.equal(first.prompt_embeds, second.prompt_embeds)
        assert torch.equal(first.negative_prompt_embeds, second.negative_prompt_embeds)
    model = SeeCoderModel.from_pretrained(tmp_path / "again" / "seecoder")
    assert model.config.unconditional_kind == "embedding"
    assert SeeCoderConfig.from_official_dict(model.config) == tiny.TINY_SEECODER


def _same_weights(model: SeeCoderModel, encoder) -> None:
    ours = {k: v for k, v in encoder.state_dict().items()}
    theirs = {k[len("encoder."):]: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    assert theirs.keys() == ours.keys()
    assert all(torch.equal(theirs[k], ours[k]) and theirs[k].dtype == ours[k].dtype for k in ours)


@pytest.mark.parametrize("variant", ["seecoder", "seecoder_pa"])
def test_official_files_load_to_the_weights_of_load_seecoder(variant, tmp_path):
    """The reduced official fixture (``ctx.image.*`` keys, non-random weights) and a random tiny
    SeeCoder written in the official layout: ``from_single_file`` holds what ``load_seecoder`` reads,
    and its save_pretrained folder loads back to the same weights and outputs."""
    fixture = shared_file("fixtures", "seecoder_parity", f"{variant}_weights.safetensors")
    assert all(k.startswith("ctx.image.") for k in load_file(str(fixture)))
    written = tmp_path / "official.safetensors"
    save_seecoder(tiny.tiny_seecoder(variant == "seecoder_pa", seed=3), written)
    x = torch.rand(1, 3, 96, 64, generator=torch.Generator().manual_seed(0))
    for path in (fixture, written):
        model = SeeCoderModel.from_single_file(path)
        _same_weights(model, load_seecoder(path))
        assert model.config.unconditional_kind == "zeros" and not model.unconditional.any()
        model.save_pretrained(tmp_path / "saved")
        again = SeeCoderModel.from_pretrained(tmp_path / "saved")
        _same_weights(again, load_seecoder(path))
        with torch.no_grad():
            assert torch.equal(again(x), model(x))


def test_model_keys_are_the_official_key_names():
    """The full-size model (built on the meta device) holds the released file's 616 keys under ``encoder.``."""
    official = json.loads(shared_file("spec", "keys", "seecoder_keys.json").read_text())
    with torch.device("meta"):
        model = SeeCoderModel()
    keys = {"ctx.image." + k[len("encoder."):]: list(v.shape) for k, v in model.state_dict().items() if k != "unconditional"}
    assert keys == official
    assert list(model.unconditional.shape) == [1, 148, 768]


def test_an_unconditional_embedding_file_becomes_the_buffer(tmp_path):
    rows = torch.randn(77, tiny.TINY_CONTEXT_DIM, generator=torch.Generator().manual_seed(1)).half()
    torch.save(rows, tmp_path / "anime_ug.pth")
    save_seecoder(tiny.tiny_seecoder(), tmp_path / "sc.safetensors")
    model = SeeCoderModel.from_single_file(tmp_path / "sc.safetensors", unconditional=tmp_path / "anime_ug.pth")
    expected = load_unconditional_embedding(tmp_path / "anime_ug.pth", 148, tiny.TINY_CONTEXT_DIM)
    assert torch.equal(model.unconditional, expected) and model.config.unconditional_kind == "embedding"
    half = SeeCoderModel.from_single_file(tmp_path / "sc.safetensors", unconditional=expected, dtype=torch.float16)
    assert half.dtype == torch.float16 and torch.equal(half.unconditional, expected.half())


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompt="a cat"), "has no text encoder"),
    (dict(reference_weights=[1.0, 1.0]), "reference_weights has 2 values for 1 image"),
    (dict(reference_weights=[0.0]), "all reference_weights are 0"),
    (dict(reference_weights=[3.0]), "reference_weights[0]"),
    (dict(reference_strength=2.5), "reference strength"),
    (dict(num_images_per_prompt=0), "num_images_per_prompt"),
])
def test_bad_arguments_are_refused_before_any_encoding(prior, refs, kwargs, message):
    with pytest.raises(InvalidSettingError, match=re.escape(message)):
        prior(refs[0], **kwargs)


@pytest.mark.parametrize("count", [0, None, 5])
def test_no_or_too_many_references_are_refused(prior, refs, count):
    with pytest.raises(InvalidSettingError):
        prior(None if count is None else [refs[0]] * count)


def test_export_errors_are_one_line(tmp_path, capsys):
    code, _, err = run(["export", "--profile", "tiny", "--seecoder", "Nope", "--out", tmp_path / "x"], capsys)
    assert code == 1 and "unknown SeeCoder 'Nope'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x" / "prior").exists()
    (tmp_path / "y" / "prior").mkdir(parents=True)
    code, _, err = run(["export", "--profile", "tiny", "--out", tmp_path / "y"], capsys)
    assert code == 2 and "already exist" in err and len(err.strip().splitlines()) == 1
