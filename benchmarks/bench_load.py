"""Load test of the served app (issue 13): concurrent gradio_client clients over all four endpoints.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_load.py                 # 8 clients x 25 requests
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_load.py --clients 8 --requests 3

Starts the app on the tiny profile in this process (``tests._app.running_app``, as the browser
tests do), then:

1. serial references: one client sends every distinct input (4 endpoints x ``--seeds`` seeds)
   once, and the digests of the pictures it gets are recorded;
2. warm-up: one concurrent round (every client, one request per endpoint, also checked); then
   the server's RSS is read (this process: the server and the client threads);
3. ``--clients`` clients, each its own session and thread, send ``--requests`` requests each,
   spread over the endpoints and seeds; each output is compared with the serial output for the
   same inputs (a difference is cross-talk: a request got another's pictures or was disturbed);
4. RSS at the end, the Gradio cache folder's file count (``GRADIO_TEMP_DIR``, a fresh folder).

Prints a table and writes ``benchmarks/results/load.json``. ``run_load`` is also what
``tests/test_load.py`` runs (8 clients x 3 requests).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ENDPOINTS = ("/image_variation", "/reference_control", "/compare", "/virtual_tryon")
# where the seed is in each endpoint's argument list (tests/test_pixel_pins.py: _endpoint_calls)
SEED_INDEX = {"/image_variation": 7, "/reference_control": 23, "/compare": 18, "/virtual_tryon": 12}


def _calls():
    from tests.test_pixel_pins import _endpoint_calls

    calls = _endpoint_calls()
    for name, index in SEED_INDEX.items():
        assert isinstance(calls[name][index], int), (name, index)
    return calls


def _args(calls, endpoint: str, seed_k: int) -> list:
    args = list(calls[endpoint])
    args[SEED_INDEX[endpoint]] = 100 + 7 * seed_k
    return args


def _digest(value) -> str:
    """One digest of every picture in an endpoint's output, in order (pixels, not file names)."""
    import numpy as np

    from tests.test_pixel_pins import _pictures

    h = hashlib.sha256()
    pictures = _pictures(value)
    if not pictures:
        raise AssertionError("the endpoint returned no picture")
    for p in pictures:
        a = np.asarray(p)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _rss() -> int:
    """Resident memory of this process after returning freed heap to the OS: glibc keeps freed
    blocks otherwise, and RSS would show the high-water mark rather than what is held."""
    import ctypes
    import gc

    import psutil

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return psutil.Process().memory_info().rss


def _count_files(folder) -> int:
    return sum(len(files) for _, _, files in os.walk(folder)) if folder and os.path.isdir(folder) else 0


def _pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
    return xs[k]


