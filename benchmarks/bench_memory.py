"""Memory of the engine as a resource manager: resident bytes per tab, the peak during a base
model switch, and the memory budget held over a scripted session across all tabs.

Models (``--models``, random weights, nothing downloaded), under the tiny profile's names:
  tiny  the tiny profile's own models (seconds: a quick check of the script);
  full  SD 1.5-size UNet + VAE for both base models ("Tiny SD", "Tiny SD (other seed)"),
        full-size SeeCoders ("SeeCoder", "SeeCoder-PA") and SD 1.5-size ControlNets
        ("openpose", "depth", "shuffle"), random init with fixed seeds; the CLIP text encoder
        of the comparison's Dual-ControlNet column is SD 1.5 width and depth (768, 12 layers)
        with the tiny vocabulary (1000 tokens), the detectors are the tiny profile's.
        Every full-size model is registered with ``Engine.adopt(key, rebuild=...)``: it is
        built on first use and built again (same seed, same weights) after every eviction, so
        evictions cost real rebuilds (random init on the CPU, not a disk read).

Phases (CPU, and CUDA when present):
  tabs     one small request per tab on a fresh engine without a budget: Image Variation,
           Reference + ControlNet with 1 and 2 ControlNets, the comparison (Prompt-Free +
           Dual-ControlNet), Virtual Try-On with a given mask (no pose control: the pose
           detector needs weights); ``Engine.memory_report()`` totals by kind, peak RSS.
  switch   base model A -> B (B never loaded) -> A (a reload) under a budget that fits one
           base model, against no budget: peak process RSS (VmHWM, reset through
           /proc/self/clear_refs) and, on CUDA, peak VRAM; on CUDA also the time of switching
           back to A from the RAM tier against loading A from a safetensors folder written to
           a temp dir, as a ratio in one run.
  session  a scripted mix over all tabs, both base models and both SeeCoders with a budget =
           the largest single request of the tabs phase (``--budget`` overrides): after every
           request the device bytes of ``memory_report()`` must be <= the budget; max / mean,
           loads and evictions (``load_counts``) and time.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_memory.py --models tiny            # seconds
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_memory.py --models full --size 256 --steps 1

Writes ``benchmarks/results/memory.json`` (git-ignored) and prints tables.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if sys.platform.startswith("linux") and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
    # glibc raises its mmap threshold after large frees, so freed model memory stays in the heap
    # and RSS would keep every model ever built. A fixed threshold (1 MiB) gives each weight its
    # own mapping, returned on free: RSS then follows what is held. Set before start: re-exec.
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(2**20)
    os.execv(sys.executable, [sys.executable] + sys.argv)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from prompt_free.engine import BaseModel, Engine, LoadedSeeCoder  # noqa: E402
from prompt_free.memory import parse_size  # noqa: E402
from prompt_free.registry import DEFAULT_CHECKPOINTS, Registry  # noqa: E402
from prompt_free.tasks import (  # noqa: E402
    CompareSettings, ControlSettings, ControlSpec, TryOnSettings, VariationSettings,
    compare, image_variation, reference_control, virtual_tryon,
)

EX = ROOT / "assets" / "examples"
REF, GARMENT = EX / "chelsea.jpg", EX / "tryon_garment_shirt.png"
PERSON, PERSON_MASK = EX / "tryon_person.png", EX / "tryon_person_mask.png"
MAPS = {"openpose": EX / "pose_standing.png", "depth": EX / "depth_spheres.png"}
A, B = "Tiny SD", "Tiny SD (other seed)"  # the two base models (tiny profile names)
SC, SC_PA = "SeeCoder", "SeeCoder-PA"
GB = 1e9

# (tab, seecoder, base model, ControlNets)
TABS = [
    ("variation", SC, A, ()),
    ("control-1", SC, A, ("openpose",)),
    ("control-2", SC, A, ("openpose", "depth")),
    ("compare", SC, A, ("openpose",)),  # + shuffle (content) and the text encoder
    ("tryon", SC, A, ()),
]
SESSION = [
    ("variation", SC, A, ()),
    ("control-1", SC_PA, B, ("openpose",)),
    ("control-2", SC, A, ("openpose", "depth")),
    ("tryon", SC_PA, B, ()),
    ("compare", SC, A, ("openpose",)),
    ("variation", SC_PA, B, ()),
    ("control-1", SC, A, ("depth",)),
    ("compare", SC, B, ("openpose",)),  # the largest request: with the SeeCoder the tabs phase measured
]


# ----------------------------------------------------------------------------- process memory
def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def trim() -> None:
    """Collect garbage and hand free heap memory back to the OS (glibc), so RSS is what is held."""
    gc.collect()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss() -> int:
    return _status("VmRSS")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: '5' to /proc/self/clear_refs); False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    return _status("VmHWM")


class Meter:
    """Peak process RSS (and peak CUDA memory allocated) over a block, and its wall time."""

    def __init__(self, device: torch.device):
        self.device = device

    @contextlib.contextmanager
    def __call__(self, record: dict):
        trim()
        record["rss_before"] = rss()
        record["hwm_reset"] = reset_peak()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            record["vram_before"] = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        try:
            yield record
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize()
                record["vram_peak"] = torch.cuda.max_memory_allocated()
                record["vram_after"] = torch.cuda.memory_allocated()
            record["seconds"] = time.perf_counter() - t0
            record["rss_peak"] = peak_rss() if record["hwm_reset"] else None
            record["rss_after"] = rss()


# ----------------------------------------------------------------------------- full-size models
def _seeded(seed: int, fn):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


def full_builders(engine: Engine, timings: dict) -> dict:
    """key -> a function that builds the full-size random model for that key (placed)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from prompt_free.formats import SD15_CONTROLNET_CONFIG, SD15_UNET_CONFIG, SD15_VAE_CONFIG
    from prompt_free.seecoder import SeeCoderConfig, build_seecoder, zero_unconditional
    from prompt_free.text import TextEncoder, tiny_tokenizer
    from prompt_free.tiny import TINY_CLIP_TEXT_CONFIG

    def base(name, seed):
        def build():
            unet = _seeded(seed, lambda: UNet2DConditionModel(**SD15_UNET_CONFIG))
            vae = _seeded(seed + 100, lambda: AutoencoderKL(**SD15_VAE_CONFIG))
            return BaseModel(name, engine.place(unet), engine.place(vae))
        return build

    def seecoder(name, cfg, seed):
        def build():
            model = engine.place(build_seecoder(cfg, seed=seed))
            return LoadedSeeCoder(name, model, zero_unconditional(model.config).to(engine.device, engine.dtype))
        return build

    def controlnet(seed):
        def build():
            def make():
                cn = ControlNetModel(**SD15_CONTROLNET_CONFIG)
                with torch.no_grad():  # diffusers zero-inits the zero-convs: give them weights
                    for n, p in cn.named_parameters():
                        if n.startswith(("controlnet_down_blocks", "controlnet_mid_block")):
                            p.normal_(0, 0.02)
                return cn
            return engine.place(_seeded(seed, make))
        return build

    def text():
        cfg = dict(TINY_CLIP_TEXT_CONFIG, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12)
        model = _seeded(4, lambda: CLIPTextModel(CLIPTextConfig(**cfg)))
        tok = tiny_tokenizer(model.config.vocab_size, model.config.max_position_embeddings)
        return TextEncoder(tok, engine.place(model), "tiny", engine)

    cfg = SeeCoderConfig()
    builders = {
        ("base_models", A): base(A, 1), ("base_models", B): base(B, 11),
        ("seecoders", SC): seecoder(SC, cfg, 0), ("seecoders", SC_PA): seecoder(SC_PA, cfg.with_position_encoding(), 1),
        ("controlnets", "openpose"): controlnet(21), ("controlnets", "depth"): controlnet(23),
        ("controlnets", "shuffle"): controlnet(31),
        ("text_encoder", "tiny", None, None): text,  # the key prompt_free.text uses for tiny base models
    }

    def timed(key, fn):
        def build():
            t0 = time.perf_counter()
            try:
                return fn()
            finally:
                timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
        return build

    return {k: timed(k, fn) for k, fn in builders.items()}


