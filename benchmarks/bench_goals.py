"""Every speed goal of issue 16 in one call: figures, PASS / FAIL / not measured, JSON + Markdown.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_goals.py --models tiny --device cpu   # seconds (a test)
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_goals.py                             # full size, on the GPU

Models: ``full`` = the ``full-random`` profile (SD-1.5-size UNet, VAE, ControlNets and a
full-size SeeCoder with random weights built on the device; no download), ``tiny`` = the tiny
profile (the same code path in seconds). Everything goes through the public engine
(``Engine.from_profile``, ``generate``, ``encode_reference``, ``decode``, ``image_variation``);
the sampling mode of a row is the engine's ``fast`` attribute (``FastPath.from_setting``), so
every mode runs on the same model objects.

Modes: ``eager`` (the eager loop), ``fast`` (the fast path's exact parts), ``graphed`` (exact
parts + the guided step as one CUDA graph per shape; CUDA only), ``compiled`` (the whole fast
path: exact parts + channels_last + torch.compile + CUDA graphs; CUDA only). Compiling turns the weights channels_last in
place, so every row measured after the first compiled one (eager and bare diffusers included,
which use the same modules) runs on channels_last weights; the engine/diffusers ratio stays a
comparison of the same modules.

Rows, in this order (the deadline guard skips what does not fit, never the table):
  1. ms per guided step with 0 ControlNets for each mode and for a bare diffusers
     ``StableDiffusionPipeline`` fed the same 148-token context and initial latents, interleaved
     round by round; ratios engine/diffusers and fast/eager as medians of the per-round ratios;
  2. the same with 1 and 2 ControlNets (the engine, and diffusers' ControlNet pipeline);
  3. SeeCoder encode of a --size reference (its digest changed each time: no cache hit);
  4. VAE decode of one image;
  5. end to end (``image_variation``, --e2e-steps steps), with SeeCoder's share;
  5b. quick mode (``Sampler.deep_cache`` N = 2, 3; approximate): ms per guided step against the
     exact loop (N = 1) on the default path, interleaved round by round, and the relative
     deviation of its final latents from the exact ones (--quick-steps steps, same seed);
  6. CUDA only: peak memory with 2 ControlNets at 512² and 768², the 8 GB check in a subprocess
     (``torch.cuda.set_per_process_memory_fraction``), base-model switch from the RAM tier
     against a disk load, and the graphed mode's first run after a base-model switch against
     a run on the same model (the weight slot: no new capture).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from prompt_free.conditioning import Conditioning  # noqa: E402
from prompt_free.engine import Engine  # noqa: E402
from prompt_free.fast import FastPath  # noqa: E402
from prompt_free.images import image_to_tensor, load_image  # noqa: E402
from prompt_free.sampling import ControlInput, Sampler, make_scheduler  # noqa: E402

EX = ROOT / "assets" / "examples"
REF = EX / "chelsea.jpg"
MAPS = (EX / "pose_standing.png", EX / "depth_spheres.png")
CONTROLNETS = ("openpose", "depth")
NOT_MEASURED = "not measured"
GB = 1e9
COMPILE_ALLOWANCE_S = 150  # a cold inductor compile of an SD-1.5 UNet (+ ControlNets) on one GPU
ROW_GROUPS = ("steps0", "seecoder", "vae", "e2e", "quick", "steps1", "steps2", "gpu")
QUICK_INTERVALS = (2, 3)  # quick mode (approximate): deep features reused for N steps

# The goals of issue 16 (the absolute figures are for an H100-class GPU).
GOAL_E2E_S = 0.40
GOAL_STEP_MS = 7.5
GOAL_PER_CONTROLNET = 0.40
GOAL_SEECODER_SHARE = 0.03
GOAL_MEMORY_GB = 8.0
GOAL_ENGINE_RATIO = 1.03


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def allows(self, need_s: float) -> bool:
        return self.left() > need_s


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, fn) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def modes_for(device, compile_ok: bool):
    modes = {"eager": None, "fast": FastPath(compile=False)}
    if device.type == "cuda":
        modes["graphed"] = FastPath(compile=False, graphs=True)
        if compile_ok:
            modes["compiled"] = FastPath(compile=True, graphs=True)  # the whole fast path (``--fast``)
    return modes


class Bench:
    def __init__(self, args):
        self.args = args
        self.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        profile = "full-random" if args.models == "full" else "tiny"
        self.engine = Engine.from_profile(profile, device=self.device, fast=False)
        self.base_name = self.engine.defaults["base_model"]
        self.sc_name = self.engine.defaults["seecoder"]
        self.modes = modes_for(self.device, not args.no_compile)
        self.deadline = Deadline(args.deadline)
        self.rows: dict = {}
        self.notes: list = []
        self.ref = load_image(REF)
        self._variant = 0

    # -- helpers
    def reference(self) -> Image.Image:
        """The reference with one pixel changed each call, so the engine's encoding cache misses."""
        img = self.ref.copy()
        self._variant += 1
        img.putpixel((0, 0), (self._variant % 256, (self._variant // 256) % 256, 7))
        return img

    def context(self):
        return self.engine.encode_reference(self.ref, self.sc_name)

    def controls(self, n: int, size: int):
        maps = [image_to_tensor(load_image(p).resize((size, size))) for p in MAPS]
        return [ControlInput(self.engine.controlnet(CONTROLNETS[k]), maps[k], 1.0) for k in range(n)]

    def sampler(self, size: int, steps: int, seed: int = 20, deep_cache: int = 1) -> Sampler:
        return Sampler(width=size, height=size, steps=steps, seed=seed, guidance=2.0, deep_cache=deep_cache)

    def engine_step_ms(self, mode: str, n_cn: int, size: int, steps: int) -> float:
        self.engine.fast = self.modes[mode]
        ctx, unc = self.context()
        c = Conditioning(ctx, unc, self.controls(n_cn, size))
        t = timed(self.device, lambda: self.engine.generate(self.base_name, c, self.sampler(size, steps), decode=False))
        return 1e3 * t / steps

    def diffusers_pipe(self, n_cn: int):
        from diffusers import StableDiffusionControlNetPipeline, StableDiffusionPipeline

        base = self.engine.base_model(self.base_name)
        common = dict(vae=base.vae, text_encoder=None, tokenizer=None, unet=base.unet, scheduler=make_scheduler("DDIM"),
                      safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        if n_cn == 0:
            pipe = StableDiffusionPipeline(**common)
        else:
            cns = [self.engine.controlnet(CONTROLNETS[k]) for k in range(n_cn)]
            pipe = StableDiffusionControlNetPipeline(controlnet=cns[0] if n_cn == 1 else cns, **common)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def diffusers_step_ms(self, pipe, n_cn: int, size: int, steps: int) -> float:
        ctx, unc = self.context()
        f = self.engine.base_model(self.base_name).vae_scale_factor
        latents = torch.randn((1, 4, size // f, size // f), generator=torch.Generator().manual_seed(20))
        latents = latents.to(self.device, self.engine.dtype)
        kwargs = {}
        if n_cn:
            hints = [c.hint.to(self.device, self.engine.dtype) for c in self.controls(n_cn, size)]
            kwargs = dict(image=hints[0] if n_cn == 1 else hints, controlnet_conditioning_scale=1.0 if n_cn == 1 else [1.0] * n_cn)
        pipe.scheduler = make_scheduler("DDIM")

        def run():
            with torch.inference_mode():
                pipe(prompt_embeds=ctx, negative_prompt_embeds=unc.expand_as(ctx), guidance_scale=2.0,
                     num_inference_steps=steps, height=size, width=size, latents=latents, output_type="latent", **kwargs)

        return 1e3 * timed(self.device, run) / steps

    def record(self, name: str, value, **extra) -> None:
        self.rows[name] = {"value": value, **extra}
        shown = f"{value:.2f}" if isinstance(value, float) else value
        print(f"  {name}: {shown}", flush=True)

    def guarded(self, name: str, need_s: float, fn) -> None:
        """Run one optional block if the deadline leaves ``need_s``; an error is recorded, not raised."""
        if not self.deadline.allows(need_s):
            self.notes.append(f"{name}: skipped (deadline)")
            print(f"  {name}: skipped (deadline)", flush=True)
            return
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a failing row must not lose the table
            self.notes.append(f"{name}: error {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
            print(f"  {name}: error {e!r}"[:300], flush=True)

    # -- the rows
    def steps_rows(self, n_cn: int, with_diffusers: bool) -> None:
        a, size, steps = self.args, self.args.size, self.args.steps
        pipe = self.diffusers_pipe(n_cn) if with_diffusers else None
        modes = list(self.modes)
        if "compiled" in modes and not self.deadline.allows(COMPILE_ALLOWANCE_S):
            modes.remove("compiled")  # a cold compile could overrun the deadline
            self.notes.append(f"compiled mode with {n_cn} ControlNets: skipped (deadline)")
        runs = {m: [] for m in modes}
        runs["diffusers"] = []
        # warm-up (the compiled mode compiles here: timed apart)
        for m in modes:
            t = timed(self.device, lambda: self.engine_step_ms(m, n_cn, size, 1))
            self.rows[f"warmup_s/{m}/{n_cn}cn"] = {"value": t}
        if pipe is not None:
            self.diffusers_step_ms(pipe, n_cn, size, 1)
        order = modes + (["diffusers"] if pipe is not None else [])
        for r in range(a.repeats):  # interleaved, every implementation once per round, the order reversed
            for m in (order if r % 2 == 0 else order[::-1]):  # every other round (a drifting load cancels)
                runs[m].append(self.diffusers_step_ms(pipe, n_cn, size, steps) if m == "diffusers"
                               else self.engine_step_ms(m, n_cn, size, steps))
            if not self.deadline.allows(0):
                break
        for m, v in runs.items():
            if v:
                self.record(f"step_ms/{m}/{n_cn}cn", statistics.median(v), runs=v)
        for m in modes:  # every mode against eager, per round: the spread shows the noise
            if m != "eager" and runs[m] and runs["eager"]:
                self.rows[f"over_eager_per_round/{m}/{n_cn}cn"] = per_round(runs[m], runs["eager"])
        if runs.get("graphed") and runs["fast"]:
            self.rows[f"graphed_over_fast_per_round/{n_cn}cn"] = per_round(runs["graphed"], runs["fast"])
        for m in modes:  # the engine against diffusers round by round (a drifting load cancels within a round)
            if runs[m] and runs["diffusers"]:
                self.rows[f"engine_over_diffusers_per_round/{m}/{n_cn}cn"] = per_round(runs[m], runs["diffusers"])

    def seecoder_row(self) -> None:
        def once():
            return timed(self.device, lambda: self.engine.encode_reference(self.reference(), self.sc_name))

        once()  # warm-up
        self.record("seecoder_ms", 1e3 * statistics.median(once() for _ in range(self.args.repeats)),
                    input=list(self.ref.size))

    def vae_row(self) -> None:
        base = self.engine.base_model(self.base_name)
        f, size = base.vae_scale_factor, self.args.size
        z = torch.randn(1, 4, size // f, size // f, generator=torch.Generator().manual_seed(0))
        for m in self.modes:
            if m == "graphed":  # graphs are of the denoising step: its decode is the fast mode's
                continue
            if m == "compiled" and not self.deadline.allows(COMPILE_ALLOWANCE_S):
                self.notes.append("compiled VAE decode: skipped (deadline)")
                continue
            self.engine.fast = self.modes[m]
            self.engine.decode(base, z)  # warm-up (compiles the decoder in the compiled mode)
            self.record(f"vae_decode_ms/{m}", 1e3 * statistics.median(
                timed(self.device, lambda: self.engine.decode(base, z)) for _ in range(self.args.repeats)))

    def e2e_row(self) -> None:
        from prompt_free.tasks import VariationSettings, image_variation

        steps, size = self.args.e2e_steps, self.args.size
        for m in self.modes:
            self.engine.fast = self.modes[m]
            settings = VariationSettings(steps=steps, width=size, height=size, seed=20)
            t = timed(self.device, lambda: image_variation(self.engine, self.reference(), settings))
            self.record(f"e2e_s/{m}", t, steps=steps)

    def quick_rows(self) -> None:
        """Quick mode against exact on the default path (``fast``): ms per step and latent deviation."""
        size, steps = self.args.size, self.args.quick_steps
        self.engine.fast = self.modes["fast"]
        ctx, unc = self.context()
        c = Conditioning(ctx, unc, [])
        intervals = (1,) + QUICK_INTERVALS
        latents, runs = {}, {n: [] for n in intervals}

        def once(n):
            out = {}
            t = timed(self.device, lambda: out.update(z=self.engine.generate(
                self.base_name, c, self.sampler(size, steps, deep_cache=n), decode=False).latents))
            latents[n] = out["z"].float().cpu()
            return 1e3 * t / steps

        once(1)  # warm-up
        for r in range(self.args.repeats):  # interleaved, the order reversed every other round
            for n in (intervals if r % 2 == 0 else intervals[::-1]):
                runs[n].append(once(n))
            if not self.deadline.allows(0):
                break
        exact = latents[1]
        self.record("quick/step_ms/exact", statistics.median(runs[1]), runs=runs[1], steps=steps)
        for n in QUICK_INTERVALS:
            ratios = [q / e for q, e in zip(runs[n], runs[1])]
            d = latents[n] - exact
            self.record(f"quick/step_ms/N{n}", statistics.median(runs[n]), runs=runs[n], steps=steps)
            self.record(f"quick/ratio/N{n}", statistics.median(ratios), runs=ratios)
            self.record(f"quick/deviation_max/N{n}", (d.abs().max() / exact.abs().max()).item())
            self.record(f"quick/deviation_rms/N{n}", (d.norm() / exact.norm()).item())

    def peak_memory_rows(self) -> None:
        for size in (512, 768):
            if not self.deadline.allows(20):
                self.notes.append(f"peak memory {size}: skipped (deadline)")
                continue
            self.engine.fast = self.modes["fast"]  # the default path (a compiled 768² would compile anew)
            ctx, unc = self.context()
            c = Conditioning(ctx, unc, self.controls(2, size))
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.engine.generate(self.base_name, c, self.sampler(size, 2))
            torch.cuda.synchronize()
            self.record(f"peak_gb/2cn/{size}", torch.cuda.max_memory_allocated() / GB)

    def memory_8gb_row(self) -> None:
        cmd = [sys.executable, __file__, "--child-8gb", "--models", self.args.models, "--device", str(self.device)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=max(30, self.deadline.left() - 10))
        verdict = "fits" if out.returncode == 0 else f"failed (exit {out.returncode}): {out.stderr.strip()[-300:]}"
        self.record("fits_8gb/2cn/512", verdict)

    def switch_row(self) -> None:
        """Base-model switch: back to A from the RAM tier, against a load of A from disk."""
        from diffusers import AutoencoderKL, UNet2DConditionModel

        names = self.engine.registry.names("base_models")
        a, b = names[0], names[1]
        base_a = self.engine.base_model(a)
        nbytes = sum(p.numel() * p.element_size() for m in (base_a.unet, base_a.vae) for p in m.parameters())
        with tempfile.TemporaryDirectory() as tmp:
            base_a.unet.save_pretrained(Path(tmp) / "unet")
            base_a.vae.save_pretrained(Path(tmp) / "vae")
            switcher = Engine.from_profile(self.engine.profile, device=self.device, memory_budget=int(nbytes * 1.5),
                                           fast=False)
            switcher.base_model(a)
            switcher.base_model(b)  # A leaves for the RAM tier
            where = {r["name"]: r["where"] for r in switcher.memory_report()}
            ram = timed(self.device, lambda: switcher.base_model(a))

            def disk():
                for cls, sub in ((UNet2DConditionModel, "unet"), (AutoencoderKL, "vae")):
                    cls.from_pretrained(Path(tmp) / sub, torch_dtype=self.engine.dtype).to(self.device)

            disk_s = timed(self.device, disk)
        self.record("switch_s/ram_tier", ram, a_was=where.get(a))
        self.record("switch_s/disk", disk_s)

    def graphs_switch_row(self) -> None:
        """CUDA graphs across a base-model switch: ms per step of the first run on B after runs on
        A (the slot takes B's weights, nothing is captured anew) against another run on A."""
        names = self.engine.registry.names("base_models")
        a, b = names[0], names[1]
        self.engine.fast = self.modes["graphed"]
        graphs = self.engine.fast.graphs
        ctx, unc = self.context()
        c = Conditioning(ctx, unc, [])
        self.engine.base_model(b)  # loaded before the timing: the row is about the graphs, not the load

        def step_ms(name):
            sampler = self.sampler(self.args.size, self.args.steps)
            return 1e3 * timed(self.device, lambda: self.engine.generate(name, c, sampler, decode=False)) / self.args.steps

        step_ms(a)  # captures
        captured = graphs.captures
        same, switched = step_ms(a), step_ms(b)
        self.record("graphs_switch/step_ms_same_model", same)
        self.record("graphs_switch/step_ms_after_switch", switched, new_captures=graphs.captures - captured)

    # -- the run
    def run(self) -> dict:
        a, cuda = self.args, self.device.type == "cuda"
        print(f"bench_goals: {a.models} models on {self.device} ({self.engine.dtype}), {a.size}², {a.steps} steps per "
              f"timing, modes {', '.join(self.modes)}, deadline {a.deadline:.0f} s", flush=True)
        t0 = time.perf_counter()
        self.engine.base_model(self.base_name)
        self.context()
        self.rows["build_s"] = {"value": time.perf_counter() - t0}
        wanted = set(a.rows.split(","))
        blocks = [
            ("steps0", "steps 0 ControlNets", 5, lambda: self.steps_rows(0, with_diffusers=not a.no_diffusers)),
            ("seecoder", "SeeCoder", 5, self.seecoder_row),
            ("vae", "VAE decode", 5, self.vae_row),
            ("e2e", "end to end", 10, self.e2e_row),
            ("quick", "quick mode", 10, self.quick_rows),
            ("steps1", "steps 1 ControlNet", 10, lambda: self.steps_rows(1, with_diffusers=not a.quick)),
            ("steps2", "steps 2 ControlNets", 10, lambda: self.steps_rows(2, with_diffusers=not a.quick)),
        ]
        if cuda:
            blocks += [("gpu", "peak memory", 20, self.peak_memory_rows), ("gpu", "8 GB check", 40, self.memory_8gb_row),
                       ("gpu", "base-model switch", 40, self.switch_row)]
            if "graphed" in self.modes:
                blocks.append(("gpu", "CUDA graphs across a base-model switch", 20, self.graphs_switch_row))
        for group, name, need_s, fn in blocks:
            if group in wanted:
                self.guarded(name, need_s, fn)
        return self.result()

    def result(self) -> dict:
        env = {
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor() or cpu_model(),
            "dtype": str(self.engine.dtype), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        }
        return {"models": self.args.models, "size": self.args.size, "steps": self.args.steps, "env": env,
                "rows": self.rows, "notes": self.notes, "goals": goals(self)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def per_round(a: list, b: list) -> dict:
    """The median of the ratios a / b of the same rounds, with every ratio."""
    ratios = [x / y for x, y in zip(a, b)]
    return {"value": statistics.median(ratios), "runs": ratios}


# ----------------------------------------------------------------------------- goals
def goals(b: Bench) -> list:
    """[(goal, figure, verdict)], one per goal of the issue; GPU-only goals on the CPU are "not measured"."""
    rows, cuda, full = b.rows, b.device.type == "cuda", b.args.models == "full"
    v = lambda k: rows.get(k, {}).get("value")  # noqa: E731
    best = "compiled" if "compiled" in b.modes else "fast"
    out = []

    def add(goal, figure, ok, gpu_only=False, needs_full=False):
        if (gpu_only and not cuda) or (needs_full and not full) or ok is None:
            reason = NOT_MEASURED + (" (CUDA only)" if gpu_only and not cuda else
                                     " (needs --models full)" if needs_full and not full else "")
            out.append({"goal": goal, "figure": figure or "-", "verdict": reason})  # the figure, if any, stays shown
        else:
            out.append({"goal": goal, "figure": figure, "verdict": "PASS" if ok else "FAIL"})

    step0 = v(f"step_ms/{best}/0cn")
    enc, dec = v("seecoder_ms"), v(f"vae_decode_ms/{best}")
    e2e = v(f"e2e_s/{best}")
    e2e_steps = rows.get(f"e2e_s/{best}", {}).get("steps")
    projected = (enc + 50 * step0 + dec) / 1e3 if None not in (enc, step0, dec) else None
    if e2e is not None and e2e_steps == 50:
        fig = f"{e2e:.3f} s measured ({best})"
        e2e50 = e2e
    else:
        fig = f"{projected:.3f} s projected from the parts ({best})" if projected is not None else None
        e2e50 = projected
    add(f"50-step {b.args.size}² image end to end <= {GOAL_E2E_S} s", fig,
        None if e2e50 is None else e2e50 <= GOAL_E2E_S, gpu_only=True, needs_full=True)
    add(f"guided UNet step <= {GOAL_STEP_MS} ms", f"{step0:.2f} ms ({best})" if step0 else None,
        None if step0 is None else step0 <= GOAL_STEP_MS, gpu_only=True, needs_full=True)
    for n in (1, 2):
        s = v(f"step_ms/{best}/{n}cn")
        if s is not None and step0:
            per = (s / step0 - 1) / n
            add(f"<= +{GOAL_PER_CONTROLNET:.0%} per ControlNet ({n} ControlNet{'s' if n > 1 else ''})",
                f"+{per:.1%} per ControlNet ({best})", per <= GOAL_PER_CONTROLNET, needs_full=True)
        else:
            add(f"<= +{GOAL_PER_CONTROLNET:.0%} per ControlNet ({n})", None, None)
    if enc is not None and (e2e or projected):
        total = e2e * 1e3 if e2e is not None else projected * 1e3
        share = enc / total
        add(f"SeeCoder <= {GOAL_SEECODER_SHARE:.0%} of an image's time", f"{share:.1%} of {total / 1e3:.3f} s",
            share <= GOAL_SEECODER_SHARE, gpu_only=True, needs_full=True)
    else:
        add(f"SeeCoder <= {GOAL_SEECODER_SHARE:.0%} of an image's time", None, None)
    fits = v("fits_8gb/2cn/512")
    add(f"two ControlNets at 512² fit in {GOAL_MEMORY_GB:.0f} GB", fits, None if fits is None else fits == "fits",
        gpu_only=True, needs_full=True)
    for m in b.modes:
        e, d = v(f"step_ms/{m}/0cn"), v("step_ms/diffusers/0cn")
        ratio = v(f"engine_over_diffusers_per_round/{m}/0cn")  # paired rounds: robust to a drifting load
        add(f"engine ({m}) never slower than bare diffusers (ratio <= {GOAL_ENGINE_RATIO})",
            f"{ratio:.3f}, median of the per-round ratios ({e:.2f} / {d:.2f} ms per step, medians)" if ratio else None,
            None if ratio is None else ratio <= GOAL_ENGINE_RATIO)
    over_eager = v(f"over_eager_per_round/{best}/0cn")
    if over_eager:
        out.append({"goal": f"{best} vs eager, ms per step, median of the per-round ratios (information)",
                    "figure": f"{over_eager:.3f}", "verdict": "-"})
    over_diffusers = v(f"engine_over_diffusers_per_round/{best}/0cn")
    if over_diffusers:
        out.append({"goal": f"{best} vs bare diffusers eager, ms per step, median of the per-round ratios (information)",
                    "figure": f"{over_diffusers:.3f}", "verdict": "-"})
    g = v("graphed_over_fast_per_round/0cn")
    if g:
        out.append({"goal": "graphed vs fast (CUDA graphs of the guided step), ms per step, median of the per-round "
                            "ratios (information)", "figure": f"{g:.3f}", "verdict": "-"})
    same, switched = v("graphs_switch/step_ms_same_model"), v("graphs_switch/step_ms_after_switch")
    if same and switched:
        new = rows["graphs_switch/step_ms_after_switch"].get("new_captures")
        out.append({"goal": "graphed: first run after a base-model switch vs the same model, ms per step (information)",
                    "figure": f"{switched / same:.3f} ({new} new captures)", "verdict": "-"})
    for n in QUICK_INTERVALS:
        q, dev = v(f"quick/ratio/N{n}"), v(f"quick/deviation_max/N{n}")
        if q is not None:
            out.append({"goal": f"quick mode N={n} (approximate) vs exact, ms per step (information)",
                        "figure": f"{q:.3f}; final latents off by {dev:.2%} (max) / "
                                  f"{v(f'quick/deviation_rms/N{n}'):.2%} (rms), relative", "verdict": "-"})
    return out


def markdown(result: dict) -> str:
    env = result["env"]
    lines = [f"{result['models']} models, {env['device']} ({env['device_name']}, {env['dtype']}), "
             f"{result['size']}², {result['steps']} steps per timing, torch {env['torch']}, {env['date']}, "
             f"load average {', '.join(f'{x:.1f}' for x in env['load_average'] or ())}", "",
             "| goal | figure | verdict |", "| --- | --- | --- |"]
    lines += [f"| {g['goal']} | {g['figure']} | {g['verdict']} |" for g in result["goals"]]
    lines += ["", "| row | value |", "| --- | ---: |"]
    for k, r in result["rows"].items():
        val = r["value"]
        lines.append(f"| {k} | {val:.3f} |" if isinstance(val, float) else f"| {k} | {val} |")
    if result["notes"]:
        lines += ["", "Notes: " + "; ".join(result["notes"])]
    return "\n".join(lines)


def child_8gb(args) -> int:
    """Two ControlNets at 512² with the process limited to 8 GB of the GPU (exit 0: it fits)."""
    device = torch.device(args.device)
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, GOAL_MEMORY_GB * GB / total), device)
    b = Bench(argparse.Namespace(**{**vars(args), "size": 512}))
    b.engine.fast = b.modes["fast"]
    ctx, unc = b.context()
    b.engine.generate(b.base_name, Conditioning(ctx, unc, b.controls(2, 512)), b.sampler(512, 2))
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    """The command line, with the defaults that depend on the device filled in."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", choices=["tiny", "full"], default="full")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    p.add_argument("--size", type=int, default=None, help="image side (default 512; tiny: 128)")
    p.add_argument("--steps", type=int, default=None, help="steps per ms/step timing (default 20 on CUDA, 2 on the CPU)")
    p.add_argument("--e2e-steps", type=int, default=None, help="steps of the end-to-end row (default 50 on CUDA, --steps on the CPU)")
    p.add_argument("--quick-steps", type=int, default=None,
                   help="steps of the quick-mode rows (default 6: whole full/reuse cycles of N = 2 and 3)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 5 on CUDA, 1 on the CPU)")
    p.add_argument("--deadline", type=float, default=270.0, help="seconds; optional rows are skipped past it")
    p.add_argument("--no-compile", action="store_true", help="leave the compiled mode out")
    p.add_argument("--quick", action="store_true", help="no diffusers rows with ControlNets")
    p.add_argument("--no-diffusers", action="store_true", help="no bare diffusers rows at all (engine modes only)")
    p.add_argument("--rows", default=",".join(ROW_GROUPS), help=f"row groups to run, of {','.join(ROW_GROUPS)}")
    p.add_argument("--threads", type=int, default=None, help="torch threads on the CPU")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "goals"), help="path without suffix (.json, .md)")
    p.add_argument("--child-8gb", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    args.size = args.size or (512 if args.models == "full" else 128)
    args.steps = args.steps or (20 if cuda else 2)
    args.e2e_steps = args.e2e_steps or (50 if cuda else args.steps)
    args.repeats = args.repeats or (5 if cuda else 1)
    args.quick_steps = args.quick_steps or (24 if cuda else 6)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_8gb:
        return child_8gb(args)
    result = Bench(args).run()
    table = markdown(result)
    print("\n" + table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    out.with_suffix(".md").write_text(table + "\n")
    print(f"\nwrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
