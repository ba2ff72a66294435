"""Live previews in the library (prompt_free.previews): a run with a preview callback gives the same
final pixels as one without (eager and fast loop, DDIM and a multistep scheduler), the first
preview comes no later than step 5, the preview decoder of the ``previews:`` entry is loaded
lazily, once, and counted in the memory report, a TAESD is read from a real diffusers folder,
and a decoder that cannot load never fails a request."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from prompt_free import settings
from prompt_free.download import entry_needs
from prompt_free.engine import Engine
from prompt_free.errors import ConfigError, InvalidSettingError
from prompt_free.images import load_image
from prompt_free.previews import Preview, showing
from prompt_free.registry import Registry
from prompt_free.sampling import denoise, make_scheduler
from prompt_free.tasks import VariationSettings, image_variation
from prompt_free.tiny import TINY_TAESD_CONFIG, tiny_unet
from tests.helpers.tensors import one_thread  # noqa: F401 (one_thread: an autouse fixture)

REF = "assets/examples/chelsea.jpg"


@pytest.fixture(scope="module")
def reference():
    return load_image(REF)


def pixels(result):
    return [np.asarray(im) for im in result.images]


def tiny_profile(**sections):
    """The tiny profile's first SeeCoder and base model with the given extra sections."""
    return Registry.from_dict({
        "seecoders": {"SeeCoder": {"tiny": "seecoder"}},
        "base_models": {"Tiny SD": {"tiny": "sd", "seed": 1}},
        **sections,
    }, profile="tiny-previews")


@pytest.mark.parametrize("fast", [False, True], ids=["eager", "fast"])
@pytest.mark.parametrize("scheduler", ["DDIM", "DPM++ 2M Karras", "Euler a"])  # Euler a draws noise every step
def test_previews_never_change_the_final_pixels(reference, fast, scheduler):
    engine = Engine.from_profile("tiny", device="cpu", fast=fast)
    s = VariationSettings(steps=8, width=64, height=64, num_images=2, seed=3, scheduler=scheduler)
    plain = image_variation(engine, reference, s)
    seen = []
    with showing(seen.append):
        shown = image_variation(engine, reference, s)
    assert [p.step for p in seen] == [2, 4, 6]  # every 2 steps of 8, never the last (the final picture comes)
    assert all(p.total == 8 and len(p.images) == 2 and p.images[0].size == (64, 64) for p in seen)
    for a, b in zip(pixels(plain), pixels(shown)):
        assert np.array_equal(a, b)
    # The explicit parameter does the same.
    explicit = []
    run = _conditioning(engine, reference, scheduler)
    gen = engine.generate("Tiny SD", *run, preview=explicit.append)
    assert [p.step for p in explicit] == [2, 4, 6]
    assert np.array_equal(np.asarray(gen.images[0]), np.asarray(engine.generate("Tiny SD", *run).images[0]))


def _conditioning(engine, reference, scheduler):
    from prompt_free.conditioning import Conditioning
    from prompt_free.sampling import Sampler

    cond, uncond = engine.encode_reference(reference, "SeeCoder")
    return Conditioning(cond, uncond), Sampler(64, 64, seed=3, num_images=1, steps=8, scheduler=scheduler)


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 6, 8, 12, 20, 50, 150])
def test_first_preview_no_later_than_step_five(steps):
    every = settings.preview_interval(steps)
    first = every if every < steps else None  # no preview of a run whose only preview would be the final
    assert every >= 1 and (first is None or first <= 5)
    if steps >= 4:
        assert first is not None


def test_denoise_calls_the_hook_on_its_schedule_with_the_steps_x0():
    """50 DDIM steps: previews after steps 5, 10 ... 45, each with the step's predicted x0 (not the
    noisy latents) and a tensor the loop does not reuse in place."""
    unet = tiny_unet(1)
    g = torch.Generator().manual_seed(0)
    noise, cond = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 148, 64, generator=g)
    calls = []
    out = denoise(unet, make_scheduler("DDIM"), noise, cond, torch.zeros(1, 148, 64), steps=50, guidance=2.0,
                  preview=lambda i, n, x: calls.append((i, n, x.clone())))
    assert [c[0] for c in calls] == list(range(5, 50, 5)) and all(c[1] == 50 for c in calls)
    plain = denoise(unet, make_scheduler("DDIM"), noise, cond, torch.zeros(1, 148, 64), steps=50, guidance=2.0)
    assert torch.equal(out, plain)
    # x0 at step 45 of 50 is close to the final latents; the noisy latents of step 5 are not x0 of step 5.
    last = calls[-1][2]
    assert (last - out).abs().max() < (calls[0][2] - out).abs().max()


def test_preview_decoder_loads_lazily_once_and_is_counted(reference):
    engine = Engine.from_profile("tiny", device="cpu")
    s = VariationSettings(steps=4, width=64, height=64)
    image_variation(engine, reference, s)
    assert "preview_decoder" not in {r["kind"] for r in engine.memory_report()}
    for _ in range(2):
        with showing(lambda p: None):
            image_variation(engine, reference, s)
    rows = [r for r in engine.memory_report() if r["kind"] == "preview_decoder"]
    assert [r["name"] for r in rows] == ["Tiny TAESD"] and rows[0]["bytes"] > 0
    assert engine.load_counts[("previews", "Tiny TAESD")] == 1


