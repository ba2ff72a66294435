"""Few-step samplers (LCM, TCD, DDIM with trailing spacing) for the few-step LoRAs of
checkpoints.yaml: built on the official betas as their model cards build them, run by the one
loop (eager and fast path alike), and with guidance 1 the loop makes the conditional pass only."""

from __future__ import annotations

import pytest
import torch

from prompt_free import settings
from prompt_free.conditioning import Conditioning
from prompt_free.engine import Engine
from prompt_free.errors import InvalidSettingError
from prompt_free.fast import DDIMSteps, FastPath
from prompt_free.sampling import OFFICIAL_SCHEDULER_CONFIG, SCHEDULERS, Sampler, denoise, make_scheduler
from prompt_free.tiny import tiny_unet
from tests.helpers.models import write_few_step_checkpoints
from tests.helpers.tensors import one_thread  # noqa: F401 (one_thread: an autouse fixture)

REF = "assets/examples/chelsea.jpg"
FEW_STEP = ("LCM", "TCD", "DDIM trailing")


@pytest.mark.parametrize("name, cls", [("LCM", "LCMScheduler"), ("TCD", "TCDScheduler"), ("DDIM trailing", "DDIMScheduler")])
def test_few_step_schedulers_use_the_official_betas_as_from_config_of_sd15_does(name, cls):
    import diffusers

    sched = make_scheduler(name)
    assert type(sched).__name__ == cls
    # what `<Class>.from_config(sd15_pipe.scheduler.config)` gives (the model cards' recipe)
    for key in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "steps_offset", "set_alpha_to_one",
                "prediction_type", "clip_sample"):
        assert sched.config[key] == OFFICIAL_SCHEDULER_CONFIG[key], key
    ref = getattr(diffusers, cls)(**{k: v for k, v in OFFICIAL_SCHEDULER_CONFIG.items() if k in sched.config})
    assert torch.equal(sched.alphas_cumprod, ref.alphas_cumprod)
    if name == "DDIM trailing":  # Hyper-SD's "ensure timestep spacing trailing"
        assert sched.config.timestep_spacing == "trailing"
        sched.set_timesteps(8)
        assert sched.timesteps.tolist() == [999, 874, 749, 624, 499, 374, 249, 124]


def test_adding_few_step_schedulers_keeps_the_others_as_they_were():
    assert list(SCHEDULERS)[:7] == ["DDIM", "DPM++ 2M", "DPM++ 2M Karras", "Euler", "Euler a", "UniPC", "PNDM"]
    assert make_scheduler("DDIM").config.timestep_spacing == "leading"


def test_lcm_and_tcd_refuse_more_steps_than_their_distillation_schedule_clearly():
    assert Sampler(steps=50, scheduler="LCM").checked().steps == 50
    for name in ("LCM", "TCD"):
        with pytest.raises(InvalidSettingError, match=f"steps with the {name} sampler must be between 1 and 50, got 51"):
            Sampler(steps=51, scheduler=name).checked()
    assert Sampler(steps=150, scheduler="DDIM trailing").checked().steps == 150
    assert settings.FEW_STEPS.hi == 50


# "DDIM trailing" replaced exactly by the fast DDIM step: tests/unit/test_fast.py (bit for bit, per step).


def test_lcm_and_tcd_keep_their_own_step_on_the_fast_path():
    for name in ("LCM", "TCD"):
        sched = make_scheduler(name)
        sched.set_timesteps(4)
        assert DDIMSteps.for_scheduler(sched, torch.device("cpu")) is None


@pytest.fixture(scope="module")
def engines():
    return {fast: Engine.from_profile("tiny", device="cpu", fast=fast) for fast in (False, True)}


def _latents(engine, scheduler, steps=4, guidance=1.0, seed=3):
    ctx, unc = engine.encode_reference(REF, "SeeCoder")
    sampler = Sampler(width=64, height=64, steps=steps, seed=seed, num_images=1, guidance=guidance, scheduler=scheduler)
    return engine.generate("Tiny SD", Conditioning(ctx, unc), sampler, decode=False).latents


