"""Each reference control's time per denoising step against today's step, in one run (issue 26).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_reference_controls.py                     # tiny profile
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_reference_controls.py --profile full-random --size 512 --device cuda

Every row is a real run of the Image Variation task (``tasks.image_variation``: the one reference
builder, ``Engine.generate``, the eager DDIM loop, VAE decode) on one engine, with one control
set away from its neutral value: the reference window, a negative image, the noise negative, a
source mask, a framing, ``denoise_strength``, block weights, a layout image, the balance (with a
prompt), a saved embedding. A run's step time is the median of the intervals between the
loop's progress calls (``sampling.denoise`` makes one after every step; the first step, which
holds the balance's calibration, is left out), so what a run does once (encode, VAE, patch,
calibration) is not in it. Rows are interleaved round by round (order reversed every other round, so a
drifting load hits all alike); the ratio of a row is taken to the baseline's step of the same
round: today's, or for the balance today's with the same prompt (text + image, 225 tokens).
Printed as a table (median and best ratio over rounds) and written to
benchmarks/results/reference_controls.json. The goal: every ratio <= 1.05.

``--balance-attention``: the balance's one per-step change, in isolation (a shared machine's
noise hides a few per cent in whole steps): ``scaled_dot_product_attention`` with and without the
balance's (1, 1, 1, 225) logit mask at every cross-attention shape of SD 1.5's UNet for a
``--attention-size`` output (guided batch 2; best of many calls), summed over the 16 layers, and one
full-size random UNet forward at that size (``full_random.full_unet``) to set it against.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from prompt_free import embeddings  # noqa: E402
from prompt_free.engine import Engine  # noqa: E402
from prompt_free.tasks import VariationSettings, image_variation  # noqa: E402

EXAMPLES = ROOT / "assets" / "examples"
REFERENCE, OTHER = EXAMPLES / "chelsea.jpg", EXAMPLES / "coffee.jpg"
PROMPT = "a cat on a sofa"


def controls(workdir: Path) -> dict:
    """Row name -> (settings away from neutral, task keyword arguments, the row it is compared with)."""
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :32] = 255
    Image.fromarray(mask).save(workdir / "half.png")
    return {
        "today": ({}, {}, "today"),
        "window (0.3, 0.8)": (dict(reference_start=0.3, reference_end=0.8), {}, "today"),
        "negative image": (dict(negative_image=str(OTHER)), {}, "today"),
        "negative noise": (dict(negative_mode="noise"), {}, "today"),
        "source mask (half)": (dict(reference_mask=str(workdir / "half.png")), {}, "today"),
        "framing pad": (dict(reference_framing="pad"), {}, "today"),
        "denoise 0.5": (dict(denoise_strength=0.5), {}, "today"),
        "block weights (up 0.5)": (dict(reference_weight_up=0.5), {}, "today"),
        "layout image": (dict(layout_image=str(OTHER)), {}, "today"),
        "embedding": ({}, {"embedding": str(workdir / "ref.safetensors"), "reference": None}, "today"),
        "today + prompt": (dict(prompt=PROMPT), {}, "today + prompt"),
        "balance 0.5 (+ prompt)": (dict(prompt=PROMPT, balance=0.5), {}, "today + prompt"),
    }


def step_seconds(engine, base: dict, change: dict, kwargs: dict, steps: int) -> float:
    """One run's seconds per step: the median interval between the loop's progress calls (on
    CUDA each call waits for the step's kernels first: the loop itself never syncs)."""
    settings = VariationSettings(**{**base, **change, "steps": steps})
    call = {"reference": str(REFERENCE), **kwargs}
    stamps = []
    cuda = engine.device.type == "cuda"

    def stamp(i, n):
        if cuda:
            torch.cuda.synchronize(engine.device)
        stamps.append(time.perf_counter())

    image_variation(engine, call.pop("reference"), settings, progress=stamp, **call)
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:]))


def measure(engine, base: dict, rows: dict, steps: int, repeats: int) -> dict:
    times = {name: [] for name in rows}
    with torch.inference_mode():
        for name, (change, kwargs, _) in rows.items():  # warm-up: loads, encodes (cached), calibrations
            step_seconds(engine, base, change, kwargs, steps)
        for r in range(repeats):
            for name in (list(rows) if r % 2 == 0 else list(reversed(rows))):
                change, kwargs, _ = rows[name]
                times[name].append(step_seconds(engine, base, change, kwargs, steps))
    out = {}
    for name, ts in times.items():
        ratios = [t / b for t, b in zip(ts, times[rows[name][2]])]
        out[name] = {"baseline": rows[name][2], "s_per_step": statistics.median(ts),
                     "ratio_median": statistics.median(ratios), "ratio_best": min(ratios), "runs_s_per_step": ts}
    return out


