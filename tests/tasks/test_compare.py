"""Comparison task (library level, tiny profile, offline): Prompt-Free vs Dual-ControlNet vs
IP-Adapter with the same inputs; shared components, lazy text encoder, switched-off columns,
determinism, equality with the Reference+ControlNet task, clear errors; the text module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import prompt_free.engine as engine_module
import prompt_free.sampling as sampling_module
from prompt_free import text, tiny
from prompt_free.engine import Engine
from prompt_free.errors import (
    CheckpointError,
    InputImageError,
    InvalidSettingError,
    ModelUnavailableError,
    UnknownModelError,
)
from prompt_free.images import image_to_tensor
from prompt_free.registry import Registry
from prompt_free.conditioning import Conditioning
from prompt_free.sampling import ControlInput, Sampler
from prompt_free.tasks import ControlSettings, ControlSpec, reference_control
from prompt_free.tasks.compare import (
    DUAL_CONTROLNET,
    IP_ADAPTER,
    METHODS,
    PROMPT_FREE,
    CompareSettings,
    available_methods,
    compare,
    differences,
)
from prompt_free.tasks.control import MODE_AS_IS, MODE_PREPROCESS
from tests.helpers.app import EXAMPLES
from tests.helpers.models import IP_NAME, tiny_profile_with, write_tiny_ip_adapter

pytestmark = pytest.mark.timeout(300)

S = 64  # output side: latent 8x8


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """The tiny profile plus a tiny IP-Adapter registered from a temp file."""
    folder = tmp_path_factory.mktemp("ip")
    path = write_tiny_ip_adapter(folder)
    return Engine(tiny_profile_with(ip_adapters={IP_NAME: {"path": str(path)}}), device="cpu")


@pytest.fixture
def plain_engine():
    """A fresh tiny-profile engine (no IP-Adapter configured): load counts start at zero."""
    return Engine.from_profile("tiny", device="cpu")


@pytest.fixture(scope="module")
def reference():
    return Image.open(EXAMPLES / "astronaut.jpg").convert("RGB").resize((S, S), Image.BICUBIC)


@pytest.fixture(scope="module")
def structure():
    return Image.open(EXAMPLES / "canny_house.png").convert("RGB")  # a ready canny map


def settings(**kw):
    base = dict(width=S, height=S, steps=2, seed=5, guidance=2.0)
    base.update(kw)
    return CompareSettings(**base)


def pixels(img):
    return np.asarray(img, dtype=np.int16)


class DenoiseSpy:
    """Records the UNet and ControlNets every sampling run used (engine.generate and the
    IP-Adapter column's own run both go through sampling.denoise)."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = sampling_module.denoise

        def spy(unet, scheduler, noise, cond, uncond, **kw):
            self.calls.append({
                "unet": id(unet),
                "controlnets": [id(getattr(c.controlnet, "controlnet", c.controlnet)) for c in kw.get("controls", ())],
                "context": tuple(cond.shape),
            })
            return real(unet, scheduler, noise, cond, uncond, **kw)

        monkeypatch.setattr(engine_module, "denoise", spy)
        monkeypatch.setattr(sampling_module, "denoise", spy)


@pytest.fixture(scope="module")
def full_run(engine, reference, structure):
    """All three columns once, with the sampling runs recorded."""
    mp = pytest.MonkeyPatch()
    try:
        spy = DenoiseSpy(mp)
        result = compare(engine, reference, structure, "canny", mode=MODE_AS_IS,
                         settings=settings(methods=METHODS))
    finally:
        mp.undo()
    return result, spy.calls


# ----------------------------------------------------------------------------- columns
def test_all_columns_produce_images_with_stats_and_side_by_side(engine, full_run):
    result, _ = full_run
    assert list(result.columns) == [PROMPT_FREE, DUAL_CONTROLNET, IP_ADAPTER]
    assert [c.image.size for c in result.columns.values()] == [(S, S)] * 3
    assert len(result.images) == 3
    for c in result.columns.values():
        assert c.timings["wall"] > 0 and "denoise" in c.timings and "decode" in c.timings
        assert c.peak_memory is None  # CPU: n/a
    assert result.side_by_side.size == (3 * S + 2 * 8, S)
    assert result.extras[0].size == (S, S)  # the structure map used by every column
    assert result.columns[DUAL_CONTROLNET].extras[0].size == (S, S)  # the shuffled reference
    # the columns really differ (different conditioning), though they share seed and structure
    a, b, c = (pixels(col.image) for col in result.columns.values())
    assert np.abs(a - b).mean() > 0.5 and np.abs(b - c).mean() > 0.5
    rows = {r["method"]: r for r in differences(result)}
    assert [r["text encoder"] for r in rows.values()] == ["no", "yes (CLIP)", "yes (CLIP)"]
    pf, dual, ip = rows.values()
    assert "SeeCoder" in pf["conditioning"] and pf["controlnets"] == "structure: canny"
    assert dual["controlnets"] == "content: shuffle, structure: canny" and "shuffle" in dual["conditioning"]
    assert "IP-Adapter" in ip["conditioning"] and ip["image encoder"].startswith("yes")
    assert result.info["timings"]["shared"] >= 0 and set(result.info["timings"]) == {"shared", *METHODS}


def test_columns_share_unet_vae_and_structure_controlnet(engine, full_run):
    result, calls = full_run
    base = engine.base_model(result.info["base_model"])
    structure_cn = engine.controlnet("canny")
    content_cn = engine.controlnet("shuffle")
    assert len(calls) == 3
    assert {c["unet"] for c in calls} == {id(base.unet)}  # one UNet for every column
    pf, dual, ip = calls
    assert pf["controlnets"] == [id(structure_cn)]
    assert dual["controlnets"] == [id(content_cn), id(structure_cn)]
    assert ip["controlnets"] == [id(structure_cn)]  # same object, only its context is cut to the text tokens
    assert pf["context"] == (1, 148, 64) and dual["context"] == (1, 77, 64) and ip["context"] == (1, 81, 64)
    # every shared model was built once
    counts = engine.load_counts
    assert counts[("base_models", "Tiny SD")] == 1 and counts[("controlnets", "canny")] == 1
    assert counts[("controlnets", "shuffle")] == 1
    assert sum(v for k, v in counts.items() if k[0] == "text_encoder") == 1
    # the UNet's own attention processors are back after the IP-Adapter column
    assert not any("IPAdapter" in type(p).__name__ for p in base.unet.attn_processors.values())


def test_same_seed_same_results_and_prompt_free_equals_reference_control(engine, full_run, reference, structure):
    result, _ = full_run
    again = compare(engine, reference, structure, "canny", mode=MODE_AS_IS, settings=settings(methods=METHODS))
    for m in METHODS:
        assert np.array_equal(pixels(again.columns[m].image), pixels(result.columns[m].image)), m
    task = reference_control(engine, reference, [ControlSpec("canny", structure, MODE_AS_IS)],
                             ControlSettings(width=S, height=S, steps=2, seed=5, guidance=2.0))
    assert np.array_equal(pixels(task.images[0]), pixels(result.columns[PROMPT_FREE].image))
    other = compare(engine, reference, structure, "canny", mode=MODE_AS_IS,
                    settings=settings(methods=(PROMPT_FREE,), seed=6))
    assert not np.array_equal(pixels(other.columns[PROMPT_FREE].image), pixels(result.columns[PROMPT_FREE].image))


def test_dual_controlnet_column_is_text_cfg_plus_both_controlnets(engine, reference, structure):
    s = settings(methods=(DUAL_CONTROLNET,), prompt="a house", negative_prompt="blurry", content_scale=0.7)
    result = compare(engine, reference, structure, "canny", mode=MODE_AS_IS, settings=s)
    col = result.columns[DUAL_CONTROLNET]
    cond = text.encode_prompt(engine, "Tiny SD", "a house")
    uncond = text.encode_prompt(engine, "Tiny SD", "blurry")
    controls = [ControlInput(engine.controlnet("shuffle"), image_to_tensor(col.extras[0]), 0.7),
                ControlInput(engine.controlnet("canny"), image_to_tensor(result.extras[0]), 1.0)]
    gen = engine.generate("Tiny SD", Conditioning(cond, uncond, controls),
                          Sampler(width=S, height=S, seed=5, steps=2, guidance=2.0))
    assert np.array_equal(pixels(gen.images[0]), pixels(col.image))
    assert "prompt 'a house'" in col.conditioning


def test_ip_adapter_column_at_scale_zero_is_text_plus_structure(engine, reference, structure):
    """IP scale 0 switches the image tokens off: what is left is the text + structure ControlNet
    run through engine.generate (same noise, sampler, decoding)."""
    result = compare(engine, reference, structure, "canny", mode=MODE_AS_IS,
                     settings=settings(methods=(IP_ADAPTER,), ip_adapter_scale=0.0))
    cond = text.encode_prompt(engine, "Tiny SD", "")
    controls = [ControlInput(engine.controlnet("canny"), image_to_tensor(result.extras[0]))]
    gen = engine.generate("Tiny SD", Conditioning(cond, cond, controls),
                          Sampler(width=S, height=S, seed=5, steps=2, guidance=2.0))
    diff = np.abs(pixels(gen.images[0]) - pixels(result.columns[IP_ADAPTER].image))
    assert diff.max() <= 1
    on = compare(engine, reference, structure, "canny", mode=MODE_AS_IS, settings=settings(methods=(IP_ADAPTER,)))
    assert np.abs(pixels(on.columns[IP_ADAPTER].image) - pixels(gen.images[0])).mean() > 0.5


# ----------------------------------------------------------------------------- switched-off columns
def test_switched_off_columns_do_no_work(plain_engine, reference, structure):
    e = plain_engine
    assert available_methods(e) == [PROMPT_FREE, DUAL_CONTROLNET]  # no IP-Adapter configured
    result = compare(e, reference, structure, "canny", mode=MODE_AS_IS, settings=settings(methods=(PROMPT_FREE,)))
    assert list(result.columns) == [PROMPT_FREE] and len(result.images) == 1
    assert set(result.info["timings"]) == {"shared", PROMPT_FREE}
    assert not any(k[0] in ("text_encoder", "ip_adapter", "ip_image_encoder") for k in e.load_counts)
    assert ("controlnets", "shuffle") not in e.load_counts
    assert result.side_by_side.size == (S, S)

    # and the other way round, on a fresh engine: no SeeCoder when the Prompt-Free column is off
    e = Engine.from_profile("tiny", device="cpu")
    result = compare(e, reference, structure, "canny", mode=MODE_AS_IS, settings=settings(methods=(DUAL_CONTROLNET,)))
    assert list(result.columns) == [DUAL_CONTROLNET]
    assert not any(k[0] == "seecoders" for k in e.load_counts)
    assert e.load_counts[("text_encoder", "tiny", None, None)] == 1
    compare(e, reference, structure, "canny", mode=MODE_AS_IS, settings=settings(methods=("dual-controlnet",)))
    assert e.load_counts[("text_encoder", "tiny", None, None)] == 1  # cached, not reloaded


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "case, kwargs, error, message",
    [
        ("missing reference", {"reference": None}, InputImageError, "no reference image"),
        ("missing structure", {"structure": None}, InputImageError, "no structure image"),
        ("all columns off", {"methods": ()}, InvalidSettingError, "all comparison columns are switched off"),
        ("ip not configured", {"methods": (PROMPT_FREE, IP_ADAPTER)}, InvalidSettingError, "ip_adapters"),
        ("unknown method", {"methods": ("magic",)}, InvalidSettingError, "unknown comparison method"),
        ("unknown controlnet", {"controlnet": "nope"}, UnknownModelError, "nope"),
        ("prompt not text", {"prompt": 3}, InvalidSettingError, "prompt must be text"),
        ("bad content scale", {"content_scale": 9}, InvalidSettingError, "content ControlNet scale"),
        ("bad steps", {"steps": 0}, InvalidSettingError, "steps must be between"),
    ],
)
def test_bad_inputs_give_clear_errors_before_loading_anything(plain_engine, reference, structure, case, kwargs, error, message):
    args = {"reference": reference, "structure": structure, "controlnet": "canny"}
    for k in list(kwargs):
        if k in args:
            args[k] = kwargs.pop(k)
    with pytest.raises(error, match=message):
        compare(plain_engine, args["reference"], args["structure"], args["controlnet"], mode=MODE_AS_IS,
                settings=settings(**kwargs))
    assert not plain_engine.load_counts, case