def make_engine(args, budget=None, registry=None, build_times=None) -> Engine:
    engine = Engine(registry or Registry.load(profile="tiny"), device=args.device, dtype=args.dtype,
                    memory_budget=budget)
    if args.models == "full":
        for key, build in full_builders(engine, build_times if build_times is not None else {}).items():
            engine.adopt(key, rebuild=build)
    return engine


# ----------------------------------------------------------------------------- requests
def run_request(engine: Engine, args, tab: str, seecoder: str, base: str, controls) -> None:
    common = dict(seecoder=seecoder, base_model=base, steps=args.steps, seed=5, width=args.size, height=args.size)
    if tab == "variation":
        image_variation(engine, REF, VariationSettings(**common))
    elif tab.startswith("control"):
        specs = [ControlSpec(n, MAPS[n]) for n in controls]
        reference_control(engine, REF, specs, ControlSettings(**common))
    elif tab == "compare":
        compare(engine, REF, MAPS[controls[0]], controls[0],
                settings=CompareSettings(**common, methods=("prompt_free", "dual_controlnet")))
    elif tab == "tryon":
        s = dict(common, width=None, height=None)
        virtual_tryon(engine, PERSON, GARMENT, PERSON_MASK,
                      TryOnSettings(**s, pose_control=False, max_side=args.size))
    else:
        raise ValueError(tab)


