"""The VAE latent cache filled before training: every (image, bucket) missing from it is
encoded once, the work split over processes."""

from __future__ import annotations

import torch

from .data import MicroBatchDataset
from .step import encode_moments


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


def precompute_latents(tr) -> int:
    """Encode every (image, bucket) of trainer ``tr`` missing from its cache; returns how
    many this process encoded."""
    from tqdm.auto import tqdm

    acc, cache = tr.accelerator, tr.cache
    todo = [i for i, r in enumerate(tr.records) if not cache.has(r, tr.buckets[tr.bucket_of[i]])]
    mine = todo[tr.rank :: tr.world]
    if todo:
        tr._log(f"caching VAE latents of {len(todo)} image(s) in {cache.folder}")
    groups = {}
    for i in mine:
        groups.setdefault(tr.bucket_of[i], []).append(i)
    bs = tr.cfg.training.batch_size
    jobs = [g[j : j + bs] for g in groups.values() for j in range(0, len(g), bs)]
    loader = torch.utils.data.DataLoader(
        _PixelJobs(tr.dataset, jobs), batch_size=None, num_workers=tr.cfg.data.num_workers, collate_fn=_identity
    )
    bar = tqdm(total=len(mine), desc="caching latents", disable=not (tr.cfg.progress and acc.is_local_main_process and mine))
    for idx, pixels in loader:
        moments = encode_moments(tr.vae, pixels, tr.device)
        for i, m in zip(idx, moments):
            cache.save(tr.records[i], tr.buckets[tr.bucket_of[i]], m)
        bar.update(len(idx))
    bar.close()
    acc.wait_for_everyone()
    return len(mine)
