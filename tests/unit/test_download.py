"""``python -m prompt_free.download``: planning, --check and downloads, offline only.

Local entries are real files the tests write (safetensors, JSON configs); hub files are placed
into a temporary Hugging Face cache in its own layout (models--owner--name/snapshots/<rev>/...).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from prompt_free import download
from prompt_free.registry import Registry
from tests.helpers.app import ROOT


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache for this test (huggingface_hub reads the constant per call)."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("PFD_ANNOTATOR_DIR", raising=False)
    return cache


def write_yaml(tmp_path: Path, profile: dict, name: str = "real") -> Path:
    path = tmp_path / "checkpoints.yaml"
    path.write_text(yaml.safe_dump({"profiles": {name: profile}}))
    return path


def write_safetensors(path: Path, n: int) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.arange(n, dtype=torch.float32)}, str(path))
    return path.stat().st_size


def write_diffusers_folder(root: Path) -> dict:
    """A diffusers SD layout (unet, vae, text encoder, tokenizer) with small real files."""
    sizes = {}
    for sub, weights in (("unet", "diffusion_pytorch_model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors"),
                         ("text_encoder", "model.safetensors")):
        (root / sub).mkdir(parents=True)
        (root / sub / "config.json").write_text(json.dumps({"_class_name": sub}))
        sizes[f"{sub}/{weights}"] = write_safetensors(root / sub / weights, 10)
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "vocab.json").write_text(json.dumps({"a</w>": 0}))
    (root / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    (root / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    (root / "tokenizer" / "special_tokens_map.json").write_text(json.dumps({}))
    return sizes


def put_in_hub_cache(cache: Path, repo: str, files: dict, revision: str = "a" * 40) -> None:
    """Files (repo path -> bytes) as huggingface_hub stores them: blobs, a snapshot, refs/main."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        blob = folder / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = folder / "snapshots" / revision / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(revision)


def run_main(capsys, *args) -> tuple:
    rc = download.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


# ----------------------------------------------------------------------------- the real profile
def test_check_offline_on_the_real_profile_reports_missing_quickly(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "PFD_ANNOTATOR_DIR", "PFD_CHECKPOINTS"}}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"), PFD_PROFILE="auto")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "prompt_free.download", "--check"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - t0
    both = proc.stdout + proc.stderr
    assert proc.returncode == 1, both
    assert "Traceback" not in both
    assert "Profile 'real'" in proc.stdout and str(tmp_path / "hf-home" / "hub") in proc.stdout
    for expected in ("shi-labs/prompt-free-diffusion/pretrained/pfd/seecoder/seecoder-v1-0.safetensors",
                     "stable-diffusion-v1-5/stable-diffusion-v1-5/unet/diffusion_pytorch_model.safetensors",
                     "lllyasviel/control_v11p_sd15_openpose/config.json",
                     "lllyasviel/Annotators/body_pose_model.pth"):
        line = next((ln for ln in proc.stdout.splitlines() if expected in ln), None)
        assert line is not None and line.lstrip().startswith("missing") and "size unknown" in line, (expected, line)
    assert "present " not in proc.stdout
    assert "Present: 0 files" in proc.stdout and "HF_HUB_OFFLINE is set" in proc.stdout
    assert elapsed < 60, f"--check offline took {elapsed:.0f} s"


def test_plan_of_a_diffusers_base_model_is_what_the_engine_loads():
    registry = Registry.load(profile="real")
    files = [n.describe() for n in download.plan(registry, ["Stable Diffusion v1.5"])]
    repo = "stable-diffusion-v1-5/stable-diffusion-v1-5/"
    wanted = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors (hub) (+1 alternative)",
              "vae/config.json", "text_encoder/model.safetensors (hub) (+1 alternative)", "tokenizer/vocab.json",
              "tokenizer/merges.txt"]
    for w in wanted:
        assert any(f.startswith(repo + w) for f in files), (w, files)
    assert not any("fp16" in f or "ema" in f or ".ckpt" in f or "onnx" in f or "safety_checker" in f for f in files)
    without_text = [n.describe() for n in download.plan(registry, ["Stable Diffusion v1.5"], text_encoders=False)]
    assert not any("text_encoder" in f or "tokenizer" in f for f in without_text) and any("unet/" in f for f in without_text)