@pytest.mark.parametrize("scheduler", FEW_STEP)
def test_few_step_schedulers_run_in_the_loop_eager_and_fast_alike(engines, scheduler):
    eager, fast = _latents(engines[False], scheduler), _latents(engines[True], scheduler)
    assert torch.isfinite(eager).all()
    assert torch.equal(eager, fast)  # the fast path's exact parts: bit for bit on the CPU
    again = _latents(engines[False], scheduler)
    assert torch.equal(eager, again)  # LCM and TCD draw step noise from the run's seeded generator
    other_seed = _latents(engines[False], scheduler, seed=4)
    assert not torch.equal(eager, other_seed)


def test_tcd_uses_its_gamma_and_lcm_its_step_noise():
    """TCD's step takes eta (gamma) 0.3 as its authors recommend, not DDIM's 0: the picture
    differs from a TCD run at gamma 0."""
    from prompt_free.sampling import STEP_ETA, _step_kwargs

    tcd = make_scheduler("TCD")
    assert _step_kwargs(tcd, None)["eta"] == STEP_ETA["TCDScheduler"] == 0.3
    assert _step_kwargs(make_scheduler("DDIM"), None)["eta"] == 0.0
    assert "eta" not in _step_kwargs(make_scheduler("LCM"), None)


class CountingUNet(torch.nn.Module):
    """The tiny UNet, recording the batch of every call (to see which passes the loop makes)."""

    def __init__(self):
        super().__init__()
        self.inner = tiny_unet()
        self.batches = []

    @property
    def device(self):
        return self.inner.device

    @property
    def dtype(self):
        return self.inner.dtype

    def forward(self, x, t, **kwargs):
        self.batches.append(x.shape[0])
        return self.inner(x, t, **kwargs)


@pytest.mark.parametrize("scheduler", ["LCM", "TCD"])
def test_guidance_one_takes_only_the_conditional_pass(scheduler):
    unet = CountingUNet()
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(1, 148, unet.inner.config.cross_attention_dim, generator=g)
    noise = torch.randn(1, 4, 8, 8, generator=g)
    with torch.no_grad():
        denoise(unet, make_scheduler(scheduler), noise, cond, None, steps=4, guidance=1.0,
                generator=torch.Generator().manual_seed(1))
    assert unet.batches == [1, 1, 1, 1]  # no unconditional half (and no unconditional context needed)
    unet.batches.clear()
    with torch.no_grad():
        denoise(unet, make_scheduler(scheduler), noise, cond, torch.zeros_like(cond), steps=4, guidance=1.5,
                generator=torch.Generator().manual_seed(1), fast=FastPath(compile=False))
    assert unet.batches == [2, 2, 2, 2]


# ----------------------------------------------------------------------------- registry
def _lora_registry(tmp_path, **entry):
    from prompt_free.registry import Registry

    path = tmp_path / "x.safetensors"
    return Registry.from_dict({"seecoders": {"S": {"tiny": "seecoder"}}, "base_models": {"B": {"tiny": "sd"}},
                               "loras": {"L": {"path": str(path), **entry}}})


def test_shipped_few_step_loras_carry_their_model_cards_settings_and_are_marked_not_validated():
    from prompt_free.registry import DEFAULT_CHECKPOINTS, NOT_VALIDATED, Registry

    real = Registry.load(DEFAULT_CHECKPOINTS, "real")
    expected = {
        "LCM-LoRA SD1.5": ("latent-consistency/lcm-lora-sdv1-5", "pytorch_lora_weights.safetensors",
                           {"scheduler": "LCM", "steps": 4, "guidance": 1.0}),
        "TCD SD1.5": ("h1t/TCD-SD15-LoRA", "pytorch_lora_weights.safetensors",
                      {"scheduler": "TCD", "steps": 4, "guidance": 1.0}),
        "Hyper-SD SD1.5 8-step": ("ByteDance/Hyper-SD", "Hyper-SD15-8steps-lora.safetensors",
                                  {"scheduler": "DDIM trailing", "steps": 8, "guidance": 1.0}),
    }
    for name, (repo, file, preset) in expected.items():
        entry = real.entry("loras", name)
        assert (entry.sources[0].repo, entry.sources[0].file) == (repo, file)
        assert entry.sampler_preset == preset
        assert entry.validated is False
        assert NOT_VALIDATED in entry.lora_note() and preset["scheduler"] in entry.lora_note()
        assert Sampler(**preset).checked()  # settings a run accepts


