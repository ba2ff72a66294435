"""Full-size SeeCoder: build time, encode time and memory, per device and dtype.

Random weights (no download): ``build_seecoder(SeeCoderConfig(), seed=0)``, the released
architecture (294.1 M parameters). Encodes one 512x512 image (the app's default size) after
``--warmup`` runs and reports the median (and the best) of ``--repeats``, with the split of
the median over the three parts (Swin backbone, decoder, query transformer). SeeCoder and
baseline runs alternate, so a change of machine load hits both alike. CPU: float32 and bfloat16. CUDA (when
available): float16 (what the official demo runs) and bfloat16.

Baseline in the same run (``--no-baseline`` to skip): timm's own Swin-L
(``swin_large_patch4_window12_384`` features, same width and depth) at the same input, i.e.
what the backbone would cost as a bare timm model. Our backbone uses the official
pad-then-roll block order on timm parts (spec f), so the two should be close.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_seecoder.py [--size 512] [--repeats 3]

Writes ``benchmarks/results/seecoder.json`` (git-ignored) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from prompt_free.seecoder import SeeCoderConfig, build_seecoder  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seecoder_run(model, x):
    """One encode, timed per part: (total, backbone, decoder, qtransformer) seconds."""
    t0 = time.perf_counter()
    feats = model.imencoder(x)
    sync(x.device)
    t1 = time.perf_counter()
    maps = model.imdecoder(feats)
    sync(x.device)
    t2 = time.perf_counter()
    out = model.qtransformer(maps)
    sync(x.device)
    t3 = time.perf_counter()
    assert out.shape[1:] == (148, model.config.out_dim) and torch.isfinite(out).all()
    return (t3 - t0, t1 - t0, t2 - t1, t3 - t2)


def timm_run(model, x):
    t0 = time.perf_counter()
    model.forward_features(x)
    sync(x.device)
    return (time.perf_counter() - t0,)


@torch.inference_mode()
def time_interleaved(cases, warmup: int, repeats: int) -> list:
    """cases: [(run, model, x)]. Warm-up runs, then the timed runs of all cases alternate,
    so that a change of machine load hits each case alike. Returns one dict per case."""
    times = [[] for _ in cases]
    for i in range(warmup + repeats):
        for j, (run, model, x) in enumerate(cases):
            sync(x.device)
            t = run(model, x)
            if i >= warmup:
                times[j].append(t)
    results = []
    for runs in times:
        med = [statistics.median(r[k] for r in runs) for k in range(len(runs[0]))]
        res = {"encode_s": med[0], "best_s": min(r[0] for r in runs), "runs_s": [r[0] for r in runs]}
        if len(med) == 4:
            res.update(backbone_s=med[1], decoder_s=med[2], qtransformer_s=med[3])
        results.append(res)
    return results


def build_timm_swin(size: int):
    import timm

    return timm.create_model(
        "swin_large_patch4_window12_384",
        pretrained=False,
        num_classes=0,
        img_size=size,
        strict_img_size=False,
        always_partition=True,
    ).eval()


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, nargs="+", default=[512], help="H [W] of the input image (default 512)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="CPU timed runs (median reported)")
    ap.add_argument("--cuda-repeats", type=int, default=10, help="CUDA timed runs (median reported)")
    ap.add_argument("--cpu-dtypes", default="fp32,bf16")
    ap.add_argument("--cuda-dtypes", default="fp16,bf16")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU runs")
    ap.add_argument("--no-baseline", action="store_true", help="skip the timm Swin-L baseline")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "seecoder.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = (args.size * 2)[:2]
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, h, w, generator=gen)

    # --- build
    t0 = time.perf_counter()
    meta_model = build_seecoder(SeeCoderConfig(), seed=None)
    meta_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in meta_model.parameters())
    del meta_model
    t0 = time.perf_counter()
    model = build_seecoder(SeeCoderConfig(), seed=0)
    build_s = time.perf_counter() - t0
    build = {
        "random_build_s": build_s,
        "meta_build_s": meta_s,
        "parameters": n_params,
        "peak_rss_after_build_mb": peak_rss_mb(),
    }
    print(f"SeeCoder full size: {n_params:,} parameters; random build {build_s:.2f} s, meta build {meta_s * 1e3:.0f} ms", flush=True)

    rows = []

    def record(impl, device, dtype_name, res, extra=None):
        row = {"impl": impl, "device": device, "dtype": dtype_name, "size": [h, w], **res, **(extra or {})}
        rows.append(row)
        parts = ""
        if "backbone_s" in res:
            parts = f" (backbone {res['backbone_s']:.3f}, decoder {res['decoder_s']:.3f}, qtransformer {res['qtransformer_s']:.3f})"
        print(f"  {impl:<16} {device:<5} {dtype_name:<5} {res['encode_s']:.3f} s (best {res['best_s']:.3f}){parts}", flush=True)

    ref = None if args.no_baseline else build_timm_swin(h)

    def measure(device: torch.device, names: str, repeats: int, warmup: int) -> None:
        for name in names.split(","):
            dtype = DTYPES[name]
            model.to(device=device, dtype=dtype)  # in place: one copy of the weights at a time
            x = image.to(device, dtype)
            if device.type == "cuda":  # SeeCoder alone on the GPU: weights + one encode
                if ref is not None:
                    ref.to(device="cpu")
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                with torch.inference_mode():
                    seecoder_run(model, x)
                mem = {"peak_cuda_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20}
            cases = [(seecoder_run, model, x)]
            if ref is not None:
                ref.to(device=device, dtype=dtype)
                cases.append((timm_run, ref, x))
            results = time_interleaved(cases, warmup, repeats)
            if device.type == "cpu":
                mem = {"peak_rss_mb": peak_rss_mb()}  # whole process, baseline model included
            record("seecoder", device.type, name, results[0], mem)
            if ref is not None:
                record("timm-swin-L", device.type, name, results[1])

    if not args.no_cpu:
        measure(torch.device("cpu"), args.cpu_dtypes, args.repeats, args.warmup)
    cuda = None
    if torch.cuda.is_available():
        cuda = torch.cuda.get_device_name()
        measure(torch.device("cuda"), args.cuda_dtypes, args.cuda_repeats, max(args.warmup, 2))

    result = {
        "benchmark": "seecoder",
        "what": f"full-size SeeCoder (random weights) encode of one {h}x{w} image; median of timed runs after warm-up",
        "build": build,
        "rows": rows,
        "env": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda_device": cuda,
            "git_commit": git_commit(),
            "warmup": args.warmup,
            "repeats_cpu": args.repeats,
            "repeats_cuda": args.cuda_repeats,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))

    print()
    print("| impl | device | dtype | input | median (s) | best (s) | backbone | decoder | qtransformer |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        parts = [f"{r[k]:.3f}" if k in r else "-" for k in ("backbone_s", "decoder_s", "qtransformer_s")]
        print(f"| {r['impl']} | {r['device']} | {r['dtype']} | {h}x{w} | {r['encode_s']:.3f} | {r['best_s']:.3f} | " + " | ".join(parts) + " |")
    if cuda is None:
        print("(no CUDA device: GPU rows not measured)")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