def by_kind(engine: Engine, where: str = "device") -> dict:
    out = defaultdict(int)
    for e in engine.memory_report():
        if e["where"] == where:
            out[e["kind"]] += e["bytes"]
    return dict(out)


def device_bytes(engine: Engine) -> int:
    return sum(by_kind(engine).values())


# ----------------------------------------------------------------------------- phases
def phase_tabs(args, meter) -> list:
    rows = []
    for tab, sc, base, controls in TABS:
        engine = make_engine(args)
        rec = {"tab": tab, "controlnets": list(controls) + (["shuffle"] if tab == "compare" else [])}
        with meter(rec):
            run_request(engine, args, tab, sc, base, controls)
        rec["by_kind"] = by_kind(engine)
        rec["total"] = sum(rec["by_kind"].values())
        rec["models"] = [(e["kind"], e["name"], e["bytes"]) for e in engine.memory_report()]
        rows.append(rec)
        print(f"  tab {tab:<10} resident {rec['total'] / GB:6.3f} GB  peak RSS {fmt_gb(rec['rss_peak'])}  "
              f"{rec['seconds']:6.1f} s", flush=True)
        del engine
        trim()
    return rows


def phase_switch(args, meter, one_base: int) -> dict:
    """A -> B -> A with no budget and with a budget that fits one base model (+ 10 %)."""
    out = {"one_base_model_bytes": one_base, "cases": []}
    for label, budget in (("no budget", None), ("budget fits one base model", int(one_base * 1.1))):
        engine = make_engine(args, budget)
        trim()
        baseline = rss()
        case = {"case": label, "budget": budget, "rss_baseline": baseline, "steps": []}
        engine.base_model(A)
        for step, name in (("A -> B (B never loaded)", B), ("B -> A (A loaded before)", A)):
            rec = {"switch": step}
            with meter(rec):
                engine.base_model(name)
            rec["device_bytes_after"] = device_bytes(engine)
            rec["resident_after"] = [e["name"] for e in engine.memory_report()]
            case["steps"].append(rec)
            print(f"  switch [{label}] {step}: peak RSS {fmt_gb(rec['rss_peak'])} (baseline {fmt_gb(baseline)}), "
                  f"held after {rec['device_bytes_after'] / GB:.3f} GB, {rec['seconds']:.1f} s", flush=True)
        case["load_counts"] = {" ".join(map(str, k)): v for k, v in engine.load_counts.items()}
        out["cases"].append(case)
        del engine
        trim()
    if args.device.type == "cuda":
        out["ram_tier_vs_disk"] = cuda_ram_tier_vs_disk(args, one_base)
    return out


