"""The human and the model similarity matrices side by side, ordered by category, with their
agreement and their scatter (what RSA users look for first).

:func:`analyse` computes each model's similarity matrix from its embeddings (``--similarity``),
the cohort agreement and the per-image agreement (row i of the model matrix against row i of the
human matrix, ``ais_jax.rsa.row_agreement``), and draws ``similarity/rdms.png``; :func:`section`
shows it.
"""

from __future__ import annotations

import os

import numpy as np

from ais_jax.report import files as files_lib
from ais_jax.report import index
from ais_jax.report.sections import fmt, relative


def display_groups(cohort) -> list:
  """The labels the matrices are ordered and annotated by: the categories, or for the planted
  cohort the target's number of points (the one factor the 'human' similarity depends on)."""
  if cohort.planted is not None:
    return [f"{int(k)} points" for k in cohort.planted.target_factor]
  return list(cohort.groups)


def category_order(labels) -> np.ndarray:
  """Image order grouping equal labels (numeric prefixes sorted as numbers, others in order of
  first appearance), stable within a label."""
  first = list(dict.fromkeys(labels))

  def key(label):
    head = str(label).split(" ")[0]
    return (0, float(head), "") if head.replace(".", "", 1).isdigit() else (1, first.index(label),
                                                                              "")
  rank = {lab: r for r, lab in enumerate(sorted(first, key=key))}
  return np.array(sorted(range(len(labels)), key=lambda i: (rank[labels[i]], i)), dtype=int)


def percentile_ranks(matrix: np.ndarray) -> np.ndarray:
  """Off-diagonal entries as percentiles (0..100, average ties) of the off-diagonal values; the
  diagonal and undefined entries are NaN. Makes matrices of different scales comparable."""
  from scipy import stats
  m = np.asarray(matrix, np.float64)
  out = np.full(m.shape, np.nan)
  mask = np.isfinite(m) & ~np.eye(m.shape[0], dtype=bool)
  if mask.sum() > 1:
    out[mask] = (stats.rankdata(m[mask]) - 1) / (mask.sum() - 1) * 100
  return out


def model_similarities(models, config) -> dict:
  """``{label: float64 [n, n]}`` similarity of each model's embeddings (``config.similarity``)."""
  from ais_jax import rsa
  return {m.label: np.asarray(rsa.similarity_matrix(np.asarray(m.run.embeddings, np.float64),
                                                    kind=config.similarity), np.float64)
          for m in models}


def analyse(models, cohort, config, out_dir: str) -> dict:
  """Similarity matrices, agreements, per-image agreements and ``similarity/rdms.png``.

  Returns ``{'similarities': {label: [n, n]}, 'agreement': {label: float}, 'row_agreement':
  {label: [n]}, 'order': [n], 'labels': [n], 'files': [...]}``.
  """
  from ais_jax import rsa
  sdir = os.path.join(out_dir, "similarity")
  os.makedirs(sdir, exist_ok=True)
  sims = model_similarities(models, config)
  human = np.asarray(cohort.human, np.float64)
  agreement = {k: float(rsa.agreement(s, human, kind=config.comparison)) for k, s in sims.items()}
  rows = {k: np.asarray(rsa.row_agreement(s, human, kind=config.comparison), np.float64)
          for k, s in sims.items()}
  labels = display_groups(cohort)
  order = category_order(labels)
  files = []
  for k, s in sims.items():
    path = os.path.join(sdir, f"model_similarity_{k}.npy")
    np.save(path, s)
    files.append(path)
  path = os.path.join(sdir, "human_similarity.npy")
  np.save(path, human)
  files.append(path)
  files.append(files_lib.write_csv(
      os.path.join(sdir, "row_agreement.csv"), ["image", "label"] + [f"{k}_row_agreement"
                                                                     for k in sims],
      [[cohort.names[i], labels[i]] + [rows[k][i] for k in sims] for i in range(len(labels))]))
  files.append(files_lib.write_json(os.path.join(sdir, "agreement.json"), {
      "similarity": config.similarity, "comparison": config.comparison,
      "agreement": agreement, "order": order, "labels_in_order": [labels[i] for i in order],
      "row_agreement_mean": {k: float(np.nanmean(v)) if np.isfinite(v).any() else None
                             for k, v in rows.items()}}))
  files.append(_rdm_figure(human, sims, agreement, rows, labels, order, config,
                           os.path.join(sdir, "rdms.png")))
  return {"similarities": sims, "agreement": agreement, "row_agreement": rows, "order": order,
          "labels": labels, "files": relative(files, out_dir)}


