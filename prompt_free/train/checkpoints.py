"""Trainer states (save, find, resume), SeeCoder files and the loss log of a run's folder.

A state folder is ``state/step-NNNNNNN`` (accelerate's state and ``trainer.json``, written
last, so a folder with it is complete). States are saved on optimizer-step boundaries;
together with the saved optimizer state this makes a resumed run reproduce an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import List, Optional

from ..errors import ConfigError
from ..seecoder import save_seecoder as write_seecoder

logger = logging.getLogger("prompt_free.train")

LOG_FILE = "train_log.jsonl"
STATE_DIR = "state"
STATE_INFO = "trainer.json"


def state_dirs(out: Path) -> List[Path]:
    """The complete state folders of output folder ``out``, oldest first."""
    root = out / STATE_DIR
    if not root.is_dir():
        return []
    dirs = [d for d in root.glob("step-*") if (d / STATE_INFO).is_file()]
    return sorted(dirs, key=lambda d: int(d.name.split("-")[1]))


def resume_dir(resume: Optional[str], out: Path, log) -> Optional[Path]:
    """The state folder ``resume`` names ('latest' or a folder), or None to start at step 0."""
    if not resume:
        return None
    if resume == "latest":
        dirs = state_dirs(out)
        if not dirs:
            log(f"resume: latest: no trainer state in {out / STATE_DIR}, starting from step 0")
            return None
        return dirs[-1]
    d = Path(resume)
    if not (d / STATE_INFO).is_file():
        raise ConfigError(f"resume '{resume}' is not a trainer state folder (no {STATE_INFO} in it)")
    return d


def _run_settings(tr) -> dict:
    t = tr.cfg.training
    return {"batch_size": t.batch_size, "gradient_accumulation": t.gradient_accumulation, "world": tr.world, "seed": t.seed}


def load_state(tr, d: Path) -> None:
    """Trainer ``tr`` continues from state folder ``d``; log entries after it are dropped."""
    acc = tr.accelerator
    info = json.loads((d / STATE_INFO).read_text())
    diff = {k: (info.get(k), v) for k, v in _run_settings(tr).items() if info.get(k) != v}
    if diff:
        logger.warning(f"resuming with different settings {diff}: the run will not repeat an uninterrupted one exactly")
    acc.load_state(str(d))
    acc.step = 0  # states are saved on optimizer-step boundaries
    tr.step = int(info["step"])
    if acc.is_main_process:
        log = tr.out / LOG_FILE
        if log.is_file():  # drop entries a killed run wrote after this state
            keep = [ln for ln in log.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= tr.step]
            log.write_text("".join(ln + "\n" for ln in keep))
    tr._log(f"resumed from {d} at step {tr.step}")


def save_state(tr) -> Path:
    """The state of trainer ``tr`` at its step; keeps the newest ``keep_states`` folders."""
    acc, t = tr.accelerator, tr.cfg.training
    d = tr.out / STATE_DIR / f"step-{tr.step:07d}"
    acc.wait_for_everyone()
    acc.save_state(str(d))
    if acc.is_main_process:
        micro_done = tr.step * t.gradient_accumulation * tr.world
        info = {
            "step": tr.step,
            **_run_settings(tr),
            "micro_batches_done": micro_done,
            "epoch": micro_done / tr.plan.per_epoch,
            "config": tr.cfg.to_dict(),
        }
        (d / STATE_INFO).write_text(json.dumps(info, indent=1))  # written last: marks the folder complete
        if tr.cfg.keep_states:
            for old in state_dirs(tr.out)[: -tr.cfg.keep_states]:
                shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return d


def save_seecoder(tr, name: str) -> Path:
    """The SeeCoder of trainer ``tr`` as ``name`` in its output folder (main process writes)."""
    path = tr.out / name
    if tr.accelerator.is_main_process:
        write_seecoder(tr.seecoder, path)
    return path


def write_log(out: Path, entry) -> None:
    with open(out / LOG_FILE, "a") as f:
        f.write(json.dumps(entry) + "\n")


def start_fresh(tr) -> None:
    """A run from step 0: warn about an earlier run's states, start a new loss log."""
    if state_dirs(tr.out):
        logger.warning(
            f"{tr.out / STATE_DIR} holds states of an earlier run; this run starts from step 0 (resume is not set) "
            "and its states will sit beside them"
        )
    (tr.out / LOG_FILE).unlink(missing_ok=True)
