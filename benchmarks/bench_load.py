"""Load test of the served app (issue 13): concurrent gradio_client clients over all four endpoints.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_load.py                 # 8 clients x 25 requests
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_load.py --clients 8 --requests 3
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_load.py --cache-max-age 30   # and a cleanup pass

Starts the app on the tiny profile in a process of its own (``benchmarks/load_server.py``: the
same ``app.py`` main, plus a signal that returns freed heap to the OS before RSS is read), so the
RSS is the server's alone, read from ``/proc/<pid>/status``. Then:

1. serial references: one client sends every distinct input (4 endpoints x ``--seeds`` seeds)
   once, and the digests of the pictures it gets are recorded;
2. warm-up: ``--clients`` clients (each a ``gradio_client.Client``: its own session), one
   concurrent round, one request per endpoint each (also checked); then the server's RSS;
3. the same clients, each in its own thread, send ``--requests`` requests each, spread over
   the endpoints and seeds; each output is compared with the serial output for the same inputs
   (a difference is cross-talk: a request got another's pictures or was disturbed);
4. the server's RSS at each quarter and at the end; the Gradio cache folder's file count
   (``GRADIO_TEMP_DIR``, a fresh folder), with and without the tabs' example images (kept on
   purpose), at the end and, with ``--cache-max-age``, after a cleanup pass.

Prints a table and writes ``benchmarks/results/load.json``. ``run_load`` is also what
``tests/bench/test_load.py`` runs (8 clients x 3 requests).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
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
# where the seed is in each endpoint's argument list (tests/helpers/app.py: endpoint_calls)
SEED_INDEX = {"/image_variation": 7, "/reference_control": 23, "/compare": 18, "/virtual_tryon": 12}


def _calls():
    from tests.helpers.app import endpoint_calls

    calls = endpoint_calls()
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

    from tests.helpers.app import pictures as pictures_in

    h = hashlib.sha256()
    pictures = pictures_in(value)
    if not pictures:
        raise AssertionError("the endpoint returned no picture")
    for p in pictures:
        a = np.asarray(p)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


class Server:
    """The app on the tiny profile in its own process (``benchmarks/load_server.py``)."""

    def __init__(self, env: dict, workdir: str, malloc_arena_max: Optional[int] = None):
        from tests.helpers.app import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.trim_file = os.path.join(workdir, "trims")
        self.log_path = os.path.join(workdir, "server.log")
        env = {**os.environ, **env, "HF_HUB_OFFLINE": "1", "PFD_LOAD_TRIM_FILE": self.trim_file}
        if malloc_arena_max:
            env["MALLOC_ARENA_MAX"] = str(malloc_arena_max)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "load_server.py"), "--profile", "tiny",
             "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self._trims = 0

    def wait_ready(self, timeout: float = 300.0) -> None:
        import urllib.request

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "gradio_api/info", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"the server did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def rss(self) -> int:
        """The server's resident bytes after it returned freed heap to the OS."""
        self._trims += 1
        os.kill(self.proc.pid, signal.SIGUSR1)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if int(Path(self.trim_file).read_text() or 0) >= self._trims:
                    break
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.05)
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")

    def log_tail(self, n: int = 4000) -> str:
        self._log.flush()
        return Path(self.log_path).read_bytes()[-n:].decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Gradio closes the server (and clears its cache)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def _example_digests() -> set:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in (ROOT / "assets" / "examples").iterdir() if p.is_file()}


def _count_files(folder, examples: set) -> dict:
    """Files in the cache: all, and those that are not one of the tabs' example images."""
    total = other = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            total += 1
            try:
                if hashlib.sha256(Path(dirpath, name).read_bytes()).hexdigest() not in examples:
                    other += 1
            except FileNotFoundError:  # removed meanwhile
                total -= 1
    return {"all": total, "not_examples": other}


def _pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
    return xs[k]


