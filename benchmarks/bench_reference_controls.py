"""Each reference control's time per denoising step against today's step, in one run (issue 26).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_reference_controls.py                     # tiny profile
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_reference_controls.py --profile full-random --size 128

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
    """One run's seconds per step: the median interval between the loop's progress calls."""
    settings = VariationSettings(**{**base, **change, "steps": steps})
    call = {"reference": str(REFERENCE), **kwargs}
    stamps = []
    image_variation(engine, call.pop("reference"), settings, progress=lambda i, n: stamps.append(time.perf_counter()),
                    **call)
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="tiny", help="tiny (default) or full-random (SD-1.5 size, random weights)")
    p.add_argument("--size", type=int, default=64, help="output side")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reference_controls.json"))
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    engine = Engine.from_profile(a.profile, device="cpu")
    base = {"width": a.size, "height": a.size, "seed": 1, "num_images": 1, "scheduler": "DDIM"}
    with tempfile.TemporaryDirectory() as tmp:
        embeddings.encode(engine, str(REFERENCE)).save(Path(tmp) / "ref.safetensors")
        result = {"profile": a.profile, "size": a.size, "steps": a.steps, "repeats": a.repeats,
                  "threads": torch.get_num_threads(), "load_before": os.getloadavg()}
        result["rows"] = measure(engine, base, controls(Path(tmp)), a.steps, a.repeats)
    result["load_after"] = os.getloadavg()
    print("| control | compared with | s / step | ratio (median) | ratio (best) |\n| --- | --- | ---: | ---: | ---: |")
    for name, row in result["rows"].items():
        print(f"| {name} | {row['baseline']} | {row['s_per_step']:.4f} | {row['ratio_median']:.3f} | "
              f"{row['ratio_best']:.3f} |")
    print(json.dumps({k: v for k, v in result.items() if k.startswith("load")}))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
