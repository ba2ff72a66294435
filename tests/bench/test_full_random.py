"""The full-random profile: SD-1.5-size models and a full-size SeeCoder with random weights,
built from configs (no download), usable through the public engine like any profile."""

from __future__ import annotations

import gc

import pytest
import torch

from prompt_free.download import plan
from prompt_free.engine import Engine
from prompt_free.full_random import full_controlnet, full_unet
from prompt_free.registry import Registry

SD15_UNET_PARAMS = 859_520_964
SD15_VAE_PARAMS = 83_653_863
SD15_CONTROLNET_PARAMS = 361_279_120


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_profile_is_built_in_and_needs_no_file():
    reg = Registry.load(profile="full-random")
    assert reg.is_tiny and reg.is_full_random  # built in: nothing to fetch
    assert not Registry.load(profile="tiny").is_full_random
    entries = [reg.entry(kind, name) for kind in reg.entries for name in reg.names(kind)]
    assert entries and all(e.full_random for e in entries)
    assert plan(reg, annotators="none") == []


@pytest.mark.slow
def test_random_build_is_seeded_finite_and_fills_every_parameter():
    a, b, other = full_controlnet(21), full_controlnet(21), full_controlnet(22)
    try:
        assert _params(a) == SD15_CONTROLNET_PARAMS
        sa, sb, so = a.state_dict(), b.state_dict(), other.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed, same weights
        assert not torch.equal(sa["conv_in.weight"], so["conv_in.weight"])
        assert all(torch.isfinite(v).all() for v in sa.values())  # no uninitialised memory
        assert sa["controlnet_mid_block.weight"].abs().max() > 0  # zero-convs get weights: control acts
        assert torch.equal(sa["down_blocks.0.resnets.0.norm1.weight"], torch.ones(320))
    finally:
        del a, b, other
        gc.collect()


@pytest.mark.slow
def test_built_in_the_target_dtype():
    unet = full_unet(1, dtype=torch.bfloat16)
    try:
        assert {p.dtype for p in unet.parameters()} == {torch.bfloat16}
        assert _params(unet) == SD15_UNET_PARAMS
    finally:
        del unet
        gc.collect()


@pytest.mark.slow
def test_engine_from_profile_runs_image_variation():
    from prompt_free.tasks import VariationSettings, image_variation

    engine = Engine.from_profile("full-random", device="cpu")
    try:
        assert "full-random" in engine.banner
        result = image_variation(engine, "assets/examples/chelsea.jpg", VariationSettings(steps=2, width=256, height=256))
        assert result.images[0].size == (256, 256)
        base = engine.base_model(engine.defaults["base_model"])
        assert _params(base.unet) == SD15_UNET_PARAMS and _params(base.vae) == SD15_VAE_PARAMS
        assert base.unet.config.cross_attention_dim == 768
        kinds = {r["kind"] for r in engine.memory_report()}
        assert {"base_model", "seecoder"} <= kinds
    finally:
        del engine
        gc.collect()


@pytest.mark.parametrize("entry, message", [
    ({"random": "sd15", "tiny": "sd"}, "not both"),
    ({"random": "sd"}, "unknown random builder 'sd'"),
])
def test_bad_random_entries_are_refused(entry, message):
    from prompt_free.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        Registry.from_dict({"seecoders": {"S": {"random": "seecoder_full"}}, "base_models": {"B": entry}})