def run_load(clients: int = 8, requests: int = 25, seeds: int = 3, warmup: bool = True,
             cache_max_age: Optional[int] = None, malloc_arena_max: Optional[int] = None) -> dict:
    """Run the load test; returns the measurements (see the module docstring).
    ``cache_max_age``: the server's ``PFD_CACHE_MAX_AGE`` (seconds); given, the test waits for
    a cleanup pass at the end and counts the cache again. ``malloc_arena_max``: the server's
    ``MALLOC_ARENA_MAX`` (glibc), None for glibc's default."""
    from gradio_client import Client

    workdir = tempfile.mkdtemp(prefix="pfd-load-")
    cache = os.path.join(workdir, "gradio-cache")
    env = {"GRADIO_TEMP_DIR": cache}
    if cache_max_age is not None:
        env["PFD_CACHE_MAX_AGE"] = str(cache_max_age)
    calls = _calls()
    examples = _example_digests()
    server = Server(env, workdir, malloc_arena_max)
    try:
        server.wait_ready()
        url = server.url
        serial = Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix="pfd-client-serial-", dir=workdir))
        reference, serial_s = {}, []
        for endpoint in ENDPOINTS:
            for k in range(seeds):
                t0 = time.perf_counter()
                reference[endpoint, k] = _digest(serial.predict(*_args(calls, endpoint, k), api_name=endpoint))
                serial_s.append(time.perf_counter() - t0)
        rss_start = server.rss()
        results, warm_results, lock = [], [], threading.Lock()
        rss_samples = []
        # one Client per simulated user for the whole test (a Client is a session; new sessions
        # in the measured run would be growth the warm-up could not show)
        users = [Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix=f"pfd-client{c}-", dir=workdir))
                 for c in range(clients)]

        def client_thread(c: int, first: int, count: int, record: bool):
            client = users[c]
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
                        rss_samples.append(server.rss())

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
        if warmup:
            concurrent(-len(ENDPOINTS), len(ENDPOINTS), record=False)
        rss_warm = server.rss()
        files_warm = _count_files(cache, examples)
        wall = concurrent(0, requests, record=True)
        rss_end = server.rss()
        files_end = _count_files(cache, examples)
        files_after_cleanup = None
        if cache_max_age is not None:  # Gradio's delete_cache looks every min(age, 600) s
            time.sleep(2 * cache_max_age + 5)
            files_after_cleanup = _count_files(cache, examples)
        server_log = server.log_tail()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # the cache, the clients' downloads, the log

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
        "server_pid_rss": True, "malloc_arena_max": malloc_arena_max, "cache_max_age": cache_max_age,
        "rss_start": rss_start, "rss_warm": rss_warm, "rss_end": rss_end, "rss_during": rss_samples,
        "rss_growth": (rss_end - rss_warm) / rss_warm,
        "cache_files_warm": files_warm, "cache_files_end": files_end, "cache_files_after_cleanup": files_after_cleanup,
        "server_log_tail": server_log[-1500:],
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=25, help="requests per client")
    p.add_argument("--seeds", type=int, default=3, help="distinct seeds per endpoint")
    p.add_argument("--cache-max-age", type=int, default=None,
                   help="the server's PFD_CACHE_MAX_AGE (s); the test then waits for a cleanup pass and counts the "
                        "cache again (the age must exceed the longest queue wait plus a run)")
    p.add_argument("--malloc-arena-max", type=int, default=None, help="the server's MALLOC_ARENA_MAX (glibc)")
    args = p.parse_args(argv)
    r = run_load(args.clients, args.requests, args.seeds, cache_max_age=args.cache_max_age,
                 malloc_arena_max=args.malloc_arena_max)
    mb = 2**20
    print(f"{r['clients']} clients x {r['requests_per_client']} requests = {r['total']} "
          f"(4 endpoints x {r['seeds']} seeds), wall {r['wall_s']:.1f} s, {r['throughput_rps']:.2f} req/s")
    print("| endpoint | n | p50 s | p95 s |\n|---|---|---|---|")
    for name, e in r["per_endpoint"].items():
        print(f"| {name} | {e['n']} | {e['p50_s']:.2f} | {e['p95_s']:.2f} |")
    print(f"| all | {r['total'] - r['failures']} | {r['p50_s']:.2f} | {r['p95_s']:.2f} |")
    print(f"failures {r['failures']} {r['errors']}, cross-talk {r['cross_talk']}, serial p50 {r['serial_p50_s']:.2f} s")
    print(f"server RSS (pid of its own, after malloc_trim; MALLOC_ARENA_MAX {r['malloc_arena_max'] or 'default'}): "
          f"after the serial pass {r['rss_start'] / mb:.0f} MiB, after warm-up {r['rss_warm'] / mb:.0f} MiB, at the end {r['rss_end'] / mb:.0f} MiB "
          f"({100 * r['rss_growth']:+.1f} %); during: {', '.join(f'{x / mb:.0f}' for x in r['rss_during'])} MiB")
    def files(c):
        return f"{c['all']} ({c['not_examples']} not examples)" if c else "n/a (--cache-max-age not given)"

    print(f"Gradio cache files: after warm-up {files(r['cache_files_warm'])}, at the end {files(r['cache_files_end'])}, "
          f"after a cleanup pass {files(r['cache_files_after_cleanup'])}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.json").write_text(json.dumps(r, indent=1) + "\n")
    return 0 if r["failures"] == 0 and r["cross_talk"] == 0 and r["warmup_failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
