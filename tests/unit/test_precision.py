"""The precision setting (--precision / PFD_PRECISION): auto's rule per machine, the tiny profile
kept fp32, bf16 pictures close to fp32 ones, the deprecated PFD_DTYPE, bad values."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from prompt_free import metadata, settings
from prompt_free.engine import Engine
from prompt_free.errors import InvalidSettingError
from prompt_free.precision import auto_precision, cpu_flags, has_bf16_hardware, resolve
from prompt_free.tasks import VariationSettings, image_variation

SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
EPYC = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 ht\n"
AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse avx2 fma ht\n"
AVX512_NO_BF16 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n"


@pytest.fixture(autouse=True)
def _no_precision_env(monkeypatch):
    monkeypatch.delenv("PFD_PRECISION", raising=False)
    monkeypatch.delenv("PFD_DTYPE", raising=False)


@pytest.mark.parametrize("cpuinfo, capability, device, expected", [
    (SAPPHIRE_RAPIDS, "AVX512", "cpu", "bf16"),   # AMX flags in /proc/cpuinfo
    (EPYC, "AVX512", "cpu", "bf16"),              # avx512_bf16 without AMX: bf16 (measured faster, precision.py)
    (AVX2_ONLY, "AVX2", "cpu", "fp32"),           # no bf16 hardware: fp32
    (AVX512_NO_BF16, "AVX512", "cpu", "fp32"),    # AVX-512 without its BF16 extension: fp32
    (AVX2_ONLY, "AMX", "cpu", "bf16"),            # torch reports AMX
    ("", "", "cpu", "fp32"),                      # nothing known
    (SAPPHIRE_RAPIDS, "AVX512", "cuda", "fp16"),  # CUDA: fp16 as before
    (EPYC, "AVX512", "cuda", "fp16"),
])
def test_auto_rule_from_cpu_flags(cpuinfo, capability, device, expected):
    assert auto_precision(device, cpu_flags(cpuinfo), capability) == expected


def test_this_machine_gets_bf16_under_auto_only_with_bf16_hardware():
    flags = cpu_flags()
    expected = "bf16" if has_bf16_hardware(flags, torch.backends.cpu.get_cpu_capability()) else "fp32"
    assert resolve("auto", "cpu") == expected
    if "avx512_bf16" in flags:  # e.g. this project's AMD EPYC sessions
        assert resolve("auto", "cpu") == "bf16"


def test_explicit_precision_and_setting(monkeypatch):
    assert resolve("BF16", "cpu", flags=cpu_flags(EPYC), capability="") == "bf16"
    monkeypatch.setenv("PFD_PRECISION", "bf16")
    assert resolve(None, "cpu") == "bf16"
    assert resolve("fp32", "cpu") == "fp32"  # the argument wins over the environment


def test_explicit_bf16_on_a_cpu_that_emulates_it_warns(caplog):
    """bf16 asked for on an AVX2-only CPU is a trap (emulated, many times slower): a warning says
    so; on bf16 hardware, or for fp32, nothing is said."""
    with caplog.at_level(logging.WARNING, logger="prompt_free"):
        assert resolve("bf16", "cpu", flags={"avx2", "fma"}, capability="AVX2") == "bf16"
    assert any("emulates it" in r.getMessage() and "--precision fp32" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="prompt_free"):
        resolve("bf16", "cpu", flags={"avx512_bf16"}, capability="AVX512")
        resolve("bf16", "cpu", flags={"avx2"}, capability="AMX")
        resolve("fp32", "cpu", flags={"avx2"}, capability="AVX2")
        resolve("auto", "cpu", flags={"avx2"}, capability="AVX2")
    assert not [r for r in caplog.records if "emulates it" in r.getMessage()]


def test_tiny_profile_stays_fp32_under_auto_and_any_setting(monkeypatch):
    monkeypatch.setenv("PFD_PRECISION", "bf16")
    engine = Engine.from_profile("tiny", device="cpu")
    assert engine.dtype == torch.float32 and engine.precision == "fp32"
    assert resolve(None, "cpu", tiny=True, flags=cpu_flags(SAPPHIRE_RAPIDS), capability="AMX") == "fp32"
    assert resolve(None, "cuda", tiny=True) == "fp32"
    assert Engine.from_profile("tiny", device="cpu", precision="bf16").dtype == torch.bfloat16  # explicit: honoured


def test_bad_precision_is_a_clear_error(monkeypatch):
    with pytest.raises(InvalidSettingError, match="precision must be one of auto, fp32, bf16, fp16, got 'fp8'"):
        Engine.from_profile("tiny", device="cpu", precision="fp8")
    monkeypatch.setenv("PFD_PRECISION", "half")
    with pytest.raises(InvalidSettingError, match="PFD_PRECISION must be one of"):
        settings.check_environment()
    import app

    with pytest.raises(SystemExit):  # argparse refuses it with the choices
        app.parse_args(["--precision", "fp8"])


def test_deprecated_pfd_dtype_still_works_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(settings, "_DEPRECATION_WARNED", set())  # the warning is once per process
    monkeypatch.setenv("PFD_DTYPE", "bf16")
    with caplog.at_level(logging.WARNING, logger="prompt_free.settings"):
        assert settings.precision("cuda") == "bf16"
    assert "PFD_DTYPE is deprecated: use PFD_PRECISION=bf16" in caplog.text
    # and the old variable still sets a CUDA engine's precision (resolved as an engine does it)
    assert resolve(None, "cuda") == "bf16"
    assert settings.precision("cpu") == "auto"  # as before: PFD_DTYPE applied on CUDA only
    monkeypatch.setenv("PFD_PRECISION", "fp32")
    assert settings.precision("cuda") == "fp32"  # the new variable wins
    monkeypatch.setenv("PFD_PRECISION", "")
    monkeypatch.setenv("PFD_DTYPE", "float8")
    with pytest.raises(InvalidSettingError, match="PFD_DTYPE must be one of"):
        settings.precision("cuda")


def test_bf16_image_variation_is_finite_and_close_to_fp32():
    rng = np.random.default_rng(0)
    reference = Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    s = VariationSettings(width=64, height=64, steps=2, seed=5)
    fp32 = Engine.from_profile("tiny", device="cpu")
    bf16 = Engine.from_profile("tiny", device="cpu", precision="bf16")
    assert bf16.base_model("Tiny SD").unet.dtype == torch.bfloat16
    a = np.asarray(image_variation(fp32, reference, s).images[0], dtype=float)
    b = np.asarray(image_variation(bf16, reference, s).images[0], dtype=float)
    assert np.isfinite(b).all() and b.std() > 0
    # Tolerance: mean |difference| at most 2 of 255 levels, none above 16 (measured: 0.5 and 4).
    diff = np.abs(a - b)
    assert diff.mean() <= 2.0 and diff.max() <= 16, (diff.mean(), diff.max())
    assert not np.array_equal(a, b)  # bf16 really ran


def test_precision_is_recorded_and_a_redo_in_another_warns():
    rng = np.random.default_rng(1)
    reference = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    engine = Engine.from_profile("tiny", device="cpu")
    s = VariationSettings(width=64, height=64, steps=1, seed=5)
    result = image_variation(engine, reference, s)
    rec = metadata.describe(engine, "image_variation", s, {"reference": reference}, result.info)
    assert rec["precision"] == "fp32"
    assert not [n for n in metadata.check_models(engine, rec) if "precision" in n or "made in" in n]
    other = Engine.from_profile("tiny", device="cpu", precision="bf16")
    notes = metadata.check_models(other, rec)
    assert "the picture was made in fp32, this run uses bf16 (--precision fp32 for the recorded one)" in notes


def test_app_and_cli_pass_the_precision_on():
    import app
    from prompt_free import cli

    assert app.parse_args(["--precision", "bf16"]).precision == "bf16"
    engine, _ = app.create_app("tiny", precision="bf16")
    assert engine.precision == "bf16" and engine.dtype == torch.bfloat16
    args = cli.build_parser().parse_args(["generate", "--reference", "x.png", "--out", "o", "--precision", "bf16"])
    assert cli._engine(args, cli.Processes(), profile="tiny").precision == "bf16"


def test_tiny_networks_with_an_add_on_file_stay_fp32_and_contiguous(monkeypatch, tmp_path):
    # The pixel pins' engine: the tiny networks plus an IP-Adapter file. The file does not make
    # its pictures depend on the machine's precision rule or layout.
    from tests.helpers.models import IP_NAME, tiny_profile_with, write_tiny_ip_adapter

    registry = tiny_profile_with(ip_adapters={IP_NAME: {"path": str(write_tiny_ip_adapter(tmp_path, seed=0))}})
    assert not registry.is_tiny and registry.has_tiny_models
    monkeypatch.setenv("PFD_PRECISION", "bf16")
    monkeypatch.setenv("PFD_CHANNELS_LAST", "on")
    engine = Engine(registry, device="cpu")
    assert engine.precision == "fp32" and not engine.channels_last
    assert Engine(registry, device="cpu", precision="bf16", channels_last="on").channels_last  # explicit: honoured
