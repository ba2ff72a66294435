"""The training loop of a ``Trainer``: start (resume or a fresh log), the optimizer steps with
their log entries, checkpoints and previews, and the end of the session (final files)."""

from __future__ import annotations

import logging
import time
from typing import Optional

from .checkpoints import load_state, save_seecoder, save_state, start_fresh, write_log
from .config import dump_config
from .data import make_loader
from .latents import precompute_latents
from .previews import sample
from .setup import lr_at
from .step import optimizer_step

logger = logging.getLogger("prompt_free.train")


def begin(tr) -> None:
    """Before the first step: resume or start a fresh log, write the config, fill the cache."""
    acc = tr.accelerator
    if tr.resume_from is not None:
        load_state(tr, tr.resume_from)
        tr.resume_from = None
    elif tr.step == 0 and acc.is_main_process:
        start_fresh(tr)
    if acc.is_main_process:
        (tr.out / "config.yaml").write_text(dump_config(tr.cfg))
    if tr.cache is not None:
        precompute_latents(tr)


def stop_step(tr, max_steps: Optional[int]) -> int:
    """The step this session ends at: the last phase's end, or ``max_steps`` (absolute)."""
    total = tr.cfg.training.total_steps
    return total if max_steps is None else max(tr.step, min(total, max_steps))


def _after_step(tr, result, loss: float, lr: float, stop: int, start_time: float) -> bool:
    """Log, checkpoint and preview after an optimizer step; True when it sampled previews."""
    cfg = tr.cfg
    tr.losses.append(loss)
    result.losses.append(loss)
    if tr.accelerator.is_main_process and (tr.step % cfg.log_interval == 0 or tr.step == stop):
        write_log(tr.out, {
            "step": tr.step,
            "loss": loss,
            "lr": lr,
            "epoch": round(tr.step * cfg.training.gradient_accumulation * tr.world / tr.plan.per_epoch, 4),
            "images": tr.step * tr.effective_batch,
            "seconds": round(time.time() - start_time, 3),
        })
    if tr.step % cfg.checkpoint_interval == 0 and tr.step < cfg.training.total_steps:
        result.seecoder_path = save_seecoder(tr, f"seecoder-step{tr.step}.safetensors")
        result.state_dir = save_state(tr)
    if cfg.samples.interval and tr.step % cfg.samples.interval == 0:
        result.samples += sample(tr)
        return True
    return False


def run(tr, stop: int, result):
    """Optimizer steps up to ``stop``. Returns (start time, start step, the last step that
    sampled previews or None). Interrupted (Ctrl-C), it saves the state of the last
    completed step and re-raises."""
    from tqdm.auto import tqdm

    cfg, t, acc = tr.cfg, tr.cfg.training, tr.accelerator
    accum = t.gradient_accumulation
    loader = make_loader(
        tr.dataset, start=tr.step * accum, count=(stop - tr.step) * accum,
        world=tr.world, rank=tr.rank, num_workers=cfg.data.num_workers,
    )
    batches = iter(loader)
    tr.module.train()
    bar = tqdm(total=stop, initial=tr.step, desc="training SeeCoder", disable=not (cfg.progress and acc.is_local_main_process))
    start_time, start_step = time.time(), tr.step
    sampled_at = None
    try:
        while tr.step < stop:
            lr = lr_at(tr.step, t.phases, t.warmup_steps)
            loss = optimizer_step(tr, batches, lr)
            tr.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            if _after_step(tr, result, loss, lr, stop, start_time):
                sampled_at = tr.step
    except KeyboardInterrupt:
        # Keep what the completed steps learned; a partial accumulation is dropped.
        tr.optimizer.zero_grad(set_to_none=True)
        if tr.step > start_step:
            tr._log(f"interrupted: saving the trainer state at step {tr.step}")
            save_state(tr)
        raise
    finally:
        bar.close()
    return start_time, start_step, sampled_at


def finish(tr, result, start_time: float, start_step: int, sampled_at: Optional[int]) -> None:
    """The session's last SeeCoder file, state and previews, unless a step just wrote them."""
    cfg = tr.cfg
    if tr.step >= cfg.training.total_steps:
        result.seecoder_path = save_seecoder(tr, "seecoder-final.safetensors")
    elif tr.step % cfg.checkpoint_interval != 0 or tr.step == start_step:
        result.seecoder_path = save_seecoder(tr, f"seecoder-step{tr.step}.safetensors")
    if tr.step > start_step and (result.state_dir is None or result.state_dir.name != f"step-{tr.step:07d}"):
        result.state_dir = save_state(tr)
    if sampled_at != tr.step and tr.references:
        result.samples += sample(tr)
    elapsed = time.time() - start_time
    done = tr.step - start_step
    if done:
        tr._log(
            f"{done} step(s) in {elapsed:.1f}s ({done * tr.effective_batch / max(elapsed, 1e-9):.2f} images/s); "
            f"SeeCoder written to {result.seecoder_path}"
        )
    result.step = tr.step
