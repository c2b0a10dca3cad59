"""Figure 6 of the paper: per cohort, held-out agreement of each architecture with all maps
("full") and with its AIS-selected maps ("pruned"); "1" and "2" mark the two best architectures
in each condition.

One panel per cohort (the whole set, then each category), one pair of bars per architecture
(full: grey, pruned: red), error bars the Loftus-Masson within-cell SE (splits as subjects), the
rank labels above the bars. The PNG is drawn on the Agg canvas (no pyplot); the plotted numbers
and ranks are written beside it as ``figure6.csv``. :func:`section` is the HTML report's part.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ais_jax.report import files as files_lib
from ais_jax.report import index
from ais_jax.report.selection_figure import FULL_COLOUR, RETAINED_COLOUR

CONDITIONS = ("full", "pruned")


def top_two_ranks(values: Sequence[float]) -> list[Optional[int]]:
  """Rank 1 and 2 for the two largest defined values, None elsewhere.

  Ties keep the earlier entry first (stable); NaN and None are never ranked.

  >>> top_two_ranks([0.2, float('nan'), 0.5, 0.3])
  [None, None, 1, 2]
  """
  defined = [(i, float(v)) for i, v in enumerate(values)
             if v is not None and math.isfinite(float(v))]
  order = sorted(defined, key=lambda item: -item[1])  # sorted() is stable: ties by position
  ranks: list[Optional[int]] = [None] * len(values)
  for rank, (i, _) in enumerate(order[:2], start=1):
    ranks[i] = rank
  return ranks


def add_ranks(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
  """Copies of ``rows`` with ``rank_full`` / ``rank_pruned`` (1, 2 or None) within each cohort.

  Each row needs ``cohort``, ``full_mean`` and ``pruned_mean``.
  """
  out = [dict(r) for r in rows]
  for cohort in dict.fromkeys(r["cohort"] for r in out):
    members = [r for r in out if r["cohort"] == cohort]
    for condition in CONDITIONS:
      for r, rank in zip(members, top_two_ranks([r[f"{condition}_mean"] for r in members])):
        r[f"rank_{condition}"] = rank
  return out


def _num(value) -> float:
  return float("nan") if value is None else float(value)


def figure6(rows: Sequence[Mapping[str, Any]], out_png: str, *, score_label: str = "test $r^2$",
            title: Optional[str] = None) -> list[str]:
  """Draws Figure 6 and writes its numbers.

  Args:
    rows: one per (cohort, architecture) with ``cohort``, ``label`` (the architecture's name in
      the figure), ``full_mean``, ``pruned_mean``, ``se`` (Loftus-Masson SE or None), ``n_images``,
      ``folds`` and ``rank_full``/``rank_pruned`` (:func:`add_ranks`), in display order.
    out_png: path of the PNG; ``<stem>.csv`` is written beside it.
    score_label: y-axis label.
    title: figure title (default: a description of the layout).

  Returns:
    The paths written (PNG, CSV).
  """
  from matplotlib.figure import Figure
  cohorts = list(dict.fromkeys(r["cohort"] for r in rows))
  if not cohorts:
    raise ValueError("figure6: no rows to draw")
  columns = min(4, len(cohorts))
  lines = -(-len(cohorts) // columns)
  labels_all = list(dict.fromkeys(r["label"] for r in rows))
  width = max(3.2, 0.75 * len(labels_all) + 1.2)
  fig = Figure(figsize=(width * columns, 3.3 * lines + 0.6))
  finite = [v for r in rows for v in (_num(r["full_mean"]) + _num(r.get("se")),
                                      _num(r["pruned_mean"]) + _num(r.get("se")),
                                      _num(r["full_mean"]), _num(r["pruned_mean"]))
            if math.isfinite(v)]
  top = max(finite + [0.0])
  bottom = min(finite + [0.0])
  pad = 0.14 * ((top - bottom) or 1.0)
  for c, cohort in enumerate(cohorts):
    ax = fig.add_subplot(lines, columns, c + 1)
    members = [r for r in rows if r["cohort"] == cohort]
    x = np.arange(len(members))
    for offset, condition, colour in ((-0.2, "full", FULL_COLOUR),
                                      (0.2, "pruned", RETAINED_COLOUR)):
      heights = np.array([_num(r[f"{condition}_mean"]) for r in members])
      errors = np.array([_num(r.get("se")) for r in members])
      ax.bar(x + offset, np.nan_to_num(heights), 0.38, color=colour,
             label="all maps (full)" if condition == "full" else "AIS-selected maps (pruned)",
             yerr=np.where(np.isfinite(errors) & np.isfinite(heights), errors, 0.0),
             capsize=2, error_kw={"elinewidth": 0.8})
      for xi, h, e, r in zip(x, heights, errors, members):
        rank = r.get(f"rank_{condition}")
        if rank and math.isfinite(h):
          y = max(h, 0.0) + (e if math.isfinite(e) else 0.0) + 0.02 * ((top - bottom) or 1.0)
          ax.text(xi + offset, y, str(rank), ha="center", va="bottom", fontsize=9,
                  fontweight="bold", color="black" if condition == "pruned" else "#555555")
        elif not math.isfinite(h):
          ax.text(xi + offset, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
    counts = [f"n = {members[0]['n_images']}"] if members[0].get("n_images") else []
    counts += [f"{members[0]['folds']} folds"] if members[0].get("folds") else []
    ax.set_title(f"{cohort} ({', '.join(counts)})" if counts else str(cohort), fontsize=9)
    ax.set_xticks(x)
    ax.set_xticklabels([r["label"] for r in members], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(min(bottom, 0.0) - (pad if bottom < 0 else 0.0), top + pad)
    ax.axhline(0, color="black", linewidth=0.6)
    if c % columns == 0:
      ax.set_ylabel(score_label)
    if c == 0:
      ax.legend(fontsize=7, loc="upper left", frameon=False)
  fig.suptitle(title or "Held-out agreement per cohort: all maps vs AIS-selected maps; "
               "1/2 = two best architectures per condition (error bars: Loftus-Masson SE)",
               fontsize=10)
  fig.tight_layout(rect=(0, 0, 1, 0.96))
  os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
  fig.savefig(out_png, dpi=130)
  csv_path = os.path.splitext(out_png)[0] + ".csv"
  files_lib.write_csv(csv_path, ["cohort", "label", "n_images", "full_mean", "pruned_mean", "se",
                                 "rank_full", "rank_pruned"],
                      [(r["cohort"], r["label"], r.get("n_images"), _num(r["full_mean"]),
                        _num(r["pruned_mean"]), _num(r.get("se")), r.get("rank_full"),
                        r.get("rank_pruned")) for r in rows])
  return [out_png, csv_path]


def section(rows: Sequence[Mapping[str, Any]], *, figure: str, csv: str,
            notes: Sequence[str] = (), score: str = "r2") -> index.Section:
  """The HTML report's section: the figure, the table of cells and the notes.

  ``figure`` and ``csv`` are paths relative to the report's folder.
  """
  score_name = "r^2" if score == "r2" else "r"

  def mark(rank):
    return "" if not rank else f" ({rank})"

  table_rows = [
      (r["cohort"], r["label"], r["n_images"], r.get("folds"),
       f"{index.format_cell(_num(r['full_mean']))}{mark(r.get('rank_full'))}",
       f"{index.format_cell(_num(r['pruned_mean']))}{mark(r.get('rank_pruned'))}",
       _num(r.get("m_star_mean")), r.get("num_maps"), _num(r.get("p")),
       _num(r.get("p_corrected"))) for r in rows]
  items = [
      index.Figure(figure, "Figure 6: architectures by cohort",
                   f"Each panel is one cohort; per architecture the grey bar is the mean held-out "
                   f"{score_name} with all maps, the red bar with the maps AIS selected on the "
                   "training images (m*). '1' and '2' mark the two best architectures in each "
                   "condition. Error bars: Loftus-Masson within-cell SE over the splits.",
                   data=[os.path.splitext(figure)[0] + ".csv", csv]),
      index.Table("Cells: one cohort x architecture each",
                  ["cohort", "architecture", "images", "folds", f"full {score_name}",
                   f"pruned {score_name}", "mean m*", "maps K", "p (paired t)",
                   "p (corrected resampled t)"], table_rows,
                  "Means over the cross-validation splits (same splits for every architecture "
                  "of a cohort); the rank (1, 2) follows the value. p compares pruned against "
                  "full; the corrected test accounts for the overlap of training sets.",
                  data=[csv]),
  ]
  if notes:
    items.append(index.Text(list(notes), title="Notes"))
  return index.Section("Architectures (Figure 6)", items)
