"""The reference window's and the negative reference's cost per denoising step (issue 26), in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_reference_controls.py --size 128 --steps 10 --repeats 5
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_reference_controls.py --unet tiny   # seconds, not minutes

The same guided loop (``sampling.denoise``, eager DDIM, batch 2) of a UNet (default: the
full-size SD-1.5 UNet with random weights, ``full_random.full_unet``; ``--unet tiny``: the tiny
profile's), with its context given three ways, interleaved round by round:

* ``today``: no schedule (the neutral window, no negative: what every run without them does);
* ``window``: ``conditioning.ReferenceWindow`` (0.5, 1): two prepared pairs, one picked per step;
* ``window+negative``: the same with another unconditional context inside the window (a
  negative costs one extra SeeCoder encode before the run, never anything per step).

Printed and written to benchmarks/results/reference_controls.json: seconds per step of each
(median over rounds) and the per-round ratios to ``today`` (median and best: on a loaded machine
the best is the steadier figure). Expected ~1.0x: a step only picks a ready tensor. As the
whole-step ratio drowns in a shared machine's noise, the script also times what the window adds
to a step by itself, ``StepContext.at`` over many calls (microseconds), and gives the ratio it
implies: (step + its extra) / step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from prompt_free.conditioning import Conditioning, ReferenceWindow  # noqa: E402
from prompt_free.sampling import denoise, make_scheduler  # noqa: E402

GUIDANCE = 2.0


def _unet(kind: str):
    if kind == "tiny":
        from prompt_free.tiny import tiny_unet

        return tiny_unet(1)
    from prompt_free.full_random import full_unet

    return full_unet()


def variants(unet, seed: int = 0) -> dict:
    """Conditionings by name: today's, a window, a window with a negative."""
    g = torch.Generator().manual_seed(seed)
    width = unet.config.cross_attention_dim
    cond, uncond, negative = (torch.randn(1, 148, width, generator=g) for _ in range(3))
    window = ReferenceWindow(0.5, 1.0, (cond, uncond), (uncond, uncond))
    with_negative = ReferenceWindow(0.5, 1.0, (cond, negative), (uncond, uncond))
    return {"today": Conditioning(cond, uncond),
            "window": Conditioning(cond, uncond, schedule=window),
            "window+negative": Conditioning(cond, negative, schedule=with_negative)}


def seconds_per_step(unet, conditioning: Conditioning, noise: torch.Tensor, steps: int) -> float:
    ctx = conditioning.step_context(noise.shape[0], True, unet.device, unet.dtype)
    t0 = time.perf_counter()
    denoise(unet, make_scheduler(), noise, conditioning.context, conditioning.uncond, steps=steps, guidance=GUIDANCE,
            step_context=ctx)
    return (time.perf_counter() - t0) / steps


def measure(unet, size: int, steps: int, repeats: int) -> dict:
    runs = variants(unet)
    noise = torch.randn(1, unet.config.in_channels, size // 8, size // 8, generator=torch.Generator().manual_seed(1))
    times = {name: [] for name in runs}
    with torch.inference_mode():
        seconds_per_step(unet, runs["today"], noise, 2)  # warm-up
        for r in range(repeats):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))  # a drifting load cancels
            for name in order:
                times[name].append(seconds_per_step(unet, runs[name], noise, steps))
    out = {}
    for name, ts in times.items():
        ratios = [t / base for t, base in zip(ts, times["today"])]
        out[name] = {"s_per_step": statistics.median(ts), "ratio_median": statistics.median(ratios),
                     "ratio_best": min(ratios), "runs_s_per_step": ts}
    return out


def context_pick_seconds(conditioning: Conditioning, steps: int, calls: int = 20000) -> float:
    """Seconds of one ``StepContext.at`` (the loop's per-step context pick), over ``calls`` calls."""
    ctx = conditioning.step_context(1, True, torch.device("cpu"), torch.float32)
    t0 = time.perf_counter()
    for k in range(calls):
        ctx.at(k % steps, steps)
    return (time.perf_counter() - t0) / calls


def pick_rows(unet, steps: int, s_per_step: float) -> dict:
    runs = variants(unet)
    picks = {name: statistics.median(context_pick_seconds(c, steps) for _ in range(5)) for name, c in runs.items()}
    return {name: {"pick_s": t, "extra_s_per_step": t - picks["today"],
                   "implied_step_ratio": (s_per_step + t - picks["today"]) / s_per_step} for name, t in picks.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--unet", choices=["full", "tiny"], default="full")
    p.add_argument("--size", type=int, default=128, help="image side (latent = size / 8)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reference_controls.json"))
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    result = {"unet": a.unet, "size": a.size, "steps": a.steps, "repeats": a.repeats,
              "threads": torch.get_num_threads(), "load_before": os.getloadavg()}
    unet = _unet(a.unet)
    result["rows"] = measure(unet, a.size, a.steps, a.repeats)
    result["picks"] = pick_rows(unet, a.steps, result["rows"]["today"]["s_per_step"])
    result["load_after"] = os.getloadavg()
    print("| context | s / step | ratio to today (median) | ratio (best) | context pick (us) | implied step ratio |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, row in result["rows"].items():
        pick = result["picks"][name]
        print(f"| {name} | {row['s_per_step']:.4f} | {row['ratio_median']:.3f} | {row['ratio_best']:.3f} | "
              f"{pick['pick_s'] * 1e6:.2f} | {pick['implied_step_ratio']:.6f} |")
    print(json.dumps({k: v for k, v in result.items() if k.startswith("load")}))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
