r"""Bootstrap + permutation inference as matrix products vs one engine call per resample.

    python -m experiments.benchmark_inference --data_dir=../shared/data/kriegeskorte92 \
        --out=benchmark_inference.json

EfficientNet-Lite0 (ImageNet weights, offline), the 92 images, all 1,280 maps, human = -mean of
the 16 subjects' dissimilarities. Timed in one process, on the same trunk maps:

(a) ais_jax.inference: the ablated similarity vectors once (``model_similarities``), then
    ``--bootstrap`` image resamples (``bootstrap_agreements``) and ``--permutations`` joint
    row/column permutations (``permutation_agreements``) as weighted matrix products, AIS per
    resample, p-values / FWER / q-values / percentile intervals. Timed twice: the first call
    includes compilation, the second is the steady state.
(b) a Python loop calling the engine (``ais.compute_ais``) once per resample: a bootstrap
    resample is the resampled cohort (``maps[idx]``, ``H[idx][:, idx]`` with the pairs of an image
    with its own copy set to NaN), a permutation is ``H[p][:, p]``. One warm-up call compiles;
    then ``--loop_sample`` resamples of each kind are timed and the full loop is extrapolated
    linearly (said so in the output), unless ``--loop_sample`` covers them all.

Both compute the same numbers: the output gives max |AIS(a) - AIS(b)| over the sampled resamples.
"""

from __future__ import annotations

import json
import os
import platform
import time

from absl import app
from absl import flags

import numpy as np

from experiments import _common

FLAGS = flags.FLAGS
flags.DEFINE_string("weights", "efficientnet_lite0_imagenet", "Weights (registry name).")
flags.DEFINE(_common.PathParser(), "data_dir", os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "..", "shared", "data", "kriegeskorte92"), "92-image folder.",
             serializer=flags.ArgumentSerializer())
flags.DEFINE_integer("bootstrap", 1000, "Image resamples.")
flags.DEFINE_integer("permutations", 1000, "Permutations.")
flags.DEFINE_integer("loop_sample", 8, "Engine calls timed per kind for the loop estimate.")
flags.DEFINE(_common.PathParser(), "out", "", "JSON output path (optional).",
             serializer=flags.ArgumentSerializer())


def fast_path(head, maps, human, counts, perms):
  """(a): returns (seconds per stage, bootstrap AIS [K, B], null AIS [K, 1 + R])."""
  from ais_jax import inference as inf
  n = human.shape[0]
  iu = np.triu_indices(n, 1)
  t = {}
  t0 = time.perf_counter()
  sims = inf.model_similarities(head, maps)
  t["model_similarities"] = time.perf_counter() - t0
  h_upper = human[iu]
  mask = np.isfinite(h_upper)
  t1 = time.perf_counter()
  agree_b = np.asarray(inf.bootstrap_agreements(sims.upper, np.where(mask, h_upper, 0), mask,
                                                counts))
  boot = inf.resample_ais(agree_b, sims.active, counts > 0, score="r")
  ci = inf.percentile_interval(boot)
  top = inf.top_m_frequency(boot, 10)
  t["bootstrap"] = time.perf_counter() - t1
  t2 = time.perf_counter()
  agree_p = np.asarray(inf.permutation_agreements(sims.upper, human, perms))
  null = inf.resample_ais(agree_p, sims.active, np.ones(perms.shape, bool), score="r")
  pv = inf.permutation_pvalues(null, tested=sims.active.any(0))
  t["permutations"] = time.perf_counter() - t2
  t["total"] = time.perf_counter() - t0
  del ci, top, pv
  return t, boot, null


def main(argv):
  del argv
  import jax
  from ais_jax import ais
  from ais_jax import inference as inf
  from ais_jax import inference_job
  from ais_jax.data import kriegeskorte92
  data = kriegeskorte92.load(FLAGS.data_dir)
  human = -data.subject_dissimilarity.mean(0)
  n = human.shape[0]
  _, head, maps, _ = inference_job.cohort_maps(FLAGS.weights, data.images)
  k = maps.shape[-1]
  counts = inf.bootstrap_counts(n, FLAGS.bootstrap, 0)
  draws = np.random.default_rng(0).integers(0, n, size=(FLAGS.bootstrap, n))
  perms = inf.permutations_with_identity(n, FLAGS.permutations, 1)

  first, _, _ = fast_path(head, maps, human, counts, perms)
  steady, boot, null = fast_path(head, maps, human, counts, perms)
  print(f"(a) matrix products: first call {first['total']:.1f} s (incl. compilation), steady "
        f"{steady['total']:.1f} s {steady}", flush=True)

  def engine(m, h):
    return ais.compute_ais(head, m, h).cohort

  t = time.perf_counter()
  engine(maps, human)                                   # warm-up: compiles the engine
  warmup = time.perf_counter() - t
  sample = min(FLAGS.loop_sample, FLAGS.bootstrap, FLAGS.permutations)
  boot_times, perm_times, diffs = [], [], []
  for b in range(sample):
    idx = draws[b]
    hb = human[np.ix_(idx, idx)].copy()
    hb[idx[:, None] == idx[None, :]] = np.nan
    t = time.perf_counter()
    got = engine(maps[idx], hb)
    boot_times.append(time.perf_counter() - t)
    diffs.append(float(np.nanmax(np.abs(got - boot[:, b]))))
    p = perms[1 + b]
    t = time.perf_counter()
    got = engine(maps, human[np.ix_(p, p)])
    perm_times.append(time.perf_counter() - t)
    diffs.append(float(np.nanmax(np.abs(got - null[:, 1 + b]))))
  loop_estimate = (np.mean(boot_times) * FLAGS.bootstrap
                   + np.mean(perm_times) * FLAGS.permutations)
  result = {
      "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                  "jax_backend": jax.default_backend(),
                  "note": "CPU shared with other processes while measured",
                  "load_average": os.getloadavg()},
      "problem": {"weights": FLAGS.weights, "images": n, "maps": k,
                  "bootstrap": FLAGS.bootstrap, "permutations": FLAGS.permutations},
      "fast_first_call_s": first, "fast_steady_s": steady,
      "engine_warmup_call_s": warmup,
      "engine_per_bootstrap_call_s": boot_times, "engine_per_permutation_call_s": perm_times,
      "loop_sampled_calls": 2 * sample,
      "loop_estimate_s": float(loop_estimate),
      "loop_estimate_note": (f"extrapolated from {sample} timed calls per kind" if
                             sample < max(FLAGS.bootstrap, FLAGS.permutations) else "full loop"),
      "speedup_vs_steady": float(loop_estimate / steady["total"]),
      "speedup_vs_first_call": float(loop_estimate / first["total"]),
      "max_abs_diff_fast_vs_engine": max(diffs),
  }
  print(json.dumps(result, indent=1))
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  app.run(main)
