"""The text/reference balance (``prompt_free.balance``): the text tokens' attention share measured
after the calibration, for slider values 0, 0.25, 0.5, 0.75, 1, and the time of a step with the
balance against without it.

The UNet gets a guided batch (2 x [77 text tokens | 148 reference tokens], random embeddings of
unit variance) at the run's size. Per value: the patch is applied, its first forward (the
calibration) is measured independently (hooks on every ``attn2``: the layer's own projections,
an explicit softmax of the logits plus the bias its processor applies, the text tokens' share
averaged over queries, heads and the batch, then over the layers); then forwards with the
calibrated patch and forwards of the unpatched UNet alternate (``--repeats`` each), so a change
of machine load hits both alike. Ratio = best patched / best plain (the median's ratio is in the
JSON; on a loaded machine the best is the steadier one).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_balance.py [--model tiny|full] [--size 64] [--repeats 5]
        [--device cpu|cuda] [--dtype fp32|fp16]

``full``: SD 1.5's UNet architecture with random weights (``prompt_free.full_random``, no
download); ``tiny``: the tiny profile's UNet. Prints a table and writes
``benchmarks/results/balance.json`` (git-ignored).
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

from prompt_free.balance import Balance  # noqa: E402

TEXT, REFERENCE = 77, 148
VALUES = (0.0, 0.25, 0.5, 0.75, 1.0)


def make_unet(kind: str, device, dtype):
    if kind == "full":
        from prompt_free.full_random import full_unet

        return full_unet(device=device, dtype=dtype).eval()
    from prompt_free.engine import Engine

    engine = Engine.from_profile("tiny", device=str(device))
    return engine.base_model("Tiny SD").unet.to(dtype).eval()


def clock(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def measured_share(unet, forward) -> float:
    """The text share of ``forward``'s cross-attention (see the module docstring)."""
    shares, handles = [], []

    def hook(attn, args, kwargs, output):
        h, ctx = args[0], kwargs["encoder_hidden_states"]
        b, heads = h.shape[0], attn.heads
        q = attn.to_q(h).float().view(b, -1, heads, attn.to_q.out_features // heads).transpose(1, 2)
        k = attn.to_k(ctx).float().view(b, -1, heads, q.shape[-1]).transpose(1, 2)
        mask = getattr(attn.processor, "mask", None)
        logits = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5 + (0 if mask is None else mask.float())
        shares.append(float(torch.softmax(logits, -1)[..., :TEXT].sum(-1).mean()))

    for name, module in unet.named_modules():
        if name.endswith("attn2"):
            handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        forward()
    finally:
        for h in handles:
            h.remove()
    return statistics.mean(shares)


def row(unet, forward, value, repeats: int, device) -> dict:
    patch = Balance(value, TEXT)
    with patch.applied(unet):
        share = measured_share(unet, forward)  # the first call: calibrates
    plain, patched = [], []
    for _ in range(repeats):
        with patch.applied(unet):
            forward()  # a new run calibrates at its first call (not timed: the per-run cost, below)
            patched.append(clock(forward, device))
        plain.append(clock(forward, device))
    with patch.applied(unet):
        calibration = clock(forward, device)
    return {"balance": value, "measured_text_share": round(share, 4), "bias": patch.bias(),
            "step_ratio": round(min(patched) / min(plain), 4),  # best of each: the least load noise
            "step_ratio_median": round(statistics.median(patched) / statistics.median(plain), 4),
            "plain_s": round(statistics.median(plain), 5), "calibrating_step_s": round(calibration, 5)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["full", "tiny"], default="tiny")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32")
    a = p.parse_args()
    device, dtype = torch.device(a.device), torch.float16 if a.dtype == "fp16" else torch.float32
    torch.manual_seed(0)
    unet = make_unet(a.model, device, dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, a.size // 8, a.size // 8, generator=g).to(device, dtype)
    ctx = torch.randn(2, TEXT + REFERENCE, unet.config.cross_attention_dim, generator=g).to(device, dtype)
    t = torch.tensor(981, device=device)

    def forward():
        with torch.inference_mode():
            unet(x, t, encoder_hidden_states=ctx)

    forward()  # warm-up
    free = measured_share(unet, forward)
    rows = [row(unet, forward, v, a.repeats, device) for v in VALUES]
    print(f"{a.model} UNet, {a.size}x{a.size}, {a.device} {a.dtype}; text share without balance: {free:.4f}")
    print("| balance | measured text share | bias | step time vs none (best; median) | calibrating step (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['balance']:g} | {r['measured_text_share']:.4f} | {r['bias']} | {r['step_ratio']:.3f}x; {r['step_ratio_median']:.3f}x | "
              f"{r['calibrating_step_s']:.4f} (plain {r['plain_s']:.4f}) |")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "balance.json").write_text(json.dumps({"model": a.model, "size": a.size, "device": a.device,
                                                  "dtype": a.dtype, "free_share": free, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
