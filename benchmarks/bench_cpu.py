"""The CPU path of issue 19 in one run: parts and end-to-end runs, fp32 against auto, JSON + Markdown.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_cpu.py --steps 2 --readme benchmarks/README.md
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_cpu.py --models tiny   # seconds (a test)

Models: ``full`` = the ``full-random`` profile (SD-1.5-size UNet, VAE, ControlNet and a
full-size SeeCoder with random weights; no download), ``tiny`` = the tiny profile (the same code
path in seconds). The parts come from the profiles' builders (``prompt_free.full_random``,
``prompt_free.tiny``); the end-to-end runs go through the public engine and task
(``Engine.from_profile``, ``image_variation``).

Rows, in this order:
  1. parts, interleaved round by round (--repeats rounds, medians): UNet step (batch 2 as with
     guidance, 148 tokens), ControlNet step (batch 2, as the engine runs it: the control image
     embedded once per run, ``fast.controlnet_residuals``), that embedding (once per run), VAE
     decode, TAESD decode (``diffusers.AutoencoderTiny()`` with its default config, TAESD's
     size, random weights) and SeeCoder encode, each in fp32 and in bf16 (what ``auto`` picks
     on CPUs with AMX or AVX-512 BF16; the table says what it picks here), contiguous and
     channels_last (the same module objects laid out in place). One part at a time is built
     in both precisions (the builders of the full-random / tiny profiles), so the machine holds
     two copies of one model, not of all. An untimed round comes first (``--no-warmup``: none):
     a first call builds oneDNN's kernels and faults in its memory (measured: a ControlNet step
     3x slower on its first call).
  2. end to end: a 512² Image Variation (``image_variation``) in three configurations, each in
     its own subprocess so that its peak RSS (the child's VmHWM) is its own: today's
     default (fp32, contiguous, DDIM 50), "Paper" (auto precision and layout, DDIM 50) and
     "Quick" (auto, DPM++ 2M Karras 20). The models are built first (build time reported
     apart), then one run takes --steps denoising steps; the 50- and 20-step times are
     projected from its fixed parts (encode, decode, set-up) plus steps x its time per step.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from prompt_free import layout, precision  # noqa: E402
from prompt_free.engine import Engine  # noqa: E402
from prompt_free.fast import controlnet_residuals  # noqa: E402
from prompt_free.images import image_to_tensor, load_image  # noqa: E402

REF = ROOT / "assets" / "examples" / "chelsea.jpg"
TOKENS = 148
BEGIN, END = "<!-- bench_cpu:begin -->", "<!-- bench_cpu:end -->"
PARTS = ("unet", "controlnet", "controlnet_hint", "vae", "taesd", "seecoder")
LAYOUT_PARTS = ("unet", "controlnet", "controlnet_hint", "vae", "taesd")  # SeeCoder has no convolutions to lay out
# (name, precision, channels_last, scheduler, steps of the full run)
E2E = (("today", "fp32", "off", "DDIM", 50), ("paper", "auto", "auto", "DDIM", 50),
       ("quick", "auto", "auto", "DPM++ 2M Karras", 20))
# The goals of issue 19.
GOAL_AMX = {"unet": 0.40, "paper": 0.45, "quick": 0.15, "rss": 0.60}
GOAL_ANY = 1.02


def cpu_info() -> dict:
    name = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = precision.cpu_flags()
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")
    return {"model": name, "flags": [f for f in wanted if f in flags], "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch_capability": precision.cpu_capability(),
            "auto_precision": precision.auto_precision("cpu"),
            "auto_channels_last": {p: layout.auto_channels_last("cpu", p) for p in ("fp32", "bf16")}}


def load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ----------------------------------------------------------------------------- parts
def build_part(models: str, part: str, dtype: torch.dtype) -> torch.nn.Module:
    """One part in ``dtype`` (eval, no gradients): the full-random profile's builders (built in
    ``dtype``, no fp32 copy) or the tiny profile's; TAESD is ``AutoencoderTiny()``, random."""
    from prompt_free import full_random, tiny

    if part == "taesd":
        from diffusers import AutoencoderTiny

        torch.manual_seed(0)
        m = AutoencoderTiny()
    elif models == "full":
        m = {"unet": lambda: full_random.full_unet(dtype=dtype), "vae": lambda: full_random.full_vae(dtype=dtype),
             "controlnet": lambda: full_random.full_controlnet(dtype=dtype),
             "seecoder": lambda: full_random.full_seecoder(dtype=dtype)}[part]()
    else:
        m = {"unet": tiny.tiny_unet, "vae": tiny.tiny_vae, "controlnet": tiny.tiny_controlnet,
             "seecoder": tiny.tiny_seecoder}[part]()
    return torch.nn.Module.to(m, dtype).eval().requires_grad_(False)


