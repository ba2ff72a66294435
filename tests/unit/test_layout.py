"""The channels_last setting (PFD_CHANNELS_LAST, Engine(channels_last=...)): auto's rule, the tiny
profile kept contiguous, the engine laying out the UNet, the ControlNets and the VAE on the CPU
(and not SeeCoder, and nothing with off), results within rounding of contiguous ones."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from prompt_free import settings
from prompt_free.engine import Engine
from prompt_free.errors import InvalidSettingError
from prompt_free.layout import auto_channels_last, is_channels_last, resolve
from prompt_free.tasks import VariationSettings, image_variation


@pytest.fixture(autouse=True)
def _no_layout_env(monkeypatch):
    monkeypatch.delenv("PFD_CHANNELS_LAST", raising=False)


def _models(engine):
    base = engine.base_model(engine.defaults["base_model"])
    cn = engine.controlnet(sorted(engine.registry.names("controlnets"))[0])
    return base.unet, base.vae, cn, engine.seecoder(engine.defaults["seecoder"]).model


@pytest.mark.parametrize("device, precision, expected", [
    ("cpu", "bf16", True),    # measured faster in bf16 (EPYC avx512_bf16; Xeon AMX 3.6 s vs 3.9 s per UNet step)
    ("cpu", "fp32", False),   # fp32 (CPUs without bf16 hardware): not measured, kept as before
    ("cuda", "fp16", False),  # CUDA: the compiled fast path lays models out itself
    ("cuda", "bf16", False),
])
def test_auto_rule(device, precision, expected):
    assert auto_channels_last(device, precision) is expected
    assert resolve("auto", device, precision) is expected


def test_setting_argument_and_tiny_profile(monkeypatch):
    assert resolve("on", "cpu", "fp32") and not resolve("off", "cpu", "bf16")
    assert not resolve("on", "cuda", "fp16")  # the CPU only
    monkeypatch.setenv("PFD_CHANNELS_LAST", "on")
    assert resolve(None, "cpu", "fp32")
    assert not resolve(None, "cpu", "bf16", tiny=True)  # tiny: contiguous unless asked explicitly
    assert not resolve("off", "cpu", "bf16")  # the argument wins over the environment
    assert not Engine.from_profile("tiny", device="cpu", precision="bf16").channels_last
    assert Engine.from_profile("tiny", device="cpu", channels_last="on").channels_last


def test_bad_value_is_a_clear_error(monkeypatch):
    with pytest.raises(InvalidSettingError, match="channels_last must be one of auto, on, off, got 'nhwc'"):
        Engine.from_profile("tiny", device="cpu", channels_last="nhwc")
    monkeypatch.setenv("PFD_CHANNELS_LAST", "sometimes")
    with pytest.raises(InvalidSettingError, match="PFD_CHANNELS_LAST must be one of"):
        settings.check_environment()


def test_on_lays_out_the_convolutional_models_and_off_does_not():
    on = Engine.from_profile("tiny", device="cpu", channels_last="on")
    unet, vae, cn, seecoder = _models(on)
    assert is_channels_last(unet) and is_channels_last(vae) and is_channels_last(cn)
    conv_weights = [p for p in seecoder.parameters() if p.ndim == 4]
    assert all(p.is_contiguous() for p in conv_weights)  # SeeCoder is left as it was
    off = Engine.from_profile("tiny", device="cpu", channels_last="off")
    assert not any(is_channels_last(m) for m in _models(off)[:3])
    assert all(p.is_contiguous() for m in _models(off) for p in m.parameters())


def test_channels_last_result_is_within_rounding_of_contiguous():
    rng = np.random.default_rng(0)
    reference = Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    s = VariationSettings(width=64, height=64, steps=2, seed=5)
    pictures = {}
    for mode in ("off", "on"):
        engine = Engine.from_profile("tiny", device="cpu", channels_last=mode)
        pictures[mode] = np.asarray(image_variation(engine, reference, s).images[0], dtype=float)
    # Tolerance: at most 1 of 255 levels anywhere (fp32 sums in another order; measured: one pixel channel of 12288 off by 1).
    diff = np.abs(pictures["on"] - pictures["off"])
    assert diff.max() <= 1, (diff.mean(), diff.max())
