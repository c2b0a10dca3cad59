"""Aim 2: how AIS is distributed over maps and images, whether models agree on where the
comparison-relevant features are (Match), and whether the same maps matter for every category.

* :func:`distribution_analysis` / :func:`distributions_section` - the paper's Figure 3;
* :func:`match_analysis` / :func:`match_section` - Match scores between models (Figure A.1);
* :func:`category_analysis` / :func:`category_section` - cohort AIS per category, correlated.
"""

from __future__ import annotations

import json
import os
from typing import Callable

import numpy as np

from ais_jax.report import files as files_lib
from ais_jax.report import index


def match_analysis(models: list, cohort, out_dir: str) -> dict:
  """Match scores (heatmap correlation per image) for every pair of models, their CDF and the
  correlation with maxEntropy; writes ``aim2/match_*``."""
  from ais_jax import aim2
  from ais_jax.report import figures
  from ais_jax.report import saliency_report
  fdir = os.path.join(out_dir, "aim2")
  os.makedirs(fdir, exist_ok=True)
  sizes = set(saliency_report.image_sizes(cohort.images))
  size = next(iter(sizes)) if len(sizes) == 1 else (224, 224)
  scores, pairs, rows = {}, {}, []
  for a in range(len(models)):
    for b in range(a + 1, len(models)):
      ma, mb = models[a], models[b]
      label = f"{ma.label} vs {mb.label}"
      match = aim2.match_scores(ma.run.heatmaps, mb.run.heatmaps, size=size)
      scores[label] = match
      entry = {"n": int(np.isfinite(match).sum()), "n_undefined": aim2.count_undefined(match),
               "mean": float(np.nanmean(match)) if np.isfinite(match).any() else float("nan"),
               "median": float(np.nanmedian(match)) if np.isfinite(match).any() else float("nan")}
      if ma.logits is not None and mb.logits is not None:
        ent = aim2.max_entropy(ma.logits, mb.logits)
        entry["max_entropy_correlation"] = aim2.match_entropy_correlation(match, ent)
      else:
        ent = np.full(match.shape, np.nan)
      pairs[label] = entry
      rows += [(label, name, match[i], ent[i]) for i, name in enumerate(cohort.names)]
  files = [files_lib.write_csv(os.path.join(fdir, "match_per_image.csv"),
                               ["pair", "image", "match", "max_entropy"], rows)]
  files += figures.match_cdf(scores, os.path.join(fdir, "match_cdf.png"),
                             title=f"{cohort.dataset}: agreement of heatmaps between models")
  files.append(files_lib.write_json(os.path.join(fdir, "match_summary.json"), pairs))
  first = next(iter(scores))
  files.append(_match_examples_figure(cohort, models, scores[first], first,
                                      os.path.join(fdir, "match_examples.png")))
  return {"pairs": pairs, "files": [os.path.relpath(p, out_dir) for p in files],
          "examples_pair": first}