def test_photo_as_structure_map_is_refused_and_preprocess_mode_matches_reference_control(engine, reference):
    photo = Image.open(EXAMPLES / "coffee.jpg").convert("RGB")
    with pytest.raises(InputImageError, match="does not look like a canny map"):
        compare(engine, reference, photo, "canny", mode=MODE_AS_IS, settings=settings(methods=(PROMPT_FREE,)))
    result = compare(engine, reference, photo, "canny", mode=MODE_PREPROCESS, settings=settings(methods=(PROMPT_FREE,)))
    task = reference_control(engine, reference, [ControlSpec("canny", photo, MODE_PREPROCESS)],
                             ControlSettings(width=S, height=S, steps=2, seed=5, guidance=2.0))
    assert np.array_equal(pixels(task.images[0]), pixels(result.columns[PROMPT_FREE].image))
    assert np.array_equal(pixels(task.extras[0]), pixels(result.extras[0]))


def test_broken_ip_adapter_file_gives_clear_error(tmp_path, reference, structure):
    from safetensors.torch import save_file

    bad = tmp_path / "not-ip.safetensors"
    save_file({"weight": torch.zeros(2)}, str(bad))
    e = Engine(tiny_profile_with(ip_adapters={"Broken": {"path": str(bad)}}), device="cpu")
    with pytest.raises(CheckpointError, match="not an IP-Adapter file"):
        compare(e, reference, structure, "canny", mode=MODE_AS_IS, settings=settings(methods=(IP_ADAPTER,), steps=1))


