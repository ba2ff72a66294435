"""End-to-end parity with the official sampler (../shared/fixtures/e2e_parity).

The official UNet / ControlNet files of the fixture are loaded through ``load_unet`` /
``load_controlnet`` (official layout -> ldm -> diffusers) and sampled with
``prompt_free.sample_latents``, eager and with the fast path's exact parts; the final latents
must match the official ones.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers.shared import shared_file

import prompt_free
from prompt_free.sampling import make_scheduler

CASES = ("a", "b", "c", "d")
REL_TOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tiny models run 3-5x faster with one thread on a shared 2-core machine (two
    threads spend their time waiting for each other under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fixture(name: str):
    return shared_file("fixtures", "e2e_parity", name)


@pytest.fixture(scope="module")
def config():
    return json.loads(_fixture("config.json").read_text())


@pytest.fixture(scope="module")
def cases():
    return json.loads(_fixture("e2e_cases.json").read_text())


@pytest.fixture(scope="module")
def io():
    from safetensors.torch import load_file

    return load_file(str(_fixture("e2e_io.safetensors")))


@pytest.fixture(scope="module")
def unet(config):
    return prompt_free.load_unet(_fixture("unet_pfd.safetensors"), config=config["diffusers_unet_config"])


@pytest.fixture(scope="module")
def controlnet(config):
    return prompt_free.load_controlnet(_fixture("controlnet_slimmed.safetensors"), config=config["diffusers_controlnet_config"])


def test_fixture_cases_are_the_documented_ones(cases):
    assert sorted(cases) == list(CASES)


def test_models_load_as_float32_eval(unet, controlnet):
    from diffusers import ControlNetModel, UNet2DConditionModel

    assert isinstance(unet, UNet2DConditionModel) and isinstance(controlnet, ControlNetModel)
    for model in (unet, controlnet):
        assert not model.training
        assert {p.dtype for p in model.parameters()} == {torch.float32}  # fp16 file, CPU model


@pytest.mark.parametrize("case", CASES)
def test_timesteps_visited(cases, case):
    spec = cases[case]
    scheduler = make_scheduler()
    scheduler.set_timesteps(spec["steps"])
    assert scheduler.timesteps.tolist() == spec["timesteps_visited"]


@pytest.mark.parametrize("fast", [False, True], ids=["eager", "fast"])  # fast: prompt_free.fast's exact parts
@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.slow) if c in ("a", "c") else c for c in CASES]
)
def test_final_latents_match_official(unet, controlnet, cases, io, case, fast):
    spec = cases[case]
    embedding = io["embedding"]
    use_control = spec["controlnet"]
    out = prompt_free.sample_latents(
        unet,
        embedding,
        uncond=torch.zeros_like(embedding),
        latents=io[spec["x_T_key"]],
        steps=spec["steps"],
        guidance=spec["guidance"],
        controlnet=controlnet if use_control else None,
        hint=io["hint"] if use_control else None,
        fast=fast,
    )
    final = io[spec["final_key"]]
    assert out.shape == final.shape
    err = (out.float() - final).abs().max().item()
    scale = final.abs().max().item()
    assert abs(scale - spec["final_max_abs"]) < 1e-3 * scale
    assert err <= REL_TOL * scale, f"case {case}: max abs error {err:.3g} vs {REL_TOL} * {scale:.3g}"


def test_seecoder_embedding_of_reference(io):
    cfg = prompt_free.SeeCoderConfig.from_official_dict(
        json.loads(shared_file("fixtures", "seecoder_parity", "seecoder_config.json").read_text())
    )
    seecoder = prompt_free.load_seecoder(shared_file("fixtures", "seecoder_parity", "seecoder_weights.safetensors"), cfg)
    out = seecoder.encode(io["reference"])
    assert out.shape == io["embedding"].shape
    assert (out.float() - io["embedding"]).abs().max().item() <= 1e-4
