"""Sample previews during training: one PNG per held-out reference, DDIM through
``prompt_free.sampling`` (the same loop the app samples with)."""

from __future__ import annotations

from pathlib import Path
from typing import List

import torch

from ..sampling import denoise, make_scheduler


def _to_png(vae, latents: torch.Tensor, path: Path) -> Path:
    from PIL import Image

    sf = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    x = vae.decode(latents.float() / sf + shift).sample.float()
    x = ((x[0] / 2 + 0.5).clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    Image.fromarray(x).save(path)
    return path


@torch.no_grad()
def sample(tr) -> List[Path]:
    """One PNG per held-out reference of trainer ``tr`` (main process only), in
    ``samples/`` of its output folder, named by step."""
    if not tr.accelerator.is_main_process or not tr.references:
        return []
    sm = tr.cfg.samples
    module = tr.accelerator.unwrap_model(tr.module)
    was_training = module.training
    module.eval()
    out_dir = tr.out / "samples"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        for i, (stem, pixels, bucket) in enumerate(tr.references):
            w, h = tuple(sm.size) if sm.size else bucket
            with tr.accelerator.autocast():
                cond = module.seecoder(pixels[None].to(tr.device)).float()
            g = torch.Generator().manual_seed(sm.seed)
            noise = torch.randn((1, tr.vae.config.latent_channels, h // 8, w // 8), generator=g)
            latents = denoise(
                tr.unet, make_scheduler(sm.scheduler), noise, cond, tr.uncond,
                steps=sm.steps, guidance=sm.guidance, generator=g,
            )
            paths.append(_to_png(tr.vae, latents, out_dir / f"step{tr.step:07d}-{i:02d}-{stem}.png"))
    finally:
        module.train(was_training)
    return paths
