#!/usr/bin/env bash
# For a session lent a GPU: everything that needs one, as one script (about 9.5 minutes at most).
#   1. the fast path's fp16 parity on CUDA (exact parts and compiled, tiny profile), and the
#      CUDA checks of previews, quick mode, SeeCoder's mask cache, captured step graphs and sync-free
#      steps (tests/unit/test_cuda_paths.py);
#   2. bench_goals.py on the full-size random models (its deadline guard ends it in ~5 minutes;
#      a first run also fills the compile cache, so a second run may give more compiled rows).
# Usage, from the repository root:  bash benchmarks/gpu_goals.sh   (PY=... for another python)
set -u
export HF_HUB_OFFLINE=1
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 150 "$PY" -m pytest -q -p no:cacheprovider tests/unit/test_fast.py -k cuda
echo "parity tests exit code: $?"
timeout 90 "$PY" -m pytest -q -p no:cacheprovider tests/unit/test_cuda_paths.py
echo "cuda path tests exit code: $?"
timeout 330 "$PY" benchmarks/bench_goals.py --models full --device cuda --out benchmarks/results/goals
echo "bench_goals exit code: $?"
