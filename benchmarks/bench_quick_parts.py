"""Quick mode and SeeCoder's mask cache, part by part, on full-size random models (no download).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_quick_parts.py --size 256 --repeats 5

1. One guided UNet forward (batch 2, 148-token context) of a full-size SD-1.5 UNet: the whole
   UNet (``deep_cache.unet_keeping_deep``) against the shallow path of a reuse step
   (``deep_cache.unet_shallow``), interleaved; the shallow / full ratio s gives the quick-mode
   step ratio (1 + (N - 1) s) / N. Reported as the median and the best of the per-round ratios
   (on a loaded machine the best is the steadier figure).
2. A full-size SeeCoder encode at --seecoder-size with every shifted-window mask built anew
   (``window_mask.cache_clear()`` before each) against cached masks, interleaved; and the time
   of building one encode's masks alone.
Writes benchmarks/results/quick_parts.json.
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

from prompt_free.deep_cache import unet_keeping_deep, unet_shallow  # noqa: E402
from prompt_free.full_random import full_seecoder, full_unet  # noqa: E402
from prompt_free.seecoder.swin import shifted_window_mask, window_mask  # noqa: E402


def clock(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def summary(pairs):
    """pairs: [(a, b)] per round -> medians and per-round ratio b / a (median, best)."""
    ratios = [b / a for a, b in pairs]
    return {"a_s": statistics.median(a for a, _ in pairs), "b_s": statistics.median(b for _, b in pairs),
            "ratio_median": statistics.median(ratios), "ratio_best": min(ratios), "ratios": ratios}


def interleaved(a, b, repeats: int) -> list:
    """[(seconds of a, seconds of b)] per round, the order reversed every other round (a drifting
    load cancels)."""
    pairs = []
    for r in range(repeats):
        if r % 2 == 0:
            ta = clock(a)
            tb = clock(b)
        else:
            tb = clock(b)
            ta = clock(a)
        pairs.append((ta, tb))
    return pairs


def unet_rows(size: int, repeats: int) -> dict:
    unet = full_unet()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, size // 8, size // 8, generator=g)
    ctx = torch.randn(2, 148, unet.config.cross_attention_dim, generator=g)
    t = torch.tensor(501)
    with torch.inference_mode():
        _, deep = unet_keeping_deep(unet, x, t, ctx)  # warm-up, and the features a reuse step takes
        unet_shallow(unet, x, t, ctx, deep)
        pairs = interleaved(lambda: unet_keeping_deep(unet, x, t, ctx), lambda: unet_shallow(unet, x, t, ctx, deep),
                            repeats)
    out = summary(pairs)
    s = out["ratio_best"]
    out["predicted_step_ratio_from_best"] = {n: (1 + (n - 1) * s) / n for n in (2, 3)}
    s = out["ratio_median"]
    out["predicted_step_ratio_from_median"] = {n: (1 + (n - 1) * s) / n for n in (2, 3)}
    return out


def seecoder_rows(size: int, repeats: int) -> dict:
    model = full_seecoder()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        model(x)  # warm-up
        def fresh():
            window_mask.cache_clear()
            model(x)

        pairs = interleaved(fresh, lambda: model(x), repeats)
        # the masks of one encode at this size: one per stage with shifted blocks, over the padded grid
        cfg = model.config.swin if hasattr(model, "config") and hasattr(model.config, "swin") else None
        ws = 12 if cfg is None else cfg.window_size
        side, sides = size // 4, []
        for i in range(4):
            sides.append(-(-side // ws) * ws)
            side = (side + 1) // 2
        build = statistics.median(clock(lambda: [shifted_window_mask(p, p, ws, ws // 2, x.device, x.dtype) for p in sides])
                                  for _ in range(20))
    out = summary(pairs)
    out["mask_build_s_per_encode"] = build
    out["padded_stage_sides"] = sides
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256, help="image side of the UNet rows (latent = size / 8)")
    p.add_argument("--seecoder-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--parts", default="unet,seecoder")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quick_parts.json"))
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    result = {"threads": torch.get_num_threads(), "load_before": os.getloadavg()}
    parts = a.parts.split(",")
    if "unet" in parts:
        result["unet"] = unet_rows(a.size, a.repeats)
        print("UNet full vs shallow:", json.dumps(result["unet"]), flush=True)
    if "seecoder" in parts:
        result["seecoder"] = seecoder_rows(a.seecoder_size, a.repeats)
        print("SeeCoder fresh masks vs cached:", json.dumps(result["seecoder"]), flush=True)
    result["load_after"] = os.getloadavg()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k.startswith("load")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
