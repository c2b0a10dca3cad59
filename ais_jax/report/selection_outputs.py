"""The files of one cross-validated map selection (Aim 1): cv.json, cv.csv, cv_arrays.npz, figures.

Written by ``experiments.selection`` and by ``experiments.run`` (its ``selection/`` folder) from a
:class:`ais_jax.selection.SelectionResult` and its :func:`ais_jax.selection.summarize` record:

* ``cv.json``: ``{"splits": [{"seed", "fold", "test_indices", "train_curve", "test_curve",
  "m_star", "test_retained", "test_full", "n_train", "n_test"}, ...], "random_order": {"splits":
  [...the same fields and "order_index"...], "mean_test_retained", "mean_m_star"}, "tests",
  "summary", "settings", "undefined", "label", **extra}`` (strict JSON: NaN as null);
* ``cv.csv``: one row per split (seed, fold, n_test, m_star, test_full, test_retained,
  test_random_retained; floats in ``repr``, undefined values empty);
* ``cv_arrays.npz``: train AIS ``[S, K]``, orders, curves, m*, random orders and their curves,
  train/test pair masks ``[S, P]``;
* ``selection.png`` (+ ``.csv``/``.json``): Figure 1's bars for this run
  (:func:`ais_jax.report.selection_figure.selection_bars`);
* ``selection_curves.png`` (+ ``.csv``): mean train/test score over the number of maps kept.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import numpy as np

from ais_jax.report import files as files_lib
from ais_jax.report import selection_figure


def split_records(result, test_curves: np.ndarray, train_curves: np.ndarray,
                  m_star: np.ndarray, retained: np.ndarray) -> list[dict]:
  """One cv.json record per split (image folds carry seed/fold/test indices; pair splits None).

  Args:
    result: the :class:`ais_jax.selection.SelectionResult` (splits, n_train, n_test, settings).
    test_curves, train_curves: ``[S, K]``.
    m_star, retained: ``[S]``.
  """
  records = []
  for s in range(m_star.shape[0]):
    split = result.splits[s] if result.splits is not None else None
    records.append({
        "seed": split.seed if split else result.settings["seed"] + s,
        "fold": split.fold if split else None,
        "test_indices": split.test_indices if split else None,
        "train_curve": train_curves[s], "test_curve": test_curves[s], "m_star": m_star[s],
        "test_retained": retained[s], "test_full": test_curves[s][-1],
        "n_train": result.n_train[s], "n_test": result.n_test[s]})
  return records


def cv_record(result, summary: Mapping[str, Any], *, label: str,
              extra: Optional[Mapping[str, Any]] = None) -> dict:
  """The content of ``cv.json`` (before the NaN -> null conversion)."""
  random_records = []
  for r in range(result.random_orders.shape[1]):
    for rec in split_records(result, result.random_test_curves[:, r],
                             result.random_train_curves[:, r], result.random_m_star[:, r],
                             result.random_test_retained[:, r]):
      random_records.append(dict(rec, order_index=r))
  return {"splits": split_records(result, result.test_curves, result.train_curves,
                                  result.m_star, result.test_retained),
          "random_order": {"splits": random_records,
                           "mean_test_retained": summary.get("mean_test_random_retained"),
                           "mean_m_star": summary.get("mean_random_m_star")},
          "tests": summary["tests"], "summary": dict(summary), "settings": result.settings,
          "undefined": result.undefined, "label": label, **dict(extra or {})}


def score_label(score: str) -> str:
  """Axis label of a selection score ('r2' -> 'test $r^2$')."""
  return "test $r^2$" if score == "r2" else "test r"


def write_outputs(out: str, result, summary: Mapping[str, Any], *, label: str,
                  extra: Optional[Mapping[str, Any]] = None) -> tuple[dict, list[str]]:
  """Writes the files listed in the module docstring into ``out``.

  Args:
    out: output folder (created if needed).
    result: :class:`ais_jax.selection.SelectionResult`.
    summary: ``ais_jax.selection.summarize(result)``.
    label: the run's label in the figures and in cv.json.
    extra: more top-level cv.json entries (command, flags, timings, model).

  Returns:
    ``(cv, paths)``: the cv.json record and the paths written.
  """
  os.makedirs(out, exist_ok=True)
  cv = cv_record(result, summary, label=label, extra=extra)
  paths = [files_lib.write_json(os.path.join(out, "cv.json"), cv)]
  random_retained = (files_lib.nanmean(result.random_test_retained, 1)
                     if result.random_test_retained.size
                     else np.full(result.m_star.shape, np.nan))
  paths.append(files_lib.write_csv(
      os.path.join(out, "cv.csv"),
      ["seed", "fold", "n_test", "m_star", "test_full", "test_retained", "test_random_retained"],
      [(rec["seed"], rec["fold"], rec["n_test"], rec["m_star"], rec["test_full"],
        rec["test_retained"], rr) for rec, rr in zip(cv["splits"], random_retained)]))
  arrays_path = os.path.join(out, "cv_arrays.npz")
  np.savez(arrays_path, train_ais=result.train_ais, orders=result.orders,
           train_curves=result.train_curves, test_curves=result.test_curves,
           m_star=result.m_star, random_orders=result.random_orders,
           random_train_curves=result.random_train_curves,
           random_test_curves=result.random_test_curves, train_masks=result.train_masks,
           test_masks=result.test_masks)
  paths.append(arrays_path)
  counts = split_counts_text(summary, result.m_star.size)
  paths += selection_figure.selection_bars(
      {label: selection_figure.group_from_cv(cv)}, os.path.join(out, "selection.png"),
      score_label=score_label(result.settings["score"]),
      title=f"Held-out agreement: all maps vs AIS-selected maps ({counts}; "
            "error bars: Loftus-Masson SE)")
  paths += selection_curves(result, os.path.join(out, "selection_curves.png"), counts=counts)
  return cv, paths


def split_counts_text(summary: Mapping[str, Any], n_splits: int) -> str:
  """'mean over 24 splits, 16 dropped (undefined test score)' from ``summary["split_usage"]``."""
  usage = summary.get("split_usage") or {"used": n_splits, "dropped": 0}
  text = f"mean over {usage['used']} splits"
  if usage["dropped"]:
    text += f", {usage['dropped']} dropped (undefined test score)"
  return text


def selection_curves(result, out_png: str, *, counts: Optional[str] = None) -> list[str]:
  """Mean train/test curves over m (AIS order) and the random-order test curve (+ ``.csv``)."""
  from matplotlib.figure import Figure
  m = np.arange(1, result.test_curves.shape[1] + 1)
  train = files_lib.nanmean(result.train_curves, 0)
  test = files_lib.nanmean(result.test_curves, 0)
  rand = (files_lib.nanmean(result.random_test_curves, (0, 1))
          if result.random_test_curves.size else np.full(m.size, np.nan))
  fig = Figure(figsize=(5.2, 3.4))
  ax = fig.add_subplot(1, 1, 1)
  ax.plot(m, train, label="train (AIS order)")
  ax.plot(m, test, label="test (AIS order)")
  ax.plot(m, rand, label="test (random order)")
  ax.set_xscale("log")
  ax.set_xlabel("maps kept (first m)")
  ax.set_ylabel(result.settings["score"])
  ax.legend(fontsize=7)
  ax.set_title(counts or f"mean over {result.m_star.size} splits", fontsize=9)
  fig.tight_layout()
  fig.savefig(out_png, dpi=110)
  csv_path = files_lib.write_csv(out_png[:-4] + ".csv",
                                 ["m", "train_mean", "test_mean", "random_test_mean"],
                                 [(int(k), a, b, c) for k, a, b, c in zip(m, train, test, rand)])
  return [out_png, csv_path]
