r"""Per-image and cohort AIS and heatmaps for one cohort, model and set of human judgments.

    python -m experiments.ais --arch=efficientnet_lite0 --weights=efficientnet_lite0_imagenet \
        --images=IMAGES_DIR_OR_NPY --human=HUMAN.npy --out=RUN_DIR

Writes into --out: per_image_ais.npy [n, K] float64 (NaN where undefined), cohort_ais.npy [K]
float64, embeddings.npy [n, D] float32, heatmaps.npy [n, h, w] float32, images.txt (the image
order), feature_maps.npy [n, h, w, K] with --save_feature_maps, and summary.json (flags, model and
checkpoint provenance, input sha256s, devices, versions, timings, undefined values). Read it back
with ``ais_jax.io.load_run(RUN_DIR)``. The logic is ``ais_jax.pipeline.run_ais``.
"""

from __future__ import annotations

import sys

import numpy as np

from ais_jax.errors import UserInputError
from experiments import _common
from experiments import _report_flags

FLAGS = _common.FLAGS
_common.define_model_flags()
_common.define_cohort_flags()
_common.define_ais_flags()
_common.define_output_flags()
_common.define_cache_flags()
_report_flags.define_overlay_flags()
_report_flags.define_categories_flag()

FLAG_NAMES = ("arch", "weights", "images", "image_list", "tfds_data_dir", "human",
              "human_labels", "human_key", "human_kind",
              "similarity", "comparison", "cohort_score", "precision", "batch_size",
              "memory_budget_gb", "save_feature_maps", "overwrite", "progress", "out",
              "save_overlays", "colormap", "alpha", "categories")


def main(argv):
  del argv
  from ais_jax import pipeline  # After flag parsing, so --help does not import JAX.
  _common.require("out", "images", "human")  # --weights: run_ais explains and lists names.
  _report_flags.check_overlay_flags()
  if FLAGS.categories:  # A malformed file is refused before the run, not after it.
    from ais_jax.io import categories as categories_io
    categories_io.read_categories_csv(FLAGS.categories)
  written = []
  run = pipeline.run_ais(
      arch=FLAGS.arch or None, weights=FLAGS.weights, images=FLAGS.images,
      image_list=FLAGS.image_list or None, tfds_data_dir=FLAGS.tfds_data_dir or None,
      human=FLAGS.human, human_labels=FLAGS.human_labels or None,
      human_key=FLAGS.human_key or None,
      human_kind=FLAGS.human_kind, similarity=FLAGS.similarity, comparison=FLAGS.comparison,
      cohort_score=FLAGS.cohort_score, precision=FLAGS.precision, batch_size=FLAGS.batch_size,
      memory_budget_gb=FLAGS.memory_budget_gb, save_feature_maps=FLAGS.save_feature_maps,
      overwrite=FLAGS.overwrite, out=FLAGS.out, trunk_cache=_common.trunk_cache(),
      extra_files=lambda folder, run: write_figures(folder, run, written),
      progress=_common.progress_printer(FLAGS.progress),
      flags=_common.flag_values(FLAG_NAMES), command=sys.argv)
  s = run.summary
  n, k = run.per_image_ais.shape
  top = (", ".join(str(i) for i in s["results"]["cohort_ais_top10_maps"][:5])
         or "none (all undefined)")
  finite = run.cohort_ais[np.isfinite(run.cohort_ais)]
  largest = float(np.abs(finite).max()) if finite.size else float("nan")
  baseline = s["results"]["baseline_agreement"]  # None (JSON null) when undefined.
  print(f"{run.out}: {n} images x {k} maps; baseline agreement "
        f"{'undefined' if baseline is None else format(baseline, '.4f')}; undefined per-image AIS "
        f"{s['undefined']['per_image_ais']['count']}/{run.per_image_ais.size}, cohort "
        f"{s['undefined']['cohort_ais']['count']}/{k}; top cohort maps {top}; "
        f"max |cohort AIS| {largest:.3g}" + "".join(f"; {e}" for e in written))


def write_figures(folder: str, run, written: list[str]) -> list[str]:
  """--categories: datasets.txt (experiments.saliency groups by it); --save_overlays:
  overlays/<image>.png. Written into the run's staging ``folder`` (pipeline.run_ais'
  ``extra_files``), so they are swapped in with the run and listed in summary.json. Returns their
  paths relative to the run; appends what was written to ``written`` for the closing line."""
  import os
  files = []
  if FLAGS.categories:
    from ais_jax.io import categories as categories_io
    labels = categories_io.load_categories(FLAGS.categories, run.image_names)
    with open(os.path.join(folder, "datasets.txt"), "w") as f:
      f.write("".join(f"{g}\n" for g in labels))
    files.append("datasets.txt")
    written.append(f"categories of {len(labels)} images in datasets.txt")
  if FLAGS.save_overlays:
    from ais_jax.io import images as images_io
    from ais_jax.report import figures
    images, _ = images_io.load_images(FLAGS.images, image_list=FLAGS.image_list or None,
                                      tfds_data_dir=FLAGS.tfds_data_dir or None)
    try:
      paths = figures.write_overlays(images, run.heatmaps, run.image_names,
                                     os.path.join(folder, "overlays"), alpha=FLAGS.alpha,
                                     colormap=FLAGS.colormap)
    except ValueError as e:
      raise UserInputError("--colormap", str(e)) from None
    files += [os.path.relpath(p, folder) for p in paths]
    written.append(f"{len(paths)} overlays in {os.path.join(run.out, 'overlays')}")
  return files

if __name__ == "__main__":
  _common.run(main)
