r"""Permutation tests on the planted-truth cohort: how many maps are significant, and where the
heatmap mass of the significant maps falls (target star vs distractor).

    python -m experiments.planted_inference --out=planted_inference.json

The cohort (ais_jax.data.planted, n images, seed) gets ``--subjects`` synthetic subjects: the
planted formula with independent noise each (``noise_sd * sqrt(subjects)``, so their mean has
the cohort's default noise). ais_jax.inference.analyse runs the noise ceiling, bootstrap and
permutation tests; heatmaps are built from the engine's per-image AIS against the mean matrix
using all maps, the FWER-significant maps only, and the FDR-significant maps only
(ais_jax.heatmaps, upsampled), and their mass on the target and on the distractor is compared
with each object's area (ais_jax.data.planted.mass_report).
"""

from __future__ import annotations

import json

from absl import app
from absl import flags

import numpy as np

from experiments import _common

FLAGS = flags.FLAGS
flags.DEFINE_string("weights", "efficientnet_lite0_imagenet", "Weights (registry name).")
flags.DEFINE_integer("n", 48, "Images.")
flags.DEFINE_integer("planted_seed", 0, "Seed of the planted cohort generator (the synthetic "
                     "subjects' noise uses planted_seed + 1000).")
flags.DEFINE_integer("subjects", 8, "Synthetic subjects.")
flags.DEFINE_float("noise_sd", 0.05, "Noise of the subjects' mean matrix.")
flags.DEFINE_integer("bootstrap", 1000, "Image resamples.")
flags.DEFINE_integer("permutations", 1000, "Permutations.")
flags.DEFINE(_common.PathParser(), "out", "", "JSON output path (optional).",
             serializer=flags.ArgumentSerializer())


def main(argv):
  del argv
  from ais_jax import ais
  from ais_jax import heatmaps as heatmaps_lib
  from ais_jax import inference as inf
  from ais_jax import inference_job
  from ais_jax.data import planted
  cohort = planted.generate(FLAGS.n, seed=FLAGS.planted_seed, noise_sd=FLAGS.noise_sd)
  rng = np.random.default_rng(FLAGS.planted_seed + 1000)
  sd = FLAGS.noise_sd * np.sqrt(FLAGS.subjects)
  subjects = np.stack([planted.human_from_factor(cohort.target_factor, noise_sd=sd, rng=rng)
                       for _ in range(FLAGS.subjects)])
  _, head, maps, _ = inference_job.cohort_maps(FLAGS.weights, cohort.images)
  result = inf.analyse(head, maps, subjects, bootstrap=FLAGS.bootstrap,
                       permutations=FLAGS.permutations, per_image=False, split_halves=20)
  per_image = ais.compute_ais(head, maps, subjects.mean(0)).per_image
  size = cohort.images.shape[1:3]
  tested = ~result.inactive_maps
  selections = {"all maps": np.ones(maps.shape[-1], bool),
                "FWER-significant": tested & (result.p_fwer <= 0.05),
                "FDR-significant": tested & (result.q <= 0.05),
                "uncorrected p <= 0.05": tested & (result.p <= 0.05)}
  masses = {}
  for name, keep in selections.items():
    if not keep.any():
      masses[name] = {"maps": 0}
      continue
    heat = heatmaps_lib.upsample(heatmaps_lib.heatmaps(maps, np.where(keep, per_image, 0.0)), size)
    rep = planted.summarise_masses(planted.mass_report(np.asarray(heat, np.float64),
                                                       cohort.target_masks,
                                                       cohort.distractor_masks))
    masses[name] = {"maps": int(keep.sum()),
                    "target_mass_mean": rep["target_mass"]["mean"],
                    "distractor_mass_mean": rep["distractor_mass"]["mean"],
                    "target_area_mean": rep["target_area"]["mean"],
                    "distractor_area_mean": rep["distractor_area"]["mean"],
                    "target_enrichment_mean": rep["target_enrichment"]["mean"],
                    "distractor_enrichment_mean": rep["distractor_enrichment"]["mean"],
                    "fraction_images_target_gt_distractor":
                        rep["fraction_images_target_gt_distractor"],
                    "images_without_mass": rep["target_mass"]["n_undefined"]}
  out = {"cohort": {"n": FLAGS.n, "seed": FLAGS.planted_seed, "subjects": FLAGS.subjects,
                    "subject_noise_sd": sd, "weights": FLAGS.weights},
         "summary": result.summary, "heatmap_mass": masses,
         "top_fwer_maps": [int(k) for k in np.flatnonzero(selections["FWER-significant"])[:50]]}
  print(json.dumps(out, indent=1, default=float))
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(out, f, indent=1, default=float)


if __name__ == "__main__":
  app.run(main)