class Parts:
    """The inputs of the parts at one size, and the calls that time them."""

    def __init__(self, models: str, size: int):
        self.models = models
        unet = build_part(models, "unet", torch.float32)
        self.cross, self.channels = unet.config.cross_attention_dim, unet.config.in_channels
        del unet
        scale = 8 if models == "full" else 2 ** (len(build_part(models, "vae", torch.float32).config.block_out_channels) - 1)
        g = torch.Generator().manual_seed(0)
        side = size // scale
        self.inputs = {
            "latents": torch.randn(2, self.channels, side, side, generator=g),
            "context": torch.randn(2, TOKENS, self.cross, generator=g),
            "hint": torch.rand(2, 3, size, size, generator=g),
            "z": torch.randn(1, 4, side, side, generator=g),
            "taesd_z": torch.randn(1, 4, size // 8, size // 8, generator=g),
            "image": image_to_tensor(load_image(REF).resize((size, size))),
        }

    def call(self, part: str, m: torch.nn.Module, prec: str):
        i, dt = self.inputs, precision.DTYPES[prec]
        x, ctx = i["latents"].to(dt), i["context"].to(dt)
        if part == "unet":
            return lambda: m(x, 500, encoder_hidden_states=ctx).sample
        if part == "controlnet_hint":
            hint = i["hint"].to(dt)
            return lambda: m.controlnet_cond_embedding(hint)
        if part == "controlnet":  # a step as the engine runs it: the hint embedded once per run
            key = ("embedding", prec)
            if key not in i:
                with torch.inference_mode():
                    i[key] = m.controlnet_cond_embedding(i["hint"].to(dt))
            emb, t = i[key], torch.tensor(500)
            return lambda: controlnet_residuals(m, x, t, ctx, emb, 1.0)
        if part in ("vae", "taesd"):
            z = i["taesd_z" if part == "taesd" else "z"].to(dt)
            return lambda: m.decode(z).sample
        img = i["image"].to(dt)
        return lambda: m(img)


def measure_parts(parts: Parts, repeats: int, warmup: bool) -> dict:
    """Each part built in fp32 and bf16 (one part at a time: the machine holds two copies of one
    model, not of all), its configurations interleaved round by round; medians."""
    out = {}
    with torch.inference_mode():
        for part in PARTS:
            model_part = "controlnet" if part == "controlnet_hint" else part
            models = {prec: build_part(parts.models, model_part, precision.DTYPES[prec]) for prec in ("fp32", "bf16")}
            configs = [(prec, cl) for prec in ("fp32", "bf16") for cl in ((False, True) if part in LAYOUT_PARTS else (False,))]
            times = {c: [] for c in configs}
            for rnd in range(repeats + int(warmup)):
                for prec, cl in configs:
                    m = models[prec].to(memory_format=torch.channels_last if cl else torch.contiguous_format)
                    fn = parts.call(part, m, prec)
                    t0 = time.perf_counter()
                    fn()
                    if rnd >= int(warmup):
                        times[(prec, cl)].append(time.perf_counter() - t0)
            for (prec, cl), v in times.items():
                out[f"{part}/{prec}/{'channels_last' if cl else 'contiguous'}"] = statistics.median(v)
            del models
            print(f"parts: {part} done, load {load_average()}", flush=True)
    return out


# ----------------------------------------------------------------------------- end to end
def peak_rss() -> int:
    """This process's peak resident set in bytes: /proc's VmHWM, which starts anew at exec
    (``ru_maxrss`` keeps the parent's peak across fork + exec on Linux); ``ru_maxrss`` elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def child(args) -> int:
    """One end-to-end configuration (``--child NAME``): builds, runs, prints one JSON line."""
    name, prec, cl, scheduler, _ = next(c for c in E2E if c[0] == args.child)
    from prompt_free.tasks import VariationSettings, image_variation

    t0 = time.perf_counter()
    engine = Engine.from_profile(args.profile, device="cpu", precision=prec, channels_last=cl)
    engine.base_model(engine.defaults["base_model"])
    engine.seecoder(engine.defaults["seecoder"])
    build_s = time.perf_counter() - t0
    s = VariationSettings(steps=args.steps, width=args.size, height=args.size, scheduler=scheduler)
    t0 = time.perf_counter()
    result = image_variation(engine, load_image(REF), s)
    total_s = time.perf_counter() - t0
    denoise_s = result.info["timings"]["denoise"]
    rss = peak_rss()
    print("RESULT " + json.dumps({"name": name, "precision": engine.precision, "channels_last": engine.channels_last,
                                  "scheduler": scheduler, "build_s": build_s, "total_s": total_s,
                                  "denoise_s": denoise_s, "peak_rss": rss}), flush=True)
    return 0


def measure_e2e(args) -> dict:
    out = {}
    for name, _, _, _, full_steps in E2E:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--models", args.models,
               "--steps", str(args.steps), "--size", str(args.size)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            raise RuntimeError(f"end-to-end child {name} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(line[len("RESULT "):])
        per_step = r["denoise_s"] / args.steps
        r["per_step_s"] = per_step
        r["full_steps"] = full_steps
        r["projected_s"] = r["total_s"] - r["denoise_s"] + full_steps * per_step
        out[name] = r
        print(f"end to end {name}: {r['total_s']:.1f} s for {args.steps} steps, load {load_average()}", flush=True)
    return out


# ----------------------------------------------------------------------------- table
def goals(result: dict) -> list:
    parts, e2e = result["parts"], result["e2e"]
    auto = result["cpu"]["auto_precision"]
    amx = "amx_tile" in result["cpu"]["flags"] or "amx_bf16" in result["cpu"]["flags"]
    out = []

    def add(goal, ratio, limit, applies=True):
        verdict = ("PASS" if ratio <= limit else "FAIL") if applies else "n/a here (no AMX)"
        out.append({"goal": goal, "figure": f"{ratio:.2f}x", "verdict": verdict})

    def auto_time(part):  # what an engine with precision=auto and channels_last=auto runs
        cl = part in LAYOUT_PARTS and layout.auto_channels_last("cpu", auto)
        return parts[f"{part}/{auto}/{'channels_last' if cl else 'contiguous'}"]

    unet = auto_time("unet") / parts["unet/fp32/contiguous"]
    today = e2e["today"]
    add("AMX: UNet step in auto <= 0.40x fp32", unet, GOAL_AMX["unet"], amx)
    for name in ("paper", "quick"):
        add(f"AMX: \"{name.title()}\" end to end <= {GOAL_AMX[name]:.2f}x today",
            e2e[name]["projected_s"] / today["projected_s"], GOAL_AMX[name], amx)
    rss = max(e2e[n]["peak_rss"] for n in ("paper", "quick")) / today["peak_rss"]
    add("AMX: peak RSS <= 0.60x today", rss, GOAL_AMX["rss"], amx)
    for part in PARTS:
        add(f"any CPU: {part} in auto <= {GOAL_ANY}x fp32", auto_time(part) / parts[f"{part}/fp32/contiguous"], GOAL_ANY)
    add(f"any CPU: \"Paper\" end to end in auto <= {GOAL_ANY}x today",
        e2e["paper"]["projected_s"] / today["projected_s"], GOAL_ANY)
    return out


def markdown(result: dict) -> str:
    cpu, parts, e2e, n = result["cpu"], result["parts"], result["e2e"], result["steps"]
    lines = [f"{result['models']} models, CPU: {cpu['model']} ({cpu['cpus']} CPUs, {cpu['threads']} torch threads; "
             f"flags {' '.join(cpu['flags']) or 'none of interest'}), torch {result['torch']}, {result['date']}, "
             f"load average before / after {result['load_before']} / {result['load_after']}; "
             f"auto picks {cpu['auto_precision']}, channels_last "
             f"{'on' if cpu['auto_channels_last'][cpu['auto_precision']] else 'off'}.", "",
             f"Parts ({result['size']}², medians of {result['repeats']} interleaved round(s)"
             f"{' after a warm-up' if result['warmup'] else ''}), seconds:",
             "", "| part | fp32 | fp32 + channels_last | bf16 | bf16 + channels_last |", "| --- | ---: | ---: | ---: | ---: |"]
    for part in PARTS:
        def cell(prec, cl):
            key = f"{part}/{prec}/{'channels_last' if cl else 'contiguous'}"
            if key not in parts:
                return "-"
            ratio = parts[key] / parts[f"{part}/fp32/contiguous"]
            return f"{parts[key]:.2f}" + ("" if key.endswith("fp32/contiguous") else f" ({ratio:.2f}x)")
        lines.append(f"| {part} | {cell('fp32', False)} | {cell('fp32', True)} | {cell('bf16', False)} | "
                     f"{cell('bf16', True)} |")
    lines += ["", f"End to end, {result['size']}² Image Variation, {n} measured steps each; the 50/20-step times are "
              f"projected from {n} steps (fixed parts + steps x time per step):", "",
              "| run | precision | channels_last | sampler | build s | s per step | s projected | ratio to today | peak RSS GB | RSS ratio |",
              "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    today = e2e["today"]
    for name, _, _, sched, steps in E2E:
        r = e2e[name]
        lines.append(f"| {name} | {r['precision']} | {'on' if r['channels_last'] else 'off'} | {sched} {steps} | "
                     f"{r['build_s']:.1f} | {r['per_step_s']:.2f} | {r['projected_s']:.1f} | "
                     f"{r['projected_s'] / today['projected_s']:.2f}x | {r['peak_rss'] / 1e9:.2f} | "
                     f"{r['peak_rss'] / today['peak_rss']:.2f}x |")
    lines += ["", "Goals of issue 19 (ratios of this run):", "", "| goal | figure | verdict |", "| --- | ---: | --- |"]
    lines += [f"| {g['goal']} | {g['figure']} | {g['verdict']} |" for g in result["goals"]]
    return "\n".join(lines)


def write_readme(path: Path, table: str) -> None:
    """Replace the text between the bench_cpu markers of ``path`` (appended when it has none)."""
    text = path.read_text()
    block = f"{BEGIN}\n{table}\n{END}"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, count=1, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", choices=["tiny", "full"], default="full")
    p.add_argument("--steps", type=int, default=2, help="denoising steps of each end-to-end run (projected to 50/20)")
    p.add_argument("--repeats", type=int, default=1, help="interleaved timed rounds of the parts")
    p.add_argument("--no-warmup", dest="warmup", action="store_false", help="no untimed round of the parts first")
    p.add_argument("--size", type=int, default=None, help="image side (default 512; tiny: 64)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the project's rule)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cpu"), help="path without suffix (.json, .md)")
    p.add_argument("--readme", default=None, help="a Markdown file whose bench_cpu section gets the table")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.profile = "full-random" if args.models == "full" else "tiny"
    args.size = args.size or (512 if args.models == "full" else 64)
    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        from prompt_free import threads

        threads.configure()
    if args.child:
        return child(args)
    t0 = time.perf_counter()
    result = {"models": args.models, "size": args.size, "steps": args.steps, "repeats": args.repeats, "warmup": args.warmup,
              "torch": torch.__version__, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "cpu": cpu_info(), "load_before": load_average()}
    result["parts"] = measure_parts(Parts(args.models, args.size), args.repeats, args.warmup)
    result["e2e"] = measure_e2e(args)
    result["load_after"] = load_average()
    result["goals"] = goals(result)
    result["wall_s"] = time.perf_counter() - t0
    table = markdown(result)
    print("\n" + table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(table + "\n")
    if args.readme:
        write_readme(Path(args.readme), table)
    print(f"\nwrote {out.with_suffix('.json')} and {out.with_suffix('.md')} in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
