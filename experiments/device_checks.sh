#!/usr/bin/env bash
# The GPU checks the issues ask for, as one script for a lent GPU machine (not CI); about 10
# minutes on one H100 (each step has its own time limit, so one slow step cannot eat the rest):
#   1. AIS-stage benchmark on VGG16 shapes, n = 120 (every precision mode), 480 and 2000 (exact);
#      at 480 and 2000 the time limit usually stops the CPU-torch baselines after the
#      "ais_jax: exact ... s" lines of the log, which are the figures wanted there.
#   2. EfficientNet-Lite0 whole runs (trunk + per-image and cohort AIS + heatmaps) on synthetic
#      images, n = 120, 480, 2000, --memory_budget_gb=8: stage times, peak RSS, memory plan.
#   3. The float64-free path (AIS_JAX_FLOAT64=0) against float64: VGG16 fc head (random
#      weights, 24 images), and Lite0 on the 92 images when AIS_JAX_K92 points at their folder.
#   4. Map selection with 40 splits (5 folds x 8 seeds) on 480 synthetic images.
#   5. The engine / float64-free / selection / rsa tests on the GPU backend.
# Usage: bash experiments/device_checks.sh OUT_DIR   (writes *.json and logs there)
set -uo pipefail
out="${1:-${OUT:-/tmp/ais_device}}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
step() {  # step NAME SECONDS COMMAND...: time-limited, logged, never stops the script
  local name="$1" limit="$2"; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "$name: exit $? in $(( $(date +%s) - t0 )) s" | tee -a "$out/steps.txt"
  tail -n 4 "$out/$name.log"
}
python -m pip install -q -e '.[test]' 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -c "import jax; print(jax.devices())" | tee -a "$out/gpu.txt"

step vgg_n120 90 python -m experiments.benchmark --n=120 --modes=exact,float32,fast \
    --a_budget_s=20 --out="$out/bench_vgg_n120.json"
step vgg_n480 90 python -m experiments.benchmark --n=480 --modes=exact --a_budget_s=10 \
    --end_to_end=false --memory_budget_gb=16 --out="$out/bench_vgg_n480.json"
step vgg_n2000 150 python -m experiments.benchmark --n=2000 --modes=exact --a_budget_s=10 \
    --end_to_end=false --memory_budget_gb=32 --out="$out/bench_vgg_n2000.json"
for n in 120 480 2000; do
  step "lite0_n$n" 120 python -m experiments.benchmark --task=cohort --n=$n \
      --memory_budget_gb=8 --out="$out/lite0_n$n.json"
done
step float64_free 90 python -m experiments.benchmark --task=float64_free --n=24 \
    --out="$out/float64_free.json"
step selection_40 120 python -c "
import sys, tempfile, subprocess
from experiments import benchmark
d = tempfile.mkdtemp()
images, human = benchmark.synthetic_cohort(480, 0, d)
sys.exit(subprocess.call([sys.executable, '-m', 'experiments.selection',
    '--weights=efficientnet_lite0_imagenet', '--images=' + images, '--human=' + human,
    '--human_kind=similarity', '--folds=5', '--seeds=8', '--out=$out/selection_40']))"
step tests 150 python -m pytest -q -x tests/test_rsa.py tests/test_ais_engine.py \
    tests/test_float64_free.py tests/test_selection.py
cat "$out/steps.txt"
