"""Figures of the paper's layouts, each a PNG with the numbers behind it saved beside it.

Every function takes arrays (never files) and an output path ``out_png``; it writes the PNG and a
``.csv`` and/or ``.json`` with the same stem holding the plotted numbers, and returns the list of
written paths. Figures are drawn on the Agg canvas (``matplotlib.figure.Figure``, no pyplot and no
global backend switch), so they work on headless machines.

* :func:`heatmap_grid`      - heatmap overlays grouped by dataset (Figure 2), examples chosen by
  :func:`select_examples`; every overlay over a grey copy of the image with a colorbar.
* :func:`overlay_figure` / :func:`write_overlays` - one image and its overlay per PNG
  (``--save_overlays``).
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

AIS_COLOUR = "#e41a1c"        # red, solid lines
SALIENCY_COLOUR = "#1f5fff"   # blue, dashed lines


def _stem(out_png: str) -> str:
  if not out_png.lower().endswith(".png"):
    raise ValueError(f"out_png must end with .png; got {out_png!r}")
  os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
  return out_png[:-4]


# The writers shared by every report module (strict JSON, round-trip CSV floats).
_write_json = files.write_json
_write_csv = files.write_csv


def _save(fig: Figure, out_png: str, dpi: int = 110, tight: bool = True) -> str:
  # ``tight`` draws the figure twice; figures with a constrained layout do not need it.
  fig.savefig(out_png, dpi=dpi, bbox_inches="tight" if tight else None)
  return out_png


# ----------------------------------------------------------------------------------------------
# Figure 2: heatmap overlays


def select_examples(groups: Sequence[str], per_group: int = 4,
                    statistic: Sequence[float] | None = None) -> list[int]:
  """Example images for a figure, ``per_group`` from each group (groups in first-appearance order).

  Without ``statistic``: the first ``per_group`` images of each group, in cohort order. With
  ``statistic`` (one value per image, e.g. the image's agreement with the human similarities, a
  Match score or a relative risk): in each group the images ranked by it from highest to lowest,
  taking ranks spread evenly from the highest to the lowest (``per_group=2``: the highest and the
  lowest); images whose value is not finite are taken last. Returned in that order, group by group.
  """
  members: dict[str, list[int]] = {}
  for i, g in enumerate(groups):
    members.setdefault(str(g), []).append(i)
  if statistic is None:
    return [i for idx in members.values() for i in idx[:per_group]]
  values = np.asarray(statistic, np.float64)
  if values.shape != (len(groups),):
    raise ValueError(f"statistic has shape {values.shape}; expected one value per image "
                     f"({len(groups)})")
  chosen = []
  for idx in members.values():
    finite = sorted((i for i in idx if np.isfinite(values[i])), key=lambda i: -values[i])
    ranked = finite + [i for i in idx if not np.isfinite(values[i])]
    if len(ranked) <= per_group:
      chosen += ranked
      continue
    top = len(finite) - 1 if len(finite) >= per_group else len(ranked) - 1
    picks = np.round(np.linspace(0, top, per_group)).astype(int)
    chosen += [ranked[k] for k in dict.fromkeys(picks.tolist())]
  return chosen


HEAT_CMAP = "inferno"   # perceptually uniform, one hue ramp; drawn over a grey copy of the image
HEAT_SCALE_NOTE = "each map scaled to its own range (0 = its minimum, 1 = its maximum)"


def grey_image(image: np.ndarray) -> np.ndarray:
  """uint8 ``[H, W, 3]`` -> the same image in grey (ITU-R 601 luma), lightened so a colour map
  drawn over it stands out and no stimulus colour competes with the map's colours."""
  img = np.asarray(image, np.float64)
  luma = img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114
  grey = 64 + 0.6 * luma
  return np.repeat(np.clip(np.round(grey), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def heat_overlay(image: np.ndarray, heat: np.ndarray, *, alpha: float = 0.75,
                 cmap: str = HEAT_CMAP) -> np.ndarray:
  """A heatmap over the grey copy of its image (uint8 ``[H, W, 3]``); the map is min-max scaled
  per image and its opacity grows with the heat (``ais_jax.heatmaps.overlay``)."""
  return heatmaps_lib.overlay(grey_image(image), heat, alpha=alpha, cmap=cmap)


def heat_colorbar(fig: Figure, axes, *, cmap: str = HEAT_CMAP, label: str | None = None,
                  **kwargs):
  """One colorbar for overlays drawn by :func:`heat_overlay` (scale 0..1 per image)."""
  from matplotlib import cm, colors
  mappable = cm.ScalarMappable(norm=colors.Normalize(0, 1), cmap=cmap)
  if "cax" not in kwargs:
    kwargs.setdefault("shrink", 0.8)
  bar = fig.colorbar(mappable, ax=axes, label=label or f"heat: {HEAT_SCALE_NOTE}", **kwargs)
  bar.set_ticks([0, 0.5, 1], labels=["min", "0.5", "max"])
  return bar


def grid_figure(nrows: int, ncols: int, *, cell: tuple, left: float, right: float, top: float,
                bottom: float, wspace: float = 0.06, hspace: float = 0.3):
  """A figure holding an ``nrows x ncols`` grid of image panels (``cell`` = (width, height) in
  inches per panel, margins in inches) without a layout engine: laying out a hundred image axes
  with the constrained layout costs more than drawing them. Returns (figure, gridspec)."""
  width = cell[0] * ncols + left + right
  height = cell[1] * nrows + top + bottom
  fig = Figure(figsize=(width, height))
  grid = fig.add_gridspec(nrows, ncols, left=left / width, right=1 - right / width,
                          bottom=bottom / height, top=1 - top / height, wspace=wspace,
                          hspace=hspace)
  return fig, grid


def side_colorbar(fig: Figure, right: float, **kwargs):
  """:func:`heat_colorbar` in the right margin (``right`` inches wide) of a :func:`grid_figure`."""
  width, _ = fig.get_size_inches()
  cax = fig.add_axes([1 - (right - 0.15) / width, 0.3, 0.12 / width, 0.4])
  return heat_colorbar(fig, None, cax=cax, **kwargs)


def short_name(name: str, limit: int = 18) -> str:
  """``name`` cut to ``limit`` characters with an ellipsis (panel titles)."""
  return name if len(name) <= limit else name[:limit - 1] + "\u2026"


def heatmap_grid(images: Sequence[np.ndarray], heatmaps: Sequence[np.ndarray], out_png: str, *,
                 names: Sequence[str] | None = None, groups: Sequence[str] | None = None,
                 index: Sequence[int] | None = None, alpha: float = 0.75, cmap: str = HEAT_CMAP,
                 show_image: bool = True, title: str | None = None,
                 heat_label: str = "AIS heatmap",
                 labels: Mapping[int, str] | None = None) -> list[str]:
  """Heatmap overlays in the layout of the paper's Figure 2: one row block per dataset/group.

  Each overlay shows the map over a grey copy of the image (:func:`heat_overlay`; every map scaled
  to its own range, stated on the colorbar).

  Args:
    images: n uint8 ``[H, W, 3]`` images.
    heatmaps: n heatmaps (any resolution; upsampled to each image).
    out_png: output path; ``<stem>.json`` (names, groups, per-image heatmap statistics) and
      ``<stem>.npz`` (the plotted heatmaps at image resolution) are written beside it.
    names, groups: n labels (default: indices, one group).
    index: which images to show (default :func:`select_examples` with 4 per group).
    show_image: also show the plain image above each overlay.
    heat_label: the label of the overlay rows.
    labels: extra text under an image's name (e.g. ``{i: 'r = 0.41'}``, the statistic it was
      chosen by).
  """
  n = len(images)
  if len(heatmaps) != n:
    raise ValueError(f"{n} images but {len(heatmaps)} heatmaps")
  names = [str(i) for i in range(n)] if names is None else [str(s) for s in names]
  groups = ["all"] * n if groups is None else [str(g) for g in groups]
  index = select_examples(groups) if index is None else [int(i) for i in index]
  labels = dict(labels or {})
  group_order = list(dict.fromkeys(groups[i] for i in index))
  per_group = {g: [i for i in index if groups[i] == g] for g in group_order}
  ncols = max(len(v) for v in per_group.values())
  rows_per = 2 if show_image else 1
  # Two examples or fewer per group: image and overlay side by side, one row per group (a tall
  # two-column strip otherwise); more: the overlay row under the image row.
  side_by_side = show_image and ncols <= 2
  nrows = len(group_order) if side_by_side else rows_per * len(group_order)
  several = len(group_order) > 1
  # A fixed grid (no constrained layout: laying out a hundred image axes costs more than drawing
  # them): margins in inches converted to figure fractions.
  fig, grid = grid_figure(nrows, ncols * (2 if side_by_side else 1), cell=(2.1, 2.45),
                          left=1.25, right=0.9, top=0.5 + (0.35 if title else 0.0), bottom=0.1)
  shown = {}
  overlay_axes = []
  for gi, g in enumerate(group_order):
    for ci in range(ncols):
      for r in range(rows_per):
        cell = (gi, 2 * ci + r) if side_by_side else (gi * rows_per + r, ci)
        ax = fig.add_subplot(grid[cell])
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
        is_image_row = show_image and r == 0
        if is_image_row:
          ax.imshow(img)
        else:
          ax.imshow(heat_overlay(img, heat, alpha=alpha, cmap=cmap))
          overlay_axes.append(ax)
        if r == 0:
          extra = f"\n{labels[i]}" if i in labels else ""
          ax.set_title(short_name(names[i]) + extra, fontsize=9)
        elif side_by_side:
          ax.set_title(heat_label, fontsize=9)
        if side_by_side and ci == 0 and r == 0:
          ax.set_ylabel(g, fontsize=9)
        elif not side_by_side and ci == 0:
          row_name = "image" if is_image_row else heat_label
          ax.set_ylabel(f"{g}\n{row_name}" if several else row_name, fontsize=9)
  if overlay_axes:
    side_colorbar(fig, 0.9, cmap=cmap)
  if title:
    fig.suptitle(title, fontsize=10, y=1 - 0.12 / fig.get_size_inches()[1], va="top")
  stem = _stem(out_png)
  paths = [_save(fig, out_png, dpi=100, tight=False)]
  stats = []
  for i in index:
    h = shown[i]
    stats.append({"index": i, "name": names[i], "group": groups[i], "max": float(h.max()),
                  "mean": float(h.mean()), "all_zero": bool(np.all(h == 0)),
                  "label": labels.get(i)})
  paths.append(_write_json(stem + ".json", {"figure": "heatmap overlays (paper Fig. 2)",
                                            "colormap": cmap, "alpha": alpha,
                                            "scale": HEAT_SCALE_NOTE, "images": stats}))
  np.savez_compressed(stem + ".npz", **{f"heatmap_{i}": shown[i] for i in index})
  paths.append(stem + ".npz")
  return paths


def overlay_figure(image: np.ndarray, heatmap: np.ndarray, out_png: str, *, title: str = "",
                   alpha: float = 0.75, cmap: str = HEAT_CMAP,
                   contours: Mapping[str, tuple] | None = None) -> str:
  """One image beside its heatmap overlay, with a colorbar (``--save_overlays``).

  Args:
    image: uint8 ``[H, W, 3]``; heatmap: ``[h, w]`` (upsampled to the image).
    contours: optional ``{label: (map [H, W], top percents, colour, linestyle)}`` drawn on the
      overlay (the saliency report's AIS and saliency contours).
  Returns:
    ``out_png``.
  """
  img = np.asarray(image)
  heat = np.asarray(heatmap, np.float32)
  if heat.shape != img.shape[:2]:
    heat = np.asarray(heatmaps_lib.upsample(heat[None], img.shape[:2])[0])
  fig = Figure(figsize=(7.4, 3.6), layout="constrained")
  ax0, ax1 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
  ax0.imshow(img)
  ax0.set_title("image", fontsize=9)
  ax1.imshow(heat_overlay(img, heat, alpha=alpha, cmap=cmap))
  ax1.set_title("heatmap over the image (grey)", fontsize=9)
  handles = []
  for label, (m, top, colour, style) in (contours or {}).items():
    _contour(ax1, np.asarray(m, np.float64), top, colour, style)
    handles.append(Line2D([], [], color=colour, ls=style, lw=2,
                          label=f"{label} top {'/'.join(f'{p:g}' for p in top)}%"))
  if handles:
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8,
               frameon=False)
  for ax in (ax0, ax1):
    ax.set_xticks([])
    ax.set_yticks([])
  heat_colorbar(fig, [ax1], cmap=cmap, shrink=0.9, label="heat (this map's min to max)")
  if title:
    fig.suptitle(title, fontsize=10)
  _stem(out_png)
  return _save(fig, out_png, dpi=100)


def overlay_file_name(name: str) -> str:
  """A file name for an image's overlay: its name without folders or extension, ``.png``."""
  stem = os.path.splitext(os.path.basename(str(name)))[0] or "image"
  return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem) + ".png"