def _match_examples_figure(cohort, models, match: np.ndarray, pair: str, out_png: str,
                           per_side: int = 4) -> str:
  """The images where the first two models' heatmaps agree most and least (Match score of
  ``pair``, written above each): the image, then every model's heatmap over it."""
  from ais_jax.report import figures
  order = [i for i in np.argsort(-np.where(np.isfinite(match), match, -np.inf), kind="stable")
           if np.isfinite(match[i])]
  per_side = min(per_side, len(order) // 2)
  chosen = order[:per_side] + order[len(order) - per_side:]
  fig, grid = figures.grid_figure(1 + len(models), len(chosen), cell=(1.9, 2.1), left=0.7,
                                  right=1.1, top=0.8, bottom=0.1, wspace=0.05, hspace=0.12)
  for c, i in enumerate(chosen):
    image = np.asarray(cohort.images[i])
    ax = fig.add_subplot(grid[0, c])
    ax.imshow(image)
    side = "agree most" if c < per_side else "agree least"
    ax.set_title(f"{figures.short_name(cohort.names[i], 16)}\nMatch {match[i]:.2f} ({side})",
                 fontsize=8)
    for r, m in enumerate(models):
      axm = fig.add_subplot(grid[r + 1, c])
      axm.imshow(figures.heat_overlay(image, m.run.heatmaps[i]))
      if c == 0:
        axm.set_ylabel(m.label, fontsize=9)
  for ax in fig.axes:
    ax.set_xticks([])
    ax.set_yticks([])
  figures.side_colorbar(fig, 1.1, label="heat (each map:\nits min to its max)")
  fig.suptitle(f"Where the heatmaps agree most and least ({pair})", fontsize=10,
               y=1 - 0.08 / fig.get_size_inches()[1], va="top")
  fig.savefig(out_png, dpi=90)
  return out_png


def distribution_analysis(models: list, cohort, out_dir: str) -> dict:
  """Figure 3 (AIS distributions per model, KS tests between models); writes
  ``aim2/ais_distributions.*``."""
  from ais_jax.report import figures
  out_png = os.path.join(out_dir, "aim2", "ais_distributions.png")
  files = figures.ais_distributions({m.label: m.run.per_image_ais for m in models}, out_png,
                                    title=f"{cohort.dataset}: per-image AIS")
  with open(out_png[:-4] + ".json") as f:
    stats = json.load(f)
  return {"stats": stats, "files": [os.path.relpath(p, out_dir) for p in files]}


MIN_CATEGORY_IMAGES = 4   # cohort AIS needs at least 4 images (ais_jax.ais)


def analysable_categories(groups) -> list:
  """The categories with at least :data:`MIN_CATEGORY_IMAGES` images, in first-appearance order
  (cohort AIS per category is computed for these; the correlations need two of them)."""
  counts = {}
  for g in groups:
    counts[g] = counts.get(g, 0) + 1
  return [g for g, c in counts.items() if c >= MIN_CATEGORY_IMAGES]


def category_analysis(model, cohort, config, out_dir: str,
                      report: Callable[[str], None]) -> dict:
  """Cohort AIS on each category alone (:func:`analysable_categories`), and the correlations of
  those K-vectors; categories with fewer images are named in the progress line and left out."""
  from ais_jax import aim2
  from ais_jax import ais
  names = analysable_categories(cohort.groups)
  left_out = [g for g in dict.fromkeys(cohort.groups) if g not in names]
  if left_out:
    report(f"category cohort AIS: left out (< {MIN_CATEGORY_IMAGES} images): "
           + ", ".join(left_out))
  head = model.spec.get_ablation_head(model.variables)
  rows = []
  for g in names:
    idx = np.array([i for i, lab in enumerate(cohort.groups) if lab == g])
    report(f"category cohort AIS: {g} ({idx.size} images)")
    rows.append(ais.cohort_ais(head, model.run.feature_maps[idx], cohort.human[np.ix_(idx, idx)],
                               similarity=config.similarity, comparison=config.comparison,
                               score=config.cohort_score, precision=config.precision,
                               memory_budget_gb=config.memory_budget_gb))
  per_category = np.stack(rows)
  corr = aim2.cohort_correlations(per_category, names)
  fdir = os.path.join(out_dir, "aim2")
  os.makedirs(fdir, exist_ok=True)
  np.save(os.path.join(fdir, "category_cohort_ais.npy"), per_category)
  files = [os.path.join(fdir, "category_cohort_ais.npy")]
  files.append(files_lib.write_csv(os.path.join(fdir, "category_correlations.csv"),
                                   ["category"] + names,
                                   [[a] + [corr["r"][i, j] for j in range(len(names))]
                                    for i, a in enumerate(names)]))
  files.append(files_lib.write_json(os.path.join(fdir, "category_correlations.json"), corr))
  from matplotlib.figure import Figure
  fig = Figure(figsize=(5.6, 4.6))
  ax = fig.add_subplot(1, 1, 1)
  im = ax.imshow(corr["r"], vmin=-1, vmax=1, cmap="RdBu_r")
  ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
  ax.set_yticks(range(len(names)), names, fontsize=7)
  for i in range(len(names)):
    for j in range(len(names)):
      v = corr["r"][i, j]
      ax.text(j, i, "undef." if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center",
              fontsize=7)
  fig.colorbar(im, ax=ax, label=f"{corr['kind']} r of cohort AIS vectors")
  fig.tight_layout()
  png = os.path.join(fdir, "category_correlations.png")
  fig.savefig(png, dpi=110)
  files.append(png)
  return {"names": names, "r": corr["r"], "p": corr["p"],
          "files": [os.path.relpath(p, out_dir) for p in files]}


def distributions_section(distributions: dict) -> index.Section:
  """The "AIS distributions" section for :func:`distribution_analysis`'s result."""
  dist_rows = []
  for label, st in distributions["stats"]["models"].items():
    dist_rows.append([label, st["n_images"], st["n_maps"], st["n_positive_mean"],
                      st["n_nonpositive_mean"], st["log10_mean_median"], st["mad_per_map_mean"],
                      st["mad_per_image_mean"], st["n_undefined_values"]])
  items = [index.Figure("aim2/ais_distributions.png", "AIS distributions",
                        "Left: how large the mean AIS of each map is (log10, maps with a positive "
                        "mean); middle and right: how much AIS varies across images for each map "
                        "and across maps for each image.",
                        data=["aim2/ais_distributions.csv", "aim2/ais_distributions.json"]),
           index.Table("AIS distribution statistics",
                       ["model", "images", "maps", "maps with mean AIS > 0", "maps <= 0",
                        "median log10 mean AIS", "mean MAD per map", "mean MAD per image",
                        "undefined values"], dist_rows,
                       "Few maps with large positive mean AIS and a large MAD per map mean that a "
                       "few maps carry the agreement and which ones differs between images.",
                       data=["aim2/ais_distributions.json"])]
  ks = distributions["stats"].get("ks") or {}
  if ks:
    ks_rows = [[pair] + [res[k]["statistic"] for k in ("mean_ais_per_map", "mad_per_map",
                                                       "mad_per_image")]
               + [res[k]["pvalue"] for k in ("mean_ais_per_map", "mad_per_map", "mad_per_image")]
               for pair, res in ks.items()]
    items.append(index.Table("Two-sample KS tests between models",
                             ["pair", "D mean AIS/map", "D MAD/map", "D MAD/image", "p mean AIS/map",
                              "p MAD/map", "p MAD/image"], ks_rows,
                             "D is the largest gap between the two cumulative distributions; a "
                             "small p says the two models' AIS are distributed differently.",
                             data=["aim2/ais_distributions.json"]))
  return index.Section("AIS distributions", items)


def match_section(match: dict) -> index.Section:
  """The "Agreement between models (Match)" section for :func:`match_analysis`'s result."""
  rows = []
  for pair, e in match["pairs"].items():
    c = e.get("max_entropy_correlation", {})
    rows.append([pair, e["n"], e["n_undefined"], e["mean"], e["median"], c.get("pearson_r"),
                 c.get("pearson_p"), c.get("spearman_rho"), c.get("spearman_p")])
  return index.Section("Agreement between models (Match)", [
      index.Figure("aim2/match_cdf.png", "Match score distribution",
                   "For each image, the Pearson correlation of two models' AIS heatmaps (at image "
                   "resolution); a curve far to the right means the models agree on where the "
                   "comparison-relevant features are.",
                   data=["aim2/match_per_image.csv", "aim2/match_cdf.csv",
                         "aim2/match_summary.json"]),
      index.Figure("aim2/match_examples.png", "Images where the models agree most and least",
                   f"The {match.get('examples_pair', 'first pair')} Match score chooses the "
                   "images: the highest four on the left, the lowest four on the right; below "
                   "each image, every model's AIS heatmap over a grey copy of it.",
                   data=["aim2/match_per_image.csv"]),
      index.Table("Match scores and maxEntropy",
                  ["pair", "images", "undefined", "mean", "median", "r with maxEntropy", "p",
                   "Spearman rho", "p"], rows,
                  "A negative correlation with maxEntropy (the larger of the two models' "
                  "classification entropies) means the models agree less on images they are "
                  "unsure about.", data=["aim2/match_summary.json"]),
  ])


def category_section(categories: dict) -> index.Section:
  """The "Cohort AIS by category" section for :func:`category_analysis`'s result."""
  names = categories["names"]
  rows = [[a] + [categories["r"][i, j] for j in range(len(names))] for i, a in enumerate(names)]
  return index.Section("Cohort AIS by category", [
      index.Figure("aim2/category_correlations.png", "Correlations of per-category cohort AIS",
                   "Cohort AIS computed on each category's images alone, then correlated across "
                   "the maps between categories: high r = the same maps matter for both.",
                   data=["aim2/category_correlations.csv", "aim2/category_correlations.json",
                         "aim2/category_cohort_ais.npy"]),
      index.Table("Correlation matrix (r)", ["category"] + names, rows,
                  "Row/column pairs of categories; the diagonal is 1.",
                  data=["aim2/category_correlations.csv"], digits=3),
  ])
