"""Soak test of the served app's memory (issue 28, item 4): rounds of mixed load plus large uploads.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_soak.py                 # 3 rounds
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_soak.py --rounds 5 --env MALLOC_ARENA_MAX=2

Starts the app on the tiny profile in a process of its own (``benchmarks/load_server.py``, as
``bench_load.py`` does: ``app.py``'s main), so the RSS is the server's alone. Unlike
``bench_load.py`` it reads the RSS as it is, from ``/proc/<pid>/status``, without asking the
server to trim its heap first: what the server holds between requests is what this measures.

One ``gradio_client`` client (a user). Warm-up: one request of each endpoint (the argument lists
of ``tests/helpers/app.py: endpoint_calls``), twice; then the server's RSS, the reference level.
Then ``--rounds`` rounds of:

1. mixed: one request of each endpoint (six tabs' tasks, small pictures);
2. large JPEG: a 42-megapixel (7952x5304, a 42 MP camera's size) JPEG as Image Variation's
   reference; 3. large PNG: the same picture as a PNG (both built here, a gradient: a few MB);
4. odd files: every file of ``tests/helpers/uploads.py: ALL`` (corrupt, empty, bomb headers,
   10000x10000, 16-bit, CMYK, EXIF ...) as Image Variation's reference, one request each
   (refusals are expected and counted apart from failures of readable files).

The RSS after each part, in a table, against the warm-up level. At the end the server is asked
to trim its heap once (``load_server.py``'s SIGUSR1: ``gc.collect`` + ``malloc_trim``), the last
row: how much of the level was memory the allocator held but nobody used. ``--env K=V`` sets
server environment variables (``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_`` ...). Writes
``benchmarks/results/soak.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

LARGE = (7952, 5304)  # 42.2 megapixels
MIB = 2**20


def large_picture(folder: str, fmt: str, size=LARGE) -> str:
    """A ``size`` picture (a smooth gradient: its file is a few MB, below the upload limit)."""
    import numpy as np
    from PIL import Image

    w, h = size
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    a = np.empty((h, w, 3), np.uint8)
    a[..., 0] = x * 0.7 + y * 0.3
    a[..., 1] = (x + y) / 2
    a[..., 2] = 255 - y
    path = os.path.join(folder, f"large_{w}x{h}.{'jpg' if fmt == 'JPEG' else 'png'}")
    Image.fromarray(a).save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return path


def rss_of(pid: int) -> int:
    """Resident bytes of ``pid`` as they are (no trim first)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc status")


def variation_call(path: str) -> list:
    """``/image_variation`` with ``path`` as the reference (tiny app, small output)."""
    from tests.helpers.app import variation_args

    return variation_args(path, steps=2, size=64)


def _send(client, endpoint: str, args: list, expect_refusal: bool = False) -> dict:
    t0 = time.perf_counter()
    try:
        client.predict(*args, api_name=endpoint)
        outcome = "ok"
    except Exception as e:  # noqa: BLE001 - a refusal (gr.Error) or a failure, told apart below
        outcome = "refused" if expect_refusal else f"error: {e}"[:200]
    return {"endpoint": endpoint, "outcome": outcome, "seconds": time.perf_counter() - t0}


def run_soak(rounds: int = 3, env=None) -> dict:
    from gradio_client import Client

    from bench_load import Server
    from tests.helpers import uploads
    from tests.helpers.app import endpoint_calls

    workdir = tempfile.mkdtemp(prefix="pfd-soak-")
    big = {"large JPEG": large_picture(workdir, "JPEG"), "large PNG": large_picture(workdir, "PNG")}
    odd = [str(uploads.write(Path(workdir, "odd"), name)) for name in uploads.ALL]
    calls = endpoint_calls()
    server = Server({"GRADIO_TEMP_DIR": os.path.join(workdir, "gradio-cache"), **(env or {})}, workdir)
    rows, sent = [], []
    try:
        server.wait_ready()
        client = Client(server.url, verbose=False, download_files=os.path.join(workdir, "downloads"))
        rows.append({"round": 0, "part": "started", "rss": rss_of(server.proc.pid)})
        for _ in range(2):
            sent += [_send(client, name, args) for name, args in calls.items()]
        warm = rss_of(server.proc.pid)
        rows.append({"round": 0, "part": "warm-up (2 x 6 endpoints)", "rss": warm})
        for r in range(1, rounds + 1):
            parts = [("mixed (6 endpoints)", [(name, args, False) for name, args in calls.items()])]
            parts += [(label, [("/image_variation", variation_call(path), False)]) for label, path in big.items()]
            parts.append((f"odd files ({len(odd)})", [("/image_variation", variation_call(p), True) for p in odd]))
            for label, requests in parts:
                t0 = time.perf_counter()
                done = [_send(client, *req) for req in requests]
                sent += done
                rows.append({"round": r, "part": label, "rss": rss_of(server.proc.pid),
                             "seconds": time.perf_counter() - t0,
                             "failures": sum(1 for d in done if d["outcome"].startswith("error"))})
        server.rss()  # SIGUSR1: gc.collect + malloc_trim in the server, then read
        rows.append({"round": rounds, "part": "after one malloc_trim (reference)", "rss": rss_of(server.proc.pid)})
        log_tail = server.log_tail()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    for row in rows:
        row["vs_warm"] = row["rss"] / warm - 1
    measured = [row for row in rows if row["round"] > 0 and "reference" not in row["part"]]
    return {"rounds": rounds, "env": env or {}, "large": list(LARGE), "rows": rows, "rss_warm": warm,
            "rss_max": max(row["rss"] for row in measured), "rss_end": measured[-1]["rss"],
            "growth_end": measured[-1]["rss"] / warm - 1, "growth_max": max(row["vs_warm"] for row in measured),
            "failures": sum(1 for s in sent if s["outcome"].startswith("error")),
            "errors": sorted({s["outcome"] for s in sent if s["outcome"].startswith("error")})[:5],
            "server_log_tail": log_tail[-1500:]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="a server environment variable")
    args = p.parse_args(argv)
    env = dict(kv.split("=", 1) for kv in args.env)
    r = run_soak(args.rounds, env)
    print(f"server RSS (its own pid, as it is; env {env or 'default'}); warm-up level {r['rss_warm'] / MIB:.0f} MiB")
    print("| round | part | RSS MiB | vs warm-up | s | failures |\n| ---: | --- | ---: | ---: | ---: | ---: |")
    for row in r["rows"]:
        s = f"{row['seconds']:.1f}" if "seconds" in row else ""
        print(f"| {row['round']} | {row['part']} | {row['rss'] / MIB:.0f} | {100 * row['vs_warm']:+.1f} % | {s} | "
              f"{row.get('failures', '')} |")
    print(f"end {100 * r['growth_end']:+.1f} %, max {100 * r['growth_max']:+.1f} % over the warm-up level; "
          f"failures {r['failures']} {r['errors']}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(r, indent=1) + "\n")
    return 0 if r["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
