"""SeeCoder encode time with a source mask (``reference_mask``) against without, and at a smaller
encode size (``reference_max_side``), in one run (the ratio is what matters).

The masked encode is the same forward plus a fill of the pixels outside the mask and one
key-padding mask per cross-attention layer of the query transformer; the denoising loop is not
touched at all (the 148 tokens are computed once per reference), so a mask costs nothing per step.
Masked and unmasked runs alternate, so a change of machine load hits both alike.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_source_mask.py [--model full|tiny] [--size 512] [--repeats 5]

``full``: the released architecture with random weights (``build_seecoder(SeeCoderConfig(), seed=0)``,
294.1 M parameters, no download); ``tiny``: the tiny profile's SeeCoder. Prints a table and
writes ``benchmarks/results/source_mask.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from prompt_free.seecoder import SeeCoderConfig, build_seecoder  # noqa: E402


def model(kind: str, device: torch.device):
    if kind == "full":
        return build_seecoder(SeeCoderConfig(), seed=0).to(device).eval()
    from prompt_free.engine import Engine

    engine = Engine.from_profile("tiny", device=str(device))
    return engine.seecoder(engine.defaults["seecoder"]).model.eval()


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["full", "tiny"], default="full")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--max-side", type=int, default=256, help="the smaller encode size compared (reference_max_side)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    device = torch.device(a.device)
    sc = model(a.model, device)
    x = torch.rand(1, 3, a.size, a.size, device=device)
    small = torch.nn.functional.interpolate(x, size=(a.max_side, a.max_side), mode="bicubic").clamp(0, 1)
    mask = torch.zeros(1, a.size, a.size, dtype=torch.bool, device=device)
    mask[:, :, : a.size // 2] = True  # the left half
    runs = {"plain": lambda: sc(x), "masked": lambda: sc(x, mask), "max side": lambda: sc(small)}
    for fn in runs.values():  # warm-up
        timed(fn, device)
    times = {k: [] for k in runs}
    for _ in range(a.repeats):
        for k, fn in runs.items():
            times[k].append(timed(fn, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = {"model": a.model, "device": device.type, "size": a.size, "max_side": a.max_side, "repeats": a.repeats,
            "median_s": med, "masked_over_plain": med["masked"] / med["plain"],
            "max_side_over_plain": med["max side"] / med["plain"]}
    print(f"SeeCoder ({a.model}) on {device.type}, {a.size}x{a.size}, median of {a.repeats}:")
    print(f"  plain {med['plain']:.4f}s · masked (left half) {med['masked']:.4f}s · ratio {rows['masked_over_plain']:.3f}")
    print(f"  max side {a.max_side}: {med['max side']:.4f}s · ratio {rows['max_side_over_plain']:.3f}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "source_mask.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