# SD 1.5's cross-attention layers by latent scale: (layers, head dim), 8 heads; 225 keys = 77 text + 148 reference
SD15_CROSS_ATTENTION = {1: (5, 40), 2: (5, 80), 4: (5, 160), 8: (1, 160)}


def best_seconds(fn, calls: int = 20) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def balance_attention(size: int) -> dict:
    """The masked attention's extra seconds per guided step at ``size``, and a full UNet step's."""
    import torch.nn.functional as F

    from prompt_free.full_random import full_unet

    g = torch.Generator().manual_seed(0)
    keys, text = 225, 77
    mask = torch.cat([torch.full((text,), 0.65), torch.zeros(keys - text)]).view(1, 1, 1, keys)  # a calibrated bias
    extra, rows = 0.0, {}
    with torch.inference_mode():
        for scale, (layers, head_dim) in SD15_CROSS_ATTENTION.items():
            side = size // 8 // scale
            q = torch.randn(2, 8, side * side, head_dim, generator=g)
            k, v = (torch.randn(2, 8, keys, head_dim, generator=g) for _ in range(2))
            plain = best_seconds(lambda: F.scaled_dot_product_attention(q, k, v))
            masked = best_seconds(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
            rows[f"{side}x{side}"] = {"layers": layers, "plain_s": plain, "masked_s": masked}
            extra += layers * (masked - plain)
        unet = full_unet()
        latents = torch.randn(2, 4, size // 8, size // 8, generator=g)
        context = torch.randn(2, keys, 768, generator=g)
        step = best_seconds(lambda: unet(latents, 500, encoder_hidden_states=context), calls=2)
    return {"size": size, "levels": rows, "extra_s_per_step": extra, "unet_step_s": step,
            "implied_step_ratio": (step + extra) / step}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="tiny", help="tiny (default) or full-random (SD-1.5 size, random weights)")
    p.add_argument("--size", type=int, default=64, help="output side")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--balance-attention", action="store_true", help="also time the balance's masked attention alone")
    p.add_argument("--attention-size", type=int, default=512)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reference_controls.json"))
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    engine = Engine.from_profile(a.profile, device=a.device)
    base = {"width": a.size, "height": a.size, "seed": 1, "num_images": 1, "scheduler": "DDIM"}
    with tempfile.TemporaryDirectory() as tmp:
        embeddings.encode(engine, str(REFERENCE)).save(Path(tmp) / "ref.safetensors")
        result = {"profile": a.profile, "device": a.device, "size": a.size, "steps": a.steps, "repeats": a.repeats,
                  "threads": torch.get_num_threads(), "load_before": os.getloadavg()}
        result["rows"] = measure(engine, base, controls(Path(tmp)), a.steps, a.repeats)
    if a.balance_attention:
        result["balance_attention"] = balance_attention(a.attention_size)
    result["load_after"] = os.getloadavg()
    print("| control | compared with | s / step | ratio (median) | ratio (best) |\n| --- | --- | ---: | ---: | ---: |")
    for name, row in result["rows"].items():
        print(f"| {name} | {row['baseline']} | {row['s_per_step']:.4f} | {row['ratio_median']:.3f} | "
              f"{row['ratio_best']:.3f} |")
    if a.balance_attention:
        b = result["balance_attention"]
        print("\n| cross-attention level | layers | SDPA plain (ms) | with the balance's mask (ms) |\n| --- | ---: | ---: | ---: |")
        for level, r in b["levels"].items():
            print(f"| {level} | {r['layers']} | {r['plain_s'] * 1e3:.2f} | {r['masked_s'] * 1e3:.2f} |")
        print(f"balance: +{b['extra_s_per_step'] * 1e3:.1f} ms per guided step at {b['size']}x{b['size']}; full UNet step "
              f"{b['unet_step_s']:.2f} s; implied step ratio {b['implied_step_ratio']:.4f}")
    print(json.dumps({k: v for k, v in result.items() if k.startswith("load")}))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
