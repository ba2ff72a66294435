"""benchmarks/bench_goals.py runs its whole code path on the tiny profile on the CPU, writes its
table and JSON, marks every GPU-only goal "not measured", and keeps the table past its deadline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.app import ROOT

GPU_ONLY = ("end to end <= 0.4 s", "guided UNet step <= 7.5 ms", "fit in 8 GB", "SeeCoder <= 3%")


def _run(tmp_path, *extra):
    out = tmp_path / "goals"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_goals.py"), "--models", "tiny", "--device", "cpu",
         "--size", "64", "--threads", "1", "--out", str(out), *extra],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, json.loads(out.with_suffix(".json").read_text()), out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_tiny_cpu_run_gives_every_goal_with_gpu_rows_not_measured(tmp_path):
    stdout, result, md = _run(tmp_path, "--quick")
    goals = {g["goal"]: g for g in result["goals"]}
    for key in GPU_ONLY:
        (goal,) = [g for name, g in goals.items() if key in name]
        assert goal["verdict"].startswith("not measured"), goal
    ratios = [g for name, g in goals.items() if name.startswith("engine (")]
    assert {g["goal"].split(")")[0] for g in ratios} == {"engine (eager", "engine (fast"}
    assert all(g["verdict"] in ("PASS", "FAIL") for g in ratios)  # measured on the CPU too
    for row in ("step_ms/eager/0cn", "step_ms/fast/0cn", "step_ms/diffusers/0cn", "step_ms/fast/2cn", "seecoder_ms",
                "vae_decode_ms/fast", "e2e_s/fast"):
        assert result["rows"][row]["value"] > 0, row
    for n in (2, 3):  # quick mode (approximate): faster steps, latents close to the exact ones but not equal
        assert result["rows"][f"quick/ratio/N{n}"]["value"] > 0
        assert 0 < result["rows"][f"quick/deviation_max/N{n}"]["value"] < 0.2
    assert any(g["goal"].startswith("quick mode N=2 (approximate)") for g in result["goals"])
    assert "| goal | figure | verdict |" in stdout and md.startswith("tiny models, cpu")


def test_past_the_deadline_the_rows_are_skipped_and_the_table_stays(tmp_path):
    stdout, result, _ = _run(tmp_path, "--deadline", "0")
    assert "| goal | figure | verdict |" in stdout
    assert not any(k.startswith("step_ms") for k in result["rows"])
    assert any("skipped (deadline)" in n for n in result["notes"])
    assert all(g["verdict"].startswith("not measured") or g["verdict"] == "-" for g in result["goals"])


def test_graphed_rows_run_on_the_cpu_by_substitution():
    """The CUDA-only graphed mode and its base-model-switch row, run here with the uncaptured
    step (``modes_for`` adds the mode on CUDA only): the rows are recorded, the switch needs no
    new capture, and the goal table gives both information lines."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_goals

    from prompt_free.fast import FastPath

    b = bench_goals.Bench(bench_goals.parse_args(["--models", "tiny", "--device", "cpu", "--size", "64"]))
    b.modes["graphed"] = FastPath(graphs=True)
    b.steps_rows(0, with_diffusers=False)
    b.graphs_switch_row()
    assert b.rows["step_ms/graphed/0cn"]["value"] > 0
    assert b.rows["graphs_switch/step_ms_after_switch"]["new_captures"] == 0
    info = [g["goal"] for g in bench_goals.goals(b)]
    assert any(g.startswith("graphed vs fast") for g in info)
    assert any(g.startswith("graphed: first run after a base-model switch") for g in info)