def cuda_ram_tier_vs_disk(args, one_base: int) -> dict:
    """On CUDA: switching back to A from the RAM tier against loading the same base model from a
    safetensors (diffusers) folder, both under a budget that fits one base model, in one run.
    The folder was just written, so it is likely in the page cache: a lower bound on a cold read."""
    import yaml

    budget = int(one_base * 1.1)
    engine = make_engine(args, budget)
    engine.base_model(A)
    engine.base_model(B)  # A -> the RAM tier
    assert any(e["name"] == A and e["where"] == "ram" for e in engine.memory_report()), engine.memory_report()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    engine.base_model(A)  # back from the RAM tier, B -> the RAM tier
    torch.cuda.synchronize()
    t_ram = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        a = engine.base_model(A)
        a.unet.save_pretrained(Path(tmp) / "unet", safe_serialization=True)
        a.vae.save_pretrained(Path(tmp) / "vae", safe_serialization=True)
        del a
        del engine
        trim()
        torch.cuda.empty_cache()
        data = yaml.safe_load(DEFAULT_CHECKPOINTS.read_text())["profiles"]["tiny"]
        data["base_models"]["From disk"] = {"path": tmp, "format": "diffusers"}
        disk_engine = make_engine(args, budget, registry=Registry.from_dict(data, profile="tiny-disk"))
        disk_engine.base_model(B)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        disk_engine.base_model("From disk")  # B -> the RAM tier, the same weights read from the folder
        torch.cuda.synchronize()
        t_disk = time.perf_counter() - t0
        del disk_engine
        trim()
        torch.cuda.empty_cache()
    row = {"ram_tier_s": t_ram, "disk_s": t_disk, "disk_over_ram_tier": t_disk / t_ram}
    print(f"  CUDA switch back: RAM tier {t_ram:.3f} s, safetensors folder {t_disk:.3f} s, "
          f"ratio disk/RAM tier {row['disk_over_ram_tier']:.1f}", flush=True)
    return row


def phase_session(args, meter, budget: int) -> dict:
    build_times: dict = {}
    engine = make_engine(args, budget, build_times=build_times)
    rows = []
    t0 = time.perf_counter()
    for i, (tab, sc, base, controls) in enumerate(SESSION):
        rec = {"i": i, "tab": tab, "seecoder": sc, "base_model": base, "controlnets": list(controls)}
        with meter(rec):
            run_request(engine, args, tab, sc, base, controls)
        rec["device_bytes"] = device_bytes(engine)
        rec["within_budget"] = rec["device_bytes"] <= budget
        rows.append(rec)
        print(f"  session {i} {tab:<10} {base:<22} {sc:<12} held {rec['device_bytes'] / GB:6.3f} GB "
              f"(budget {budget / GB:.3f}) peak RSS {fmt_gb(rec['rss_peak'])} {rec['seconds']:6.1f} s", flush=True)
    total_s = time.perf_counter() - t0
    held = [r["device_bytes"] for r in rows]
    loads = sum(engine.load_counts.values())
    resident = {tuple(r.key) for r in engine.memory.items()}
    out = {
        "budget": budget, "requests": rows, "max_device_bytes": max(held), "mean_device_bytes": statistics.mean(held),
        "all_within_budget": all(r["within_budget"] for r in rows), "loads": loads,
        "distinct_models": len(engine.load_counts),
        "evictions": loads - sum(1 for k in engine.load_counts if k in resident),
        "load_counts": {" ".join(str(x) for x in k if x): v for k, v in engine.load_counts.items()},
        "seconds": total_s, "build_seconds": sum(build_times.values()) if build_times else None,
        "max_rss_peak": max((r["rss_peak"] or 0) for r in rows) or None,
        "unbudgeted_would_hold": unbudgeted_hold(engine, args),
    }
    if args.device.type == "cuda":
        out["max_vram_peak"] = max(r["vram_peak"] for r in rows)
    del engine
    gc.collect()
    return out


def unbudgeted_hold(engine: Engine, args) -> int:
    """What the session's models take together (what an engine without a budget ends up holding,
    count limits aside): the last known bytes of every model the session loaded."""
    return sum(engine._known_bytes.get(k, 0) for k in engine.load_counts)


# ----------------------------------------------------------------------------- report
def fmt_gb(n) -> str:
    return "-" if n is None else f"{n / GB:.2f} GB"


KINDS = ("base_model", "seecoder", "controlnet", "text_encoder", "detector")


