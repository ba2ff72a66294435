"""Engine overhead: seconds per image (encode / denoise / decode) for our engine against a bare
diffusers StableDiffusionPipeline call with the same UNet, VAE, steps, size and context, in
the same run.

    python benchmarks/bench_engine.py --models tiny --size 256 --steps 20
    python benchmarks/bench_engine.py --models full --size 256 --steps 2     # SD1.5-size, random weights

Writes benchmarks/results/engine-<models>-<device>.json.
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

from prompt_free.engine import BaseModel, Engine, LoadedSeeCoder  # noqa: E402
from prompt_free.images import open_lazy  # noqa: E402
from prompt_free.registry import Registry  # noqa: E402
from prompt_free.conditioning import Conditioning  # noqa: E402
from prompt_free.sampling import Sampler, make_scheduler  # noqa: E402
from prompt_free.seecoder import SeeCoderConfig, build_seecoder, zero_unconditional  # noqa: E402

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768, attention_head_dim=8,
)
SD15_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=512, scaling_factor=0.18215,
)


def build_engine(models: str, device, dtype) -> Engine:
    engine = Engine(Registry.load(profile="tiny"), device=device, dtype=dtype)
    if models == "full":
        from diffusers import AutoencoderKL, UNet2DConditionModel

        torch.manual_seed(0)
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderKL(**SD15_VAE)
        sc = build_seecoder(SeeCoderConfig(), seed=0)
        # Put the full-size random models into the engine's caches under the tiny names.
        engine.adopt(("base_models", "Tiny SD"), BaseModel("Tiny SD", engine.place(unet), engine.place(vae)))
        sc = engine.place(sc)
        engine.adopt(("seecoders", "SeeCoder"),
                     LoadedSeeCoder("SeeCoder", sc, zero_unconditional(sc.config).to(device, dtype)))
    return engine


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(args):
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    engine = build_engine(args.models, device, dtype)
    base = engine.base_model("Tiny SD")
    ref = open_lazy(ROOT / "assets" / "examples" / "chelsea.jpg").convert("RGB")

    from diffusers import StableDiffusionPipeline

    bare = StableDiffusionPipeline(
        vae=base.vae, text_encoder=None, tokenizer=None, unet=base.unet, scheduler=make_scheduler("DDIM"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    bare.set_progress_bar_config(disable=True)
    rows = {"engine": [], "diffusers": []}
    for rep in range(args.repeats + 1):  # first round is warm-up
        engine._encodings.clear()  # measure the encode every time
        t0 = time.perf_counter()
        cond, uncond = engine.encode_reference(ref, "SeeCoder")
        sync(device)
        t_enc = time.perf_counter() - t0
        gen = engine.generate("Tiny SD", Conditioning(cond, uncond),
                              Sampler(width=args.size, height=args.size, seed=rep, steps=args.steps, guidance=2.0))
        total = t_enc + gen.timings["denoise"] + gen.timings["decode"]
        if rep:
            rows["engine"].append({"encode": t_enc, **gen.timings, "total": total})
        f = base.vae_scale_factor
        latents = torch.randn((1, 4, args.size // f, args.size // f), generator=torch.Generator().manual_seed(rep)).to(device, dtype)
        bare.scheduler = make_scheduler("DDIM")
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = bare(
                prompt_embeds=cond, negative_prompt_embeds=uncond.expand_as(cond), guidance_scale=2.0,
                num_inference_steps=args.steps, height=args.size, width=args.size, latents=latents, output_type="latent",
            ).images
            sync(device)
            t_den = time.perf_counter() - t0
            t0 = time.perf_counter()
            engine.decode(base, out)
            sync(device)
            t_dec = time.perf_counter() - t0
        if rep:
            rows["diffusers"].append({"encode": t_enc, "denoise": t_den, "decode": t_dec, "total": t_enc + t_den + t_dec})
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in rows.items()}
    result = {
        "models": args.models, "device": str(device), "dtype": str(dtype), "size": args.size, "steps": args.steps,
        "threads": torch.get_num_threads(), "median_seconds_per_image": med,
        "denoise_ratio_engine_over_diffusers": med["engine"]["denoise"] / med["diffusers"]["denoise"],
    }
    print(f"{args.models} models, {device} {dtype}, {args.size}x{args.size}, {args.steps} steps, median of {args.repeats}")
    print(f"{'':10s} {'encode':>8s} {'denoise':>8s} {'decode':>8s} {'total':>8s}")
    for k, v in med.items():
        print(f"{k:10s} " + " ".join(f"{v[m]:8.3f}" for m in ("encode", "denoise", "decode", "total")))
    print(f"engine/diffusers denoise ratio: {result['denoise_ratio_engine_over_diffusers']:.3f}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"engine-{args.models}-{device.type}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--models", choices=["tiny", "full"], default="tiny")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default=None)
    run(p.parse_args())
