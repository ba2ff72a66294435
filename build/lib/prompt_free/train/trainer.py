"""SeeCoder training (paper recipe): eps-prediction MSE of a frozen SD-1.x UNet whose
cross-attention context is SeeCoder(reference image), the reference being the target image.

Only the SeeCoder decoder and query transformer (and, for PA, the position-encoding MLP,
which lives in the query transformer) are trained. The UNet, the VAE and the Swin backbone
are frozen: ``requires_grad`` False, eval mode, not in the optimizer. Runs through
``accelerate`` (data parallel, gradient accumulation, mixed precision).

Determinism: micro-batch ``k`` (global index over steps, accumulation and processes) reads
the plan's batch ``k`` and seeds its own noise, timesteps, dropout mask, latent sample and
the in-model dropout from (seed, k). Together with the saved optimizer state this makes a
resumed run reproduce an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..sampling import OFFICIAL_SCHEDULER_CONFIG, denoise, make_scheduler
from ..seecoder import SeeCoder, load_unconditional_embedding, save_seecoder, zero_unconditional
from .config import TrainConfig, dump_config
from .data import (
    BatchPlan,
    LatentCache,
    MicroBatchDataset,
    assign_bucket,
    list_reference_images,
    load_index,
    load_reference,
    make_buckets,
    make_loader,
    save_index,
    scan_images,
)
from .models import BaseModel, build_training_seecoder, resolve_base_model

logger = logging.getLogger("prompt_free.train")

LOG_FILE = "train_log.jsonl"
STATE_DIR = "state"
STATE_INFO = "trainer.json"
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


@dataclass
class TrainResult:
    step: int
    losses: List[float] = field(default_factory=list)  # per optimizer step (this session)
    seecoder_path: Optional[Path] = None  # the last SeeCoder file written
    state_dir: Optional[Path] = None  # the last trainer state written
    samples: List[Path] = field(default_factory=list)


class Trainer:
    """``Trainer(config).train()``. ``base`` / ``seecoder`` may be given to skip building
    them from the config (benchmarks, tests)."""

    def __init__(self, config: TrainConfig, *, base: Optional[BaseModel] = None, seecoder: Optional[SeeCoder] = None):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration
        from diffusers import DDPMScheduler

        self.cfg = cfg = config.validate()
        t = cfg.training
        self.out = Path(cfg.output_dir)
        self.accelerator = acc = Accelerator(
            gradient_accumulation_steps=t.gradient_accumulation,
            mixed_precision=t.mixed_precision,
            project_config=ProjectConfiguration(project_dir=str(self.out)),
        )
        self.world, self.rank = acc.num_processes, acc.process_index
        self.device = acc.device
        self.weight_dtype = DTYPES[t.mixed_precision]
        self.resume_from = self.resume_dir()  # a state folder, or None

        # --- data first: a wrong path fails before any model is loaded
        self.buckets = make_buckets(cfg.data.resolution, cfg.data.buckets, cfg.data.max_aspect, cfg.data.bucket_step)
        self.records = self._image_index()
        self.bucket_of = [assign_bucket(r.width, r.height, self.buckets) for r in self.records]
        self.plan = BatchPlan(self.bucket_of, t.batch_size, t.seed)
        self.references = self._load_references() if acc.is_main_process else []

        # --- frozen base model
        base = base or resolve_base_model(cfg.base_model)
        self.base_name = base.name
        self.unet, self.vae = base.unet, base.vae
        for m in (self.unet, self.vae):
            m.requires_grad_(False)
            m.eval()
        # .half()/.bfloat16() rather than .to(dtype): same cast, without a diffusers warning
        cast = {torch.float16: nn.Module.half, torch.bfloat16: nn.Module.bfloat16, torch.float32: nn.Module.float}
        cast[self.weight_dtype](self.unet.to(self.device))
        self.vae.to(self.device).float()  # latents in float32 (cached or not)
        if t.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()

        # --- the SeeCoder to train
        seecoder = seecoder if seecoder is not None else build_training_seecoder(cfg.seecoder, base.seecoder_config, t.seed)
        ctx_dim = getattr(self.unet.config, "cross_attention_dim", None)
        if ctx_dim is not None and ctx_dim != seecoder.config.out_dim:
            raise ConfigError(
                f"the SeeCoder outputs width {seecoder.config.out_dim} but the UNet's cross-attention expects {ctx_dim}; "
                "check seecoder.size / seecoder.init against base_model"
            )
        seecoder.float().requires_grad_(False)
        self.params = seecoder.trainable_parameters()
        for p in self.params:
            p.requires_grad_(True)
        self.frozen_params = [p for p in seecoder.parameters() if not p.requires_grad]
        self.module = SeeCoderTrainModule(seecoder).train()
        optimizer = torch.optim.AdamW(
            self.params,
            lr=lr_at(0, t.phases, t.warmup_steps),
            betas=(t.adam_beta1, t.adam_beta2),
            eps=t.adam_epsilon,
            weight_decay=t.weight_decay,
        )
        self.module, self.optimizer = acc.prepare(self.module, optimizer)
        self.seecoder_config = seecoder.config

        if cfg.seecoder.unconditional == "zeros":
            uncond = zero_unconditional(seecoder.config)
        else:
            uncond = load_unconditional_embedding(cfg.seecoder.unconditional, seecoder.config.num_tokens, seecoder.config.out_dim)
        self.uncond = uncond.to(self.device)

        ddpm_keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "clip_sample")
        self.ddpm = DDPMScheduler(**{k: OFFICIAL_SCHEDULER_CONFIG[k] for k in ddpm_keys}, prediction_type=t.prediction_type)
        self.num_timesteps = OFFICIAL_SCHEDULER_CONFIG["num_train_timesteps"]

        # --- data (the image index and the batch order were made above)
        self.cache = None
        if cfg.data.cache_latents:
            self.cache = LatentCache(cfg.data.cache_dir or self.out / "latent_cache", self._vae_tag())
        self.dataset = MicroBatchDataset(self.records, self.buckets, self.bucket_of, self.plan, self.cache)

        self.step = 0
        self.losses: List[float] = []
        self._log(
            f"{len(self.records)} images in {len(self.plan.groups)} bucket(s) "
            + ", ".join(f"{self.buckets[b][0]}x{self.buckets[b][1]}: {len(g)}" for b, g in self.plan.groups.items())
        )
        self._log(
            f"SeeCoder{'-PA' if seecoder.config.position_aware else ''}: {sum(p.numel() for p in self.params):,} trainable, "
            f"{sum(p.numel() for p in self.frozen_params):,} frozen (backbone); effective batch "
            f"{self.effective_batch} = {t.batch_size} x {t.gradient_accumulation} accumulation x {self.world} process(es)"
        )

    # ------------------------------------------------------------------ helpers
    @property
    def effective_batch(self) -> int:
        t = self.cfg.training
        return t.batch_size * t.gradient_accumulation * self.world

    @property
    def seecoder(self) -> SeeCoder:
        return self.accelerator.unwrap_model(self.module).seecoder

    def _log(self, msg: str) -> None:
        if self.accelerator.is_main_process:
            logger.info(msg)

    def _image_index(self):
        acc, d = self.accelerator, self.cfg.data
        path = self.out / INDEX_FILE
        sources = [str(p) for p in d.paths]
        if acc.is_main_process:
            # A resumed run keeps the image list (and so the batch order) it started with.
            records = load_index(path, sources) if self.resume_from is not None else None
            if records is None:
                records, warnings = scan_images(sources)
                for w in warnings[:20]:
                    logger.warning(w)
                if len(warnings) > 20:
                    logger.warning(f"... {len(warnings) - 20} more images skipped")
                self.out.mkdir(parents=True, exist_ok=True)  # only once the data is known to be there
                save_index(path, records, sources)
        acc.wait_for_everyone()
        if not acc.is_main_process:
            records = load_index(path, sources)
        return records

    def _vae_tag(self) -> str:
        import hashlib

        cfg = json.dumps(dict(self.vae.config), sort_keys=True, default=str)
        w = self.vae.encoder.conv_in.weight.detach().double()
        fingerprint = f"{float(w.sum()):.12e}/{float(w.abs().sum()):.12e}"
        return hashlib.sha256(f"{self.base_name}|{cfg}|{fingerprint}".encode()).hexdigest()[:24]

    def _load_references(self):
        sm = self.cfg.samples
        refs = []
        for p in list_reference_images(sm.references):
            size = tuple(sm.size) if sm.size else None
            pixels, bucket = load_reference(p, size, self.buckets)
            refs.append((Path(p).stem, pixels, bucket))
        return refs

    # ------------------------------------------------------------------ the loss
    @torch.no_grad()
    def encode_moments(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> the VAE posterior's (mean, logvar), (B, 2*4, H/8, W/8)."""
        x = pixels.to(self.device, torch.float32) * 2 - 1
        return self.vae.encode(x).latent_dist.parameters.float()

    def sample_latents(self, moments: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mean, logvar = moments.float().chunk(2, dim=1)
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        z = mean + std * torch.randn(mean.shape, generator=generator).to(mean.device)
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return (z - shift) * self.vae.config.scaling_factor

    def compute_loss(self, batch) -> torch.Tensor:
        acc, t = self.accelerator, self.cfg.training
        seed = micro_seed(t.seed, 0 if t.fixed_noise else int(batch["index"]))
        torch.manual_seed(seed)  # in-model randomness: decoder dropout, PA jitter
        gen = torch.Generator().manual_seed(seed ^ 0x5DEECE66D)
        pixels = batch["pixels"].to(self.device, torch.float32)
        B = pixels.shape[0]
        moments = batch.get("moments")
        moments = self.encode_moments(pixels) if moments is None else moments.to(self.device)
        latents = self.sample_latents(moments, gen)
        noise = torch.randn(latents.shape, generator=gen).to(self.device)
        timesteps = torch.randint(0, self.num_timesteps, (B,), generator=gen).to(self.device)
        drop = (torch.rand(B, generator=gen) < t.uncond_dropout).to(self.device)
        noisy = self.ddpm.add_noise(latents, noise, timesteps)
        target = noise if t.prediction_type == "epsilon" else self.ddpm.get_velocity(latents, noise, timesteps)
        with acc.autocast():
            cond = self.module(pixels)
            context = torch.where(drop[:, None, None], self.uncond.to(cond.dtype), cond)
            pred = self.unet(
                noisy.to(self.weight_dtype), timesteps, encoder_hidden_states=context.to(self.weight_dtype)
            ).sample
        return F.mse_loss(pred.float(), target.float())

    # ------------------------------------------------------------------ latent cache
    def precompute_latents(self) -> int:
        """Encode every (image, bucket) missing from the cache; returns how many this process
        encoded. Work is split over processes."""
        acc, cache = self.accelerator, self.cache
        todo = [i for i, r in enumerate(self.records) if not cache.has(r, self.buckets[self.bucket_of[i]])]
        mine = todo[self.rank :: self.world]
        if todo:
            self._log(f"caching VAE latents of {len(todo)} image(s) in {cache.folder}")
        groups = {}
        for i in mine:
            groups.setdefault(self.bucket_of[i], []).append(i)
        bs = self.cfg.training.batch_size
        jobs = [g[j : j + bs] for g in groups.values() for j in range(0, len(g), bs)]
        loader = torch.utils.data.DataLoader(
            _PixelJobs(self.dataset, jobs), batch_size=None, num_workers=self.cfg.data.num_workers, collate_fn=_identity
        )
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mine), desc="caching latents", disable=not (self.cfg.progress and acc.is_local_main_process and mine))
        for idx, pixels in loader:
            moments = self.encode_moments(pixels)
            for i, m in zip(idx, moments):
                cache.save(self.records[i], self.buckets[self.bucket_of[i]], m)
            bar.update(len(idx))
        bar.close()
        acc.wait_for_everyone()
        return len(mine)

    # ------------------------------------------------------------------ checkpoints
    def _state_dirs(self) -> List[Path]:
        root = self.out / STATE_DIR
        if not root.is_dir():
            return []
        dirs = [d for d in root.glob("step-*") if (d / STATE_INFO).is_file()]
        return sorted(dirs, key=lambda d: int(d.name.split("-")[1]))

    def resume_dir(self) -> Optional[Path]:
        r = self.cfg.resume
        if not r:
            return None
        if r == "latest":
            dirs = self._state_dirs()
            if not dirs:
                self._log(f"resume: latest: no trainer state in {self.out / STATE_DIR}, starting from step 0")
                return None
            return dirs[-1]
        d = Path(r)
        if not (d / STATE_INFO).is_file():
            raise ConfigError(f"resume '{r}' is not a trainer state folder (no {STATE_INFO} in it)")
        return d

    def load_state(self, d: Path) -> None:
        acc, t = self.accelerator, self.cfg.training
        info = json.loads((d / STATE_INFO).read_text())
        now = {"batch_size": t.batch_size, "gradient_accumulation": t.gradient_accumulation, "world": self.world, "seed": t.seed}
        diff = {k: (info.get(k), v) for k, v in now.items() if info.get(k) != v}
        if diff:
            logger.warning(f"resuming with different settings {diff}: the run will not repeat an uninterrupted one exactly")
        acc.load_state(str(d))
        acc.step = 0  # states are saved on optimizer-step boundaries
        self.step = int(info["step"])
        if acc.is_main_process:
            log = self.out / LOG_FILE
            if log.is_file():  # drop entries a killed run wrote after this state
                keep = [ln for ln in log.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= self.step]
                log.write_text("".join(ln + "\n" for ln in keep))
        self._log(f"resumed from {d} at step {self.step}")

    def save_state(self) -> Path:
        acc, t = self.accelerator, self.cfg.training
        d = self.out / STATE_DIR / f"step-{self.step:07d}"
        acc.wait_for_everyone()
        acc.save_state(str(d))
        if acc.is_main_process:
            info = {
                "step": self.step,
                "batch_size": t.batch_size,
                "gradient_accumulation": t.gradient_accumulation,
                "world": self.world,
                "seed": t.seed,
                "micro_batches_done": self.step * t.gradient_accumulation * self.world,
                "epoch": self.step * t.gradient_accumulation * self.world / self.plan.per_epoch,
                "config": self.cfg.to_dict(),
            }
            (d / STATE_INFO).write_text(json.dumps(info, indent=1))  # written last: marks the folder complete
            if self.cfg.keep_states:
                for old in self._state_dirs()[: -self.cfg.keep_states]:
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return d

    def save_seecoder(self, name: str) -> Path:
        path = self.out / name
        if self.accelerator.is_main_process:
            save_seecoder(self.seecoder, path)
        return path

    # ------------------------------------------------------------------ previews
    @torch.no_grad()
    def sample(self) -> List[Path]:
        """One PNG per held-out reference (main process), DDIM via ``prompt_free.sampling``."""
        if not self.accelerator.is_main_process or not self.references:
            return []
        sm = self.cfg.samples
        module = self.accelerator.unwrap_model(self.module)
        was_training = module.training
        module.eval()
        out_dir = self.out / "samples"
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        sf = self.vae.config.scaling_factor
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        try:
            for i, (stem, pixels, bucket) in enumerate(self.references):
                w, h = tuple(sm.size) if sm.size else bucket
                with self.accelerator.autocast():
                    cond = module.seecoder(pixels[None].to(self.device)).float()
                g = torch.Generator().manual_seed(sm.seed)
                noise = torch.randn((1, self.vae.config.latent_channels, h // 8, w // 8), generator=g)
                latents = denoise(
                    self.unet, make_scheduler(sm.scheduler), noise, cond, self.uncond,
                    steps=sm.steps, guidance=sm.guidance, generator=g,
                )
                x = self.vae.decode(latents.float() / sf + shift).sample.float()
                x = ((x[0] / 2 + 0.5).clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
                from PIL import Image

                p = out_dir / f"step{self.step:07d}-{i:02d}-{stem}.png"
                Image.fromarray(x).save(p)
                paths.append(p)
        finally:
            module.train(was_training)
        return paths

    # ------------------------------------------------------------------ the loop
    def _write_log(self, entry) -> None:
        with open(self.out / LOG_FILE, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def train(self, max_steps: Optional[int] = None) -> TrainResult:
        """Train up to the end of the last phase, or only up to optimizer step ``max_steps``
        (absolute; a later ``resume`` continues from there)."""
        from tqdm.auto import tqdm

        acc, cfg, t = self.accelerator, self.cfg, self.cfg.training
        result = TrainResult(step=self.step)
        if self.resume_from is not None:
            self.load_state(self.resume_from)
            self.resume_from = None
        elif self.step == 0 and acc.is_main_process:
            if self._state_dirs():
                logger.warning(
                    f"{self.out / STATE_DIR} holds states of an earlier run; this run starts from step 0 (resume is not set) "
                    "and its states will sit beside them"
                )
            (self.out / LOG_FILE).unlink(missing_ok=True)  # a fresh run starts a fresh loss log
        if acc.is_main_process:
            (self.out / "config.yaml").write_text(dump_config(cfg))
        if self.cache is not None:
            self.precompute_latents()

        total = t.total_steps
        stop = total if max_steps is None else max(self.step, min(total, max_steps))
        accum = t.gradient_accumulation
        loader = make_loader(
            self.dataset, start=self.step * accum, count=(stop - self.step) * accum,
            world=self.world, rank=self.rank, num_workers=cfg.data.num_workers,
        )
        batches = iter(loader)
        self.module.train()
        bar = tqdm(total=stop, initial=self.step, desc="training SeeCoder", disable=not (cfg.progress and acc.is_local_main_process))
        start_time, start_step = time.time(), self.step
        sampled_at = None
        try:
            while self.step < stop:
                lr = lr_at(self.step, t.phases, t.warmup_steps)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                micro = []
                for _ in range(accum):
                    batch = next(batches)
                    with acc.accumulate(self.module):
                        loss = self.compute_loss(batch)
                        acc.backward(loss)
                        if acc.sync_gradients and t.max_grad_norm:
                            acc.clip_grad_norm_(self.params, t.max_grad_norm)
                        self.optimizer.step()
                        self.optimizer.zero_grad(set_to_none=True)
                    micro.append(loss.detach())
                self.step += 1
                loss_value = float(acc.reduce(torch.stack(micro).mean(), reduction="mean"))
                self.losses.append(loss_value)
                result.losses.append(loss_value)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
                if acc.is_main_process and (self.step % cfg.log_interval == 0 or self.step == stop):
                    self._write_log({
                        "step": self.step,
                        "loss": loss_value,
                        "lr": lr,
                        "epoch": round(self.step * accum * self.world / self.plan.per_epoch, 4),
                        "images": self.step * self.effective_batch,
                        "seconds": round(time.time() - start_time, 3),
                    })
                if self.step % cfg.checkpoint_interval == 0 and self.step < total:
                    result.seecoder_path = self.save_seecoder(f"seecoder-step{self.step}.safetensors")
                    result.state_dir = self.save_state()
                if cfg.samples.interval and self.step % cfg.samples.interval == 0:
                    result.samples += self.sample()
                    sampled_at = self.step
        except KeyboardInterrupt:
            # Keep what the completed steps learned; a partial accumulation is dropped.
            self.optimizer.zero_grad(set_to_none=True)
            if self.step > start_step:
                self._log(f"interrupted: saving the trainer state at step {self.step}")
                self.save_state()
            raise
        finally:
            bar.close()

        if self.step >= total:
            result.seecoder_path = self.save_seecoder("seecoder-final.safetensors")
        elif self.step % cfg.checkpoint_interval != 0 or self.step == start_step:
            result.seecoder_path = self.save_seecoder(f"seecoder-step{self.step}.safetensors")
        if self.step > start_step and (result.state_dir is None or result.state_dir.name != f"step-{self.step:07d}"):
            result.state_dir = self.save_state()
        if sampled_at != self.step and self.references:
            result.samples += self.sample()
        elapsed = time.time() - start_time
        done = self.step - start_step
        if done:
            self._log(
                f"{done} step(s) in {elapsed:.1f}s ({done * self.effective_batch / max(elapsed, 1e-9):.2f} images/s); "
                f"SeeCoder written to {result.seecoder_path}"
            )
        result.step = self.step
        return result


class _PixelJobs(torch.utils.data.Dataset):
    def __init__(self, dataset: MicroBatchDataset, jobs):
        self.dataset, self.jobs = dataset, jobs

    def __len__(self):
        return len(self.jobs)

    def __getitem__(self, j):
        idx = self.jobs[j]
        return idx, torch.stack([self.dataset.load_pixels(i) for i in idx])


def _identity(x):
    return x


def train(config: TrainConfig, max_steps: Optional[int] = None) -> TrainResult:
    return Trainer(config).train(max_steps=max_steps)
