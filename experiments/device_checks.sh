#!/usr/bin/env bash
# The GPU checks the issues ask for, as one script for a lent GPU machine (not CI):
#   the AIS-stage benchmark at n = 120 on VGG16 shapes in every precision mode (issue 5: `exact`
#   under 0.1 s steady state), and the engine/selection/rsa tests on the GPU backend.
# Usage: bash experiments/device_checks.sh OUT_DIR   (writes bench_gpu.json and logs there)
set -uo pipefail
out="${1:-${OUT:-/tmp/ais_device}}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python -m pip install -q -e '.[test]' 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -c "import jax; print(jax.devices())" | tee -a "$out/gpu.txt"
python -m experiments.benchmark --n=120 --modes=exact,float32,fast --a_budget_s=60 \
    --out="$out/bench_gpu.json" 2>&1 | tee "$out/bench.log"
python -m pytest -q -x tests/test_rsa.py tests/test_ais_engine.py tests/test_selection.py \
    2>&1 | tee "$out/tests_gpu.log" | tail -3
