#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut (a benchmark-like check, not part of CI).
#
#   pip install mutmut==3.8.1
#   bash experiments/mutation.sh stats            # one module
#   bash experiments/mutation.sh all              # every module in the table below
#   bash experiments/mutation.sh heatmaps 'ais_jax.heatmaps.x_overlay__mutmut_*'
#                                  # only these mutants (after adding tests for a run's survivors);
#                                  # written to <module>.rerun.txt (then .rerun2.txt, ...), the full run's file is kept
#   MUTATION_TIME_LIMIT=1800 bash experiments/mutation.sh saliency
#                                  # stop after 30 min; unfinished mutants count as "not checked"
#   MUTMUT_CHILDREN=2 MUTATION_WORKDIR=/tmp/mut bash experiments/mutation.sh ais ...
#                                  # two workers; the clone in /tmp/mut/repo (removed at the end)
#                                  # answers `mutmut results` while the run goes on (cheapest first)
#
# Each run works in a fresh clone of the current commit under $TMPDIR (the working tree is never
# touched), mutates one module, runs the tests listed for it against every mutant (mutmut runs only
# the tests that reach the mutated function) and prints the killed/survived counts and every
# survivor's (and timeout's) diff to experiments/mutation_results/<module>.txt. BUILD.md gives the last counts,
# the time each module takes and the survivors judged equivalent.
# Workers fork from mutmut's fork server, which has only collected the tests: forking the main
# process after the clean run (mutmut's default) deadlocks any test that runs JAX (XLA's threads),
# and every such mutant would be reported as a timeout.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
shared="${AIS_JAX_SHARED:-$(dirname "$repo")/shared}"
results="$repo/experiments/mutation_results"

# module -> the test files that check it
declare -A TESTS=(
  [rsa]="tests/test_rsa.py tests/test_undefined_rule.py tests/test_float64_free.py tests/test_rsa_mutants.py"
  [ais]="tests/test_ais_mutants.py"
  [ablation]="tests/test_ablation_mutants.py"
  [selection]="tests/test_selection.py tests/test_stats.py tests/test_selection_mutants.py"
  [stats]="tests/test_stats.py"
  [saliency]="tests/test_saliency.py tests/test_saliency_mutants.py"
  [heatmaps]="tests/test_heatmaps.py"
  [aim2]="tests/test_aim2.py tests/test_undefined_rule.py tests/test_aim2_mutants.py"
  [validation]="tests/test_io.py tests/test_rsa.py tests/test_bad_inputs.py tests/test_validation_mutants.py"
  [io/human]="tests/test_io.py tests/test_kriegeskorte92.py tests/test_bad_inputs.py tests/test_human_mutants.py"
  [io/pth]="tests/test_pth_reader.py tests/test_unpickler_attacks.py tests/test_pth_mutants.py"
)

run_one() {
  local module="$1"
  shift
  local tests="${TESTS[$module]:?unknown module $module; one of: ${!TESTS[*]}}"
  local work="${MUTATION_WORKDIR:-$(mktemp -d)}"
  mkdir -p "$work"
  git clone -q "$repo" "$work/repo"
  cd "$work/repo"
  cat >> pyproject.toml <<EOF

[tool.mutmut]
source_paths = ["ais_jax/"]
also_copy = ["convert/", "experiments/", "weights/"]
only_mutate = ["ais_jax/$module.py"]
pytest_add_cli_args_test_selection = [$(printf '"%s", ' $tests)]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q"]
process_isolation = "forkserver"
EOF
  local start=$SECONDS
  # JAX's persistent compilation cache, shared by the clean run and every mutant's worker: a
  # worker recompiles only what its mutant changed (the key is the compiled program itself, so a
  # mutant can never reuse the original's executable). 2-3x faster on the compile-heavy tests.
  export JAX_COMPILATION_CACHE_DIR="$work/jax_cache" JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=-1
  AIS_JAX_SHARED="$shared" ${MUTATION_TIME_LIMIT:+timeout "$MUTATION_TIME_LIMIT"} \
    mutmut run --max-children "${MUTMUT_CHILDREN:-1}" "$@" >/dev/null 2>&1 || true
  mkdir -p "$results/$(dirname "$module")"
  local out="$results/$module.txt"
  if [[ $# -gt 0 ]]; then  # a rerun never overwrites an earlier one: .rerun.txt, .rerun2.txt, ...
    out="$results/$module.rerun.txt"
    local k=2  # claimed with noclobber, so two runs ending together never share a file
    while ! (set -C; : > "$out") 2>/dev/null; do out="$results/$module.rerun$k.txt"; k=$((k + 1)); done
  fi
  {
    echo "# mutmut on ais_jax/$module.py ($(git rev-parse --short HEAD)), tests: $tests${1:+, mutants: $*}"
    echo "# $((SECONDS - start)) s on $(nproc) cores"
    AIS_JAX_SHARED="$shared" mutmut results --all true 2>/dev/null | awk -F': ' '{print $2}' | sort | uniq -c
    for m in $(AIS_JAX_SHARED="$shared" mutmut results 2>/dev/null | awk -F: '/survived|timeout/ {print $1}'); do
      echo "== $m"
      AIS_JAX_SHARED="$shared" mutmut show "$m" 2>/dev/null | grep -E '^[-+]([^-+]|$)' || true
    done
  } > "$out"
  cd "$repo"
  if [[ -n "${MUTATION_WORKDIR:-}" ]]; then  # the caller's directory: only what the run put there
    rm -rf "$work/repo" "$work/jax_cache"
  else
    rm -rf "$work"
  fi
  head -8 "$out"
}

if [[ "${1:-}" == "all" ]]; then
  for module in "${!TESTS[@]}"; do run_one "$module"; done
else
  run_one "${1:?usage: bash experiments/mutation.sh MODULE|all [MUTANT_PATTERN...]}" "${@:2}"
fi