def test_plan_detectors_default_preprocessors_and_all():
    registry = Registry.load(profile="real")
    used = {n.what for n in download.plan(registry, ["openpose"])}
    assert {"body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"} <= used
    assert not any(n.annotator for n in download.plan(registry, ["openpose"], annotators="none"))
    every = download.plan(registry, ["SeeCoder"], annotators="all")
    sam = next(n for n in every if n.what == "mobile_sam.pt")
    assert sam.describe().startswith("dhkim2810/MobileSAM/mobile_sam.pt")
    assert {"ZoeD_M12_N.pt", "sk_model2.pth", "table5_pidinet.pth"} <= {n.what for n in every}


def test_plan_shares_files_between_entries_once():
    registry = Registry.load(profile="real")
    needs = download.plan(registry, ["Anything-v4", "Deliberate-v2"], annotators="none")
    vae = [n for n in needs if n.describe().startswith("shi-labs/prompt-free-diffusion/pretrained/pfd/vae/sd-v2-0-base-autokl.pth")]
    assert len(vae) == 2 and len(download.unique(vae)) == 1
    a, b = needs[0], needs[1]
    assert download.unique([a, b, a]) == [a, b] and download.unique([b, a, b]) == [b, a]


# ----------------------------------------------------------------------------- local files
def local_profile(tmp_path: Path) -> tuple:
    sizes = {"seecoder": write_safetensors(tmp_path / "w" / "seecoder.safetensors", 300)}
    sizes.update(write_diffusers_folder(tmp_path / "w" / "sd"))
    path = write_yaml(tmp_path, {
        "seecoders": {"Local SeeCoder": {"path": "w/seecoder.safetensors"}},
        "base_models": {"Local SD": {"path": "w/sd"}},
        "controlnets": {"Gone": {"path": "w/not-there.safetensors", "preprocessor": "canny"}},
    })
    return path, sizes


def test_check_lists_local_files_with_sizes_and_the_missing_one(tmp_path, hub_cache, capsys):
    path, sizes = local_profile(tmp_path)
    rc, out, _ = run_main(capsys, "--checkpoints", path, "--check")
    assert rc == 1, out
    lines = out.splitlines()
    seecoder = next(ln for ln in lines if "seecoder.safetensors" in ln)
    assert seecoder.split()[0] == "present" and download.human(sizes["seecoder"]) in seecoder
    unet = next(ln for ln in lines if "unet" in ln and "diffusion_pytorch_model.safetensors" in ln)
    assert unet.split()[0] == "present" and download.human(sizes["unet/diffusion_pytorch_model.safetensors"]) in unet
    assert any("tokenizer merges.txt" in ln and ln.split()[0] == "present" for ln in lines)
    gone = next(ln for ln in lines if "not-there.safetensors" in ln)
    assert gone.split()[0] == "missing" and str(tmp_path / "w" / "not-there.safetensors") in gone
    assert "Missing: 1 file " in out
    rc, out, _ = run_main(capsys, "--checkpoints", path, "--check", "Local SeeCoder", "Local SD")
    assert rc == 0 and "Everything is present." in out and "missing" not in out


def test_download_of_local_entries_is_a_no_op_success(tmp_path, hub_cache, capsys):
    path, _ = local_profile(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "w").rglob("*") if p.is_file()}
    rc, out, err = run_main(capsys, "--checkpoints", path, "Local SeeCoder", "Local SD")
    assert rc == 0, out + err
    assert "to download" in out and " 0 to download" in out and "Everything is present." in out
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "w").rglob("*") if p.is_file()} == before
    assert not any(hub_cache.iterdir())


def test_download_names_the_missing_local_file_and_fails(tmp_path, hub_cache, capsys):
    path, _ = local_profile(tmp_path)
    rc, out, err = run_main(capsys, "--checkpoints", path, "Gone")
    assert rc == 1 and "Could not fetch 1 file" in out
    assert "ControlNet 'Gone'" in out and "not-there.safetensors" in out and "Traceback" not in out + err


