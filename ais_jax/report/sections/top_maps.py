"""Which maps matter: the maps ranked first by cohort AIS, each with its AIS value and the cohort
images that activate it most (a strip of thumbnails per map, the map's activation over each).

:func:`analyse` writes ``top_maps/top_maps.png`` and ``top_maps/top_maps.csv``; :func:`section`
shows them.
"""

from __future__ import annotations

import os

import numpy as np

from ais_jax.report import files as files_lib
from ais_jax.report import index
from ais_jax.report.sections import relative


def top_maps(cohort_ais: np.ndarray, count: int) -> np.ndarray:
  """Indices of the ``count`` maps with the largest cohort AIS (undefined values last)."""
  a = np.asarray(cohort_ais, np.float64)
  order = np.argsort(np.where(np.isfinite(a), -a, np.inf), kind="stable")
  return order[:count]


def top_images(feature_maps: np.ndarray, maps: np.ndarray, count: int) -> tuple:
  """For each map, the ``count`` images with the largest mean activation of it.

  feature_maps: ``[n, h, w, K]``; maps: ``[M]`` map indices. Returns (``[M, count]`` image
  indices, ``[M, count]`` their mean activations).
  """
  mean = np.asarray(feature_maps, np.float64)[..., maps].mean(axis=(1, 2)).T   # [M, n]
  order = np.argsort(-mean, axis=1, kind="stable")[:, :count]
  return order, np.take_along_axis(mean, order, axis=1)


def analyse(model, cohort, out_dir: str, *, n_maps: int = 8, n_images: int = 6) -> dict:
  from ais_jax.report import figures
  tdir = os.path.join(out_dir, "top_maps")
  os.makedirs(tdir, exist_ok=True)
  n_images = min(n_images, len(cohort.names))
  maps = top_maps(model.run.cohort_ais, n_maps)
  fmaps = np.asarray(model.run.feature_maps)
  images, activations = top_images(fmaps, maps, n_images)
  rows = []
  fig, grid = figures.grid_figure(len(maps), n_images, cell=(1.45, 1.6), left=0.9, right=1.1,
                                  top=0.5, bottom=0.1, wspace=0.05, hspace=0.3)
  for r, k in enumerate(maps):
    value = float(model.run.cohort_ais[k])
    for c in range(n_images):
      i = int(images[r, c])
      ax = fig.add_subplot(grid[r, c])
      ax.imshow(figures.heat_overlay(np.asarray(cohort.images[i]), fmaps[i, :, :, k]))
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(figures.short_name(cohort.names[i], 16), fontsize=7.5)
      if c == 0:
        ax.set_ylabel(f"#{r + 1}: map {int(k)}\nAIS {value:.2g}", fontsize=8)
      rows.append([r + 1, int(k), value, c + 1, cohort.names[i], cohort.groups[i],
                   float(activations[r, c])])
  figures.side_colorbar(fig, 1.1, label="the map's activation\n(per image, min to max)")
  fig.suptitle(f"{model.label}: the {len(maps)} maps with the largest cohort AIS and the images "
               "that activate each most", fontsize=10, y=1 - 0.1 / fig.get_size_inches()[1],
               va="top")
  png = os.path.join(tdir, "top_maps.png")
  fig.savefig(png, dpi=90)
  csv = files_lib.write_csv(os.path.join(tdir, "top_maps.csv"),
                            ["rank", "map", "cohort_ais", "image_rank", "image", "group",
                             "mean_activation"], rows)
  return {"maps": maps, "images": images, "files": relative([png, csv], out_dir)}


def section(result: dict, model) -> index.Section:
  return index.Section("Which maps matter", [
      index.Figure("top_maps/top_maps.png", f"The maps ranked first by cohort AIS ({model.label})",
                   "One row per map, in the order of its cohort AIS (how much removing it from "
                   "all images lowers the agreement with the human similarities; value on the "
                   "left): the images where the map is most active on average, with its "
                   "activation over a grey copy of each. What the thumbnails share is what the "
                   "map responds to.", data=["top_maps/top_maps.csv", "ais/cohort_ais.npy"]),
  ])
