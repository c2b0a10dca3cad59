r"""Aim 4 / Figure 6: the Aim 1 cross-validation for several architectures, per cohort, resumable.

    python -m experiments.architectures \
        --weights=efficientnet_lite0_imagenet,efficientnet_lite1_imagenet,efficientnet_lite2_imagenet \
        --dataset=kriegeskorte92 --data_dir=../shared/data/kriegeskorte92 --by_category \
        --out=runs/fig6
    python -m experiments.architectures --weights=NAME_OR_DIR,... --images=DIR_OR_NPY \
        --human=MATRIX [--categories=FILE --by_category] --out=DIR [--folds --seeds ...]

Writes into --out: ``architectures.csv`` (one row per cohort x model cell), ``figure6.png``
(+ ``.csv``), ``index.html``, ``sweep.json`` and ``cells/<cohort>/<weights>/`` (each cell's Aim 1
splits in ``cv.json``, its row and tests in ``cell.json``). Rerunning the same command resumes:
finished cells are skipped; different settings are refused unless --overwrite (which
recomputes). Trunk maps come from the
activation cache under $AIS_JAX_HOME/activations when an earlier run computed them
(--nocache bypasses it). The logic is ``ais_jax.sweep.run_sweep``.
"""

from __future__ import annotations

import sys

from absl import flags

from experiments import _common
from experiments import _report_flags

FLAGS = _common.FLAGS
_common.define_model_flags()
_common.define_cohort_flags()
_common.define_ais_flags()
_common.define_output_flags()

_define = _common.define_flag
_common.define_dataset_flags()  # kriegeskorte92 or custom
_report_flags.define_categories_flag()  # --categories=FILE (name,category CSV)
_define(flags.DEFINE_bool, "by_category", False, "Also run each category as its own cohort "
        "(categories from --categories or the 92-image set).")
_common.define_selection_flags()  # --folds --seeds --fold_seed --min_test_images --random_orders
_common.define_selection_score_flag()
_common.define_alternative_flag()
_common.define_cache_flags()  # --[no]cache --cache_max_gb


def main(argv):
  del argv
  from ais_jax import sweep
  from ais_jax.errors import UserInputError
  if FLAGS.arch:
    raise UserInputError("--arch", "not used by the sweep: each --weights brings its "
                         "architecture")
  config = sweep.SweepConfig(
      weights=FLAGS.weights.split(","), out=FLAGS.out,
      dataset=_common.dataset_of(FLAGS.dataset, images_given=bool(FLAGS.images or FLAGS.human),
                                 supported=_common.COHORT_DATASETS, default="custom"),
      data_dir=FLAGS.data_dir, images=FLAGS.images, image_list=FLAGS.image_list,
      human=FLAGS.human, human_key=FLAGS.human_key, human_kind=FLAGS.human_kind,
      human_labels=FLAGS.human_labels,
      categories=FLAGS.categories, by_category=FLAGS.by_category, folds=FLAGS.folds,
      seeds=FLAGS.seeds, fold_seed=FLAGS.fold_seed, random_orders=FLAGS.random_orders,
      min_test_images=FLAGS.min_test_images, selection_score=FLAGS.selection_score,
      similarity=FLAGS.similarity, comparison=FLAGS.comparison, precision=FLAGS.precision,
      alternative=FLAGS.alternative, batch_size=FLAGS.batch_size,
      memory_budget_gb=FLAGS.memory_budget_gb, cache=FLAGS.cache,
      cache_max_gb=FLAGS.cache_max_gb, overwrite=FLAGS.overwrite)
  result = sweep.run_sweep(config, progress=_common.progress_printer(FLAGS.progress),
                           command=sys.argv)
  sweep.print_table(result)
  print(f"{result.out}: {len(result.rows)} cells ({result.computed} computed, {result.skipped} "
        f"finished earlier); {sweep.CSV_FILE}, {sweep.FIGURE_FILE}, index.html")


if __name__ == "__main__":
  _common.run(main)
