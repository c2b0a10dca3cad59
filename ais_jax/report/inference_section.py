"""Report section for :mod:`ais_jax.inference`: the noise-ceiling band on the agreement figure,
the bootstrap intervals of the top maps, and how many maps survive FWER and FDR.

    section, files = inference_section.section(result, out_dir, models=models)

``result`` is an :class:`ais_jax.inference.InferenceResult`; ``models`` maps a model label to its
agreements (``{"per_subject": {kind: [S]}, "mean_over_subjects": {kind: float}, "mean_matrix":
{kind: float}}``, as ``noise_ceiling.json`` stores them). Figures are written under
``out_dir/inference/``; paths returned are relative to ``out_dir``.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
from matplotlib.figure import Figure

from ais_jax.report import files as files_lib
from ais_jax.report import index

FOLDER = "inference"
TOP_MAPS = 20


def _save(fig: Figure, out_dir: str, name: str) -> str:
  os.makedirs(os.path.join(out_dir, FOLDER), exist_ok=True)
  rel = os.path.join(FOLDER, name)
  fig.savefig(os.path.join(out_dir, rel), dpi=110, bbox_inches="tight")
  return rel


def agreement_figure(noise_ceiling: Mapping, models: Mapping, out_dir: str,
                     comparison: str = "pearson") -> str:
  """Each model's agreement with every subject (dots), their mean (bar) and the agreement with
  the mean matrix (diamond), against the noise-ceiling band of the same comparison."""
  ceiling = noise_ceiling[comparison]
  fig = Figure(figsize=(1.6 + 1.3 * len(models), 3.8))
  ax = fig.subplots()
  labels = list(models)
  x = np.arange(len(labels))
  ax.axhspan(ceiling["lower"], ceiling["upper"], color="0.85", zorder=0,
             label=f"noise ceiling [{ceiling['lower']:.3f}, {ceiling['upper']:.3f}]")
  for i, label in enumerate(labels):
    m = models[label]
    per_subject = np.asarray(m["per_subject"][comparison], np.float64)
    ax.bar(i, m["mean_over_subjects"][comparison], width=0.6, color="tab:blue", alpha=0.7,
           label="mean over subjects" if i == 0 else None)
    ax.scatter(np.full(per_subject.shape, i) + np.linspace(-0.2, 0.2, per_subject.size),
               per_subject, s=9, color="k", zorder=3, label="each subject" if i == 0 else None)
    if comparison in m.get("mean_matrix", {}):
      ax.scatter([i], [m["mean_matrix"][comparison]], marker="D", color="tab:red", zorder=4,
                 label="vs mean matrix" if i == 0 else None)
  ax.set_xticks(x, [label.replace("_imagenet", "") for label in labels], rotation=20, ha="right")
  ax.set_ylabel(f"{comparison} agreement with human similarity")
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  return _save(fig, out_dir, f"agreement_noise_ceiling_{comparison}.png")


def top_maps_figure(cohort_ais, ci, p_fwer, q, out_dir: str, top: int = TOP_MAPS,
                    alpha: float = 0.05) -> str:
  """Cohort AIS of the top maps with their bootstrap percentile intervals; filled markers
  survive FWER, open ones only FDR, grey neither."""
  ais = np.asarray(cohort_ais, np.float64)
  order = np.argsort(np.where(np.isnan(ais), np.inf, -ais), kind="stable")[:top]
  fig = Figure(figsize=(7.5, 3.6))
  ax = fig.subplots()
  for j, k in enumerate(order):
    lo, hi = ci[k]
    colour = "tab:red" if p_fwer[k] <= alpha else ("tab:orange" if q[k] <= alpha else "0.5")
    ax.plot([j, j], [lo, hi], color=colour, lw=1.5)
    ax.scatter([j], [ais[k]], color=colour if p_fwer[k] <= alpha else "white",
               edgecolors=colour, zorder=3, s=24)
  ax.axhline(0, color="k", lw=0.6)
  ax.set_xticks(np.arange(len(order)), [str(k) for k in order], rotation=90, fontsize=7)
  ax.set_xlabel("map (ordered by cohort AIS)")
  ax.set_ylabel("cohort AIS (95% bootstrap interval)")
  return _save(fig, out_dir, "top_maps_intervals.png")


def section(result, out_dir: str, *, models: Mapping, comparison: str = "pearson",
            alpha: float = 0.05):
  """``(index.Section, [files])`` for one inference run."""
  s = result.summary
  files = []
  band = agreement_figure(result.noise_ceiling, models, out_dir, comparison)
  files.append(band)
  items = [index.Figure(
      band, "Agreement against the noise ceiling",
      "Grey band: the noise ceiling (lower: each subject vs the mean of the others; upper: vs the "
      "mean of all; rsatoolbox's boot_noise_ceiling). Bars: the model's agreement averaged over "
      "subjects, the score the band is for; dots: each subject; red diamond: agreement with the "
      "averaged matrix (what AIS uses).", data=["noise_ceiling.json"])]
  if result.bootstrap_ais.shape[1]:
    tops = top_maps_figure(result.cohort_ais, result.cohort_ais_ci, result.p_fwer, result.q,
                           out_dir, alpha=alpha)
    files.append(tops)
    items.append(index.Figure(
        tops, f"Top {TOP_MAPS} maps: cohort AIS with bootstrap intervals",
        "Each map's cohort AIS (point) and its 95% percentile interval over image resamples. Red "
        "filled: significant after family-wise (max-statistic) correction; orange open: after "
        "Benjamini-Hochberg only; grey: neither.",
        data=["cohort_ais.npy", "cohort_ais_ci.npy", "cohort_ais_p_fwer.npy", "cohort_ais_q.npy"]))
  files.append(write_counts_csv(result, out_dir))
  sig = s["significant_maps"]
  rows = [["uncorrected p <= alpha", sig["p"]], ["family-wise (max-statistic)", sig["fwer"]],
          ["false discovery rate (Benjamini-Hochberg)", sig["fdr"]],
          ["maps tested (active in some image)", sig["tested"]],
          ["smallest Benjamini-Hochberg q (bounded by the number of permutations)",
           sig.get("smallest_q")],
          ["maps inactive in every image (p = 1)", s["counts"]["inactive_maps"]]]
  items.append(index.Table(
      f"Maps whose removal hurts more than chance (alpha = {sig['alpha']})", ["test", "maps"],
      rows, f"One-sided permutation tests ({s['options']['permutations']} joint row/column "
      f"permutations of the human matrix; smallest possible p {sig['smallest_possible_p']:.2g}).",
      data=[files[-1], "cohort_ais_p.npy", "cohort_ais_p_fwer.npy", "cohort_ais_q.npy"]))
  nc = s["noise_ceiling"]
  base_rows = [
      ["agreement with the mean matrix", s["baseline_agreement_mean_matrix"]],
      ["mean over subjects (pearson)", s["baseline_agreement_mean_over_subjects"]["pearson"]],
      ["mean over subjects (spearman)", s["baseline_agreement_mean_over_subjects"]["spearman"]],
      ["noise ceiling pearson lower / upper", f"{nc['pearson']['lower']:.4f} / "
                                               f"{nc['pearson']['upper']:.4f}"],
      ["noise ceiling spearman lower / upper", f"{nc['spearman']['lower']:.4f} / "
                                                f"{nc['spearman']['upper']:.4f}"],
      ["baseline 95% bootstrap interval", f"[{s['baseline_ci'][0]:.4f}, "
                                           f"{s['baseline_ci'][1]:.4f}]"],
      ["baseline permutation p (Mantel)", s["baseline_p"]]]
  if s.get("top_m_stability") is not None:
    base_rows.append([f"top-{s['options']['top_m']} stability (how often the observed top maps "
                      "stay in the top set over image resamples, mean)", s["top_m_stability"]])
  if s.get("split_half"):
    base_rows.append(["split-half reliability of cohort AIS over subjects (Spearman-Brown)",
                      s["split_half"]["spearman_brown_of_mean_r"]])
  items.append(index.Table("Baseline agreement and reliability", ["quantity", "value"], base_rows,
                           "The model with every map kept; the reliability correlates the maps' "
                           "AIS from two halves of the subjects, corrected to all of them.",
                           data=["summary.json"]))
  return index.Section("Inference: noise ceiling, intervals, tests", items), files


def write_counts_csv(result, out_dir: str) -> str:
  """Per-map table (map, AIS, interval, p, p_fwer, q, top-m frequency) as CSV."""
  path = os.path.join(out_dir, FOLDER, "maps.csv")
  rows = [[k, result.cohort_ais[k], result.cohort_ais_ci[k, 0], result.cohort_ais_ci[k, 1],
           result.p[k], result.p_fwer[k], result.q[k], result.top_m_frequency[k]]
          for k in range(result.cohort_ais.size)]
  files_lib.write_csv(path, ["map", "cohort_ais", "ci_low", "ci_high", "p", "p_fwer", "q",
                             "top_m_frequency"], rows)
  return os.path.relpath(path, out_dir)