def write_overlays(images: Sequence[Any], heatmaps: Sequence[Any], names: Sequence[str],
                   out: str, *, alpha: float = 0.75, colormap: str = HEAT_CMAP,
                   contours: Optional[Sequence[dict]] = None) -> list[str]:
  """One PNG per image in ``out``: the image beside its heatmap overlay with a colorbar
  (:func:`overlay_figure`), plus the given contours. Returns the paths written.

  Args:
    images: n uint8 ``[H_i, W_i, 3]``; heatmaps: n maps (any resolution); names: n image names
      (file names: :func:`overlay_file_name`, made unique by the image number when they clash).
    contours: optional n dicts for :func:`overlay_figure`'s ``contours``.
  """
  import matplotlib
  if colormap not in matplotlib.colormaps:
    raise ValueError(f"unknown colormap {colormap!r}; use a matplotlib name such as inferno, "
                     "magma, viridis or turbo")
  if not 0 < alpha <= 1:
    raise ValueError(f"alpha must be in (0, 1]; got {alpha}")
  os.makedirs(out, exist_ok=True)
  files = [overlay_file_name(n) for n in names]
  paths = []
  for i, name in enumerate(names):
    file = files[i] if files.count(files[i]) == 1 else f"{i:04d}_{files[i]}"
    paths.append(overlay_figure(
        images[i], heatmaps[i], os.path.join(out, file), title=str(name), alpha=alpha,
        cmap=colormap, contours=None if contours is None else contours[i]))
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
  # One set of bin edges per panel, shared by the models, so the curves compare. The MAD panels
  # bin log10 of the (positive) deviations: a linear axis puts most maps in one bin.
  panel_titles = ("how large: mean AIS of each map", "how variable per map: across images",
                  "how variable per image: across maps")
  for j, ax in enumerate(axes):
    values = [p[0]["log10_mean"] if j == 0 else p[j] for p in panels.values()]
    if j:
      values = [np.log10(v[v > 0]) for v in values]
    pooled = np.concatenate([v for v in values] + [np.zeros(0)])
    ax.set_title(f"({'abc'[j]}) {panel_titles[j]}", fontsize=9)
    if pooled.size == 0:
      continue
    edges = np.histogram_bin_edges(pooled, bins=bins)
    for (label, p), v in zip(panels.items(), values):
      h = p[0]
      if j == 0:
        extra = f": {h['n_positive']} of {h['n_maps']} maps with mean > 0 shown"
      elif j == 1:
        extra = f": {v.size} of {h['n_maps']} maps with deviation > 0"
      else:
        extra = f": {v.size} images"
      ax.hist(v, bins=edges, histtype="step", lw=1.6, label=label + extra)
    if j < 2:  # counts over hundreds of maps span decades; per image they do not
      ax.set_yscale("log")
    ax.legend(fontsize=7, loc="upper left", frameon=False)
  for a, b in itertools.combinations(list(per_image_ais), 2):
    summary["ks"][f"{a} vs {b}"] = aim2.compare_models(per_image_ais[a], per_image_ais[b])
  axes[0].set_xlabel("log10 mean AIS of a map (over images)")
  axes[1].set_xlabel("log10 MAD of a map's AIS over images")
  axes[2].set_xlabel("log10 MAD of an image's AIS over maps")
  for j, ax in enumerate(axes):
    ax.set_ylabel("count (log scale)" if j < 2 else "count")
    ax.margins(y=0.25)
  if title:
    fig.suptitle(title, fontsize=10)
  stem = _stem(out_png)
  return [_save(fig, out_png),
          _write_csv(stem + ".csv", ["model", "map", "mean_ais", "mad_over_images"], rows),
          _write_json(stem + ".json", summary)]