def test_lora_sampler_options_are_parsed_and_validated_defaults_depend_on_them(tmp_path):
    reg = _lora_registry(tmp_path, scheduler="LCM", steps=6, guidance=1.5)
    entry = reg.entry("loras", "L")
    assert entry.sampler_preset == {"scheduler": "LCM", "steps": 6, "guidance": 1.5}
    assert entry.validated is False  # sampler settings without `validated:` -> not validated
    assert "LCM, 6 steps, guidance 1.5" in entry.lora_note()
    assert _lora_registry(tmp_path, scheduler="LCM", validated=True).entry("loras", "L").validated is True
    plain = _lora_registry(tmp_path).entry("loras", "L")
    assert plain.sampler_preset == {} and plain.validated is True and plain.lora_note() == ""
    marked = _lora_registry(tmp_path, validated=False).entry("loras", "L")
    assert marked.lora_note().startswith("LoRA 'L' not validated with SeeCoder context")
    assert _lora_registry(tmp_path, guidance=1).entry("loras", "L").sampler_preset == {"guidance": 1.0}


@pytest.mark.parametrize("entry, message", [
    ({"scheduler": "Heun"}, "LoRA 'L': unknown scheduler 'Heun'; choose one of: DDIM, "),
    ({"scheduler": "LCM", "steps": 60}, "LoRA 'L': steps with the LCM sampler must be between 1 and 50, got 60"),
    ({"steps": 0}, "LoRA 'L': steps must be between 1 and 150, got 0"),
    ({"steps": 4.5}, "LoRA 'L': steps must be a whole number, got 4.5"),
    ({"steps": True}, "LoRA 'L': steps must be a whole number, got True"),
    ({"guidance": 31}, "LoRA 'L': guidance must be between 0 and 30, got 31"),
    ({"guidance": "high"}, "LoRA 'L': guidance must be a number, got 'high'"),
    ({"validated": "no"}, "LoRA 'L': validated must be true or false, got 'no'"),
])
def test_bad_lora_sampler_options_are_refused_naming_the_entry(tmp_path, entry, message):
    from prompt_free.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        _lora_registry(tmp_path, **entry)
    assert message in str(e.value)


