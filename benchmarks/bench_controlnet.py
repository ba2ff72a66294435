"""ControlNet in the loop: seconds per denoising step with 0, 1 and 2 ControlNets, through our
engine (``Engine.generate`` of a ``Conditioning`` with ``ControlInput``s, the Reference + ControlNet tab's path)
against a bare diffusers pipeline in the same run: ``StableDiffusionPipeline`` for 0 and
``StableDiffusionControlNetPipeline`` (one ControlNet, or a list: ``MultiControlNetModel``)
for 1 and 2, with ``text_encoder=None`` and ``prompt_embeds`` = the same context.

Both sides get the same UNet and ControlNet modules, the same context (1, 148, C) and zero
unconditional context, guidance 2.0 (classifier-free: batch 2, ControlNets on both halves),
the same DDIM scheduler config, the same initial latents and the same hint maps; the final
latents are compared (``max |d latent|``) to show that the work is the same. VAE decoding is
left out (``decode=False`` / ``output_type="latent"``): only the denoising loop is timed.

Models (``--models``, random weights, nothing downloaded):
  tiny  the tiny profile's UNet and ControlNets (as the offline tests use);
  full  SD 1.5-size UNet (860 M) and ControlNets (361 M each), diffusers default configs,
        random init; fp32 on CPU (about 8 s per UNet step at 512x512 on 2 cores: use
        ``--size 256 --steps 1`` there), fp16 on CUDA.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_controlnet.py --models tiny full --size 256 --steps 1
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_controlnet.py --models full --size 512 --steps 20  # GPU

Writes ``benchmarks/results/controlnet.json`` (git-ignored) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from prompt_free.engine import BaseModel, Engine  # noqa: E402
from prompt_free.formats import SD15_CONTROLNET_CONFIG, SD15_UNET_CONFIG, SD15_VAE_CONFIG  # noqa: E402
from prompt_free.images import image_to_tensor, open_lazy  # noqa: E402
from prompt_free.registry import Registry  # noqa: E402
from prompt_free.conditioning import Conditioning  # noqa: E402
from prompt_free.sampling import ControlInput, Sampler, make_scheduler  # noqa: E402

EXAMPLES = ROOT / "assets" / "examples"
BASE = "Tiny SD"  # the name the models sit under in the engine (tiny profile names)
CONTROLS = ("openpose", "depth")  # ControlNet 1 and 2, with the drawn example maps below
MAPS = ("pose_standing.png", "depth_spheres.png")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_engine(models: str, device: torch.device, dtype: torch.dtype) -> Engine:
    """The tiny-profile engine; for ``full``, SD 1.5-size random models are put into its caches
    under the tiny names (the engine loads nothing from disk then)."""
    engine = Engine(Registry.load(profile="tiny"), device=device, dtype=dtype)
    if models == "full":
        from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

        t0 = time.perf_counter()
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
        vae = AutoencoderKL(**SD15_VAE_CONFIG)
        engine.adopt(("base_models", BASE), BaseModel(BASE, engine.place(unet), engine.place(vae)))
        for i, name in enumerate(CONTROLS):
            torch.manual_seed(100 + i)
            cn = ControlNetModel(**SD15_CONTROLNET_CONFIG)
            with torch.no_grad():  # diffusers zero-inits the zero-convs: give them weights so residuals are real
                for n, p in cn.named_parameters():
                    if n.startswith(("controlnet_down_blocks", "controlnet_mid_block")):
                        p.normal_(0, 0.02)
            engine.adopt(("controlnets", name), engine.place(cn))
        print(f"built SD 1.5-size random UNet, VAE and {len(CONTROLS)} ControlNets in {time.perf_counter() - t0:.1f} s",
              flush=True)
    return engine


def bare_pipeline(base: BaseModel, controlnets: list):
    from diffusers import StableDiffusionControlNetPipeline, StableDiffusionPipeline

    common = dict(vae=base.vae, text_encoder=None, tokenizer=None, unet=base.unet, scheduler=make_scheduler("DDIM"),
                  safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if not controlnets:
        pipe = StableDiffusionPipeline(**common)
    else:
        pipe = StableDiffusionControlNetPipeline(controlnet=controlnets[0] if len(controlnets) == 1 else controlnets, **common)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(args) -> dict:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
        args.dtype or ("fp16" if device.type == "cuda" else "fp32")]
    h, w = (args.size * 2)[:2]
    seed, guidance = 20, 2.0
    rows = []
    for models in args.models:
        engine = build_engine(models, device, dtype)
        base = engine.base_model(BASE)
        nets = [engine.controlnet(n) for n in CONTROLS]
        dim = base.unet.config.cross_attention_dim
        cond = torch.randn(1, 148, dim, generator=torch.Generator().manual_seed(1)).to(device, dtype)
        uncond = torch.zeros_like(cond)
        maps = [open_lazy(EXAMPLES / m).convert("RGB").resize((w, h), Image.BICUBIC) for m in MAPS]
        f = base.vae_scale_factor
        noise = torch.randn((1, 4, h // f, w // f), generator=torch.Generator().manual_seed(seed))

        for n in args.controls:
            inputs = [ControlInput(nets[i], image_to_tensor(maps[i]), 1.0) for i in range(n)]
            pipe = bare_pipeline(base, nets[:n])

            def ours():
                gen = engine.generate(BASE, Conditioning(cond, uncond, inputs),
                                      Sampler(width=w, height=h, seed=seed, steps=args.steps, guidance=guidance),
                                      decode=False)
                return gen.latents

            def theirs():
                kw = dict(prompt_embeds=cond, negative_prompt_embeds=uncond, height=h, width=w,
                          num_inference_steps=args.steps, guidance_scale=guidance, eta=0.0,
                          latents=noise.to(device, dtype), output_type="latent")
                if n:
                    kw.update(image=maps[0] if n == 1 else maps[:n],
                              controlnet_conditioning_scale=1.0 if n == 1 else [1.0] * n)
                with torch.inference_mode():
                    return pipe(**kw).images

            cases = {"ours": ours, "diffusers": theirs}
            times = {k: [] for k in cases}
            out = {}
            for i in range(args.warmup + args.repeats):  # interleaved: machine load hits both alike
                for k, fn in cases.items():
                    sync(device)
                    t0 = time.perf_counter()
                    out[k] = fn()
                    sync(device)
                    if i >= args.warmup:
                        times[k].append(time.perf_counter() - t0)
            step = {k: statistics.median(v) / args.steps for k, v in times.items()}
            best = {k: min(v) / args.steps for k, v in times.items()}
            diff = (out["ours"].float() - out["diffusers"].float()).abs().max().item()
            row = {"models": models, "device": device.type, "dtype": str(dtype).replace("torch.", ""),
                   "size": [h, w], "steps": args.steps, "controlnets": n,
                   "ours_s_per_step": step["ours"], "diffusers_s_per_step": step["diffusers"],
                   "ratio": step["ours"] / step["diffusers"], "max_latent_diff": diff,
                   "ours_best_s_per_step": best["ours"], "diffusers_best_s_per_step": best["diffusers"],
                   "best_ratio": best["ours"] / best["diffusers"],
                   "runs_s": {k: v for k, v in times.items()}}
            rows.append(row)
            print(f"  {models:<5} {device.type:<4} {row['dtype']:<8} {h}x{w} {n} CN: ours {step['ours']:.3f} s/step, "
                  f"diffusers {step['diffusers']:.3f} s/step, ratio {row['ratio']:.3f} (best-of ratio "
                  f"{row['best_ratio']:.3f}), max |d latent| {diff:.2e}",
                  flush=True)
            del pipe
        del engine, base, nets
    return {
        "benchmark": "controlnet",
        "what": "seconds per denoising step (median of timed runs / steps), guidance 2.0, DDIM; ours = "
                "Engine.generate(Conditioning(controls=...)), diffusers = StableDiffusion(ControlNet)Pipeline with prompt_embeds",
        "rows": rows,
        "env": {
            "torch": torch.__version__, "python": platform.python_version(), "cpu_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if device.type == "cuda" else None,
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", choices=["tiny", "full"], default=["tiny", "full"])
    ap.add_argument("--size", type=int, nargs="+", default=[512], help="H [W] (default 512)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--controls", type=int, nargs="+", default=[0, 1, 2], choices=[0, 1, 2])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per case (median reported)")
    ap.add_argument("--device", default=None, help="cpu, cuda (default: cuda when present)")
    ap.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default=None, help="default: fp16 on CUDA, fp32 on CPU")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "controlnet.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print("\n| models | device | dtype | size | ControlNets | ours s/step | diffusers s/step | ratio | best-of ratio "
          "| max abs d latent |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in result["rows"]:
        print(f"| {r['models']} | {r['device']} | {r['dtype']} | {r['size'][0]}x{r['size'][1]} | {r['controlnets']} | "
              f"{r['ours_s_per_step']:.4f} | {r['diffusers_s_per_step']:.4f} | {r['ratio']:.3f} | {r['best_ratio']:.3f} "
              f"| {r['max_latent_diff']:.1e} |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
