"""Planted truth: where each heatmap puts its mass, on the target vs the distractor.

For the planted cohort (``ais_jax.data.planted``) the 'human' similarity is a formula of the
target's number of points, so a heatmap that follows the comparison should sit on the target.
:func:`analyse` computes the mass fractions of the AIS heatmap, the mean-activation baseline and
saliency, writes ``planted/`` (CSV, JSON, arrays, ``mass.png``, ``examples.png``) and
:func:`section` shows them.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from ais_jax.report import files as files_lib
from ais_jax.report import index
from ais_jax.report.sections import fmt as _fmt


PLANTED_METHODS = ("AIS heatmap", "mean activation", "spectral residual")


def analyse(cohort, model, saliency_maps: Optional[list],
                     out_dir: str) -> dict:
  """Heatmap mass on target vs distractor vs area, for AIS, mean activation and saliency."""
  from ais_jax import heatmaps as heatmaps_lib
  from ais_jax.data import planted
  c = cohort.planted
  size = c.images.shape[1:3]
  maps = {
      "AIS heatmap": np.asarray(heatmaps_lib.upsample(model.run.heatmaps, size), np.float64),
      "mean activation": np.asarray(heatmaps_lib.upsample(
          heatmaps_lib.mean_activation_maps(model.run.feature_maps), size), np.float64),
  }
  if saliency_maps is not None:
    maps["spectral residual"] = np.stack(saliency_maps)
  reports = {name: planted.mass_report(m, c.target_masks, c.distractor_masks)
             for name, m in maps.items()}
  summaries = {name: planted.summarise_masses(r) for name, r in reports.items()}
  pdir = os.path.join(out_dir, "planted")
  os.makedirs(pdir, exist_ok=True)
  header = ["image", "target_points", "target_area", "distractor_area"]
  for name in reports:
    key = name.replace(" ", "_")
    header += [f"{key}_target_mass", f"{key}_distractor_mass"]
  rows = []
  first = next(iter(reports.values()))
  for i, name in enumerate(cohort.names):
    row = [name, int(c.target_factor[i]), first["target_area"][i], first["distractor_area"][i]]
    for r in reports.values():
      row += [r["target_mass"][i], r["distractor_mass"][i]]
    rows.append(row)
  files = [files_lib.write_csv(os.path.join(pdir, "mass_per_image.csv"), header, rows)]
  files.append(files_lib.write_json(os.path.join(pdir, "mass_summary.json"), summaries))
  np.save(os.path.join(pdir, "images.npy"), c.images)
  np.save(os.path.join(pdir, "human_similarity.npy"), c.human_similarity)
  np.savez_compressed(os.path.join(pdir, "masks.npz"), target=c.target_masks,
                      distractor=c.distractor_masks, target_points=c.target_factor)
  files += [os.path.join(pdir, f) for f in ("images.npy", "human_similarity.npy", "masks.npz")]
  files += _planted_mass_figure(reports, summaries, os.path.join(pdir, "mass.png"))
  files += _planted_examples_figure(c, maps, reports["AIS heatmap"]["target_mass"],
                                   os.path.join(pdir, "examples.png"))
  return {"summary": summaries, "files": [os.path.relpath(p, out_dir) for p in files],
          "per_image": reports}


TARGET_COLOUR = "#2ca02c"      # green, as the target outline in examples.png
DISTRACTOR_COLOUR = "#c51b8a"  # magenta, as the distractor outline
METHOD_COLOURS = {"AIS heatmap": "#08519c", "mean activation": "#888888",
                  "spectral residual": "#e6850e"}


def _planted_mass_figure(reports: dict, summaries: dict, out_png: str) -> list[str]:
  """Left: mean mass on target / distractor per method against the areas; right: per image."""
  from matplotlib.figure import Figure
  fig = Figure(figsize=(12, 4.0), layout="constrained")
  ax = fig.add_subplot(1, 2, 1)
  names = list(reports)
  x = np.arange(len(names))
  t = [summaries[n]["target_mass"]["mean"] for n in names]
  d = [summaries[n]["distractor_mass"]["mean"] for n in names]
  ax.bar(x - 0.2, t, 0.4, color=TARGET_COLOUR, label="mass on target")
  ax.bar(x + 0.2, d, 0.4, color=DISTRACTOR_COLOUR, label="mass on distractor")
  ta = summaries[names[0]]["target_area"]["mean"]
  da = summaries[names[0]]["distractor_area"]["mean"]
  ax.axhline(ta, color=TARGET_COLOUR, ls="--", lw=1, label=f"target area ({ta:.3f})")
  ax.axhline(da, color=DISTRACTOR_COLOUR, ls=":", lw=1.2, label=f"distractor area ({da:.3f})")
  ax.set_xticks(x, names)
  ax.set_ylabel("mean fraction of heatmap mass")
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
  ax.set_title("where the heatmap mass falls (mean over images)", fontsize=10)
  ax2 = fig.add_subplot(1, 2, 2)
  for name in names:
    r = reports[name]
    ax2.scatter(r["distractor_enrichment"], r["target_enrichment"], s=14,
                color=METHOD_COLOURS.get(name, "#444444"), label=name, alpha=0.8)
  peaks = [np.nanmax(np.r_[r["target_enrichment"], r["distractor_enrichment"]])
           for r in reports.values()]
  lim = max(1.5, float(np.nanmax(peaks)) * 1.05)
  ax2.plot([0, lim], [0, lim], color="k", lw=0.6)
  ax2.axhline(1, color="k", lw=0.4, ls=":")
  ax2.axvline(1, color="k", lw=0.4, ls=":")
  ax2.set_xlim(0, lim)
  ax2.set_ylim(0, lim)
  ax2.set_xlabel("distractor: mass fraction / area fraction")
  ax2.set_ylabel("target: mass fraction / area fraction")
  ax2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False,
             title="map", title_fontsize=8)
  ax2.set_title("per image (above the diagonal: more on the target)", fontsize=10)
  fig.savefig(out_png, dpi=110)
  return [out_png]


def _planted_examples_figure(c, maps: dict, target_mass: np.ndarray, out_png: str,
                             count: int = 8) -> list[str]:
  """The images with the highest and lowest AIS mass on the target (``target_mass`` ``[n]``;
  others spread between), each with every map over a grey copy of the image and the
  target/distractor outlines."""
  from ais_jax.report import figures
  count = min(count, c.images.shape[0])
  chosen = figures.select_examples(["all"] * c.n, count, statistic=target_mass)
  rows = 1 + len(maps)
  fig, grid = figures.grid_figure(rows, count, cell=(2.1, 2.3), left=0.5, right=1.1, top=0.75,
                                  bottom=0.1, wspace=0.05, hspace=0.15)
  for col, i in enumerate(chosen):
    ax = fig.add_subplot(grid[0, col])
    ax.imshow(c.images[i])
    ax.contour(c.target_masks[i].astype(float), levels=[0.5], colors=[TARGET_COLOUR],
               linewidths=1.4)
    ax.contour(c.distractor_masks[i].astype(float), levels=[0.5], colors=[DISTRACTOR_COLOUR],
               linewidths=1.4)
    ax.set_title(f"{c.image_names[i]}\nAIS mass on target {target_mass[i]:.2f}", fontsize=8)
    for r, (name, m) in enumerate(maps.items()):
      axr = fig.add_subplot(grid[r + 1, col])
      axr.imshow(figures.heat_overlay(c.images[i], m[i].astype(np.float32)))
      axr.contour(c.target_masks[i].astype(float), levels=[0.5], colors=[TARGET_COLOUR],
                  linewidths=0.8)
      if col == 0:
        axr.set_ylabel(name, fontsize=9)
  for a in fig.axes:
    a.set_xticks([])
    a.set_yticks([])
  fig.axes[0].set_ylabel("image (green: target,\nmagenta: distractor)", fontsize=8)
  figures.side_colorbar(fig, 1.1, label="heat (each map:\nits min to its max)")
  fig.suptitle("Images ordered by the AIS heatmap's mass on the target, highest (left) to "
               "lowest (right)", fontsize=10, y=1 - 0.08 / fig.get_size_inches()[1], va="top")
  fig.savefig(out_png, dpi=100)
  return [out_png]


def note(planted: dict, selection: Optional[dict]) -> list[str]:
  s = planted["summary"]
  n = s["AIS heatmap"]["target_area"]["n"]
  a, m = s["AIS heatmap"], s["mean activation"]
  lines = [
      "What this shows. The 'human' similarity here is a formula of the target's number of points "
      "only, so the target is the only image content that can explain it, and a heatmap that "
      "follows the comparison should sit on the target, not on the equally large distractor. "
      f"On average the AIS heatmap puts {_fmt(a['target_mass']['mean'])} of its mass on the target "
      f"and {_fmt(a['distractor_mass']['mean'])} on the distractor, which cover "
      f"{_fmt(a['target_area']['mean'])} and {_fmt(a['distractor_area']['mean'])} of the image "
      f"(target enrichment {_fmt(a['target_enrichment']['mean'], 2)}x its area, distractor "
      f"{_fmt(a['distractor_enrichment']['mean'], 2)}x); more mass on the target than on the "
      f"distractor in {_fmt(100 * a['fraction_images_target_gt_distractor'], 0)}% of the images. "
      "The equal-weights mean-activation map, which shows what the network responds to regardless "
      f"of the comparison, puts {_fmt(m['target_mass']['mean'])} on the target and "
      f"{_fmt(m['distractor_mass']['mean'])} on the distractor (target first in "
      f"{_fmt(100 * m['fraction_images_target_gt_distractor'], 0)}% of the images)."]
  if "spectral residual" in s:
    r = s["spectral residual"]
    lines[0] += (f" Spectral-residual saliency puts {_fmt(r['target_mass']['mean'])} on the target "
                 f"and {_fmt(r['distractor_mass']['mean'])} on the distractor: the spiky star "
                 "has more contour than the distractor shapes, so an edge-driven saliency map "
                 "also favours it; the mean-activation map is the comparison that holds the "
                 "network fixed.")
  if selection is not None:
    score = selection["settings"]["score"]
    lines.append(
        f"Held out (image folds), the agreement ({score}) with all maps is "
        f"{_fmt(selection['mean_test_full'])}, with the AIS-selected maps "
        f"{_fmt(selection['mean_test_retained'])} (mean m* = {_fmt(selection['mean_m_star'], 1)} "
        f"maps), with a random order {_fmt(selection['mean_test_random_order'])}.")
  lines.append(
      "What it does not show. The truth is planted: flat shapes on synthetic clutter and a "
      "similarity that is a formula, not people's judgments, so this checks that the method points "
      "at the object that defines the comparison when such an object exists; it says nothing about "
      "which features people use for real images. Heatmaps come from 7x7 maps upsampled to the "
      f"image, so mass spills across object borders and the enrichment is bounded well below "
      f"1/area; with {n} images, per-image AIS is noisy, and one generator seed is one sample of "
      "layouts (rerun with --planted_seed to see the spread). The mean-activation baseline is one "
      "reasonable baseline, not the strongest possible one.")
  return lines


def section(planted: dict, cohort, selection: Optional[dict]) -> index.Section:
  """The "Planted truth" report section for :func:`analyse`'s result."""
  s = planted["summary"]
  rows = []
  for method, v in s.items():
    rows.append([method, v["target_mass"]["mean"], v["distractor_mass"]["mean"],
                 v["target_area"]["mean"], v["distractor_area"]["mean"],
                 v["target_enrichment"]["mean"], v["distractor_enrichment"]["mean"],
                 v["fraction_images_target_gt_distractor"], v["target_mass"]["n_undefined"]])
  per_image = []
  rep = planted["per_image"]
  methods = list(rep)
  first = rep[methods[0]]
  for i, name in enumerate(cohort.names):
    per_image.append([name, int(cohort.planted.target_factor[i]), first["target_area"][i],
                      first["distractor_area"][i]]
                     + [x for mth in methods for x in (rep[mth]["target_mass"][i],
                                                       rep[mth]["distractor_mass"][i])])
  return index.Section("Planted truth", [
      index.Figure("planted/examples.png", "The cohort and the three maps",
                   "Top row: generated images, from the highest to the lowest share of AIS mass "
                   "on the target (written above each), with the target (green outline; its "
                   "number of points alone defines the similarity) and the distractor "
                   "(magenta); below, each map over a grey copy of the image (bright = high; "
                   "each map scaled to its own range, see the colour bar), target outline "
                   "repeated.",
                   data=["planted/masks.npz", "planted/images.npy",
                         "planted/human_similarity.npy"]),
      index.Figure("planted/mass.png", "Heatmap mass on target vs distractor",
                   "Left: mean fraction of each map's mass on the target (green) and distractor "
                   "(magenta) against their area fractions (dashed lines = what a uniform map would "
                   "give); right: one dot per image and map (blue = AIS heatmap, grey = mean "
                   "activation, orange = saliency), above the diagonal = more mass on the target "
                   "than on the distractor relative to their areas.",
                   data=["planted/mass_per_image.csv", "planted/mass_summary.json"]),
      index.Table("Mass fractions, mean over images",
                  ["map", "mass on target", "mass on distractor", "target area",
                   "distractor area", "target mass/area", "distractor mass/area",
                   "images with target > distractor", "undefined (all-zero map)"], rows,
                  "A map that follows the comparison puts far more than the target's area "
                  "fraction on the target and no more than its area fraction on the distractor.",
                  data=["planted/mass_summary.json"]),
      index.Text(note(planted, selection), title="What this does and does not show"),
      index.Table("Per image", ["image", "points", "target area", "distractor area"]
                  + [f"{mth}: {w}" for mth in methods for w in ("target", "distractor")],
                  per_image, "One row per image: the fraction of each map's mass on the target "
                  "and on the distractor (compare with the two area columns).",
                  data=["planted/mass_per_image.csv"], digits=3, collapsed=True),
  ])