# ----------------------------------------------------------------------------- command line
def _cli(argv, capsys):
    from prompt_free import cli

    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_lora_uses_its_entrys_sampler_settings_unless_given(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from prompt_free import metadata
    from prompt_free.tasks import VariationSettings, image_variation

    yaml_path = write_few_step_checkpoints(tmp_path)
    ref = "assets/examples/coffee.jpg"
    base = ["generate", "--reference", ref, "--profile", "tiny", "--size", "64x64", "--checkpoints", yaml_path]
    code, _, err = _cli([*base, "--lora", "Fast", "--out", tmp_path / "A"], capsys)
    assert code == 0, err
    assert "note: LoRA 'Fast' sets the sampler to LCM, 3 steps, guidance 1; not validated with SeeCoder context" in err
    rec = metadata.read(tmp_path / "A" / "coffee-s20.png")["settings"]
    assert (rec["scheduler"], rec["steps"], rec["guidance"]) == ("LCM", 3, 1.0)
    engine = Engine.from_profile("tiny", str(yaml_path), device="cpu")
    want = image_variation(engine, ref, VariationSettings(width=64, height=64, scheduler="LCM", steps=3, guidance=1.0,
                                                          loras=(("Fast", 1.0),))).images[0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "A" / "coffee-s20.png").convert("RGB")),
                          np.asarray(want.convert("RGB")))

    # --from-png redoes it from the recorded settings, bit for bit
    code, _, err = _cli(["generate", "--from-png", tmp_path / "A" / "coffee-s20.png", "--checkpoints", yaml_path,
                         "--out", tmp_path / "A2"], capsys)
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "A2" / "coffee-s20.png").convert("RGB")),
                          np.asarray(want.convert("RGB")))

    # given on the command line: those win, the others still come from the entry
    code, _, err = _cli([*base, "--lora", "Fast", "--steps", "2", "--out", tmp_path / "B"], capsys)
    assert code == 0, err
    assert "(--steps given: used instead)" in err
    rec = metadata.read(tmp_path / "B" / "coffee-s20.png")["settings"]
    assert (rec["scheduler"], rec["steps"], rec["guidance"]) == ("LCM", 2, 1.0)
    code, _, err = _cli([*base, "--lora", "Fast", "--steps", "2", "--sampler", "DDIM", "--guidance", "2.5",
                         "--out", tmp_path / "C"], capsys)
    assert code == 0, err
    rec = metadata.read(tmp_path / "C" / "coffee-s20.png")["settings"]
    assert (rec["scheduler"], rec["steps"], rec["guidance"]) == ("DDIM", 2, 2.5)

    # a plain LoRA (and no LoRA) keeps the paper's defaults; a LoRA at scale 0 sets nothing
    code, _, err = _cli([*base, "--lora", "Style", "--lora", "Fast=0", "--steps", "2", "--out", tmp_path / "D"], capsys)
    assert code == 0, err
    assert "note:" not in err
    rec = metadata.read(tmp_path / "D" / "coffee-s20.png")["settings"]
    assert (rec["scheduler"], rec["steps"], rec["guidance"]) == ("DDIM", 2, 2.0)


def test_cli_two_loras_that_set_different_samplers_need_it_given(tmp_path, capsys):
    from prompt_free import metadata

    yaml_path = write_few_step_checkpoints(tmp_path)
    base = ["generate", "--reference", "assets/examples/coffee.jpg", "--profile", "tiny", "--size", "64x64",
            "--checkpoints", yaml_path, "--lora", "Fast", "--lora", "Faster"]
    code, _, err = _cli([*base, "--out", tmp_path / "A"], capsys)
    assert code == 2
    assert "error: LoRAs 'Fast' and 'Faster' set different scheduler (LCM and TCD): give --sampler" in err
    code, _, err = _cli([*base, "--sampler", "TCD", "--out", tmp_path / "B"], capsys)
    assert code == 2 and "set different steps (3 and 2): give --steps" in err
    code, _, err = _cli([*base, "--sampler", "TCD", "--steps", "2", "--out", tmp_path / "C"], capsys)
    assert code == 0, err
    rec = metadata.read(tmp_path / "C" / "coffee-s20.png")["settings"]
    assert (rec["scheduler"], rec["steps"], rec["guidance"]) == ("TCD", 2, 1.0)  # guidance: only 'Fast' sets it
    assert "LoRA 'Faster' sets the sampler to TCD, 2 steps; not validated" in err  # the default for sampler settings


def test_engine_logs_a_not_validated_lora_when_it_reads_it(tmp_path, caplog):
    import logging

    from prompt_free.registry import NOT_VALIDATED

    engine = Engine.from_profile("tiny", str(write_few_step_checkpoints(tmp_path)), device="cpu")
    with caplog.at_level(logging.WARNING, logger="prompt_free"):
        engine.lora("Style")
        assert NOT_VALIDATED not in caplog.text
        engine.lora("Fast")
    assert f"LoRA 'Fast' sets the sampler to LCM, 3 steps, guidance 1; {NOT_VALIDATED}" in caplog.text