def test_taesd_from_a_diffusers_folder(tmp_path, reference):
    from diffusers import AutoencoderTiny

    torch.manual_seed(5)
    written = AutoencoderTiny(**TINY_TAESD_CONFIG)
    written.save_pretrained(tmp_path / "taesd")
    assert {p.name for p in (tmp_path / "taesd").iterdir()} == {"config.json", "diffusion_pytorch_model.safetensors"}
    reg = Registry.from_dict({
        "seecoders": {"SeeCoder": {"tiny": "seecoder"}},
        "base_models": {"Tiny SD": {"tiny": "sd", "seed": 1}},
        "previews": {"TAESD": {"path": "taesd"}},
    }, profile="taesd-folder", base_dir=tmp_path)
    assert reg.defaults["preview"] == "TAESD"
    assert [n.what for n in entry_needs(reg.entry("previews", "TAESD"))] == ["config.json", "weights"]
    engine = Engine(reg, device="cpu")
    decoder = engine.preview_decoder()
    assert type(decoder).__name__ == "AutoencoderTiny"
    for a, b in zip(written.state_dict().values(), decoder.state_dict().values()):
        assert torch.equal(a, b)
    seen = []
    with showing(seen.append):
        image_variation(engine, reference, VariationSettings(steps=4, width=64, height=64))
    assert [p.step for p in seen] == [1, 2, 3]


def test_a_preview_decoder_that_fails_to_load_never_fails_the_request(tmp_path, reference, caplog):
    (tmp_path / "not-a-model").mkdir()
    engine = Engine(tiny_profile(previews={"Broken": {"path": str(tmp_path / "not-a-model")}}), device="cpu")
    plain = Engine(tiny_profile(), device="cpu")
    s = VariationSettings(steps=4, width=64, height=64)
    seen = []
    with caplog.at_level(logging.WARNING, logger="prompt_free.engine"), showing(seen.append):
        first = image_variation(engine, reference, s)
        image_variation(engine, reference, s)
    warnings = [r.getMessage() for r in caplog.records if "live previews are off" in r.getMessage()]
    assert len(warnings) == 1 and "Broken" in warnings[0]
    assert seen == []
    assert np.array_equal(pixels(first)[0], pixels(image_variation(plain, reference, s))[0])


def test_a_profile_without_previews_and_an_engine_with_previews_off_show_none(reference, monkeypatch):
    s = VariationSettings(steps=4, width=64, height=64)
    seen = []
    with showing(seen.append):
        image_variation(Engine(tiny_profile(), device="cpu"), reference, s)
        image_variation(Engine.from_profile("tiny", device="cpu", previews=False), reference, s)
        monkeypatch.setenv("PFD_PREVIEWS", "0")
        off = Engine.from_profile("tiny", device="cpu")
        assert off.previews is False
        image_variation(off, reference, s)
    assert seen == []


def test_previews_setting_and_entries_are_checked(monkeypatch):
    monkeypatch.setenv("PFD_PREVIEWS", "sometimes")
    with pytest.raises(InvalidSettingError, match="PFD_PREVIEWS"):
        settings.previews()
    monkeypatch.setenv("PFD_PREVIEWS", "1")
    assert settings.previews() is True
    with pytest.raises(ConfigError, match="unknown tiny builder"):
        tiny_profile(previews={"X": {"tiny": "sd"}})
    with pytest.raises(ConfigError, match="default preview"):
        Registry.from_dict({"seecoders": {"S": {"tiny": "seecoder"}}, "base_models": {"B": {"tiny": "sd"}},
                            "defaults": {"preview": "missing"}})
    for profile, name in (("real", "TAESD"), ("tiny", "Tiny TAESD"), ("full-random", "TAESD size (random)")):
        assert Registry.load(profile=profile).defaults["preview"] == name


def test_preview_caption_names_the_step_and_the_part():
    p = Preview([], 10, 50)
    assert p.caption == "preview · step 10 of 50"
    assert p.labelled("Prompt-Free").caption == "preview · Prompt-Free · step 10 of 50"


def test_a_comparison_labels_each_columns_previews_and_the_tab_shows_them_in_that_column(reference):
    from prompt_free.tasks.compare import DUAL_CONTROLNET, METHODS, PROMPT_FREE, PROMPT_FREE_TEXT, CompareSettings, compare
    from prompt_free.tasks.controls import MODE_AS_IS
    from prompt_free.app.compare import _column_preview

    engine = Engine.from_profile("tiny", device="cpu")
    structure = load_image("assets/examples/canny_house.png")
    s = CompareSettings(width=64, height=64, steps=4, seed=5, methods=(PROMPT_FREE, DUAL_CONTROLNET))
    plain = compare(engine, reference, structure, "canny", mode=MODE_AS_IS, settings=s)
    seen = []
    with showing(seen.append):
        shown = compare(engine, reference, structure, "canny", mode=MODE_AS_IS, settings=s)
    assert [(p.part, p.step) for p in seen] == [(m, i) for m in (PROMPT_FREE, DUAL_CONTROLNET) for i in (1, 2, 3)]
    for m in (PROMPT_FREE, DUAL_CONTROLNET):
        assert np.array_equal(np.asarray(plain.columns[m].image), np.asarray(shown.columns[m].image))
    index, image = _column_preview(seen[-1])
    assert index == METHODS.index(DUAL_CONTROLNET) and image is seen[-1].images[0]
    assert _column_preview(seen[-1].labelled(PROMPT_FREE_TEXT)) is None  # no output of its own


def test_the_full_random_preview_decoder_has_taesds_size():
    from diffusers import AutoencoderTiny

    from prompt_free.full_random import full_taesd

    built = full_taesd(41)
    with torch.device("meta"):
        reference_size = sum(p.numel() for p in AutoencoderTiny().parameters())  # its defaults: TAESD's config
    assert sum(p.numel() for p in built.parameters()) == reference_size
    assert all(torch.isfinite(p).all() for p in built.parameters())
    assert torch.equal(next(full_taesd(41).parameters()), next(built.parameters()))  # seeded
