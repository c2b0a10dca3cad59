r"""Cross-validated map selection (Aim 1) for one cohort, model and set of human judgments.

    python -m experiments.selection --arch=efficientnet_lite0 \
        --weights=efficientnet_lite0_imagenet --images=IMAGES_DIR_OR_NPY --human=HUMAN.npy \
        --out=RUN_DIR --folds=5 --seeds=8 --fold_seed=0

Writes into --out:

* ``cv.json``: ``{"splits": [{"seed", "fold", "test_indices", "train_curve", "test_curve",
  "m_star", "test_retained", "test_full", "n_train", "n_test"}, ...], "random_order": {"splits":
  [...same fields per random order...], "mean_test_retained", "mean_m_star"}, "tests": {paired
  t-test, corrected resampled t-test, for retained vs full and retained vs random order},
  "summary": {means, mean m*, Loftus-Masson SE}, "settings", "undefined", "wall_time_s",
  "selection_time_s", "command", "flags"}`` (NaN as null);
* ``cv.csv``: one row per split (seed, fold, n_test, m*, test full / retained / random retained);
* ``cv_arrays.npz``: train AIS ``[S, K]``, orders, curves and random-order curves;
* ``selection.png`` (+ ``.csv``/``.json``): Figure 1's layout for this run;
* ``selection_curves.png`` (+ ``.csv``): mean train/test score over the number of maps kept.

``--methods=prefix,learned`` adds learned map weights (``ais_jax.reweight``): per split
``learned_train/_test`` and ``learned_retained_train/_test`` in cv.json, ``learned_weights.npy``,
``methods.csv`` (every pair of methods tested) and learned-vs-AIS heatmaps (see
``ais_jax.report.selection_outputs``).

``--maps=FILE.npy`` (float ``[n, h, w, K]``, e.g. ``feature_maps.npy`` of an AIS run) skips the
trunk; the head still comes from --weights. Combine runs with ``experiments/plot_selection.py``.
The logic is ``ais_jax.selection.select_maps`` and ``ais_jax.selection.summarize``; the files are
written by ``ais_jax.report.selection_outputs.write_outputs`` (as in ``experiments.run``).
"""

from __future__ import annotations

import sys
import time

import numpy as np
from absl import flags

from experiments import _common

FLAGS = _common.FLAGS
_common.define_model_flags()
_common.define_cohort_flags()
_common.define_ais_flags()
_common.define_output_flags()
_common.define_selection_flags()  # --folds --seeds --fold_seed --min_test_images --random_orders

_define = _common.define_flag
_define(flags.DEFINE_bool, "pair_split", False, "Split human pairs (--test_fraction test) instead "
        "of images; leaks images between train and test (see ais_jax.selection).")
_define(flags.DEFINE_float, "test_fraction", 0.2, "Fraction of pairs in the test set with "
        "--pair_split.")
_common.define_alternative_flag()
_common.define_path("maps", "", "Precomputed feature maps .npy [n, h, w, K] (skips the trunk).")
_define(flags.DEFINE_string, "label", "", "Run label for figures (default: the architecture "
        "name).")
_define(flags.DEFINE_list, "methods", ["prefix"], "Comma-separated: 'prefix' (AIS-retained "
        "prefix, always computed: it defines the splits) and 'learned' (learned map weights on "
        "all maps and on the retained maps, ais_jax.reweight, with learned-vs-AIS heatmaps).")

FLAG_NAMES = ("arch", "weights", "images", "image_list", "tfds_data_dir", "human",
              "human_labels", "human_key", "human_kind",
              "similarity", "comparison", "cohort_score", "precision", "batch_size",
              "memory_budget_gb", "folds", "min_test_images", "seeds", "fold_seed",
              "random_orders", "pair_split", "test_fraction", "alternative", "maps", "label",
              "methods", "overwrite", "progress", "out")