def test_sha256_mismatch_is_a_clear_error(tmp_path, hub_cache, capsys):
    write_safetensors(tmp_path / "w" / "sc.safetensors", 50)
    actual = hashlib.sha256((tmp_path / "w" / "sc.safetensors").read_bytes()).hexdigest()
    pinned = "0" * 64
    path = write_yaml(tmp_path, {
        "seecoders": {"Pinned": {"path": "w/sc.safetensors", "sha256": pinned}},
        "base_models": {"B": {"tiny": "sd"}},
    })
    rc, out, err = run_main(capsys, "--checkpoints", path, "Pinned")
    assert rc == 1, out
    assert "SeeCoder 'Pinned'" in out and "sc.safetensors" in out
    assert f"sha256 {actual}, expected {pinned}" in out and "Traceback" not in out + err
    rc, out, _ = run_main(capsys, "--checkpoints", path, "--check", "Pinned")
    assert rc == 1 and "bad file" in out and actual in out


# ----------------------------------------------------------------------------- the hub cache
def test_hub_files_in_the_cache_are_present(tmp_path, hub_cache, capsys):
    seecoder = b"\x00" * 1234
    put_in_hub_cache(hub_cache, "someone/seecoders", {"pfd/sc.safetensors": seecoder})
    # a diffusers ControlNet repo that only has the .bin weights (the fallback of the safetensors)
    put_in_hub_cache(hub_cache, "someone/controlnet", {"config.json": b"{}", "diffusion_pytorch_model.bin": b"1" * 5000})
    path = write_yaml(tmp_path, {
        "seecoders": {"Hub SeeCoder": {"repo": "someone/seecoders", "file": "pfd/sc.safetensors"},
                      "Not cached": {"repo": "someone/seecoders", "file": "pfd/other.safetensors"}},
        "base_models": {"B": {"tiny": "sd"}},
        "controlnets": {"Hub CN": {"repo": "someone/controlnet", "preprocessor": "canny"}},
    })
    rc, out, err = run_main(capsys, "--checkpoints", path, "--check", "Hub SeeCoder", "Hub CN")
    assert rc == 0, out + err
    lines = out.splitlines()
    sc = next(ln for ln in lines if "sc.safetensors" in ln)
    assert sc.split()[0] == "present" and "1.2 kB" in sc and str(hub_cache) in sc and "snapshots" in sc
    cn = next(ln for ln in lines if "diffusion_pytorch_model" in ln)
    assert cn.split()[0] == "present" and cn.endswith("diffusion_pytorch_model.bin") and "5.0 kB" in cn
    rc, out, _ = run_main(capsys, "--checkpoints", path, "--check", "Not cached")
    assert rc == 1 and "missing" in out and "someone/seecoders/pfd/other.safetensors (hub)" in out


def test_missing_hub_files_offline_are_named_with_the_reason(tmp_path, hub_cache, capsys):
    path = write_yaml(tmp_path, {
        "seecoders": {"S": {"repo": "someone/seecoders", "file": "pfd/sc.safetensors"}},
        "base_models": {"B": {"tiny": "sd"}},
    })
    rc, out, err = run_main(capsys, "--checkpoints", path)
    assert rc == 1 and "HF_HUB_OFFLINE is set" in out and "someone/seecoders/pfd/sc.safetensors" in out
    assert not any(hub_cache.iterdir())


# ----------------------------------------------------------------------------- usage errors
def test_unknown_name_lists_the_known_ones(capsys):
    rc, out, err = run_main(capsys, "--profile", "real", "SeeCoder", "No such model")
    assert rc == 2 and out == ""
    assert "unknown entry name 'No such model'" in err
    assert "SeeCoder-PA" in err and "Stable Diffusion v1.5" in err and "openpose" in err and "Traceback" not in err


def test_bad_checkpoints_yaml_is_a_usage_error(tmp_path, capsys):
    path = tmp_path / "checkpoints.yaml"
    path.write_text("profiles: {real: {seecoders: {A: {repo: not-a-repo, file: x}}, base_models: {B: {tiny: sd}}}}")
    rc, out, err = run_main(capsys, "--checkpoints", path, "--check")
    assert rc == 2 and "repo must look like 'owner/name'" in err


def test_the_tiny_profile_needs_nothing(capsys):
    rc, out, _ = run_main(capsys, "--profile", "tiny", "--check")
    assert rc == 0 and "needs no files" in out