# ----------------------------------------------------------------------------------------------
# Figure 4: precision-recall


def pr_auc(recall: np.ndarray, precision: np.ndarray) -> float:
  """Area under a precision-recall curve (trapezoids over recall, sorted; points with an
  undefined value left out); NaN with fewer than two points."""
  r, p = np.asarray(recall, np.float64), np.asarray(precision, np.float64)
  ok = np.isfinite(r) & np.isfinite(p)
  if ok.sum() < 2:
    return float("nan")
  order = np.argsort(r[ok], kind="stable")
  r, p = r[ok][order], p[ok][order]
  return float(np.sum(np.diff(r) * (p[1:] + p[:-1]) / 2))


ALL_IMAGES = "all images"


def pr_curves(means: Mapping[str, Mapping[str, np.ndarray]], target_percentiles: Sequence[float],
              saliency_percentiles: Sequence[float], out_png: str, *,
              title: str | None = None) -> list[str]:
  """Precision-recall curves in the layout of the paper's Figure 4.

  One panel per target percentile (AIS heatmap above its p-th percentile, i.e. its top 100 - p %
  pixels); in each, one curve per dataset, traced over the saliency percentiles (recall on x,
  precision on y), with the chance level (precision = target fraction) dashed. The 'all images'
  curve is drawn thick and black, the groups thin; the area under each curve (AUC) is in the
  legend, which sits below the panels.

  Args:
    means: ``{dataset: PrecisionRecall.mean(...)}`` (``'precision'``/``'recall'`` ``[T, Q]``
      and the defined counts ``'n_precision'``/``'n_recall'``).
    out_png: output; ``<stem>.csv`` holds every plotted point with its defined counts,
      ``<stem>.json`` the AUC per dataset and target.
  """
  t = np.asarray(target_percentiles, np.float64)
  q = np.asarray(saliency_percentiles, np.float64)
  fig = Figure(figsize=(3.1 * t.size, 4.2), layout="constrained")
  rows, aucs = [], {name: {} for name in means}
  colours = itertools.cycle(["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02",
                             "#a6761d", "#666666"])
  style = {name: ({"color": "black", "lw": 2.2, "zorder": 5} if name == ALL_IMAGES
                  else {"color": next(colours), "lw": 1.0, "alpha": 0.85}) for name in means}
  handles = {}
  for j, p in enumerate(t):
    ax = fig.add_subplot(1, t.size, j + 1)
    for name, m in means.items():
      prec, rec = np.asarray(m["precision"])[j], np.asarray(m["recall"])[j]
      auc = pr_auc(rec, prec)
      aucs[name][f"top{100 - p:g}"] = auc
      line, = ax.plot(rec, prec, **style[name])
      handles.setdefault(name, line)
      for k in range(q.size):
        rows.append((name, p, q[k], float(rec[k]), float(prec[k]), int(m["n_recall"][j, k]),
                     int(m["n_precision"][j, k])))
    ax.axhline(1 - p / 100, color="grey", ls="--", lw=0.8)
    ax.text(0.98, 1 - p / 100 + 0.015, f"chance {1 - p / 100:.2f}", ha="right", va="bottom",
            fontsize=7, color="grey")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"target: top {100 - p:g}% of AIS pixels\n(AIS > {p:g}th percentile)",
                 fontsize=9)
    ax.set_xlabel("recall (share of target pixels found)")
    if j == 0:
      ax.set_ylabel("precision (salient pixels in the target)")
    ax.grid(alpha=0.3)
  labels = []
  for name in means:
    values = [v for v in aucs[name].values() if np.isfinite(v)]
    labels.append(f"{name} (AUC " + "/".join(f"{v:.2f}" for v in aucs[name].values()) + ")"
                  if values else f"{name} (AUC undefined)")
  fig.legend([handles[n] for n in means], labels, loc="outside lower center",
             ncol=min(4, len(means)), fontsize=7, frameon=False)
  if title:
    fig.suptitle(title + "  (AUC per panel, left to right)", fontsize=10)
  stem = _stem(out_png)
  return [_save(fig, out_png),
          _write_csv(stem + ".csv", ["dataset", "target_percentile", "saliency_percentile", "recall",
                                     "precision", "n_recall_defined", "n_precision_defined"], rows),
          _write_json(stem + ".json", {"figure": "precision-recall (paper Fig. 4)", "auc": aucs,
                                       "target_percentiles": t, "saliency_percentiles": q})]


