"""checkpoints.yaml: validation, clear errors naming the entry, offline behaviour, and loading
each checkpoint format the engine supports from files the tests write in that format."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from prompt_free import tiny
from prompt_free.engine import Engine
from prompt_free.errors import ConfigError, ModelUnavailableError, UnknownModelError
from prompt_free.registry import DEFAULT_CHECKPOINTS, Registry
from prompt_free.seecoder import save_seecoder
from prompt_free.tasks import VariationSettings, image_variation
from tests.helpers.app import ROOT
from tests.helpers.shared import shared_file


def write_yaml(tmp_path, profile: dict, name="real") -> Path:
    path = tmp_path / "checkpoints.yaml"
    path.write_text(yaml.safe_dump({"profiles": {name: profile}}))
    return path


def test_shipped_checkpoints_yaml_is_valid_for_both_profiles():
    real = Registry.load(DEFAULT_CHECKPOINTS, "real")
    assert {"SeeCoder", "SeeCoder-PA", "SeeCoder-Anime"} <= set(real.names("seecoders"))
    assert real.defaults["base_model"] == "Stable Diffusion v1.5"
    anime = real.entry("seecoders", "SeeCoder-Anime")
    assert anime.sources[0].file == "pretrained/pfd/seecoder/seecoder-anime-v1-0.safetensors"
    assert all(s.sha256 for s in anime.option("unconditional"))
    assert any(real.entry("base_models", n).option("format") == "pfd_unet" for n in real.names("base_models"))
    tiny_reg = Registry.load(DEFAULT_CHECKPOINTS, "tiny")
    assert tiny_reg.is_tiny and not real.is_tiny


PAPER_BASE_MODELS = ("SD-v1.5", "OpenJourney-v4", "Deliberate-v2", "RealisticVision-v2", "Anything-v4",
                     "AbyssOrangeMix-v2", "AbyssOrangeMix-v3")


def test_real_profile_offers_the_papers_seven_official_unets_and_pairs_the_anime_seecoder():
    real = Registry.load(DEFAULT_CHECKPOINTS, "real")
    for name in PAPER_BASE_MODELS:
        entry = real.entry("base_models", name)
        assert entry.option("format") == "pfd_unet", name
        assert entry.sources[0].repo == "shi-labs/prompt-free-diffusion"
        assert entry.sources[0].file.startswith("pretrained/pfd/diffuser/"), name
        assert entry.option("vae")[0].file == "pretrained/pfd/vae/sd-v2-0-base-autokl.pth", name
    assert real.base_model_for("SeeCoder-Anime") == "Anything-v4"
    assert real.base_model_for("SeeCoder") == real.base_model_for("SeeCoder-PA") == "Stable Diffusion v1.5"
    assert real.base_model_for(None) == "Stable Diffusion v1.5"


def paired_profile() -> dict:
    return {"seecoders": {"S": {"tiny": "seecoder"}, "Anime": {"tiny": "seecoder", "seed": 7, "base_model": "B2"}},
            "base_models": {"B1": {"tiny": "sd", "seed": 1}, "B2": {"tiny": "sd", "seed": 11}}}


def test_a_seecoder_paired_with_a_base_model_brings_it_when_none_is_given(tmp_path):
    engine = Engine(Registry.load(write_yaml(tmp_path, paired_profile())), device="cpu")
    img = Image.fromarray(np.full((64, 64, 3), 120, np.uint8))
    paired = image_variation(engine, img, VariationSettings(seecoder="Anime", width=64, height=64, steps=2, seed=5))
    explicit = image_variation(engine, img, VariationSettings(seecoder="Anime", base_model="B2", width=64, height=64,
                                                               steps=2, seed=5))
    other = image_variation(engine, img, VariationSettings(seecoder="Anime", base_model="B1", width=64, height=64,
                                                            steps=2, seed=5))
    assert paired.info["base_model"] == "B2"
    assert np.array_equal(np.asarray(paired.images[0]), np.asarray(explicit.images[0]))
    assert not np.array_equal(np.asarray(paired.images[0]), np.asarray(other.images[0]))
    plain = image_variation(engine, img, VariationSettings(seecoder="S", width=64, height=64, steps=2, seed=5))
    assert plain.info["base_model"] == "B1"


def test_a_pairing_with_an_unknown_base_model_is_refused(tmp_path):
    profile = paired_profile()
    profile["seecoders"]["Anime"]["base_model"] = "Nope"
    with pytest.raises(ConfigError, match="SeeCoder 'Anime': base_model 'Nope' is not defined under base_models; defined: B1, B2"):
        Registry.load(write_yaml(tmp_path, profile))


@pytest.mark.parametrize(
    "profile, message",
    [
        ({"seecoders": {"S": {"path": "a", "repo": "o/n"}}, "base_models": {"B": {"tiny": "sd"}}}, "SeeCoder 'S': give exactly one of 'path' or 'repo'"),
        ({"seecoders": {"S": {"tiny": "seecoder"}}, "base_models": {"B": {"repo": "o/n", "colour": 1}}}, "base model 'B': unknown source field"),
        ({"seecoders": {"S": {"tiny": "seecoder"}}, "base_models": {"B": {"repo": "noslash"}}}, "base model 'B': repo must look like"),
        ({"seecoders": {"S": {"tiny": "seecoder"}}, "base_models": {"B": {"path": "x", "format": "weird"}}}, "base model 'B': format must be one of"),
        ({"seecoders": {"S": {"tiny": "seecoder"}}, "base_models": {"B": {"path": "x", "format": "pfd_unet"}}}, "needs a 'vae' source"),
        ({"seecoders": {"S": {"tiny": "seecoder"}}, "base_models": {"B": {"tiny": "sd"}}, "defaults": {"base_model": "Z"}}, "default base_model 'Z' is not defined"),
        ({"seecoders": {"S": {"tiny": "seecoder"}}, "base_models": {}}, "needs at least one SeeCoder and one base model"),
        ({"seecoders": {"S": {"tiny": "seecoder"}}, "base_models": {"B": {"tiny": "nope"}}}, "unknown tiny builder 'nope'"),
        ({"seecoders": {"S": "a-bare-string"}, "base_models": {"B": {"tiny": "sd"}}}, "SeeCoder 'S': expected a mapping"),
        ({"seecoders": {"S": {"tiny": "seecoder"}}, "base_models": {"B": {"tiny": "sd"}}, "extras": {}}, "unknown section"),
    ],
)
def test_bad_entries_give_errors_naming_the_entry(tmp_path, profile, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Registry.load(write_yaml(tmp_path, profile))


def test_unknown_profile_and_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="profile 'gpu' is not in"):
        Registry.load(DEFAULT_CHECKPOINTS, "gpu")
    with pytest.raises(ConfigError, match="does not exist"):
        Registry.load(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("profiles: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Registry.load(bad)


def test_unknown_name_lists_the_known_ones():
    reg = Registry.load(DEFAULT_CHECKPOINTS, "tiny")
    with pytest.raises(UnknownModelError, match="unknown ControlNet 'zzz'.*canny"):
        reg.entry("controlnets", "zzz")


def test_offline_hub_entry_fails_fast_with_a_clear_message():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    engine = Engine(Registry.load(DEFAULT_CHECKPOINTS, "real"), device="cpu")
    t0 = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as err:
        engine.seecoder("SeeCoder")
    assert time.perf_counter() - t0 < 10
    msg = str(err.value)
    assert "SeeCoder 'SeeCoder' is not available" in msg
    assert "shi-labs/prompt-free-diffusion/pretrained/pfd/seecoder/seecoder-v1-0.safetensors" in msg
    assert "path:" in msg
    with pytest.raises(ModelUnavailableError, match="stable-diffusion-v1-5"):
        engine.base_model("Stable Diffusion v1.5")


def test_missing_local_path_is_reported(tmp_path):
    path = write_yaml(tmp_path, {"seecoders": {"Mine": {"path": "nowhere.safetensors"}}, "base_models": {"B": {"tiny": "sd"}}})
    engine = Engine(Registry.load(path), device="cpu")
    with pytest.raises(ModelUnavailableError, match="SeeCoder 'Mine' is not available.*nowhere.safetensors"):
        engine.seecoder("Mine")


# ---------------------------------------------------------------- real formats written by the test
@pytest.fixture(scope="module")
def written_models(tmp_path_factory):
    """Tiny models saved in real on-disk formats: an official-layout SeeCoder file, a diffusers
    model folder (unet/, vae/), and a diffusers ControlNet folder."""
    root = tmp_path_factory.mktemp("models")
    sc = tiny.tiny_seecoder(seed=3)
    save_seecoder(sc, root / "my-seecoder.safetensors")
    unet, vae = tiny.tiny_unet(seed=41), tiny.tiny_vae(seed=42)
    unet.save_pretrained(root / "my-sd" / "unet")
    vae.save_pretrained(root / "my-sd" / "vae")
    (root / "my-sd" / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    tiny.tiny_controlnet(seed=43).save_pretrained(root / "my-controlnet")
    return root, sc, unet, vae


def test_engine_loads_official_seecoder_file_and_diffusers_folder(tmp_path, written_models):
    root, sc, unet, vae = written_models
    path = write_yaml(tmp_path, {
        "seecoders": {"Mine": {"path": str(root / "my-seecoder.safetensors"), "unconditional": "zeros"}},
        "base_models": {"My SD": {"path": str(root / "my-sd")}},
        "controlnets": {"mine": {"path": str(root / "my-controlnet")}},
    })
    engine = Engine(Registry.load(path), device="cpu")
    loaded = engine.seecoder("Mine").model
    for k, v in sc.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    base = engine.base_model("My SD")
    for k, v in unet.state_dict().items():
        assert torch.equal(base.unet.state_dict()[k], v), k
    cn = engine.controlnet("mine")
    assert cn.config.block_out_channels == list(tiny.TINY_CONTROLNET_CONFIG["block_out_channels"])
    img = Image.fromarray(np.full((64, 64, 3), 120, np.uint8))
    r = image_variation(engine, img, VariationSettings(width=64, height=64, steps=2))
    assert r.images[0].size == (64, 64)


def test_wrong_file_for_an_entry_is_a_clear_error(tmp_path, written_models):
    root = written_models[0]
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    path = write_yaml(tmp_path, {
        "seecoders": {"Bad": {"path": str(garbage)}},
        "base_models": {"Not a model": {"path": str(tmp_path)}},
    })
    engine = Engine(Registry.load(path), device="cpu")
    from prompt_free.errors import CheckpointError

    with pytest.raises(CheckpointError, match="garbage.safetensors.*not a valid safetensors"):
        engine.seecoder("Bad")
    with pytest.raises(CheckpointError, match="not a diffusers model folder"):
        engine.base_model("Not a model")


def test_unconditional_embedding_width_mismatch_is_reported(tmp_path):
    anime_ug = shared_file("official-data", "anime_ug.pth")
    path = write_yaml(tmp_path, {
        "seecoders": {"Anime tiny": {"tiny": "seecoder", "unconditional": {"path": str(anime_ug),
                      "sha256": "84efc021a807c3ebf15dfb8bbf903e5daa43ebaba6b13adac02184665fec2f07"}}},
        "base_models": {"B": {"tiny": "sd"}},
    })
    engine = Engine(Registry.load(path), device="cpu")
    from prompt_free.errors import CheckpointError

    with pytest.raises(CheckpointError, match="width 768, the SeeCoder outputs 64"):
        engine.seecoder("Anime tiny")


def test_unconditional_sha_mismatch_is_reported(tmp_path):
    fake = tmp_path / "anime_ug.pth"
    torch.save(torch.zeros(77, 64), fake)
    path = write_yaml(tmp_path, {
        "seecoders": {"A": {"tiny": "seecoder", "unconditional": {"path": str(fake), "sha256": "0" * 64}}},
        "base_models": {"B": {"tiny": "sd"}},
    })
    with pytest.raises(ModelUnavailableError, match="wrong or corrupt"):
        Engine(Registry.load(path), device="cpu").seecoder("A")


def test_app_starts_offline_on_tiny_profile_within_30_seconds():
    """`python app.py` with no weights and no network: starts, on the tiny profile, quickly."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}  # no hint: must not hang
    env["GRADIO_ANALYTICS_ENABLED"] = "False"
    from tests.helpers.app import free_port

    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        import urllib.request

        deadline = t0 + 60
        up = False
        while time.perf_counter() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    body = r.read().decode()
                    up = r.status == 200
                    break
            except Exception:
                time.sleep(0.5)
        elapsed = time.perf_counter() - t0
        assert up, f"app did not start: {proc.stdout.read() if proc.poll() is not None else ''}"
        assert elapsed < 30, f"start took {elapsed:.1f}s"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as r:
            config = r.read().decode()
        assert "Offline demo mode" in config
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_engine_loads_official_unet_only_file_with_a_vae_folder(tmp_path, written_models):
    """format: pfd_unet: the official diffuser file (../shared e2e fixture, real key layout at
    small widths) + a separate VAE, with its UNet config given in checkpoints.yaml."""
    import json

    fixture = shared_file("fixtures", "e2e_parity", "unet_pfd.safetensors").parent
    config = json.loads((fixture / "config.json").read_text())["diffusers_unet_config"]
    (tmp_path / "unet_config.json").write_text(json.dumps(config))
    root = written_models[0]
    path = write_yaml(tmp_path, {
        "seecoders": {"S": {"tiny": "seecoder"}},
        "base_models": {"PFD UNet": {
            "path": str(fixture / "unet_pfd.safetensors"), "format": "pfd_unet",
            "unet_config": "unet_config.json", "vae": {"path": str(root / "my-sd" / "vae")},
        }},
    })
    engine = Engine(Registry.load(path), device="cpu")
    from prompt_free.formats import load_unet

    reference = load_unet(fixture / "unet_pfd.safetensors", config)
    base = engine.base_model("PFD UNet")
    for k, v in reference.state_dict().items():
        assert torch.equal(base.unet.state_dict()[k], v), k
    img = Image.fromarray(np.full((64, 64, 3), 90, np.uint8))
    r = image_variation(engine, img, VariationSettings(seecoder="S", base_model="PFD UNet", width=64, height=64, steps=2))
    assert r.images[0].size == (64, 64)


def test_bad_model_config_file_is_reported(tmp_path):
    path = write_yaml(tmp_path, {
        "seecoders": {"S": {"tiny": "seecoder"}},
        "base_models": {"B": {"path": "x.safetensors", "unet_config": "missing.json"}},
    })
    with pytest.raises(ConfigError, match="base model 'B' unet_config: config file .*missing.json' does not exist"):
        Registry.load(path)
