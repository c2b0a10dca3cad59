r"""Noise ceiling, per-subject AIS, image-bootstrap intervals and permutation tests for every map.

    python -m experiments.inference --weights=efficientnet_lite0_imagenet \
        --dataset=kriegeskorte92 --data_dir=../shared/data/kriegeskorte92 --out=RUN_DIR
    python -m experiments.inference --arch=efficientnet_lite0 \
        --weights=efficientnet_lite0_imagenet --images=IMAGES --human_subjects=SUBJECTS.npy \
        --human_kind=dissimilarity --out=RUN_DIR --bootstrap=1000 --permutations=1000

--human_subjects: [S, n, n] .npy, a .mat ([S, n, n] variable or struct array of matrices), or a
folder of per-subject [n, n] files. AIS and the resampling tests are driven by the plain mean of
the subjects' matrices; the noise ceiling and the per-subject scores use each subject. Files and
their meaning: ais_jax.inference_job; the numbers: ais_jax.inference.
"""

from __future__ import annotations

import sys

from absl import flags

from experiments import _common
from experiments import _inference_flags

FLAGS = _common.FLAGS
_common.define_model_flags()
_common.define_ais_flags()
_common.define_output_flags()
_common.define_cohort_flags(human=False)  # --images --image_list --tfds_data_dir
_common.define_path("human_subjects", "", "Per-subject matrices: [S, n, n] "
                    ".npy, a .mat, or a folder of per-subject [n, n] files, in the image order.")
_common.define_human_reading_flags()  # --human_key --human_kind
_common.define_dataset_flags()  # kriegeskorte92 or custom
_common.define_path_list("compare_weights", [], "Other weights whose baseline "
                    "agreement is drawn against the noise ceiling (e.g. "
                    "efficientnet_lite1_imagenet,efficientnet_lite2_imagenet).")
_inference_flags.define_resampling_flags()
_common.define_flag(flags.DEFINE_integer, "split_seed", 2, "Seed of the subject half splits.")
_common.define_flag(flags.DEFINE_integer, "split_halves", 100, "Random half splits of the "
                    "subjects for the split-half reliability (0: none).", lower_bound=0)
_common.define_flag(flags.DEFINE_integer, "top_m", 10, "Size of the top set whose bootstrap "
                    "stability is reported.", lower_bound=1)

FLAG_NAMES = ("arch", "weights", "images", "image_list", "tfds_data_dir", "human_subjects",
              "human_key", "human_kind", "dataset", "data_dir", "compare_weights", "similarity",
              "comparison", "cohort_score", "precision", "batch_size", "bootstrap", "permutations",
              "bootstrap_seed", "permutation_seed", "split_seed", "split_halves", "top_m",
              "overwrite", "out")


def main(argv):
  del argv
  from ais_jax import inference_job  # After flag parsing, so --help does not import JAX.
  _common.require("out", "weights")
  result, summary = inference_job.run(
      weights=FLAGS.weights, arch=FLAGS.arch or None, out=FLAGS.out, images=FLAGS.images,
      image_list=FLAGS.image_list, tfds_data_dir=FLAGS.tfds_data_dir,
      human_subjects=FLAGS.human_subjects, human_kind=FLAGS.human_kind,
      human_key=FLAGS.human_key or None, data_dir=FLAGS.data_dir,
      dataset=_common.dataset_of(FLAGS.dataset, images_given=bool(FLAGS.images),
                                 supported=_common.COHORT_DATASETS, default="custom"),
      compare_weights=FLAGS.compare_weights, similarity=FLAGS.similarity,
      comparison=FLAGS.comparison, cohort_score=FLAGS.cohort_score, precision=FLAGS.precision,
      bootstrap=FLAGS.bootstrap, permutations=FLAGS.permutations,
      bootstrap_seed=FLAGS.bootstrap_seed, permutation_seed=FLAGS.permutation_seed,
      split_seed=FLAGS.split_seed, split_halves=FLAGS.split_halves, top_m=FLAGS.top_m,
      batch_size=FLAGS.batch_size, overwrite=FLAGS.overwrite,
      progress=_common.progress_printer(FLAGS.progress),
      flags=_common.flag_values(FLAG_NAMES), command=sys.argv)
  r = summary["results"]
  nc = r["noise_ceiling"][FLAGS.comparison]
  sig = r["significant_maps"]
  print(f"{FLAGS.out}: agreement {r['baseline_agreement_mean_over_subjects'][FLAGS.comparison]:.4f}"
        f" (mean over subjects; noise ceiling [{nc['lower']:.4f}, {nc['upper']:.4f}]), "
        f"{r['baseline_agreement_mean_matrix']:.4f} with the mean matrix; maps significant: "
        f"{sig['fwer']} FWER, {sig['fdr']} FDR of {sig['tested']} tested")


if __name__ == "__main__":
  _common.run(main)
