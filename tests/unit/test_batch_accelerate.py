"""Batch over a folder on several processes with accelerate: each reference is done by exactly
one process, with the file name and pixels of a single-process run.

On a CPU, ``accelerate launch --cpu --num_processes 2`` starts ONE process (accelerate 1.15
takes its single-process launcher with --cpu); ``--multi_gpu --num_processes 2`` starts two
(torchrun underneath; without CUDA each process asks for the CPU backend, gloo:
``prompt_free.cli.processes``).

CPU pixels depend on the number of threads a process uses (torch's reductions), and torchrun
gives each process one (OMP_NUM_THREADS=1), so the single-process run here uses one too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.app import EXAMPLES, ROOT, free_port

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

ARGS = ["--profile", "tiny", "--steps", "2", "--size", "64x64", "--seed", "3"]


def test_two_cpu_processes_write_each_output_once_identical_to_one_process(tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    for name in ("astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"):
        shutil.copy(EXAMPLES / name, refs / name)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "prompt_free", "generate", "--reference-dir", str(refs), *ARGS,
                             "--out", str(tmp_path / "one")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    assert "wrote 4 file(s)" in single.stdout

    accelerate = Path(sys.executable).parent / "accelerate"
    done = subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
         "-m", "prompt_free", "generate", "--reference-dir", str(refs), *ARGS, "--out", str(tmp_path / "two")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=800)
    assert done.returncode == 0, done.stderr[-3000:]
    # two processes, two references each
    assert "process 1/2: wrote 2 file(s)" in done.stdout and "process 2/2: wrote 2 file(s)" in done.stdout, done.stdout

    one = sorted(p.name for p in (tmp_path / "one").iterdir())
    two = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert one == two == ["astronaut-s3.png", "chelsea-s3.png", "coffee-s3.png", "rocket-s3.png"]
    for name in one:
        a, b = Image.open(tmp_path / "one" / name), Image.open(tmp_path / "two" / name)
        assert np.array_equal(np.asarray(a), np.asarray(b)), name
        assert a.info["prompt-free"] == b.info["prompt-free"], name  # the same record too