# ----------------------------------------------------------------------------- text encoder
def test_tiny_text_encoder_and_tokenizer_are_built_offline_and_match_the_unet(plain_engine):
    te = text.text_encoder(plain_engine, "Tiny SD")
    vocab, merges = text.tiny_vocab()
    assert len(vocab) == te.model.config.vocab_size == 1000 and merges
    assert te.hidden_size == plain_engine.base_model("Tiny SD").unet.config.cross_attention_dim == tiny.TINY_CONTEXT_DIM
    ids = te.token_ids(["", "a photo of a cat"])
    assert ids.shape == (2, 77)
    assert ids[0, 0] == vocab["<|startoftext|>"] and ids[0, 1] == vocab["<|endoftext|>"]
    assert int(ids.max()) < 1000
    assert te.token_ids(["word " * 200]).shape == (1, 77)  # long prompts are cut like SD's
    a, b = te.encode("a photo of a cat"), te.encode("a painting of a dog")
    assert a.shape == (1, 77, 64) and not torch.equal(a, b)
    assert torch.equal(a, te.encode("a photo of a cat"))
    assert torch.equal(te.encode(None), te.encode(""))
    with pytest.raises(InvalidSettingError, match="prompt must be text"):
        te.encode(3)
    # the same encoder object for every tiny base model, loaded once
    assert text.text_encoder(plain_engine, "Tiny SD (other seed)") is te
    assert plain_engine.load_counts[("text_encoder", "tiny", None, None)] == 1


def test_real_text_encoder_sources_and_clear_error_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    e = Engine(Registry.load(None, "real"), device="cpu")
    assert text.text_encoder_source(e, "Stable Diffusion v1.5") == (
        "stable-diffusion-v1-5/stable-diffusion-v1-5", "text_encoder", "tokenizer", None)
    assert text.text_encoder_source(e, "Deliberate v2 (single file)")[0] == text.SD_CLIP_REPO
    assert text.text_encoder_source(e, "Deliberate-v2")[0] == text.SD_CLIP_REPO
    with pytest.raises(UnknownModelError):
        text.text_encoder_source(e, "SD 9")
    # A repo no cache can hold: offline, loading it is the clear "not available" message.
    missing = Engine(Registry.from_dict({
        "seecoders": {"SeeCoder": {"tiny": "seecoder"}},
        "base_models": {"Missing": {"repo": "pfd-tests/no-such-model"}},
    }), device="cpu")
    with pytest.raises(ModelUnavailableError, match="text encoder 'pfd-tests/no-such-model'.* not available"):
        text.text_encoder(missing, "Missing")