def print_tables(result: dict) -> None:
    print(f"\n### Resident bytes per tab ({result['models']} models, {result['device']}, {result['size']}x{result['size']}, "
          f"{result['steps']} step(s)), GB\n")
    print("| tab | " + " | ".join(KINDS) + " | total | peak RSS | s |")
    print("| --- |" + " ---: |" * (len(KINDS) + 3))
    for r in result["tabs"]:
        cells = [f"{r['by_kind'].get(k, 0) / GB:.3f}" if r["by_kind"].get(k) else "-" for k in KINDS]
        print(f"| {r['tab']} | " + " | ".join(cells) + f" | {r['total'] / GB:.3f} | {fmt_gb(r['rss_peak'])} | "
              f"{r['seconds']:.1f} |")
    sw = result["switch"]
    print(f"\n### Base model switch (one base model = {sw['one_base_model_bytes'] / GB:.3f} GB)\n")
    print("| case | switch | RSS before | peak RSS | peak above before | held after (device) | s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for c in sw["cases"]:
        for s in c["steps"]:
            above = None if s["rss_peak"] is None else s["rss_peak"] - s["rss_before"]
            print(f"| {c['case']} | {s['switch']} | {fmt_gb(s['rss_before'])} | {fmt_gb(s['rss_peak'])} | {fmt_gb(above)} "
                  f"| {s['device_bytes_after'] / GB:.3f} GB | {s['seconds']:.1f} |")
    if "ram_tier_vs_disk" in sw:
        t = sw["ram_tier_vs_disk"]
        print(f"\nCUDA switch back: RAM tier {t['ram_tier_s']:.3f} s vs disk {t['disk_s']:.3f} s (x{t['disk_over_ram_tier']:.1f})")
    se = result["session"]
    print(f"\n### Scripted session, budget {se['budget'] / GB:.3f} GB (the largest single request)\n")
    print("| # | tab | base model | SeeCoder | ControlNets | held after (device) | within budget | peak RSS | s |")
    print("| ---: | --- | --- | --- | --- | ---: | --- | ---: | ---: |")
    for r in se["requests"]:
        cns = ", ".join(r["controlnets"] + (["shuffle"] if r["tab"] == "compare" else [])) or "-"
        print(f"| {r['i']} | {r['tab']} | {r['base_model']} | {r['seecoder']} | {cns} | {r['device_bytes'] / GB:.3f} GB | "
              f"{'yes' if r['within_budget'] else 'NO'} | {fmt_gb(r['rss_peak'])} | {r['seconds']:.1f} |")
    print(f"\nmax held {se['max_device_bytes'] / GB:.3f} GB, mean {se['mean_device_bytes'] / GB:.3f} GB, all within budget: "
          f"{se['all_within_budget']}; {se['loads']} loads of {se['distinct_models']} models, {se['evictions']} evictions; "
          f"{se['seconds']:.1f} s" + (f" ({se['build_seconds']:.1f} s building models)" if se["build_seconds"] else "")
          + f"; without a budget the session's models take {se['unbudgeted_would_hold'] / GB:.3f} GB")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--size", type=int, default=256, help="output side (default 256)")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--budget", default=None, help="session budget (e.g. 9GB); default: the largest single request")
    ap.add_argument("--phases", nargs="+", choices=["tabs", "switch", "session"], default=["tabs", "switch", "session"],
                    help="tabs always runs (the others take their sizes from it)")
    ap.add_argument("--device", default=None, help="cpu, cuda (default: cuda when present)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "memory.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.dtype = torch.float16 if args.device.type == "cuda" else torch.float32
    meter = Meter(args.device)
    result = {"benchmark": "memory", "models": args.models, "device": args.device.type, "dtype": str(args.dtype),
              "size": args.size, "steps": args.steps}
    t0 = time.perf_counter()
    if True:  # the switch and session phases take their sizes from it
        print("tabs:", flush=True)
        result["tabs"] = phase_tabs(args, meter)
        largest = max(r["total"] for r in result["tabs"])
        one_base = next(r["by_kind"]["base_model"] for r in result["tabs"] if r["tab"] == "variation")
    if "switch" in args.phases:
        print("switch:", flush=True)
        result["switch"] = phase_switch(args, meter, one_base)
    if "session" in args.phases:
        budget = parse_size(args.budget) or largest
        print("session:", flush=True)
        result["session"] = phase_session(args, meter, budget)
    result["seconds"] = time.perf_counter() - t0
    result["env"] = {
        "torch": torch.__version__, "python": platform.python_version(), "cpu_threads": torch.get_num_threads(),
        "nproc": os.cpu_count(), "cuda": torch.cuda.get_device_name() if args.device.type == "cuda" else None,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    if {"tabs", "switch", "session"} <= set(result):
        print_tables(result)
    print(f"\n{result['seconds']:.1f} s in all; wrote {args.out}")
    return 0 if result.get("session", {}).get("all_within_budget", True) else 1


if __name__ == "__main__":
    sys.exit(main())
