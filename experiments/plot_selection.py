r"""Combines several selection runs (``cv.json`` of experiments/selection.py) into one Figure 1.

    python -m experiments.plot_selection --runs=RUN_A,RUN_B --labels="92 images / Lite0,..." \
        --out_png=selection_all.png

One group of bars per run (full, retained, random order), Loftus-Masson error bars, mean m*
above each group; the numbers are written beside the PNG (.csv, .json).
"""

from __future__ import annotations

import json
import os

from absl import flags

from experiments import _common

FLAGS = _common.FLAGS
_common.define_path_list("runs", [], "Run folders (or cv.json files) of experiments.selection.")
flags.DEFINE_list("labels", [], "One label per run (default: each run's own label).")
_common.define_path("out_png", "", "Output PNG path.")
flags.DEFINE_string("title", "", "Figure title (default: a description of the layout).")


def _read(path: str) -> dict:
  from ais_jax.errors import UserInputError
  file = os.path.join(path, "cv.json") if os.path.isdir(path) else path
  try:
    with open(file) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise UserInputError(path, f"cannot read a selection cv.json: {e}") from None


def main(argv):
  del argv
  from ais_jax.errors import UserInputError
  from ais_jax.report import selection_figure
  _common.require("out_png")
  if not FLAGS.runs:
    raise UserInputError("--runs", "required: one or more run folders of experiments.selection")
  if FLAGS.labels and len(FLAGS.labels) != len(FLAGS.runs):
    raise UserInputError("--labels", f"{len(FLAGS.labels)} labels for {len(FLAGS.runs)} runs")
  groups = {}
  scores = set()
  for i, path in enumerate(FLAGS.runs):
    cv = _read(path)
    label = FLAGS.labels[i] if FLAGS.labels else (cv.get("label") or os.path.basename(path))
    if label in groups:
      label = f"{label} ({i})"
    groups[label] = selection_figure.group_from_cv(cv)
    scores.add(cv.get("settings", {}).get("score", "r2"))
  score = "$r^2$" if scores == {"r2"} else ("r" if scores == {"r"} else "score")
  written = selection_figure.selection_bars(groups, FLAGS.out_png, score_label=f"test {score}",
                                            title=FLAGS.title or None)
  print("\n".join(written))


if __name__ == "__main__":
  _common.run(main)
