"""SeeCoder training (paper recipe): eps-prediction MSE of a frozen SD-1.x UNet whose
cross-attention context is SeeCoder(reference image), the reference being the target image.

``Trainer`` holds a run; its jobs live beside it: ``setup`` (accelerator, frozen base model,
SeeCoder and optimizer, data index), ``step`` (the loss, one optimizer step), ``checkpoints``
(states, resume, SeeCoder files, the loss log), ``latents`` (the VAE latent cache),
``previews`` (sample PNGs) and ``loop`` (the steps of a session). Runs through ``accelerate``
(data parallel, gradient accumulation, mixed precision); a resumed run reproduces an
uninterrupted one (see ``step`` and ``checkpoints``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import torch

from ..seecoder import SeeCoder
from .checkpoints import LOG_FILE, STATE_DIR, STATE_INFO  # noqa: F401 (public constants)
from .checkpoints import load_state, resume_dir, save_seecoder, save_state
from .config import TrainConfig
from .data import BatchPlan, LatentCache, MicroBatchDataset, assign_bucket, make_buckets
from .latents import precompute_latents
from .models import BaseModel, build_training_seecoder, resolve_base_model
from .loop import begin, finish, run, stop_step
from .previews import sample
from .setup import DTYPES, INDEX_FILE, SeeCoderTrainModule, lr_at, micro_seed  # noqa: F401 (public names)
from .setup import (
    describe, freeze_base, image_index, load_references, make_accelerator, noise_schedule, prepare_seecoder,
    unconditional, vae_tag,
)
from .step import compute_loss, encode_moments, sample_latents

logger = logging.getLogger("prompt_free.train")


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
        self.cfg = cfg = config.validate()
        t = cfg.training
        self.out = Path(cfg.output_dir)
        self.accelerator = acc = make_accelerator(t, self.out)
        self.world, self.rank = acc.num_processes, acc.process_index
        self.device = acc.device
        self.weight_dtype = DTYPES[t.mixed_precision]
        self.resume_from = self.resume_dir()  # a state folder, or None

        # --- data first: a wrong path fails before any model is loaded
        self.buckets = make_buckets(cfg.data.resolution, cfg.data.buckets, cfg.data.max_aspect, cfg.data.bucket_step)
        self.records = image_index(acc, cfg.data, self.out, resumed=self.resume_from is not None)
        self.bucket_of = [assign_bucket(r.width, r.height, self.buckets) for r in self.records]
        self.plan = BatchPlan(self.bucket_of, t.batch_size, t.seed)
        self.references = load_references(cfg.samples, self.buckets) if acc.is_main_process else []

        # --- the frozen base model and the SeeCoder to train
        base = base or resolve_base_model(cfg.base_model)
        self.base_name = base.name
        self.unet, self.vae = freeze_base(base.unet, base.vae, self.device, self.weight_dtype, t.gradient_checkpointing)
        seecoder = seecoder if seecoder is not None else build_training_seecoder(cfg.seecoder, base.seecoder_config, t.seed)
        self.module, self.optimizer, self.params, self.frozen_params = prepare_seecoder(seecoder, self.unet, acc, t)
        self.seecoder_config = seecoder.config
        self.uncond = unconditional(cfg.seecoder.unconditional, seecoder.config).to(self.device)
        self.ddpm = noise_schedule(t.prediction_type)
        self.num_timesteps = self.ddpm.config.num_train_timesteps

        # --- the micro-batches (the image index and the batch order were made above)
        self.cache = None
        if cfg.data.cache_latents:
            self.cache = LatentCache(cfg.data.cache_dir or self.out / "latent_cache", vae_tag(self.vae, self.base_name))
        self.dataset = MicroBatchDataset(self.records, self.buckets, self.bucket_of, self.plan, self.cache)

        self.step = 0
        self.losses: List[float] = []
        for line in describe(self):
            self._log(line)

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

    # The jobs as methods; each calls the module-level function of the same name (imported above).
    def encode_moments(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> the VAE posterior's (mean, logvar), (B, 2*4, H/8, W/8)."""
        return encode_moments(self.vae, pixels, self.device)

    def sample_latents(self, moments: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return sample_latents(self.vae, moments, generator)

    def compute_loss(self, batch) -> torch.Tensor:
        return compute_loss(self, batch)

    def precompute_latents(self) -> int:
        """Encode every (image, bucket) missing from the cache; returns how many this process encoded."""
        return precompute_latents(self)

    def resume_dir(self) -> Optional[Path]:
        return resume_dir(self.cfg.resume, self.out, self._log)

    def load_state(self, d: Path) -> None:
        load_state(self, d)

    def save_state(self) -> Path:
        return save_state(self)

    def save_seecoder(self, name: str) -> Path:
        return save_seecoder(self, name)

    def sample(self) -> List[Path]:
        """One PNG per held-out reference (main process), DDIM via ``prompt_free.sampling``."""
        return sample(self)

    def train(self, max_steps: Optional[int] = None) -> TrainResult:
        """Train up to the end of the last phase, or only up to optimizer step ``max_steps``
        (absolute; a later ``resume`` continues from there)."""
        result = TrainResult(step=self.step)
        begin(self)
        stop = stop_step(self, max_steps)
        start_time, start_step, sampled_at = run(self, stop, result)
        finish(self, result, start_time, start_step, sampled_at)
        return result


def train(config: TrainConfig, max_steps: Optional[int] = None) -> TrainResult:
    return Trainer(config).train(max_steps=max_steps)
