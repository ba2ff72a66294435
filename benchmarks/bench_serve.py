"""The model tier on Ray Serve (issue 27): requests per minute and latency with 1 and 2 replicas,
and what the Ray hop adds to a request against the in-process engine.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_serve.py                  # tiny, CPU
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_serve.py --replicas 1 2 4 --requests 32

All in one run, on this machine (ratios, not absolute times, are what compares across machines):

1. **in-process**: one engine in this process, one torch thread (what a replica runs), the
   requests one after another: each request's latency.
2. **hop**: a tier of one replica (one thread), the same requests one after another through
   ``TierClient.run``: the latency minus the in-process one is the Ray hop (pickling the
   request and its image bytes, Serve's routing, the streamed progress, the PNGs coming back).
3. **throughput**: for each ``--replicas`` count R, a tier of R replicas (one thread each) and
   ``--requests`` requests sent by 2R threads at once (every replica busy, some queued):
   requests per minute over the whole batch, p50 and p95 latency (submit to picture).

Every request is Image Variation on the tiny profile at ``--size`` with ``--steps`` steps and its
own seed. On a machine with C cores, R replicas scale up to about C (each replica takes one).
Writes ``benchmarks/results/serve.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from bench_goals import cpu_model  # noqa: E402 - one reader of the CPU's name

REFERENCE = ROOT / "assets" / "examples" / "chelsea.jpg"


def request(seed: int, size: int, steps: int):
    from prompt_free.catalog import TaskRequest
    from prompt_free.tasks import VariationSettings

    settings = VariationSettings(width=size, height=size, steps=steps, seed=seed)
    return TaskRequest("image_variation", settings, {"reference": str(REFERENCE)})


def percentile(values, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def in_process(n: int, size: int, steps: int) -> list:
    import torch

    from prompt_free.app.runner import InProcess
    from prompt_free.engine import Engine

    torch.set_num_threads(1)
    engine = Engine.from_profile("tiny", device="cpu")
    engine.set_progress_bar_config(disable=True)
    runner = InProcess()
    runner.task(engine, request(0, size, steps), None)  # warm: models loaded, first-call costs paid
    latencies = []
    for i in range(n):
        t0 = time.perf_counter()
        runner.task(engine, request(1 + i, size, steps), None)
        latencies.append(time.perf_counter() - t0)
    return latencies


def tier_run(replicas: int, n: int, workers: int, size: int, steps: int) -> dict:
    from prompt_free.scale import tier
    from prompt_free.scale.options import TierOptions

    started = tier.start(TierOptions(replicas=replicas, max_queued=max(n, 4), cpus=1.0),
                         dict(profile="tiny", device="cpu"))
    client = started.client()
    try:
        with ThreadPoolExecutor(replicas) as pool:  # warm every replica (one request each)
            list(pool.map(lambda i: client.run(request(0, size, steps)), range(2 * replicas)))
        client.served.clear()

        def timed(i):
            t0 = time.perf_counter()
            client.run(request(1 + i, size, steps))
            return time.perf_counter() - t0

        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            latencies = list(pool.map(timed, range(n)))
        wall = time.perf_counter() - t0
        return {"replicas": replicas, "requests": n, "concurrent": workers, "wall_s": wall,
                "requests_per_min": 60.0 * n / wall, "p50_s": statistics.median(latencies),
                "p95_s": percentile(latencies, 0.95), "latencies_s": latencies,
                "served_by_replica": sorted(client.served.values())}
    finally:
        tier.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    p.add_argument("--requests", type=int, default=16, help="requests per throughput run")
    p.add_argument("--hop-requests", type=int, default=8, help="sequential requests for the hop's latency")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve.json"))
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from prompt_free.scale import cluster

    local = in_process(args.hop_requests, args.size, args.steps)
    ray = cluster.connect(num_cpus=max(max(args.replicas), os.cpu_count() or 1), what="bench_serve")
    try:
        hop = tier_run(1, args.hop_requests, 1, args.size, args.steps)
        runs = [tier_run(r, args.requests, 2 * r, args.size, args.steps) for r in args.replicas]
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
    base, remote = statistics.median(local), hop["p50_s"]
    report = {"machine": cpu_model(), "cores": os.cpu_count(), "size": args.size, "steps": args.steps,
              "in_process_p50_s": base, "tier_sequential_p50_s": remote, "hop_s": remote - base,
              "hop_ratio": remote / base, "runs": runs}
    print(f"{cpu_model()}, {os.cpu_count()} cores; Image Variation, tiny profile, {args.size}px, {args.steps} steps")
    print(f"in-process p50 {base * 1e3:.0f} ms; through one replica p50 {remote * 1e3:.0f} ms: "
          f"the Ray hop adds {(remote - base) * 1e3:.0f} ms ({remote / base:.2f}x)")
    print("replicas  req/min   p50 ms   p95 ms  served per replica")
    for r in runs:
        print(f"{r['replicas']:>8} {r['requests_per_min']:>8.1f} {r['p50_s'] * 1e3:>8.0f} {r['p95_s'] * 1e3:>8.0f}  "
              f"{r['served_by_replica']}")
    if len(runs) > 1:
        print(f"throughput {runs[-1]['replicas']} vs {runs[0]['replicas']} replica(s): "
              f"{runs[-1]['requests_per_min'] / runs[0]['requests_per_min']:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
