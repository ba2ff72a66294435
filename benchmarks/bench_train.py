"""Training benchmarks (not a test). Run: ``HF_HUB_OFFLINE=1 python benchmarks/bench_train.py``.

Results go to benchmarks/results/train.json (git-ignored), one key per section; sections of
this file leave the other keys as they are.

Section "seecoder_training": SeeCoder training throughput (images/s, optimizer steps timed
after warm-up steps) through the real ``prompt_free.train.Trainer`` loop.
* CPU, tiny profile (64x64 images).
* When CUDA is available: full size (SD-1.x UNet 860M + SD VAE + official SeeCoder, random
  weights: speed and memory do not depend on the values) at 512x512, bf16, peak GPU memory
  per image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results" / "train.json"


def write_result(key: str, value) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    data[key] = value
    RESULTS.write_text(json.dumps(data, indent=2))


# ============================================================================ seecoder_training
def _images(folder: Path, n: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")


def _throughput(trainer, warmup: int, steps: int) -> dict:
    """Images/s over ``steps`` optimizer steps after ``warmup`` steps, from the loss log's
    per-step wall clock (checkpoint writing at the end is not counted)."""
    trainer.train(max_steps=warmup + steps)
    log = [json.loads(ln) for ln in (trainer.out / "train_log.jsonl").read_text().splitlines()]
    t = {e["step"]: e["seconds"] for e in log}
    seconds = t[warmup + steps] - t[warmup]
    return {
        "images_per_s": round(steps * trainer.effective_batch / seconds, 3),
        "s_per_step": round(seconds / steps, 4),
        "effective_batch": trainer.effective_batch,
        "timed_steps": steps,
        "final_loss": round(log[-1]["loss"], 4),
    }


def _config(data, out, **training):
    from prompt_free.train import config_from_dict

    return config_from_dict({
        "base_model": "tiny",
        "output_dir": str(out),
        "data": {"paths": [str(data)], "resolution": 64, "buckets": "square", "num_workers": 0},
        "training": {"batch_size": 4, "phases": [{"iterations": 10_000, "lr": 1e-4}], **training},
        "checkpoint_interval": 10_000,
        "progress": False,
    })


def bench_cpu_tiny(tmp: Path, steps: int, threads: int) -> dict:
    from prompt_free.train import Trainer

    torch.set_num_threads(threads)
    _images(tmp / "tiny", 8, 64)
    out = {}
    for batch in (1, 4):
        tr = Trainer(_config(tmp / "tiny", tmp / f"cpu-{batch}", batch_size=batch))
        out[f"batch{batch}"] = _throughput(tr, warmup=2, steps=steps)
    return {"device": "cpu", "torch_threads": threads, "resolution": 64, "profile": "tiny", **out}


def bench_gpu_full(tmp: Path, steps: int, batches, gradient_checkpointing: bool) -> dict:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from prompt_free.seecoder import SeeCoderConfig, build_seecoder
    from prompt_free.train import Trainer
    from prompt_free.train.models import BaseModel

    _images(tmp / "full", 16, 512)
    torch.manual_seed(0)
    results = {"device": torch.cuda.get_device_name(), "resolution": 512, "mixed_precision": "bf16",
               "gradient_checkpointing": gradient_checkpointing}
    seecoder = build_seecoder(SeeCoderConfig.official(), seed=0)
    with torch.device("cuda"):
        unet = UNet2DConditionModel(cross_attention_dim=768, sample_size=64)
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=512,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        )
    peaks = {}
    for batch in batches:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = BaseModel("sd1-random", unet, vae, SeeCoderConfig.official())
        cfg = _config(tmp / "full", tmp / f"gpu-{batch}", batch_size=batch, mixed_precision="bf16",
                      gradient_checkpointing=gradient_checkpointing)
        cfg.data.resolution = 512
        cfg.data.num_workers = 4
        tr = Trainer(cfg, base=base, seecoder=seecoder)
        r = _throughput(tr, warmup=2, steps=steps)
        peak = torch.cuda.max_memory_allocated() / 2**30
        peaks[batch] = peak
        r.update(peak_gib=round(peak, 2), peak_gib_per_image=round(peak / batch, 3))
        results[f"batch{batch}"] = r
        print(f"batch {batch}: {r}", flush=True)
        tr.optimizer.zero_grad(set_to_none=True)
        tr.optimizer.state.clear()
        del tr
    if len(batches) > 1:
        b0, b1 = batches[0], batches[-1]
        results["marginal_gib_per_image"] = round((peaks[b1] - peaks[b0]) / (b1 - b0), 3)
    return results


def seecoder_training(args) -> dict:
    """Each part in its own process: accelerate's state is per process (mixed precision,
    device), and the CPU part must not see the GPU."""
    import subprocess

    if args.only is None:
        cmd = [sys.executable, __file__, "--steps", str(args.steps), "--threads", str(args.threads),
               "--gpu-steps", str(args.gpu_steps), "--gpu-batches", *map(str, args.gpu_batches)]
        if args.gradient_checkpointing:
            cmd.append("--gradient-checkpointing")
        subprocess.run(cmd + ["--only", "cpu"], check=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
        if torch.cuda.is_available() and not args.cpu_only:
            subprocess.run(cmd + ["--only", "gpu"], check=True)
        return json.loads(RESULTS.read_text())["seecoder_training"]
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    res = data.get("seecoder_training", {})
    res.update(python=platform.python_version(), torch=torch.__version__)
    with tempfile.TemporaryDirectory() as tmp:
        if args.only == "cpu":
            res["cpu_tiny"] = bench_cpu_tiny(Path(tmp), args.steps, args.threads)
            res.pop("cuda_full", None)  # a fresh CPU run starts a fresh record
        else:
            res["cuda_full"] = bench_gpu_full(Path(tmp), args.gpu_steps, args.gpu_batches, args.gradient_checkpointing)
    write_result("seecoder_training", res)
    return res


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8, help="timed CPU steps (after 2 warm-up steps)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy shared machine)")
    p.add_argument("--gpu-steps", type=int, default=10)
    p.add_argument("--gpu-batches", type=int, nargs="+", default=[4, 8])
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--cpu-only", action="store_true")
    p.add_argument("--only", choices=("cpu", "gpu"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    res = seecoder_training(args)
    if args.only is None:
        print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