def run_load(clients: int = 8, requests: int = 25, seeds: int = 3, warmup: bool = True,
             cache_max_age: Optional[int] = None) -> dict:
    """Run the load test; returns the measurements (see the module docstring).
    ``cache_max_age``: seconds after which Gradio's cache cleanup removes files (the app's
    ``PFD_CACHE_MAX_AGE``); given, the test waits for a cleanup at the end and counts again."""
    cache = tempfile.mkdtemp(prefix="pfd-gradio-cache-")
    env = {"GRADIO_TEMP_DIR": cache}
    if cache_max_age is not None:
        env["PFD_CACHE_MAX_AGE"] = str(cache_max_age)
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return _run(clients, requests, seeds, cache, warmup, cache_max_age)
    finally:
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(clients, requests, seeds, cache, warmup, cache_max_age) -> dict:
    from gradio_client import Client

    from tests._app import running_app

    calls = _calls()
    with running_app("tiny") as (engine, demo, url):
        serial = Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix="pfd-client-serial-"))
        reference, serial_s = {}, []
        for endpoint in ENDPOINTS:
            for k in range(seeds):
                t0 = time.perf_counter()
                reference[endpoint, k] = _digest(serial.predict(*_args(calls, endpoint, k), api_name=endpoint))
                serial_s.append(time.perf_counter() - t0)
        results, lock = [], threading.Lock()
        rss_samples = []

        def client_thread(c: int, first: int, count: int, record: bool):
            # its own download folder: in this process the default would be the server's cache
            client = Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix=f"pfd-client{c}-"))
            for r in range(first, first + count):
                endpoint = ENDPOINTS[(c + r) % len(ENDPOINTS)]
                k = (c * requests + r) % seeds
                t0 = time.perf_counter()
                row = {"client": c, "endpoint": endpoint, "seed_k": k}
                try:
                    row["same"] = _digest(client.predict(*_args(calls, endpoint, k), api_name=endpoint)) == reference[endpoint, k]
                except Exception as e:  # noqa: BLE001 - counted as a failure
                    row["error"] = f"{type(e).__name__}: {e}"[:300]
                row["seconds"] = time.perf_counter() - t0
                with lock:
                    (results if record else warm_results).append(row)
                    if record and len(results) % max(1, clients * requests // 4) == 0:
                        rss_samples.append(_rss())

        def concurrent(first: int, count: int, record: bool) -> float:
            threads = [threading.Thread(target=client_thread, args=(c, first, count, record), daemon=True)
                       for c in range(clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return time.perf_counter() - t0

        # warm-up: one concurrent round over the four endpoints (threads, allocator arenas, sessions)
        warm_results = []
        if warmup:
            concurrent(-len(ENDPOINTS), len(ENDPOINTS), record=False)
        rss_warm = _rss()
        files_warm = _count_files(cache)
        wall = concurrent(0, requests, record=True)
        rss_end = _rss()
        files_end = _count_files(cache)
        files_after_cleanup = None
        if cache_max_age is not None:  # Gradio's delete_cache looks every min(age, 600) s
            time.sleep(2 * cache_max_age + 5)
            files_after_cleanup = _count_files(cache)

    ok = [r for r in results if "error" not in r]
    latencies = [r["seconds"] for r in ok]
    per_endpoint = {}
    for endpoint in ENDPOINTS:
        xs = [r["seconds"] for r in ok if r["endpoint"] == endpoint]
        per_endpoint[endpoint] = {"n": len(xs), "p50_s": _pct(xs, 50), "p95_s": _pct(xs, 95)}
    return {
        "clients": clients, "requests_per_client": requests, "seeds": seeds, "total": len(results),
        "failures": len(results) - len(ok), "errors": sorted({r["error"] for r in results if "error" in r})[:5],
        "cross_talk": sum(1 for r in ok if not r["same"]),
        "p50_s": _pct(latencies, 50), "p95_s": _pct(latencies, 95), "wall_s": wall,
        "throughput_rps": len(ok) / wall if wall else float("nan"),
        "serial_p50_s": _pct(serial_s, 50), "per_endpoint": per_endpoint,
        "warmup_failures": sum(1 for r in warm_results if "error" in r or not r.get("same")),
        "rss_warm": rss_warm, "rss_end": rss_end, "rss_during": rss_samples, "rss_growth": (rss_end - rss_warm) / rss_warm,
        "cache_files_warm": files_warm, "cache_files_end": files_end, "cache_files_after_cleanup": files_after_cleanup,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=25, help="requests per client")
    p.add_argument("--seeds", type=int, default=3, help="distinct seeds per endpoint")
    p.add_argument("--cache-max-age", type=int, default=None,
                   help="PFD_CACHE_MAX_AGE for the run (s); the test then waits for a cleanup and counts the cache "
                        "again (see benchmarks/README.md: short ages race with requests under load)")
    args = p.parse_args(argv)
    r = run_load(args.clients, args.requests, args.seeds, cache_max_age=args.cache_max_age)
    mb = 2**20
    print(f"{r['clients']} clients x {r['requests_per_client']} requests = {r['total']} "
          f"(4 endpoints x {r['seeds']} seeds), wall {r['wall_s']:.1f} s, {r['throughput_rps']:.2f} req/s")
    print("| endpoint | n | p50 s | p95 s |\n|---|---|---|---|")
    for name, e in r["per_endpoint"].items():
        print(f"| {name} | {e['n']} | {e['p50_s']:.2f} | {e['p95_s']:.2f} |")
    print(f"| all | {r['total'] - r['failures']} | {r['p50_s']:.2f} | {r['p95_s']:.2f} |")
    print(f"failures {r['failures']} {r['errors']}, cross-talk {r['cross_talk']}, serial p50 {r['serial_p50_s']:.2f} s")
    print(f"RSS after warm-up {r['rss_warm'] / mb:.0f} MiB, at the end {r['rss_end'] / mb:.0f} MiB "
          f"({100 * r['rss_growth']:+.1f} %); during: {', '.join(f'{x / mb:.0f}' for x in r['rss_during'])} MiB")
    print(f"Gradio cache files: after warm-up {r['cache_files_warm']}, at the end {r['cache_files_end']}, "
          f"after cleanup {r['cache_files_after_cleanup'] if r['cache_files_after_cleanup'] is not None else 'n/a (--cache-max-age not given)'}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.json").write_text(json.dumps(r, indent=1) + "\n")
    return 0 if r["failures"] == 0 and r["cross_talk"] == 0 and r["warmup_failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
