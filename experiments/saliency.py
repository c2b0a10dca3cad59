r"""Aim 3: AIS heatmaps vs saliency maps (precision-recall, relative risk, contour overlays).

  python -m experiments.saliency --ais_run=runs/k92_lite0 --saliency=spectral_residual \
      --out=runs/k92_lite0/saliency

``--ais_run`` is an output folder of ``experiments.ais``/``experiments.run``: its ``heatmaps.npy``
``[n, h, w]`` (map resolution), ``images.txt`` (one name per line) and ``summary.json`` (whose
``flags`` locate the images) are read. ``--saliency`` is ``spectral_residual`` (the built-in
classical baseline), ``transalnet`` (TranSalNet_Res through the authors' test-time path, with
``--saliency_weights``, default the converted ``transalnet_res``; also writes
``saliency_raw.npy [n, 288, 384]``, the network's output before the 8-bit postprocessing), a
``.npy`` ``[n, H, W]`` or a folder of PNG/JPG/NPY maps named like the images;
``--saliency_fit=resize`` (default) resizes each map to its image, ``crop`` reproduces the
published code (keep the map's aspect ratio, cover the image, crop the centre).

    python -m convert.fetch --name=transalnet_res --src=TranSalNet_Res.pth   # once
    python -m experiments.saliency --ais_run=runs/k92_lite0 --saliency=transalnet

Writes to ``--out``: ``rr_table.csv``/``.md`` (the paper's Table 1), ``rr_per_image.csv``,
``saliency.npy`` (maps used, image resolution; ``saliency.npz`` keyed by image name when image
sizes differ), ``pr_per_image.npz``, ``pr_curves.png/.csv`` (Figure 4), ``contours.png/.json``
(Figure 5) and ``saliency_summary.json`` (inputs, undefined counts, the all-images row).
The logic is ``ais_jax.report.saliency_report.run_saliency``.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from absl import flags

from experiments import _common
from experiments import _report_flags

FLAGS = _common.FLAGS
# --images, --out and --saliency are shared with the other experiments (defined once in
# experiments._common; listed by --help).
_common.define_cohort_flags(human=False)
_common.define_output_flags()
_common.define_saliency_flag()
_define = _common.define_flag
_common.define_path("ais_run", "", "Output folder of experiments.ais / experiments.run.")
_define(flags.DEFINE_enum, "saliency_fit", "resize", ["resize", "crop"], "How external maps are "
        "fitted to the image: resize (default) or crop (published code).")
_common.define_path("datasets", "", "Text file with one dataset label per image (default: the "
                    "run's datasets.txt, else one dataset).")
_define(flags.DEFINE_integer, "n_examples", 8, "Images drawn in the contour figure (chosen by "
        "relative risk at top 10%: highest and lowest per dataset label).")
_report_flags.define_overlay_flags()
_report_flags.define_categories_flag()
_report_flags.define_saliency_weights_flag()


def main(argv: Sequence[str]) -> None:
  del argv
  _common.require("ais_run")
  _report_flags.check_overlay_flags()
  from ais_jax.errors import UserInputError  # After flag parsing, so --help does not import JAX.
  from ais_jax.report.saliency_report import run_saliency
  out = FLAGS.out or os.path.join(FLAGS.ais_run, "saliency")
  command = " ".join([os.path.basename(sys.executable), "-m", "experiments.saliency"]
                     + sys.argv[1:])
  try:
    summary = run_saliency(FLAGS.ais_run, FLAGS.saliency, out, saliency_fit=FLAGS.saliency_fit,
                           images=FLAGS.images or None, datasets=FLAGS.datasets or None,
                           categories=FLAGS.categories or None, n_examples=FLAGS.n_examples,
                           command=command, save_overlays=FLAGS.save_overlays,
                           alpha=FLAGS.alpha, colormap=FLAGS.colormap,
                           saliency_weights=FLAGS.saliency_weights,
                           progress=_common.progress_printer(FLAGS.progress))
  except (ValueError, FileNotFoundError) as e:
    raise UserInputError(None, str(e)) from None
  with open(os.path.join(out, "rr_table.md")) as f:
    print(f.read())
  print(f"wrote {len(summary['files']) + 1} files to {out} in {summary['wall_s']} s")


if __name__ == "__main__":
  _common.run(main)
