r"""LPIPS baseline (Aim 1): LPIPS distances of every image pair and their agreement with humans.

    python -m experiments.lpips_baseline --net=alex --weights=alexnet_imagenet \
        --images=stimuli/ --human=similarity.csv --out=runs/lpips_alex

Writes ``lpips_distances.npy`` ``[n, n]`` float64, ``images.txt`` and ``summary.json`` (agreement of
the LPIPS similarity ``-d`` with the human similarity, Pearson and Spearman over the finite human
pairs, and everything needed to rerun). The backbone is the model zoo's ``vgg16`` / ``alexnet`` /
``squeezenet1_1`` with converted ImageNet weights (``python -m convert.fetch --name=...``); the
LPIPS linear layers come from the ``lpips`` package or their published URL.
"""

import json
import time

from absl import flags
import numpy as np

from ais_jax import lpips, rsa
from ais_jax.errors import UserInputError
from experiments import _common

flags.DEFINE_enum("net", "alex", sorted(lpips.NETS), "LPIPS backbone.")
flags.DEFINE_integer("size", 224, "Images are resized to size x size (PIL bilinear) first.")
_common.define_model_flags()
_common.define_cohort_flags()
_common.define_output_flags()
FLAGS = flags.FLAGS


def main(argv):
  del argv
  _common.require("weights", "images", "human", "out")
  from ais_jax import pipeline
  from ais_jax.io import human as human_io, images as images_io, runs
  report = _common.progress_printer(FLAGS.progress)
  start = time.perf_counter()
  # Unknown names and unreadable checkpoints end as one-line errors naming --weights.
  spec, variables, provenance, _ = pipeline.load_model(FLAGS.weights)
  if spec.name != lpips.NETS[FLAGS.net].arch:
    raise UserInputError("--weights", f"holds {spec.name} weights but --net={FLAGS.net} needs "
                         f"{lpips.NETS[FLAGS.net].arch}")
  images, names = images_io.load_images(FLAGS.images, image_list=FLAGS.image_list or None)
  images = np.stack([images_io.resize_images(np.asarray(im)[None], FLAGS.size)[0]
                     for im in images])
  human = human_io.load_human(FLAGS.human, key=FLAGS.human_key or None, kind=FLAGS.human_kind,
                              n_images=len(images))
  if report:
    report(f"LPIPS ({FLAGS.net}) of {len(images) * (len(images) - 1) // 2} pairs")
  distances = lpips.cohort_distances(images, FLAGS.net, variables, batch_size=FLAGS.batch_size)
  similarity = -distances
  result = {
      "agreement_pearson": float(rsa.agreement(similarity, human, kind="pearson")),
      "agreement_spearman": float(rsa.agreement(similarity, human, kind="spearman")),
      "finite_human_pairs": int(np.asarray(rsa.human_mask(human)).sum()),
      "net": FLAGS.net, "size": FLAGS.size, "weights": provenance,
      "flags": _common.flag_values(["net", "size", "weights", "images", "image_list", "human",
                                    "human_key", "human_kind", "batch_size", "out"]),
      "note": "LPIPS agreement is only meaningful with real (pretrained) backbone weights.",
      "wall_time_s": time.perf_counter() - start,
  }
  runs.write_run(FLAGS.out, {"lpips_distances": distances}, result, image_names=list(names),
                 overwrite=FLAGS.overwrite)
  if report:
    report(f"agreement with humans: pearson {result['agreement_pearson']:.4f}, "
           f"spearman {result['agreement_spearman']:.4f} -> {FLAGS.out}")


if __name__ == "__main__":
  _common.run(main)