# ----------------------------------------------------------------------------------------------
# Figure 5: contour overlays


def _contour(ax, x: np.ndarray, top: Sequence[float], colour: str,
             linestyle: str = "solid") -> list[float]:
  """Contours of the top-p% pixels of ``x`` (thicker = smaller set), each over a white halo so the
  line stays visible whatever colour lies under it."""
  from matplotlib import patheffects
  levels = np.percentile(x, [100 - p for p in top])  # thresholds, decreasing with top
  drawn = []
  widths = np.linspace(2.2, 1.0, len(levels))
  for level, width in zip(levels, widths):
    if np.any(x > level) and np.any(x <= level):
      cs = ax.contour(x, levels=[level], colors=[colour], linewidths=[width],
                      linestyles=[linestyle])
      cs.set_path_effects([patheffects.withStroke(linewidth=width + 2.2, foreground="white")])
    drawn.append(float(level))
  return drawn


def contour_overlays(images: Sequence[np.ndarray], ais_maps: Sequence[np.ndarray],
                     saliency_maps: Sequence[np.ndarray], rr: np.ndarray, out_png: str, *,
                     top: Sequence[float] = (5, 10, 15), names: Sequence[str] | None = None,
                     index: Sequence[int] | None = None, ncols: int = 4,
                     labels: Mapping[int, str] | None = None) -> list[str]:
  """AIS (red, solid) and saliency (blue, dashed) contours at the top-p% thresholds over a grey
  copy of each image, RR printed on each image.

  The layout of the paper's Figure 5. Thicker lines are the smaller sets (top 5%); every line has a
  white halo, and the image is shown in grey, so no stimulus colour hides a contour. A level whose
  set is empty (ties at the maximum) draws no line.

  Args:
    images: n uint8 ``[H, W, 3]``; ais_maps, saliency_maps: n ``[H, W]`` maps at image resolution.
    rr: ``[n, L]`` relative risk at ``top`` (NaN = undefined, printed as 'undef.').
    index: images to draw (default the first 8).
    labels: extra title text per drawn image (e.g. why it was chosen).
    out_png: output; ``<stem>.json`` holds the contour thresholds and RR per drawn image.
  """
  n = len(images)
  names = [str(i) for i in range(n)] if names is None else [str(s) for s in names]
  index = list(range(min(n, 8))) if index is None else [int(i) for i in index]
  labels = dict(labels or {})
  rr = np.asarray(rr, np.float64)
  ncols = max(1, min(ncols, len(index)))
  nrows = int(np.ceil(len(index) / ncols))
  fig, grid = grid_figure(nrows, ncols, cell=(2.8, 3.1), left=0.1, right=0.1, top=0.5,
                          bottom=0.5, wspace=0.05, hspace=0.3)
  records = []
  for c, i in enumerate(index):
    ax = fig.add_subplot(grid[c // ncols, c % ncols])
    ax.imshow(grey_image(np.asarray(images[i])))
    a_levels = _contour(ax, np.asarray(ais_maps[i], np.float64), top, AIS_COLOUR)
    s_levels = _contour(ax, np.asarray(saliency_maps[i], np.float64), top, SALIENCY_COLOUR,
                        "dashed")
    text = "\n".join(f"RR{p:g}%: " + ("undef." if not np.isfinite(v) else f"{v:.2f}")
                     for p, v in zip(top, rr[i]))
    ax.text(0.02, 0.98, text, transform=ax.transAxes, va="top", ha="left", fontsize=7,
            color="white", bbox=dict(facecolor="black", alpha=0.55, pad=2, lw=0))
    extra = f"\n{labels[i]}" if i in labels else ""
    ax.set_title(short_name(names[i], 24) + extra, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    records.append({"index": i, "name": names[i], "top_percent": list(top), "rr": rr[i],
                    "ais_thresholds": a_levels, "saliency_thresholds": s_levels,
                    "label": labels.get(i)})
  levels = "/".join(f"{p:g}" for p in top)
  handles = [Line2D([], [], color=AIS_COLOUR, lw=2, label=f"AIS heatmap top {levels}% (solid)"),
             Line2D([], [], color=SALIENCY_COLOUR, lw=2, ls="dashed",
                    label=f"saliency top {levels}% (dashed)")]
  fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
  stem = _stem(out_png)
  return [_save(fig, out_png, tight=False),
          _write_json(stem + ".json", {"figure": "AIS vs saliency contours (paper Fig. 5)",
                                       "ais_colour": AIS_COLOUR, "saliency_colour": SALIENCY_COLOUR,
                                       "images": records})]
