"""The loss and one optimizer step: eps- (or v-) prediction MSE of the frozen UNet whose
cross-attention context is SeeCoder(reference image), the reference being the target image.

Determinism: micro-batch ``k`` (global index over steps, accumulation and processes) seeds
its own noise, timesteps, dropout mask, latent sample and the in-model dropout from
(seed, k), so a resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .setup import micro_seed


@torch.no_grad()
def encode_moments(vae, pixels: torch.Tensor, device) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> the VAE posterior's (mean, logvar), (B, 2*4, H/8, W/8)."""
    x = pixels.to(device, torch.float32) * 2 - 1
    return vae.encode(x).latent_dist.parameters.float()


# Adapted from diffusers 0.42.1, diffusers/models/autoencoders/vae.py: DiagonalGaussianDistribution.sample
def sample_latents(vae, moments: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A latent drawn from the posterior's moments, scaled as the UNet expects."""
    mean, logvar = moments.float().chunk(2, dim=1)
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    z = mean + std * torch.randn(mean.shape, generator=generator).to(mean.device)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (z - shift) * vae.config.scaling_factor


def compute_loss(tr, batch) -> torch.Tensor:
    """The loss of one micro-batch of trainer ``tr`` (its randomness from the batch's index)."""
    acc, t, device = tr.accelerator, tr.cfg.training, tr.device
    seed = micro_seed(t.seed, 0 if t.fixed_noise else int(batch["index"]))
    torch.manual_seed(seed)  # in-model randomness: decoder dropout, PA jitter
    gen = torch.Generator().manual_seed(seed ^ 0x5DEECE66D)
    pixels = batch["pixels"].to(device, torch.float32)
    B = pixels.shape[0]
    moments = batch.get("moments")
    moments = encode_moments(tr.vae, pixels, device) if moments is None else moments.to(device)
    latents = sample_latents(tr.vae, moments, gen)
    noise = torch.randn(latents.shape, generator=gen).to(device)
    timesteps = torch.randint(0, tr.num_timesteps, (B,), generator=gen).to(device)
    drop = (torch.rand(B, generator=gen) < t.uncond_dropout).to(device)
    noisy = tr.ddpm.add_noise(latents, noise, timesteps)
    target = noise if t.prediction_type == "epsilon" else tr.ddpm.get_velocity(latents, noise, timesteps)
    with acc.autocast():
        cond = tr.module(pixels)
        context = torch.where(drop[:, None, None], tr.uncond.to(cond.dtype), cond)
        pred = tr.unet(noisy.to(tr.weight_dtype), timesteps, encoder_hidden_states=context.to(tr.weight_dtype)).sample
    return F.mse_loss(pred.float(), target.float())


def optimizer_step(tr, batches, lr: float) -> float:
    """One optimizer step of trainer ``tr`` at learning rate ``lr``: its accumulated
    micro-batches from ``batches``; returns the step's loss, averaged over processes."""
    acc, t = tr.accelerator, tr.cfg.training
    for group in tr.optimizer.param_groups:
        group["lr"] = lr
    micro = []
    for _ in range(t.gradient_accumulation):
        batch = next(batches)
        with acc.accumulate(tr.module):
            loss = compute_loss(tr, batch)
            acc.backward(loss)
            if acc.sync_gradients and t.max_grad_norm:
                acc.clip_grad_norm_(tr.params, t.max_grad_norm)
            tr.optimizer.step()
            tr.optimizer.zero_grad(set_to_none=True)
        micro.append(loss.detach())
    return float(acc.reduce(torch.stack(micro).mean(), reduction="mean"))
