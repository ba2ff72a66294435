"""benchmarks/bench_cpu.py runs its whole code path on the tiny profile: every part in fp32 and
bf16 (contiguous and channels_last), the three end-to-end runs in their own processes with peak
RSS and projected times, the goals of issue 19, JSON, Markdown and the README section between
its markers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.app import ROOT


@pytest.mark.slow
def test_tiny_run_writes_every_row_goal_and_the_readme_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# B\n\nbefore\n\n<!-- bench_cpu:begin -->\nold table\n<!-- bench_cpu:end -->\n\nafter\n")
    out = tmp_path / "cpu"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_cpu.py"), "--models", "tiny", "--threads", "1",
         "--steps", "2", "--out", str(out), "--readme", str(readme)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    for part in ("unet", "controlnet", "controlnet_hint", "vae", "taesd", "seecoder"):
        for prec in ("fp32", "bf16"):
            assert result["parts"][f"{part}/{prec}/contiguous"] > 0
            if part != "seecoder":
                assert result["parts"][f"{part}/{prec}/channels_last"] > 0
    e2e = result["e2e"]
    assert set(e2e) == {"today", "paper", "quick"}
    assert e2e["today"]["precision"] == "fp32" and not e2e["today"]["channels_last"]
    assert {e2e[n]["precision"] for n in ("paper", "quick")} == {result["cpu"]["auto_precision"]}
    for name, steps in (("today", 50), ("paper", 50), ("quick", 20)):
        r = e2e[name]
        assert r["peak_rss"] > 100e6 and r["denoise_s"] > 0
        assert r["projected_s"] == pytest.approx(r["total_s"] - r["denoise_s"] + steps * r["denoise_s"] / 2)
    goals = {g["goal"]: g for g in result["goals"]}
    assert any(g.startswith("AMX: UNet step in auto <= 0.40x") for g in goals)
    assert all(g["verdict"] in ("PASS", "FAIL") for name, g in goals.items() if name.startswith("any CPU"))
    md = out.with_suffix(".md").read_text()
    assert "projected from 2 steps" in md and "CPU:" in md and "| goal | figure | verdict |" in md
    text = readme.read_text()
    assert "old table" not in text and md.strip() in text
    assert text.startswith("# B\n\nbefore\n") and text.rstrip().endswith("after")
