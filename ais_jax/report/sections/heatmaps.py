"""AIS heatmaps of example images beside the mean-activation baseline (the paper's Figure 2).

:func:`analyse` draws ``figures/heatmaps.png`` and ``figures/mean_activation.png`` for the chosen
examples (:func:`examples`); :func:`section` shows them.
"""

from __future__ import annotations

import os

import numpy as np

from ais_jax.report import index


def examples(cohort, config, statistic) -> list:
  """The example images of the heatmap figures: in each category (all images when there are
  none) the images from the highest to the lowest ``statistic`` (``[n]``, the per-image
  agreement with the human similarities), spread evenly; 8 for a cohort without categories."""
  from ais_jax.report import figures
  per_group = config.examples_per_group if cohort.has_categories else 8
  groups = cohort.groups if cohort.has_categories else ["all"] * len(cohort.names)
  return figures.select_examples(groups, per_group, statistic=statistic)


def analyse(model, cohort, out_dir: str, example_index: list, statistic) -> dict:
  """Writes the heatmap and mean-activation figures for ``example_index``, each image labelled
  with its ``statistic`` (per-image agreement); returns ``{'files': [...]}``."""
  from ais_jax import heatmaps as heatmaps_lib
  from ais_jax.report import figures
  fdir = os.path.join(out_dir, "figures")
  os.makedirs(fdir, exist_ok=True)
  grid_groups = cohort.groups if cohort.has_categories else None
  labels = {i: f"agreement r = {statistic[i]:.2f}" if np.isfinite(statistic[i])
            else "agreement undefined" for i in example_index}
  files = figures.heatmap_grid(list(cohort.images), list(model.run.heatmaps),
                               os.path.join(fdir, "heatmaps.png"), names=cohort.names,
                               groups=grid_groups, index=example_index, labels=labels,
                               title=f"{model.label}: AIS heatmaps")
  mean_maps = np.asarray(heatmaps_lib.mean_activation_maps(model.run.feature_maps))
  np.save(os.path.join(fdir, "mean_activation_maps.npy"), mean_maps)
  files.append(os.path.join(fdir, "mean_activation_maps.npy"))
  files += figures.heatmap_grid(list(cohort.images), list(mean_maps),
                                os.path.join(fdir, "mean_activation.png"),
                                names=cohort.names, groups=grid_groups, index=example_index,
                                labels=labels, heat_label="mean activation",
                                title=f"{model.label}: mean activation (equal weights)")
  return {"files": [os.path.relpath(p, out_dir) for p in files]}


def section(model, cohort) -> index.Section:
  """The "Heatmaps" report section."""
  chosen = ("in each category, from the highest to the lowest" if cohort.has_categories
            else "from the highest to the lowest")
  return index.Section("Heatmaps", [
      index.Figure("figures/heatmaps.png", f"AIS heatmaps ({model.label})",
                   f"Each example image above its AIS heatmap: the maps weighted by how much "
                   "removing them from this image lowers its agreement with the human "
                   "similarities, drawn over a grey copy of the image (bright = where those "
                   "maps are active; every heatmap is scaled to its own range, so compare "
                   f"shapes, not brightness, between images). Examples run {chosen} per-image "
                   "agreement (the image's row of the model similarity against its row of the "
                   "human one, written above it).",
                   data=["figures/heatmaps.json", "figures/heatmaps.npz", "ais/heatmaps.npy",
                         "ais/per_image_ais.npy", "similarity/row_agreement.csv"]),
      index.Figure("figures/mean_activation.png", "Baseline: mean activation (equal weights)",
                   "The same images with every map weighted equally: where the network responds "
                   "at all, whatever the comparison; differences from the AIS heatmaps show what "
                   "the human comparison adds.",
                   data=["figures/mean_activation.json", "figures/mean_activation_maps.npy"]),
  ])
