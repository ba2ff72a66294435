"""bf16 at full size (the full-random profile, on the CPU): an engine in bf16 never holds an fp32
copy of its models (peak RSS), and an Image Variation in auto, fp32 and bf16 runs, the bf16 one
finite and within a stated tolerance of fp32."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers.app import ROOT


# A child process: its peak RSS before and after building the full-random models in one
# precision, and the bytes of the models it holds.
_BUILD = """
import json, resource, sys
import torch
from prompt_free.engine import Engine
import diffusers  # imported before the baseline is read
engine = Engine.from_profile("full-random", device="cpu", precision=sys.argv[1], channels_last="off")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
engine.base_model(engine.defaults["base_model"])
engine.seecoder(engine.defaults["seecoder"])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print("RESULT " + json.dumps({"grown": after - before, "models": sum(r["bytes"] for r in engine.memory_report())}))
"""


def _build_in_child(precision: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _BUILD, precision], capture_output=True, text=True, timeout=600,
                          cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.mark.slow
def test_bf16_build_never_holds_an_fp32_copy():
    bf16 = _build_in_child("bf16")
    # UNet + VAE + SeeCoder in bf16: about 2.4 GB. An fp32 copy of any part on the way (SeeCoder
    # built in fp32 and then converted, as before, adds 1.2 GB) would make the peak grow by
    # >= 1.45x the models; built in bf16 it grows by the models and the allocator's slack
    # (measured: 1.0x on an AMD EPYC).
    assert bf16["models"] > 2.2e9
    assert bf16["grown"] <= 1.2 * bf16["models"], bf16


@pytest.mark.slow
def test_full_random_image_variation_in_auto_fp32_and_bf16():
    from prompt_free.engine import Engine
    from prompt_free.tasks import VariationSettings, image_variation

    s = VariationSettings(steps=2, width=256, height=256)
    pictures = {}
    for precision in ("fp32", "bf16", "auto"):
        engine = Engine.from_profile("full-random", device="cpu", precision=precision)
        try:
            assert precision == "auto" or engine.precision == precision
            assert engine.base_model(engine.defaults["base_model"]).unet.dtype == engine.dtype
            pictures[precision] = np.asarray(image_variation(engine, "assets/examples/chelsea.jpg", s).images[0],
                                             dtype=float)
        finally:  # free each engine's models before the next is built (24 GB machines)
            del engine
            gc.collect()
    a, b = pictures["fp32"], pictures["bf16"]
    assert np.isfinite(b).all() and b.std() > 0 and not np.array_equal(a, b)
    # Tolerance: mean |difference| at most 30 of 255 levels (measured: 14.9, max 123, on an AMD
    # EPYC; random full-size weights amplify bf16's rounding far more than trained ones do, and
    # two independent uniform noise pictures differ by about 85 on average).
    diff = np.abs(a - b)
    assert diff.mean() <= 30, (diff.mean(), diff.max())
    auto = pictures["auto"]
    assert np.array_equal(auto, a) or np.array_equal(auto, b)  # auto is one of the two, bit for bit
