"""Map selection on held-out images: ``ais_jax.selection`` wired into the report.

:func:`run` cross-validates the AIS-ordered map prefixes against all maps and a random order and
writes ``selection/`` (cv.json in the format of ``experiments.selection``, cv.csv, cv_arrays.npz,
selection.png and the mean curves, by ``ais_jax.report.selection_outputs``); :func:`section` shows
them.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Callable, Optional

import numpy as np

from ais_jax.report import index

# The selection numbers recorded in summary.json.
RESULT_KEYS = ("mean_test_full", "mean_test_retained", "mean_test_random_order", "mean_m_star",
               "median_m_star", "loftus_masson_se", "tests", "settings", "undefined",
               "split_usage", "folds_message")


def run(model, cohort, config, out_dir: str, report: Callable[[str], None]) -> Optional[dict]:
  """``ais_jax.selection.select_maps`` + ``summarize`` for the main model, or None when
  ``config.folds`` is 0 or the cohort has fewer than ``2 * config.min_test_images`` images.
  The folds are reduced by ``ais_jax.selection.plan_folds`` when the requested ones would give
  test sets smaller than ``config.min_test_images``."""
  from ais_jax import selection
  from ais_jax.report import selection_outputs
  n = len(cohort.names)
  if config.folds == 0:
    report("selection: skipped (--folds=0)")
    return None
  from ais_jax.errors import UserInputError
  try:
    folds, message = selection.plan_folds(n, config.folds, config.min_test_images)
  except UserInputError as e:
    report(f"selection: skipped ({e})")
    return None
  if message:
    report(message)
  score = config.selection_score if config.comparison == "pearson" else "r"
  report(f"selection: {folds} folds x {config.seeds} seeds, score {score}, "
         f"{config.random_orders} random order(s) per split")
  t = time.perf_counter()
  res = selection.select_maps(
      model.spec.get_ablation_head(model.variables), model.run.feature_maps, cohort.human,
      folds=folds, seeds=config.seeds, seed=config.fold_seed, score=score,
      similarity=config.similarity, comparison=config.comparison, precision=config.precision,
      random_orders=config.random_orders, memory_budget_gb=config.memory_budget_gb)
  summary = selection.summarize(res)
  wall = time.perf_counter() - t
  _, files = selection_outputs.write_outputs(os.path.join(out_dir, "selection"), res, summary,
                                             label=f"{cohort.dataset} / {model.label}")
  out = {"mean_test_full": summary["mean_test_full"],
         "mean_test_retained": summary["mean_test_retained"],
         "mean_test_random_order": summary.get("mean_test_random_retained", float("nan")),
         "mean_m_star": summary["mean_m_star"], "median_m_star": float(np.median(res.m_star)),
         "loftus_masson_se": (summary.get("loftus_masson") or {}).get("se"),
         "tests": summary["tests"], "settings": res.settings, "undefined": res.undefined,
         "files": [os.path.relpath(p, out_dir) for p in files], "wall_s": wall,
         "split_usage": summary["split_usage"], "folds_message": message}
  usage = summary["split_usage"]
  report(f"selection: held-out {score} all maps {out['mean_test_full']:.4f}, selected "
         f"{out['mean_test_retained']:.4f} (mean m* {out['mean_m_star']:.1f}), random order "
         f"{out['mean_test_random_order']:.4f}; {usage['used']} of {res.m_star.size} splits "
         f"used, {usage['dropped']} dropped; in {wall:.1f} s")
  if usage["warning"]:  # On the console even with --noprogress (one line via _common.run).
    warnings.warn(f"selection: {usage['warning']}", UserWarning, stacklevel=2)
  return out


def section(selection: dict) -> index.Section:
  """The "Map selection" report section for :func:`run`'s result."""
  tests = selection["tests"]

  def p(name):
    return (tests.get(name) or {}).get("pvalue")

  rows = [["all maps", selection["mean_test_full"], "", "", ""],
          ["AIS order, first m* maps", selection["mean_test_retained"],
           selection["mean_m_star"], p("retained_vs_full_paired"),
           p("retained_vs_full_corrected")]]
  if selection["settings"]["random_orders"]:
    rows.append(["random order, first m* maps (chance control)",
                 selection["mean_test_random_order"], "",
                 p("retained_vs_random_paired"), p("retained_vs_random_corrected")])
  score = selection["settings"]["score"]
  splits = selection["settings"]["splits"]
  usage = selection.get("split_usage") or {"used": splits, "dropped": 0, "warning": None}
  counts = f"{usage['used']} of {splits} image-fold splits ({usage['dropped']} dropped"
  counts += ": undefined test score)" if usage["dropped"] else ")"
  notes = [m for m in (selection.get("folds_message"), usage.get("warning")) if m]
  return index.Section("Map selection (held-out images)", [
      index.Figure("selection/selection.png", "Held-out agreement: all maps vs AIS-selected",
                   f"Mean test {score} over {counts} with all maps (grey), "
                   "with the maps ranked first by AIS on the training images (red; m* chosen on "
                   "the training images only, written above) and with a random order (blue); "
                   "error bars are Loftus-Masson within-split errors."
                   + "".join(f" Note: {m}." for m in notes),
                   data=["selection/cv.json", "selection/cv.csv", "selection/selection.csv",
                         "selection/cv_arrays.npz"]),
      index.Figure("selection/selection_curves.png", "Agreement as maps are added",
                   f"Mean {score} on the training and test images when only the first m maps "
                   "(AIS order) are kept, against a random order: the gap between the orange "
                   "and green curves is what the AIS ranking buys on held-out images.",
                   data=["selection/selection_curves.csv"], width="60%"),
      index.Table("Selection summary", ["maps", f"mean test {score}", "mean m*",
                                        "paired t p", "corrected t p"], rows,
                  "Higher is better; p compares the AIS-selected maps with all maps (row 2) and "
                  "with the random order (row 3); the corrected resampled t-test (Nadeau & "
                  "Bengio) allows for the overlap of the training sets and is the one to trust.",
                  data=["selection/cv.json"]),
  ])
