r"""The main job: AIS, selection, heatmaps, figures and an index.html report for one cohort.

    python -m experiments.run
        # offline default: EfficientNet-Lite0 (real ImageNet weights, converted from the pip
        # package on first use) on the planted-truth cohort it generates (48 images, seed 0)
    python -m experiments.run --dataset=kriegeskorte92 --data_dir=../shared/data/kriegeskorte92
        # the 92 real images and the subject-averaged similarity, plus the Lite0/Lite1/Lite2 Match
        # analysis, per-category cohort AIS and the spectral-residual saliency comparison
    python -m experiments.run --images=DIR_OR_NPY --human=H.npy --weights=NAME_OR_DIR [--arch=...]
        # your own cohort and model (--match_weights=... adds the Match analysis)

Stages (progress lines on stderr, one per stage; ``--noprogress`` is quiet):

1. cohort: generate (planted), read (kriegeskorte92) or load (--images/--human);
2. AIS: ``ais_jax.pipeline.run_ais`` per model (trunk maps, per-image and cohort AIS, heatmaps),
   written to ``<out>/ais`` (and ``<out>/ais_<model>`` for the Match models) as run folders
   ``ais_jax.io.load_run`` reads;
3. selection: ``ais_jax.selection.select_maps`` (image folds x seeds, AIS-ordered prefixes vs all
   maps vs a random order), ``selection/cv.json`` + CSV + figure;
4. heatmaps and figures (``ais_jax.report.figures``): overlays, AIS distributions, and for the
   planted cohort the mass of each heatmap on the target vs the distractor vs their areas, for the
   AIS heatmap, the equal-weights mean-activation map and spectral-residual saliency;
5. kriegeskorte92 / --match_weights: Match scores between models (+ maxEntropy), KS tests of the AIS
   distributions, correlations of per-category cohort AIS;
6. saliency: spectral residual (or --saliency=PATH) vs the AIS heatmap, PR curves and RR table;
7. ``index.html`` (every figure and table with one sentence on how to read it) and
   ``summary.json`` (flags, seeds, versions, input sha256s, key numbers, timings, files).

Same inputs and flags give identical numbers (everything is seeded; JAX on one device is
deterministic). ``--out`` defaults to ``./runs/<dataset>``; an existing non-empty folder is only
replaced with ``--overwrite`` (then the files of the previous run listed in its summary.json are
removed first).

The logic is ``ais_jax.main_job.run_report`` (a :class:`ais_jax.main_job.RunConfig` built from the
flags below).
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import flags

from ais_jax import main_job
from experiments import _common
from experiments import _inference_flags
from experiments import _report_flags

FLAGS = _common.FLAGS


def define_flags() -> None:
  """Defines the command line (only when run as a program: importing this module defines no
  flags, so it can share a process with other experiments)."""
  _common.define_model_flags()
  _common.define_cohort_flags()
  _common.define_ais_flags()
  _common.define_output_flags()
  _common.define_selection_flags()
  _common.define_saliency_flag()
  _inference_flags.define_resampling_flags()  # kriegeskorte92: the inference section
  define = _common.define_flag
  _common.define_dataset_flags()
  define(flags.DEFINE_integer, "n_images", 48, "planted: number of images.", lower_bound=4)
  define(flags.DEFINE_integer, "image_size", 224, "planted: image side in pixels.",
         lower_bound=32)
  define(flags.DEFINE_integer, "planted_seed", 0, "planted: seed of the cohort generator "
         "(images, targets, 'human' noise).")
  define(flags.DEFINE_float, "noise_sd", 0.05, "planted: sd of the noise in the 'human' "
         "similarity.", lower_bound=0.0)
  _common.define_selection_score_flag()
  _common.define_path_list("match_weights", None, "Other models whose heatmaps are compared "
                           "with the main model's (Match score): registry names or checkpoint "
                           "directories; default for kriegeskorte92: "
                           f"{','.join(main_job.K92_MATCH_WEIGHTS)}; none otherwise.")
  define(flags.DEFINE_integer, "examples_per_group", 4, "Heatmap grid: images shown per "
         "category (highest to lowest per-image agreement).", lower_bound=1)
  _report_flags.define_categories_flag()
  _report_flags.define_saliency_weights_flag()


def config_from_flags() -> main_job.RunConfig:
  """The run's options from the parsed flags (--dataset inferred when not given)."""
  from ais_jax.errors import UserInputError
  dataset = _common.dataset_of(FLAGS.dataset, images_given=bool(FLAGS.images or FLAGS.human),
                               supported=_common.DATASETS, default="planted")
  if dataset != "custom" and (FLAGS.images or FLAGS.human):
    raise UserInputError("--dataset", f"{dataset} does not take --images/--human; drop them or "
                         "use --dataset=custom")
  values = {f.name: FLAGS[f.name].value for f in dataclasses.fields(main_job.RunConfig)
            if f.name in FLAGS and f.name != "dataset"}
  values["dataset"] = dataset
  values["weights"] = FLAGS.weights or main_job.DEFAULT_WEIGHTS
  values["out"] = FLAGS.out or main_job.default_out(dataset)
  return main_job.RunConfig(**values)


def main(argv):
  del argv
  config = config_from_flags()
  summary = main_job.run_report(config, progress=_common.progress_printer(FLAGS.progress),
                                command=sys.argv)
  results = summary["results"]
  cells = results["n_images"] * results["n_maps"]
  undefined = "; ".join(f"{label} {count}/{cells}"
                        for label, count in results["undefined_per_image_ais"].items())
  print(f"{os.path.join(config.out, 'index.html')} ({summary['timings_s']['total']:.1f} s); "
        f"undefined per-image AIS: {undefined}")


if __name__ == "__main__":
  define_flags()
  _common.run(main)
