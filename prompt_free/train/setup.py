"""What a training run holds, built once: the accelerator, the frozen base model, the SeeCoder
to train with its optimizer, the unconditional context, the noise schedule, the image index.

Only the SeeCoder decoder and query transformer (and, for PA, the position-encoding MLP,
which lives in the query transformer) are trained. The UNet, the VAE and the Swin backbone
are frozen: ``requires_grad`` False, eval mode, not in the optimizer.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import List, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from ..sampling import OFFICIAL_SCHEDULER_CONFIG
from ..seecoder import SeeCoder, load_unconditional_embedding, zero_unconditional
from .data import list_reference_images, load_index, load_reference, save_index, scan_images

logger = logging.getLogger("prompt_free.train")

INDEX_FILE = "data_index.json"
DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class SeeCoderTrainModule(nn.Module):
    """What accelerate wraps (DDP): the SeeCoder, with the frozen backbone run without
    gradients and kept in eval mode whatever ``train()`` is called with."""

    def __init__(self, seecoder: SeeCoder):
        super().__init__()
        self.seecoder = seecoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        s = self.seecoder
        with torch.no_grad():
            feats = s.imencoder(images)
        return s.qtransformer(s.imdecoder(feats))

    def train(self, mode: bool = True):
        super().train(mode)
        self.seecoder.imencoder.eval()
        return self


def lr_at(step: int, phases, warmup_steps: int = 0) -> float:
    """Learning rate of optimizer step ``step`` (0-based): the phase it falls in, with an
    optional linear warm-up over the first ``warmup_steps``."""
    s = step
    lr = phases[-1].lr
    for p in phases:
        if s < p.iterations:
            lr = p.lr
            break
        s -= p.iterations
    if warmup_steps and step < warmup_steps:
        lr *= (step + 1) / warmup_steps
    return lr


def micro_seed(seed: int, k: int) -> int:
    """Seed of global micro-batch ``k``."""
    return (seed * 1_000_003 + k * 7_919 + 12_345) % (2**63 - 1)


def make_accelerator(training, out: Path):
    """Data parallel, gradient accumulation and mixed precision, as the config says."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    return Accelerator(
        gradient_accumulation_steps=training.gradient_accumulation,
        mixed_precision=training.mixed_precision,
        project_config=ProjectConfiguration(project_dir=str(out)),
    )


def freeze_base(unet: nn.Module, vae: nn.Module, device, weight_dtype, gradient_checkpointing: bool):
    """The base model frozen on ``device``: the UNet in the run's weight dtype, the VAE in
    float32 (latents are float32, cached or not)."""
    for m in (unet, vae):
        m.requires_grad_(False)
        m.eval()
    # .half()/.bfloat16() rather than .to(dtype): same cast, without a diffusers warning
    cast = {torch.float16: nn.Module.half, torch.bfloat16: nn.Module.bfloat16, torch.float32: nn.Module.float}
    cast[weight_dtype](unet.to(device))
    vae.to(device).float()
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    return unet, vae


def prepare_seecoder(seecoder: SeeCoder, unet: nn.Module, accelerator, training):
    """(wrapped module, optimizer, trainable parameters, frozen parameters) of the SeeCoder,
    after checking that its width is the UNet's cross-attention width."""
    ctx_dim = getattr(unet.config, "cross_attention_dim", None)
    if ctx_dim is not None and ctx_dim != seecoder.config.out_dim:
        raise ConfigError(
            f"the SeeCoder outputs width {seecoder.config.out_dim} but the UNet's cross-attention expects {ctx_dim}; "
            "check seecoder.size / seecoder.init against base_model"
        )
    seecoder.float().requires_grad_(False)
    params = seecoder.trainable_parameters()
    for p in params:
        p.requires_grad_(True)
    frozen = [p for p in seecoder.parameters() if not p.requires_grad]
    module = SeeCoderTrainModule(seecoder).train()
    t = training
    optimizer = torch.optim.AdamW(
        params,
        lr=lr_at(0, t.phases, t.warmup_steps),
        betas=(t.adam_beta1, t.adam_beta2),
        eps=t.adam_epsilon,
        weight_decay=t.weight_decay,
    )
    module, optimizer = accelerator.prepare(module, optimizer)
    return module, optimizer, params, frozen


def unconditional(spec: str, config) -> torch.Tensor:
    """The context of a dropped reference: zeros, or a saved embedding."""
    if spec == "zeros":
        return zero_unconditional(config)
    return load_unconditional_embedding(spec, config.num_tokens, config.out_dim)


def noise_schedule(prediction_type: str):
    """The DDPM schedule SD was trained with (the official sampler's betas)."""
    from diffusers import DDPMScheduler

    ddpm_keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "clip_sample")
    return DDPMScheduler(**{k: OFFICIAL_SCHEDULER_CONFIG[k] for k in ddpm_keys}, prediction_type=prediction_type)


def image_index(accelerator, data, out: Path, resumed: bool):
    """The run's image records. The main process scans (or, resuming, rereads the index the
    run started with, so the batch order stays) and writes the index; the others read it."""
    path = out / INDEX_FILE
    sources = [str(p) for p in data.paths]
    if accelerator.is_main_process:
        records = load_index(path, sources) if resumed else None
        if records is None:
            records, warnings = scan_images(sources)
            for w in warnings[:20]:
                logger.warning(w)
            if len(warnings) > 20:
                logger.warning(f"... {len(warnings) - 20} more images skipped")
            out.mkdir(parents=True, exist_ok=True)  # only once the data is known to be there
            save_index(path, records, sources)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        records = load_index(path, sources)
    return records


def load_references(samples, buckets) -> List[Tuple[str, torch.Tensor, Tuple[int, int]]]:
    """(name, pixels, bucket) of each held-out reference the previews are made from."""
    refs = []
    for p in list_reference_images(samples.references):
        size = tuple(samples.size) if samples.size else None
        pixels, bucket = load_reference(p, size, buckets)
        refs.append((Path(p).stem, pixels, bucket))
    return refs


def vae_tag(vae: nn.Module, base_name: str) -> str:
    """Names the VAE in the latent cache: config and a weight fingerprint."""
    cfg = json.dumps(dict(vae.config), sort_keys=True, default=str)
    w = vae.encoder.conv_in.weight.detach().double()
    fingerprint = f"{float(w.sum()):.12e}/{float(w.abs().sum()):.12e}"
    return hashlib.sha256(f"{base_name}|{cfg}|{fingerprint}".encode()).hexdigest()[:24]


def describe(tr) -> List[str]:
    """The two lines a run starts its log with: the data's buckets, the model's sizes."""
    t, seecoder_config = tr.cfg.training, tr.seecoder_config
    groups = ", ".join(f"{tr.buckets[b][0]}x{tr.buckets[b][1]}: {len(g)}" for b, g in tr.plan.groups.items())
    return [
        f"{len(tr.records)} images in {len(tr.plan.groups)} bucket(s) " + groups,
        f"SeeCoder{'-PA' if seecoder_config.position_aware else ''}: {sum(p.numel() for p in tr.params):,} trainable, "
        f"{sum(p.numel() for p in tr.frozen_params):,} frozen (backbone); effective batch "
        f"{tr.effective_batch} = {t.batch_size} x {t.gradient_accumulation} accumulation x {tr.world} process(es)",
    ]
