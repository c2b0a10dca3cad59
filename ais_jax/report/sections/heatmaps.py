"""AIS heatmaps of example images beside the mean-activation baseline (the paper's Figure 2).

:func:`analyse` draws ``figures/heatmaps.png`` and ``figures/mean_activation.png`` for the chosen
examples (:func:`examples`); :func:`section` shows them.
"""

from __future__ import annotations

import os

import numpy as np

from ais_jax.report import index


def examples(cohort, config) -> list:
  """The example images of the heatmap figures."""
  from ais_jax.report import figures
  if cohort.dataset == "planted":
    return list(range(min(8, len(cohort.names))))
  return figures.select_examples(cohort.groups, config.examples_per_group)


def analyse(model, cohort, out_dir: str, example_index: list) -> dict:
  """Writes the heatmap and mean-activation figures; returns ``{'files': [...]}``."""
  from ais_jax import heatmaps as heatmaps_lib
  from ais_jax.report import figures
  fdir = os.path.join(out_dir, "figures")
  os.makedirs(fdir, exist_ok=True)
  grid_groups = None if cohort.dataset == "planted" else cohort.groups
  files = figures.heatmap_grid(list(cohort.images), list(model.run.heatmaps),
                               os.path.join(fdir, "heatmaps.png"), names=cohort.names,
                               groups=grid_groups, index=example_index,
                               title=f"{model.label}: AIS heatmaps")
  mean_maps = np.asarray(heatmaps_lib.mean_activation_maps(model.run.feature_maps))
  np.save(os.path.join(fdir, "mean_activation_maps.npy"), mean_maps)
  files.append(os.path.join(fdir, "mean_activation_maps.npy"))
  files += figures.heatmap_grid(list(cohort.images), list(mean_maps),
                                os.path.join(fdir, "mean_activation.png"),
                                names=cohort.names, groups=grid_groups, index=example_index,
                                title=f"{model.label}: mean activation (equal weights)")
  return {"files": [os.path.relpath(p, out_dir) for p in files]}


def section(model, cohort) -> index.Section:
  """The "Heatmaps" report section."""
  groups_note = "grouped by category" if cohort.has_categories else "the first images"
  return index.Section("Heatmaps", [
      index.Figure("figures/heatmaps.png", f"AIS heatmaps ({model.label})",
                   f"Each image ({groups_note}) above its AIS heatmap: the maps weighted by how "
                   "much removing them from this image lowers its agreement with the human "
                   "similarities; red = where those maps are active.",
                   data=["figures/heatmaps.json", "figures/heatmaps.npz", "ais/heatmaps.npy",
                         "ais/per_image_ais.npy"]),
      index.Figure("figures/mean_activation.png", "Baseline: mean activation (equal weights)",
                   "The same images with every map weighted equally: where the network responds "
                   "at all, whatever the comparison; differences from the AIS heatmaps show what "
                   "the human comparison adds.",
                   data=["figures/mean_activation.json", "figures/mean_activation_maps.npy"]),
  ])
