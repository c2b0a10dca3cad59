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
* ``selection_curves.png`` (+ ``.csv``): mean train/test score over the number of maps kept, with
  the spread over splits, the mean m*, the all-maps reference and the learned-weights levels.

With learned weights (:mod:`ais_jax.reweight`, ``--methods=prefix,learned``) also:

* in every cv.json split: ``full_train``, ``retained_train`` and, per variant ``v`` in
  (``learned``: weights on all maps, ``learned_retained``: weights on the AIS-retained maps),
  ``v_train``, ``v_test`` (the same score as ``test_full``), ``v_lambda`` and ``v_fell_back``;
  top-level ``methods`` (means, Loftus-Masson SE, paired and corrected t-tests of every pair of
  methods) and ``learned`` (settings, timings, compile counts);
* ``learned_weights.npy`` ``[S, K]`` (rows in cv.json's split order; weights on all maps) and
  ``learned_retained_weights.npy`` ``[S, K]`` (0 outside each split's retained maps);
* ``methods.csv``: mean test score per method and the tests of every pair;
* with a heatmap comparison (:func:`ais_jax.reweight.heatmap_comparison`):
  ``learned_weights_all_images.npy`` ``[K]``, ``learned_heatmaps.npy`` ``[n, h, w]``,
  ``heatmap_match.csv`` (per image: Match of learned and of equal-weights heatmaps with the AIS
  heatmap) and ``heatmap_match.json``.
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


def learned_fields(result, learned) -> list[dict]:
  """Per split: train scores of all maps and of the retained prefix, and each learned variant's
  ``_train``, ``_test``, ``_lambda``, ``_fell_back`` (:class:`ais_jax.reweight.ReweightResult`)."""
  idx = np.maximum(result.m_star - 1, 0)
  retained_train = np.where(result.m_star > 0,
                            np.take_along_axis(result.train_curves, idx[:, None], 1)[:, 0],
                            np.nan)
  records = []
  for s in range(result.m_star.shape[0]):
    rec = {"full_train": result.train_curves[s, -1], "retained_train": retained_train[s]}
    for v, name in enumerate(learned.variants):
      rec.update({f"{name}_train": learned.train[s, v], f"{name}_test": learned.test[s, v],
                  f"{name}_lambda": learned.lam[s, v],
                  f"{name}_fell_back": bool(learned.fell_back[s, v])})
    records.append(rec)
  return records


def cv_record(result, summary: Mapping[str, Any], *, label: str,
              extra: Optional[Mapping[str, Any]] = None, learned=None) -> dict:
  """The content of ``cv.json`` (before the NaN -> null conversion); ``learned``: an optional
  :class:`ais_jax.reweight.ReweightResult` on the same splits (module docstring)."""
  random_records = []
  for r in range(result.random_orders.shape[1]):
    for rec in split_records(result, result.random_test_curves[:, r],
                             result.random_train_curves[:, r], result.random_m_star[:, r],
                             result.random_test_retained[:, r]):
      random_records.append(dict(rec, order_index=r))
  splits = split_records(result, result.test_curves, result.train_curves, result.m_star,
                         result.test_retained)
  if learned is not None:
    splits = [dict(rec, **more) for rec, more in zip(splits, learned_fields(result, learned))]
  more = {}
  if learned is not None:
    more["learned"] = {"variants": list(learned.variants), "settings": learned.settings,
                       "timings": learned.timings, "lambdas": list(learned.lambdas),
                       "fell_back": int(learned.fell_back.sum())}
  if "methods" in summary:
    more["methods"] = summary["methods"]
  return {"splits": splits,
          "random_order": {"splits": random_records,
                           "mean_test_retained": summary.get("mean_test_random_retained"),
                           "mean_m_star": summary.get("mean_random_m_star")},
          "tests": summary["tests"], "summary": dict(summary), "settings": result.settings,
          "undefined": result.undefined, "label": label, **more, **dict(extra or {})}


def score_label(score: str) -> str:
  """Axis label of a selection score ('r2' -> 'test $r^2$')."""
  return "test $r^2$" if score == "r2" else "test r"


def write_outputs(out: str, result, summary: Mapping[str, Any], *, label: str,
                  extra: Optional[Mapping[str, Any]] = None, learned=None,
                  heatmap_match: Optional[Mapping[str, Any]] = None,
                  split_counts: Optional[tuple] = None) -> tuple[dict, list[str]]:
  """Writes the files listed in the module docstring into ``out``.

  Args:
    out: output folder (created if needed).
    result: :class:`ais_jax.selection.SelectionResult`.
    summary: ``ais_jax.selection.summarize(result)``.
    label: the run's label in the figures and in cv.json.
    extra: more top-level cv.json entries (command, flags, timings, model).
    learned: optional :class:`ais_jax.reweight.ReweightResult` on the same splits (with
      ``summary["methods"] = ais_jax.reweight.summarize_methods(result, learned)``).
    heatmap_match: optional :func:`ais_jax.reweight.heatmap_comparison` output.
    split_counts: optional ``(used, dropped)`` splits for the figure titles (default: splits
      whose test scores are defined / undefined).

  Returns:
    ``(cv, paths)``: the cv.json record and the paths written.
  """
  os.makedirs(out, exist_ok=True)
  cv = cv_record(result, summary, label=label, extra=extra, learned=learned)
  if heatmap_match is not None:
    cv["heatmap_match"] = dict(heatmap_match["summary"])
  paths = [files_lib.write_json(os.path.join(out, "cv.json"), cv)]
  random_retained = (files_lib.nanmean(result.random_test_retained, 1)
                     if result.random_test_retained.size
                     else np.full(result.m_star.shape, np.nan))
  learned_cols = [f"{v}_test" for v in learned.variants] if learned is not None else []
  paths.append(files_lib.write_csv(
      os.path.join(out, "cv.csv"),
      ["seed", "fold", "n_test", "m_star", "test_full", "test_retained", "test_random_retained"]
      + learned_cols,
      [(rec["seed"], rec["fold"], rec["n_test"], rec["m_star"], rec["test_full"],
        rec["test_retained"], rr) + tuple(rec[c] for c in learned_cols)
       for rec, rr in zip(cv["splits"], random_retained)]))
  if learned is not None:
    for v, name in enumerate(learned.variants):
      path = os.path.join(out, f"{name}_weights.npy")
      np.save(path, learned.weights[:, v])
      paths.append(path)
  if "methods" in summary:
    paths.append(_methods_csv(os.path.join(out, "methods.csv"), summary["methods"]))
  if heatmap_match is not None:
    paths += _heatmap_files(out, heatmap_match)
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
      title=(f"Held-out agreement by method ({counts}; error bars: Loftus-Masson SE)"
             if learned is not None else
             f"Held-out agreement: all maps vs AIS-selected maps ({counts}; "
             "error bars: Loftus-Masson SE)"))
  learned_levels = None
  if learned is not None:
    learned_levels = {v: float(files_lib.nanmean(learned.test[:, i], 0))
                      for i, v in enumerate(learned.variants)}
  paths += selection_curves(result, os.path.join(out, "selection_curves.png"), counts=counts,
                            learned=learned_levels)
  return cv, paths


def split_counts_text(summary: Mapping[str, Any], n_splits: int) -> str:
  """'mean over 24 splits, 16 dropped (undefined test score)' from ``summary["split_usage"]``."""
  usage = summary.get("split_usage") or {"used": n_splits, "dropped": 0}
  text = f"mean over {usage['used']} splits, {usage['dropped']} dropped"
  if usage["dropped"]:
    text += " (undefined test score)"
  return text


def score_symbol(score: str) -> str:
  """The score as mathtext: 'r2' -> '$r^2$', 'r' -> '$r$'."""
  return "$r^2$" if score == "r2" else "$r$"


def selection_curves(result, out_png: str, *, counts: Optional[str] = None,
                     learned: Optional[Mapping[str, float]] = None) -> list[str]:
  """Mean train/test curves over m (AIS order) and the random-order test curve, with the spread
  of the test curve over splits (25th-75th percentile band), the all-maps test level (dashed),
  the mean m* (dotted vertical line, the mean test score at m* marked) and, when given, the
  learned-weights test levels (``{method: mean test score}``); ``.csv`` beside the PNG.

  Args:
    counts: the title's split counts (:func:`split_counts_text`; default: all splits).
  """
  import warnings
  from matplotlib import ticker
  from matplotlib.figure import Figure
  m = np.arange(1, result.test_curves.shape[1] + 1)
  train = files_lib.nanmean(result.train_curves, 0)
  test = files_lib.nanmean(result.test_curves, 0)
  with warnings.catch_warnings():  # an all-undefined column gives NaN, as nanmean
    warnings.simplefilter("ignore", RuntimeWarning)
    q25, q75 = np.nanpercentile(np.asarray(result.test_curves, np.float64), [25, 75], axis=0)
  rand = (files_lib.nanmean(result.random_test_curves, (0, 1))
          if result.random_test_curves.size else np.full(m.size, np.nan))
  full = float(files_lib.nanmean(result.test_full, 0))
  defined_m = result.m_star[result.m_star > 0]
  mean_m = float(defined_m.mean()) if defined_m.size else float("nan")
  symbol = score_symbol(result.settings["score"])
  fig = Figure(figsize=(6.4, 3.6))
  ax = fig.add_subplot(1, 1, 1)
  ax.plot(m, train, color="#ff7f00", label="train (AIS order)")
  ax.fill_between(m, q25, q75, color="#e41a1c", alpha=0.18, linewidth=0,
                  label="test, 25th-75th percentile of splits")
  ax.plot(m, test, color="#e41a1c", label="test (AIS order)")
  ax.plot(m, rand, color="#377eb8", label="test (random order)")
  ax.axhline(full, color="black", linestyle="--", linewidth=1,
             label=f"test, all maps ({full:.3f})")
  if np.isfinite(mean_m):
    ax.axvline(mean_m, color="#555555", linestyle=":", linewidth=1.2,
               label=f"mean m* = {mean_m:.0f} of {m.size}")
    ax.plot([mean_m], [float(files_lib.nanmean(result.test_retained, 0))], marker="v",
            markersize=7, color="#e41a1c", markeredgecolor="black", linestyle="none",
            label="mean test at m*")
  for (name, level), colour in zip((learned or {}).items(), ("#4daf4a", "#984ea3", "#a65628")):
    ax.axhline(level, color=colour, linestyle="-.", linewidth=1.2,
               label=f"test, {name.replace('_', ' ')} weights ({level:.3f})")
  ax.set_xscale("log")
  ax.set_xlim(float(m.min()) * 0.9, float(m.max()) * 1.1)  # Also when every curve is undefined.
  ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
  ax.xaxis.set_minor_formatter(ticker.NullFormatter())
  ax.set_xlabel("maps kept (first m of the AIS order, log scale)")
  ax.set_ylabel(symbol)
  ax.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
  ax.set_title(f"{symbol} vs maps kept, {counts or f'mean over {result.m_star.size} splits'}",
               fontsize=9)
  fig.savefig(out_png, dpi=110, bbox_inches="tight")
  csv_path = files_lib.write_csv(
      out_png[:-4] + ".csv",
      ["m", "train_mean", "test_mean", "test_q25", "test_q75", "random_test_mean"],
      [(int(k), a, b, c, d, e) for k, a, b, c, d, e in zip(m, train, test, q25, q75, rand)])
  return [out_png, csv_path]


def _methods_csv(path: str, methods: Mapping[str, Any]) -> str:
  """One row per method (mean test score) and one per pair of methods (both t-tests)."""
  rows = [(m, mean, methods["n_defined"][m], "", "", "", "", "")
          for m, mean in methods["mean_test"].items()]
  for pair, t in methods["tests"].items():
    p, c = t.get("paired", {}), t.get("corrected", {})
    rows.append((pair, p.get("mean_difference"), p.get("n"), p.get("statistic"),
                 p.get("pvalue"), c.get("statistic"), c.get("pvalue"), t.get("error", "")))
  return files_lib.write_csv(path, ["method_or_pair", "mean_test_or_difference", "n",
                                    "paired_t", "paired_p", "corrected_t", "corrected_p",
                                    "error"], rows)


def _heatmap_files(out: str, match: Mapping[str, Any]) -> list[str]:
  paths = []
  for name, key in (("learned_weights_all_images.npy", "weights"),
                    ("learned_heatmaps.npy", "learned_heatmaps")):
    paths.append(os.path.join(out, name))
    np.save(paths[-1], match[key])
  a, b = match["match_learned_vs_ais"], match["match_mean_vs_ais"]
  paths.append(files_lib.write_csv(os.path.join(out, "heatmap_match.csv"),
                                   ["image", "match_learned_vs_ais", "match_mean_vs_ais"],
                                   [(i, x, y) for i, (x, y) in enumerate(zip(a, b))]))
  paths.append(files_lib.write_json(os.path.join(out, "heatmap_match.json"), match["summary"]))
  return paths