def _annotate(ax, labels_in_order, n):
  """Category names at the centres of their blocks and thin lines between blocks."""
  bounds = [0] + [i for i in range(1, n) if labels_in_order[i] != labels_in_order[i - 1]] + [n]
  centres = [(a + b - 1) / 2 for a, b in zip(bounds[:-1], bounds[1:])]
  names = [labels_in_order[a] for a in bounds[:-1]]
  for b in bounds[1:-1]:
    ax.axhline(b - 0.5, color="white", lw=0.8)
    ax.axvline(b - 0.5, color="white", lw=0.8)
  if len(names) > 1:
    ax.set_yticks(centres, names, fontsize=7)
    ax.set_xticks(centres, names, fontsize=7, rotation=40, ha="right")
  else:
    ax.set_xticks([])
    ax.set_yticks([])


def _rdm_figure(human, sims, agreement, rows, labels, order, config, out_png) -> str:
  from matplotlib import colormaps
  from matplotlib.figure import Figure
  n_models = len(sims)
  cols = 1 + n_models
  fig = Figure(figsize=(3.5 * cols + 0.8, 7.4), layout="constrained")
  labels_in_order = [labels[i] for i in order]
  ix = np.ix_(order, order)
  cmap = colormaps["viridis"]
  panels = [("human", human)] + list(sims.items())
  image = None
  for c, (name, s) in enumerate(panels):
    ax = fig.add_subplot(2, cols, c + 1)
    # Dissimilarity percentiles: 0 = the most similar pair, 100 = the most dissimilar.
    image = ax.imshow(percentile_ranks(-s)[ix], cmap=cmap, vmin=0, vmax=100,
                      interpolation="nearest")
    _annotate(ax, labels_in_order, len(order))
    title = "human" if name == "human" else (f"{name}: {config.comparison} r with human "
                                             f"= {agreement[name]:.3f}")
    ax.set_title(title, fontsize=9)
  fig.colorbar(image, ax=fig.axes[:cols], shrink=0.8,
               label="dissimilarity, percentile\n(0 = most similar pair)")
  ax = fig.add_subplot(2, cols, cols + 1)
  groups = list(dict.fromkeys(labels_in_order))
  first = next(iter(rows))
  values = rows[first]
  for g, gname in enumerate(groups):
    idx = [i for i in order if labels[i] == gname]
    jitter = (np.arange(len(idx)) % 5 - 2) * 0.06
    ax.scatter(values[idx], g + jitter, s=10, alpha=0.8)
  ax.set_yticks(range(len(groups)), groups, fontsize=7)
  ax.invert_yaxis()
  ax.axvline(0, color="k", lw=0.5)
  ax.set_xlabel(f"per-image agreement ({first}):\nrow of model vs row of human, r", fontsize=8)
  ax.set_title("which images the model gets right", fontsize=9)
  iu = np.triu_indices(human.shape[0], 1)
  h = human[iu]
  for c, (name, s) in enumerate(sims.items()):
    ax = fig.add_subplot(2, cols, cols + 2 + c)
    m = s[iu]
    ok = np.isfinite(h) & np.isfinite(m)
    ax.scatter(m[ok], h[ok], s=3, alpha=0.35, color="#08519c", rasterized=True)
    ax.set_xlabel(f"{name} similarity ({config.similarity})", fontsize=8)
    ax.set_ylabel("human similarity", fontsize=8)
    ax.set_title(f"all {int(ok.sum())} pairs: r = {agreement[name]:.3f}", fontsize=9)
    ax.tick_params(labelsize=7)
  fig.savefig(out_png, dpi=100)
  return out_png


def section(result: dict, models, config) -> index.Section:
  """The "Human and model similarity" report section."""
  main = models[0].label
  ag = result["agreement"]
  rows = result["row_agreement"][main]
  finite = rows[np.isfinite(rows)]
  worst = np.argsort(np.where(np.isfinite(rows), rows, np.inf))[:3]
  note = (f"The {main} similarities agree with the human ones at {config.comparison} r = "
          f"{ag[main]:.3f} over all pairs. Per image (its row of the two matrices), the agreement "
          f"ranges from {fmt(float(finite.min()) if finite.size else None)} to "
          f"{fmt(float(finite.max()) if finite.size else None)}; lowest for "
          + ", ".join(f"{result['labels'][i]} image {i}" for i in worst) + ".")
  if len(ag) > 1:
    note += " Other models: " + "; ".join(f"{k} r = {v:.3f}" for k, v in ag.items() if k != main)
    note += "."
  files = [f for f in result["files"] if f.endswith((".npy", ".csv", ".json"))]
  return index.Section("Human and model similarity", [
      index.Figure("similarity/rdms.png", "Similarity matrices, side by side",
                   "Top: the human matrix and each model's, as dissimilarity percentiles (dark = "
                   "similar pair), images ordered and labelled by category; the title gives the "
                   "agreement. Bottom left: each image's own agreement (its row of the model "
                   "matrix against its row of the human one); bottom right: every pair, model "
                   "similarity against human similarity.", data=files),
      index.Text([note]),
  ])