def _load_inputs(report):
  """-> (head, maps [n,h,w,K] float32, human [n,n] float64, spec)."""
  from ais_jax import pipeline
  from ais_jax.errors import UserInputError
  from ais_jax.io import human as human_io
  from ais_jax.io import images as images_io
  spec, variables, _, module = pipeline.load_model(FLAGS.weights, FLAGS.arch or None)
  head = spec.get_ablation_head(variables)
  if FLAGS.maps:
    try:
      maps = np.load(FLAGS.maps, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
      raise UserInputError(FLAGS.maps, f"cannot read it as a .npy array [n, h, w, K] "
                           f"({type(e).__name__}: {e})") from None
    if maps.ndim != 4 or maps.shape[-1] != spec.num_maps:
      raise UserInputError("--maps", f"expected [n, h, w, {spec.num_maps}] maps of "
                           f"{spec.name}, got shape {list(maps.shape)}")
    n = maps.shape[0]
    names = None  # a labelled --human cannot be matched to precomputed maps
  else:
    _common.require("images")
    loaded, names = images_io.load_images(FLAGS.images, image_list=FLAGS.image_list or None,
                                          tfds_data_dir=FLAGS.tfds_data_dir or None)
    n = len(loaded)
    resized = images_io.fit_to_model(loaded, spec, names=names)
    maps = pipeline.trunk_maps(spec, module, variables, resized, batch_size=FLAGS.batch_size,
                               progress=report)
  human = human_io.load_human(FLAGS.human, key=FLAGS.human_key or None, kind=FLAGS.human_kind,
                              n_images=n, image_names=names,
                              labels=FLAGS.human_labels or None)
  return head, maps, human, spec


def main(argv):
  del argv
  t0 = time.perf_counter()
  _common.require("out", "human")
  from ais_jax import selection
  from ais_jax.errors import UserInputError
  from ais_jax.io import runs
  from ais_jax.report import selection_outputs
  runs.check_out_dir(FLAGS.out, overwrite=FLAGS.overwrite)
  report = _common.progress_printer(FLAGS.progress) or (lambda message: None)
  # The published cross-validation ranks maps by r^2; --cohort_score overrides.
  score = FLAGS.cohort_score if FLAGS["cohort_score"].present else "r2"
  if FLAGS.comparison == "spearman" and not FLAGS["cohort_score"].present:
    score = "r"
  unknown = sorted(set(FLAGS.methods) - {"prefix", "learned"})
  if unknown:
    raise UserInputError("--methods", f"unknown {unknown}; choose from prefix, learned")
  head, maps, human, spec = _load_inputs(report)
  folds = FLAGS.folds
  if not FLAGS.pair_split:
    folds, message = selection.plan_folds(maps.shape[0], FLAGS.folds, FLAGS.min_test_images)
    if message:
      print(message, file=sys.stderr)
  report(f"selection: {maps.shape[0]} images x {maps.shape[-1]} maps, "
         f"{'pair splits' if FLAGS.pair_split else f'{folds} folds'} x {FLAGS.seeds} seeds")
  try:
    result = selection.select_maps(
        head, maps, human, folds=folds, seeds=FLAGS.seeds, seed=FLAGS.fold_seed,
        pair_split=FLAGS.pair_split, test_fraction=FLAGS.test_fraction, score=score,
        similarity=FLAGS.similarity, comparison=FLAGS.comparison, precision=FLAGS.precision,
        random_orders=FLAGS.random_orders, memory_budget_gb=FLAGS.memory_budget_gb)
  except ValueError as e:
    raise UserInputError(None, str(e)) from None
  report(f"selection: done in {result.timings['total_s']:.1f} s")
  summary = selection.summarize(result, alternative=FLAGS.alternative)
  learned = match = None
  if "learned" in FLAGS.methods:
    from ais_jax import reweight
    try:
      learned, match = reweight.learned_methods(result, head, maps, human, summary,
                                                alternative=FLAGS.alternative,
                                                precision=FLAGS.precision, report=report)
    except ValueError as e:
      raise UserInputError("--methods", str(e)) from None
  extra = {"wall_time_s": time.perf_counter() - t0,
           "selection_time_s": result.timings["total_s"], "command": sys.argv,
           "flags": _common.flag_values(FLAG_NAMES), "model": spec.metadata()}
  selection_outputs.write_outputs(FLAGS.out, result, summary, label=FLAGS.label or spec.name,
                                  extra=extra, learned=learned, heatmap_match=match)
  usage = summary["split_usage"]
  print(f"selection: {usage['used']} of {result.m_star.size} splits used, {usage['dropped']} "
        f"dropped; fewest test pairs in a used split: {usage['min_test_pairs']}", file=sys.stderr)
  if usage["warning"]:
    print(f"warning: {usage['warning']}", file=sys.stderr)
  t = summary["tests"]
  p = t.get("retained_vs_full_paired", {}).get("pvalue", float("nan"))
  pc = t.get("retained_vs_full_corrected", {}).get("pvalue", float("nan"))
  print(f"{FLAGS.out}: test {score} full {summary['mean_test_full']:.4f}, retained "
        f"{summary['mean_test_retained']:.4f}, random order "
        f"{summary.get('mean_test_random_retained', float('nan')):.4f}; mean m* "
        f"{summary['mean_m_star']:.1f}/{maps.shape[-1]}; paired t p={p:.3g}, corrected p={pc:.3g}; "
        f"{extra['wall_time_s']:.1f} s")
  if learned is not None:
    means = summary["methods"]["mean_test"]
    print("learned weights: mean test " + ", ".join(f"{m} {v:.4f}" for m, v in means.items()
                                                     if v is not None))


if __name__ == "__main__":
  _common.run(main)
