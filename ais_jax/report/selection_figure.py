"""Figure 1 of the paper: test r^2 with all maps ("full") vs the AIS-selected maps ("retained").

One group of bars per run (dataset x model): full, retained and - when the run has them - the
random-order control and the learned map weights (:mod:`ais_jax.reweight`: on all maps, and on
the AIS-retained maps); error bars are Loftus-Masson within-subject standard errors (splits as
subjects); the mean retained-set size (mean m*) is written above each group. The PNG is drawn on
the Agg canvas (no pyplot); the plotted numbers are written beside it as ``.csv`` and ``.json``.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

FULL_COLOUR = "#9e9e9e"
RETAINED_COLOUR = "#e41a1c"
RANDOM_COLOUR = "#377eb8"
LEARNED_COLOUR = "#4daf4a"
LEARNED_RETAINED_COLOUR = "#984ea3"


def group_from_cv(cv: Mapping[str, Any]) -> dict:
  """The bar values of one run from its ``cv.json`` content (see experiments/selection.py)."""
  s = cv["summary"]
  lm = s.get("loftus_masson") or {}
  group = {"full": _num(s["mean_test_full"]), "retained": _num(s["mean_test_retained"]),
           "se": _num(lm.get("se")), "mean_m_star": s["mean_m_star"],
           "n_splits": s["n_splits"], "K": cv.get("settings", {}).get("K")}
  if "mean_test_random_retained" in s:
    group["random"] = _num(s["mean_test_random_retained"])
    group["se_random"] = _num((s.get("loftus_masson_random") or {}).get("se"))
  p = (s.get("tests") or {}).get("retained_vs_full_paired", {}).get("pvalue")
  group["p_paired"] = p
  methods = s.get("methods") or cv.get("methods")
  if methods:
    # One Loftus-Masson SE over all methods (splits as subjects) for the learned bars.
    se = _num((methods.get("loftus_masson") or {}).get("se"))
    for name in ("learned", "learned_retained"):
      if name in methods.get("mean_test", {}):
        group[name] = _num(methods["mean_test"][name])
        group["se_methods"] = se
  return group


def _num(v) -> float:
  return float("nan") if v is None else float(v)


def _clean(x):
  if isinstance(x, dict):
    return {k: _clean(v) for k, v in x.items()}
  if isinstance(x, (float, np.floating)):
    return None if not np.isfinite(x) else float(x)
  if isinstance(x, np.integer):
    return int(x)
  return x


def selection_bars(groups: Mapping[str, Mapping[str, Any]], out_png: str, *,
                   score_label: str = "test $r^2$", title: str | None = None) -> list[str]:
  """Grouped bars (full / retained / random order / learned weights) with error bars and mean m*
  annotations.

  Args:
    groups: ``{label: {"full", "retained", "se", "mean_m_star", optional "random",
      "se_random", "learned", "learned_retained", "se_methods", "K", "p_paired"}}`` in display
      order (:func:`group_from_cv` builds one).
    out_png: path ending in ``.png``; ``.csv`` and ``.json`` with the same stem are written too.

  Returns:
    The written paths.
  """
  if not out_png.lower().endswith(".png"):
    raise ValueError(f"out_png must end with .png; got {out_png!r}")
  os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
  labels = list(groups)
  if not labels:
    raise ValueError("groups is empty: nothing to plot")
  has = lambda key: any(key in g for g in groups.values())
  series = [("full", "all maps", FULL_COLOUR, "se"),
            ("retained", "AIS-selected", RETAINED_COLOUR, "se")]
  if has("random"):
    series.append(("random", "random order", RANDOM_COLOUR, "se_random"))
  if has("learned"):
    series.append(("learned", "learned weights", LEARNED_COLOUR, "se_methods"))
  if has("learned_retained"):
    series.append(("learned_retained", "learned on AIS-selected", LEARNED_RETAINED_COLOUR,
                   "se_methods"))
  width = 0.8 / (len(series) + 0.2)
  fig = Figure(figsize=(max(4.0, (0.45 * len(series) + 0.5) * len(labels) + 1.5), 3.8))
  ax = fig.add_subplot(1, 1, 1)
  x = np.arange(len(labels), dtype=float)
  offsets = (np.arange(len(series)) - (len(series) - 1) / 2) * width
  tops = np.zeros(len(labels))
  for (key, name, colour, se_key), off in zip(series, offsets):
    vals = np.array([_num(groups[l].get(key)) for l in labels])
    errs = np.array([_num(groups[l].get(se_key)) for l in labels])
    ax.bar(x + off, np.nan_to_num(vals), width, color=colour, label=name,
           yerr=np.where(np.isfinite(errs), errs, 0), capsize=3, edgecolor="black", linewidth=0.5)
    tops = np.maximum(tops, np.nan_to_num(vals) + np.nan_to_num(errs))
  span = max(float(tops.max()), 1e-6)
  for i, l in enumerate(labels):
    g = groups[l]
    m = _num(g.get("mean_m_star"))
    text = f"m* = {m:.0f}" if np.isfinite(m) else "m* = n/a"
    if g.get("K"):
      text += f" / {g['K']}"
    ax.text(x[i], tops[i] + 0.04 * span, text, ha="center", va="bottom", fontsize=8)
  ax.set_xticks(x)
  ax.set_xticklabels(labels, fontsize=8)
  ax.set_ylabel(score_label)
  ax.set_ylim(0, span * 1.25)
  if len(series) > 3:  # outside the axes, so that no bar or m* label is covered
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
  else:
    ax.legend(fontsize=8, frameon=False, loc="upper right", ncol=len(series))
  ax.spines["top"].set_visible(False)
  ax.spines["right"].set_visible(False)
  ax.set_title(title or "Held-out agreement: all maps vs AIS-selected maps "
               "(error bars: Loftus-Masson SE)", fontsize=9)
  fig.savefig(out_png, dpi=110, bbox_inches="tight")
  stem = out_png[:-4]
  keys = ["full", "retained", "se", "random", "se_random", "learned", "learned_retained",
          "se_methods", "mean_m_star", "K", "n_splits", "p_paired"]
  with open(stem + ".csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["label"] + keys)
    for l in labels:
      row = [_clean(groups[l].get(k)) for k in keys]
      w.writerow([l] + ["" if v is None else v for v in row])
  with open(stem + ".json", "w") as f:
    json.dump({l: _clean(dict(groups[l])) for l in labels}, f, indent=1)
  return [out_png, stem + ".csv", stem + ".json"]
