"""Figures of the paper's layouts, each a PNG with the numbers behind it saved beside it.

Every function takes arrays (never files) and an output path ``out_png``; it writes the PNG and a
``.csv`` and/or ``.json`` with the same stem holding the plotted numbers, and returns the list of
written paths. Figures are drawn on the Agg canvas (``matplotlib.figure.Figure``, no pyplot and no
global backend switch), so they work on headless machines.

* :func:`heatmap_grid`      - heatmap overlays grouped by dataset (Figure 2).
* :func:`match_cdf`         - cumulative distribution of Match scores (Figure A.1).
* :func:`ais_distributions` - log10 mean AIS per map, MAD per map and per image (Figure 3).
* :func:`pr_curves`         - precision-recall of saliency against AIS targets (Figure 4).
* :func:`contour_overlays`  - AIS and saliency contours with RR values (Figure 5).
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ais_jax import aim2
from ais_jax import heatmaps as heatmaps_lib
from ais_jax.report import files

AIS_COLOUR = "#e41a1c"        # red
SALIENCY_COLOUR = "#00bfff"   # deep sky blue


def _stem(out_png: str) -> str:
  if not out_png.lower().endswith(".png"):
    raise ValueError(f"out_png must end with .png; got {out_png!r}")
  os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
  return out_png[:-4]


# The writers shared by every report module (strict JSON, round-trip CSV floats).
_write_json = files.write_json
_write_csv = files.write_csv


def _save(fig: Figure, out_png: str, dpi: int = 110) -> str:
  fig.savefig(out_png, dpi=dpi, bbox_inches="tight")
  return out_png


# ----------------------------------------------------------------------------------------------
# Figure 2: heatmap overlays


def select_examples(groups: Sequence[str], per_group: int = 4) -> list[int]:
  """The documented default choice of example images: the first ``per_group`` images of each group,
  in cohort order (groups in first-appearance order). Pass explicit indices to choose others."""
  chosen: dict[str, list[int]] = {}
  for i, g in enumerate(groups):
    chosen.setdefault(str(g), [])
    if len(chosen[str(g)]) < per_group:
      chosen[str(g)].append(i)
  return [i for idx in chosen.values() for i in idx]


def heatmap_grid(images: Sequence[np.ndarray], heatmaps: Sequence[np.ndarray], out_png: str, *,
                 names: Sequence[str] | None = None, groups: Sequence[str] | None = None,
                 index: Sequence[int] | None = None, alpha: float = 0.6, cmap: str = "jet",
                 show_image: bool = True, title: str | None = None) -> list[str]:
  """Heatmap overlays in the layout of the paper's Figure 2: one row block per dataset/group.

  Args:
    images: n uint8 ``[H, W, 3]`` images.
    heatmaps: n heatmaps (any resolution; upsampled to each image).
    out_png: output path; ``<stem>.json`` (names, groups, per-image heatmap statistics) and
      ``<stem>.npz`` (the plotted heatmaps at image resolution) are written beside it.
    names, groups: n labels (default: indices, one group).
    index: which images to show (default :func:`select_examples` with 4 per group).
    show_image: also show the plain image above each overlay.
  """
  n = len(images)
  if len(heatmaps) != n:
    raise ValueError(f"{n} images but {len(heatmaps)} heatmaps")
  names = [str(i) for i in range(n)] if names is None else [str(s) for s in names]
  groups = ["all"] * n if groups is None else [str(g) for g in groups]
  index = select_examples(groups) if index is None else [int(i) for i in index]
  group_order = list(dict.fromkeys(groups[i] for i in index))
  per_group = {g: [i for i in index if groups[i] == g] for g in group_order}
  ncols = max(len(v) for v in per_group.values())
  rows_per = 2 if show_image else 1
  nrows = rows_per * len(group_order)
  fig = Figure(figsize=(2.0 * ncols, 2.1 * nrows), layout="constrained")
  shown = {}
  for gi, g in enumerate(group_order):
    for ci in range(ncols):
      for r in range(rows_per):
        ax = fig.add_subplot(nrows, ncols, (gi * rows_per + r) * ncols + ci + 1)
        ax.set_xticks([])
        ax.set_yticks([])
        if ci >= len(per_group[g]):
          ax.axis("off")
          continue
        i = per_group[g][ci]
        img = np.asarray(images[i])
        heat = np.asarray(heatmaps[i], np.float32)
        if heat.shape != img.shape[:2]:
          heat = np.asarray(heatmaps_lib.upsample(heat[None], img.shape[:2])[0])
        shown[i] = heat
        if show_image and r == 0:
          ax.imshow(img)
          ax.set_title(names[i], fontsize=7)
        else:
          ax.imshow(heatmaps_lib.overlay(img, heat, alpha=alpha, cmap=cmap))
          if not show_image:
            ax.set_title(names[i], fontsize=7)
        if ci == 0 and r == 0:
          ax.set_ylabel(g, fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9)
  stem = _stem(out_png)
  paths = [_save(fig, out_png)]
  stats = []
  for i in index:
    h = shown[i]
    stats.append({"index": i, "name": names[i], "group": groups[i], "max": float(h.max()),
                  "mean": float(h.mean()), "all_zero": bool(np.all(h == 0))})
  paths.append(_write_json(stem + ".json", {"figure": "heatmap overlays (paper Fig. 2)",
                                            "colormap": cmap, "alpha": alpha, "images": stats}))
  np.savez_compressed(stem + ".npz", **{f"heatmap_{i}": shown[i] for i in index})
  paths.append(stem + ".npz")
  return paths


# ----------------------------------------------------------------------------------------------
# Figure A.1: Match CDF


def match_cdf(scores: Mapping[str, Any], out_png: str, *, title: str | None = None) -> list[str]:
  """Cumulative distributions of Match scores, one step curve per model pair.

  Args:
    scores: ``{'Lite0 vs Lite1': [n] Match scores, ...}`` (NaN = undefined, counted in the legend).
    out_png: output; ``<stem>.csv`` (pair, x, p) and ``<stem>.json`` (n, undefined, median, mean).
  """
  fig = Figure(figsize=(4.8, 3.6))
  ax = fig.add_subplot(1, 1, 1)
  rows, summary = [], {}
  for label, values in scores.items():
    cdf = aim2.empirical_cdf(values)
    x = np.concatenate([[-1.0], cdf["x"], [1.0]]) if cdf["n"] else np.array([-1.0, 1.0])
    p = np.concatenate([[0.0], cdf["p"], [1.0]]) if cdf["n"] else np.array([0.0, 0.0])
    ax.step(x, p, where="post", label=f"{label} (n={cdf['n']}, undefined {cdf['n_undefined']})")
    rows += [(label, float(a), float(b)) for a, b in zip(cdf["x"], cdf["p"])]
    summary[label] = {"n": cdf["n"], "n_undefined": cdf["n_undefined"],
                      "median": float(np.median(cdf["x"])) if cdf["n"] else None,
                      "mean": float(np.mean(cdf["x"])) if cdf["n"] else None}
  ax.set_xlim(-1, 1)
  ax.set_ylim(0, 1.02)
  ax.set_xlabel("Match score (Pearson r of the two heatmaps)")
  ax.set_ylabel("cumulative fraction of images")
  ax.legend(fontsize=7, loc="upper left")
  ax.grid(alpha=0.3)
  if title:
    ax.set_title(title, fontsize=9)
  stem = _stem(out_png)
  return [_save(fig, out_png), _write_csv(stem + ".csv", ["pair", "match", "cdf"], rows),
          _write_json(stem + ".json", {"figure": "Match CDF (paper Fig. A.1)", "pairs": summary})]


# ----------------------------------------------------------------------------------------------
# Figure 3: AIS distributions


def ais_distributions(per_image_ais: Mapping[str, Any], out_png: str, *, bins: int = 30,
                      title: str | None = None) -> list[str]:
  """Distributions of AIS per model in three panels (the paper's Figure 3).

  Panels: histogram of log10 of the positive per-map mean AIS (non-positive maps counted in the
  legend); histogram of the mean absolute deviation per map; and per image. Two-sided KS tests
  between every pair of models are in ``<stem>.json``; the per-map numbers in ``<stem>.csv``.

  Args:
    per_image_ais: ``{model label: [n, K] per-image AIS}``.
  """
  fig = Figure(figsize=(12, 3.6), layout="constrained")
  axes = [fig.add_subplot(1, 3, j + 1) for j in range(3)]
  summary, rows = {"figure": "AIS distributions (paper Fig. 3)", "models": {}, "ks": {}}, []
  panels = {}
  for label, ais in per_image_ais.items():
    hist = aim2.log10_mean_ais(ais, bins=bins)
    mean = aim2.map_mean_ais(ais)["mean"]
    mad_map = aim2.mean_absolute_deviation(ais, axis="map")
    mad_img = aim2.mean_absolute_deviation(ais, axis="image")
    finite_map = mad_map[np.isfinite(mad_map)]
    finite_img = mad_img[np.isfinite(mad_img)]
    panels[label] = (hist, finite_map, finite_img)
    summary["models"][label] = {
        "n_images": int(np.asarray(ais).shape[0]), "n_maps": hist["n_maps"],
        "n_positive_mean": hist["n_positive"], "n_nonpositive_mean": hist["n_nonpositive"],
        "n_undefined_maps": hist["n_undefined_maps"], "n_undefined_values": hist["n_undefined_values"],
        "log10_mean_median": float(np.median(hist["log10_mean"])) if hist["log10_mean"].size else None,
        "mad_per_map_mean": float(finite_map.mean()) if finite_map.size else None,
        "mad_per_image_mean": float(finite_img.mean()) if finite_img.size else None,
        "log10_mean_histogram_counts": hist["counts"], "log10_mean_histogram_edges": hist["edges"]}
    rows += [(label, k, float(mean[k]), float(mad_map[k])) for k in range(mean.size)]
  # One set of bin edges per panel, shared by the models, so the bars compare.
  for j, ax in enumerate(axes):
    values = [p[0]["log10_mean"] if j == 0 else p[j] for p in panels.values()]
    pooled = np.concatenate([v for v in values] + [np.zeros(0)])
    if pooled.size == 0:
      continue
    edges = np.histogram_bin_edges(pooled, bins=bins)
    for (label, p), v in zip(panels.items(), values):
      extra = f" ({p[0]['n_nonpositive']} of {p[0]['n_maps']} maps <= 0)" if j == 0 else ""
      ax.hist(v, bins=edges, alpha=0.45, label=label + extra)
    if j:
      ax.tick_params(axis="x", labelrotation=30)
  for a, b in itertools.combinations(list(per_image_ais), 2):
    summary["ks"][f"{a} vs {b}"] = aim2.compare_models(per_image_ais[a], per_image_ais[b])
  axes[0].set_xlabel("log10 mean AIS per map (positive means)")
  axes[1].set_xlabel("mean absolute deviation of AIS per map (over images)")
  axes[2].set_xlabel("mean absolute deviation of AIS per image (over maps)")
  for ax in axes:
    ax.set_ylabel("count")
    ax.legend(fontsize=7)
  if title:
    fig.suptitle(title, fontsize=9)
  stem = _stem(out_png)
  return [_save(fig, out_png),
          _write_csv(stem + ".csv", ["model", "map", "mean_ais", "mad_over_images"], rows),
          _write_json(stem + ".json", summary)]


# ----------------------------------------------------------------------------------------------
# Figure 4: precision-recall


def pr_curves(means: Mapping[str, Mapping[str, np.ndarray]], target_percentiles: Sequence[float],
              saliency_percentiles: Sequence[float], out_png: str, *,
              title: str | None = None) -> list[str]:
  """Precision-recall curves in the layout of the paper's Figure 4.

  One panel per target percentile (AIS heatmap above its p-th percentile); in each, one curve per
  dataset, traced over the saliency percentiles (recall on x, precision on y), with the chance
  level (precision = target fraction) dashed.

  Args:
    means: ``{dataset: PrecisionRecall.mean(...)}`` (``'precision'``/``'recall'`` ``[T, Q]``
      and the defined counts ``'n_precision'``/``'n_recall'``).
    out_png: output; ``<stem>.csv`` holds every plotted point with its defined counts.
  """
  t = np.asarray(target_percentiles, np.float64)
  q = np.asarray(saliency_percentiles, np.float64)
  fig = Figure(figsize=(3.2 * t.size, 3.5), layout="constrained")
  rows = []
  for j, p in enumerate(t):
    ax = fig.add_subplot(1, t.size, j + 1)
    for name, m in means.items():
      prec, rec = np.asarray(m["precision"])[j], np.asarray(m["recall"])[j]
      ax.plot(rec, prec, marker=".", markersize=3, label=name)
      for k in range(q.size):
        rows.append((name, p, q[k], float(rec[k]), float(prec[k]), int(m["n_recall"][j, k]),
                     int(m["n_precision"][j, k])))
    ax.axhline(1 - p / 100, color="grey", ls="--", lw=0.8, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"target: AIS > {p:g}th percentile", fontsize=8)
    ax.set_xlabel("recall")
    if j == 0:
      ax.set_ylabel("precision")
      ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title, fontsize=9)
  stem = _stem(out_png)
  return [_save(fig, out_png),
          _write_csv(stem + ".csv", ["dataset", "target_percentile", "saliency_percentile", "recall",
                                     "precision", "n_recall_defined", "n_precision_defined"], rows)]


# ----------------------------------------------------------------------------------------------
# Figure 5: contour overlays


def _contour(ax, x: np.ndarray, top: Sequence[float], colour: str) -> list[float]:
  levels = np.percentile(x, [100 - p for p in top])  # thresholds, decreasing with top
  drawn = []
  widths = np.linspace(2.0, 0.8, len(levels))
  for level, width in zip(levels, widths):
    if np.any(x > level) and np.any(x <= level):
      ax.contour(x, levels=[level], colors=[colour], linewidths=[width])
    drawn.append(float(level))
  return drawn


def contour_overlays(images: Sequence[np.ndarray], ais_maps: Sequence[np.ndarray],
                     saliency_maps: Sequence[np.ndarray], rr: np.ndarray, out_png: str, *,
                     top: Sequence[float] = (5, 10, 15), names: Sequence[str] | None = None,
                     index: Sequence[int] | None = None, ncols: int = 4) -> list[str]:
  """AIS (red) and saliency (blue) contours at the top-p% thresholds, RR printed on each image.

  The layout of the paper's Figure 5. Thicker lines are the smaller sets (top 5%). A level whose
  set is empty (ties at the maximum) draws no line.

  Args:
    images: n uint8 ``[H, W, 3]``; ais_maps, saliency_maps: n ``[H, W]`` maps at image resolution.
    rr: ``[n, L]`` relative risk at ``top`` (NaN = undefined, printed as 'undef.').
    index: images to draw (default the first 8).
    out_png: output; ``<stem>.json`` holds the contour thresholds and RR per drawn image.
  """
  n = len(images)
  names = [str(i) for i in range(n)] if names is None else [str(s) for s in names]
  index = list(range(min(n, 8))) if index is None else [int(i) for i in index]
  rr = np.asarray(rr, np.float64)
  ncols = max(1, min(ncols, len(index)))
  nrows = int(np.ceil(len(index) / ncols))
  fig = Figure(figsize=(2.8 * ncols, 3.0 * nrows + 0.4), layout="constrained")
  records = []
  for c, i in enumerate(index):
    ax = fig.add_subplot(nrows, ncols, c + 1)
    ax.imshow(np.asarray(images[i]))
    a_levels = _contour(ax, np.asarray(ais_maps[i], np.float64), top, AIS_COLOUR)
    s_levels = _contour(ax, np.asarray(saliency_maps[i], np.float64), top, SALIENCY_COLOUR)
    text = "\n".join(f"RR{p:g}%: " + ("undef." if not np.isfinite(v) else f"{v:.2f}")
                     for p, v in zip(top, rr[i]))
    ax.text(0.02, 0.98, text, transform=ax.transAxes, va="top", ha="left", fontsize=7,
            color="white", bbox=dict(facecolor="black", alpha=0.55, pad=2, lw=0))
    ax.set_title(names[i], fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    records.append({"index": i, "name": names[i], "top_percent": list(top), "rr": rr[i],
                    "ais_thresholds": a_levels, "saliency_thresholds": s_levels})
  levels = "/".join(f"{p:g}" for p in top)
  handles = [Line2D([], [], color=AIS_COLOUR, lw=2, label=f"AIS heatmap top {levels}%"),
             Line2D([], [], color=SALIENCY_COLOUR, lw=2, label=f"saliency top {levels}%")]
  fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
  stem = _stem(out_png)
  return [_save(fig, out_png),
          _write_json(stem + ".json", {"figure": "AIS vs saliency contours (paper Fig. 5)",
                                       "ais_colour": AIS_COLOUR, "saliency_colour": SALIENCY_COLOUR,
                                       "images": records})]
