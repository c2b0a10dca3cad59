"""The main job behind ``python -m experiments.run``: one cohort, its models, every analysis and
the ``index.html`` report.

:func:`run_report` takes a :class:`RunConfig` (the flags of ``experiments.run`` as a library call
takes them) and runs the stages in order:

1. cohort: :func:`planted_cohort` (generated), :func:`k92_cohort` (the 92 real images) or
   :func:`custom_cohort` (--images/--human);
2. AIS: :func:`run_model` (``ais_jax.pipeline.run_ais``) per model, into ``<out>/ais`` and
   ``<out>/ais_<model>`` for the Match models;
3. selection: :func:`run_selection` (``ais_jax.selection``), into ``<out>/selection``;
4. heatmap figures, AIS distributions (:func:`distribution_analysis`), planted-truth masses
   (:func:`planted_analysis`), Match scores (:func:`match_analysis`), per-category cohort AIS
   (:func:`category_analysis`) and saliency (:func:`saliency_analysis`);
5. ``index.html`` (:func:`build_sections`) and ``summary.json`` (flags, seeds, versions, input
   sha256s, key numbers, timings, files).

User-input problems raise :class:`ais_jax.errors.UserInputError` (the command line prints them as
one line); nothing here reads flags or ``sys.argv``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ais_jax.report import files as files_lib

DATASETS = ("planted", "kriegeskorte92", "custom")
DEFAULT_WEIGHTS = "efficientnet_lite0_imagenet"
K92_MATCH_WEIGHTS = ("efficientnet_lite1_imagenet", "efficientnet_lite2_imagenet")


# Flags recorded in summary.json (and replayed by its rerun command).
FLAG_NAMES = ("dataset", "data_dir", "n_images", "image_size", "seed", "noise_sd", "arch",
              "weights", "images", "image_list", "human", "human_key", "human_kind", "similarity",
              "comparison", "cohort_score", "precision", "batch_size", "memory_budget_gb",
              "folds", "seeds", "selection_seed", "selection_score", "random_orders",
              "match_weights", "saliency", "examples_per_group", "save_feature_maps", "out")


@dataclasses.dataclass
class RunConfig:
  """Options of one run (the flags, as a library call takes them)."""
  dataset: str = "planted"
  out: str = ""
  data_dir: str = ""
  n_images: int = 48
  image_size: int = 224
  seed: int = 0
  noise_sd: float = 0.05
  arch: str = ""
  weights: str = DEFAULT_WEIGHTS
  images: str = ""
  image_list: str = ""
  human: str = ""
  human_key: str = ""
  human_kind: str = "similarity"
  similarity: str = "pearson"
  comparison: str = "pearson"
  cohort_score: str = "r"
  precision: str = "exact"
  batch_size: int = 32
  memory_budget_gb: float = 2.0
  folds: int = 5
  seeds: int = 8
  selection_seed: int = 0
  selection_score: str = "r2"
  random_orders: int = 1
  match_weights: Optional[Sequence[str]] = None
  saliency: str = "spectral_residual"
  examples_per_group: int = 4
  save_feature_maps: bool = False
  overwrite: bool = False


# ----------------------------------------------------------------------------------------------
# Cohorts


@dataclasses.dataclass
class Cohort:
  """What the analyses need of a cohort.

  images: uint8 ``[n, H, W, 3]`` (or a list of ``[H_i, W_i, 3]`` for custom images of mixed size);
  human: float64 ``[n, n]``; names: n strings; groups: n labels (categories; one label if none);
  inputs: provenance (paths, sha256s); planted: the PlantedCohort (planted only).
  """
  dataset: str
  images: Any
  human: np.ndarray
  names: list
  groups: list
  inputs: dict
  description: str
  images_arg: Any = None   # what run_ais gets for --images (an array or the user's path)
  human_arg: Any = None
  planted: Any = None


def planted_cohort(config: RunConfig) -> Cohort:
  from ais_jax.data import planted
  from ais_jax.pipeline import sha256_array
  c = planted.generate(config.n_images, config.image_size, seed=config.seed,
                       noise_sd=config.noise_sd)
  inputs = {"generator": c.metadata(), "images_sha256": sha256_array(c.images),
            "human_sha256": sha256_array(c.human_similarity),
            "target_masks_sha256": sha256_array(c.target_masks),
            "distractor_masks_sha256": sha256_array(c.distractor_masks)}
  return Cohort("planted", c.images, c.human_similarity, list(c.image_names),
                ["planted"] * c.n, inputs, c.description, images_arg=c.images,
                human_arg=c.human_similarity, planted=c)


def k92_cohort(config: RunConfig) -> Cohort:
  from ais_jax.data import kriegeskorte92
  from ais_jax.errors import UserInputError
  data_dir, allow_download = config.data_dir, False
  if not data_dir:
    # No folder given: the cache, filled from the public rsatoolbox copy (needs internet; both
    # files are checked against their sha256 before use).
    from ais_jax.io import weights as weights_io
    data_dir = os.path.join(weights_io.cache_dir(), "data", "kriegeskorte92")
    allow_download = True
  try:
    d = kriegeskorte92.load(data_dir, allow_download=allow_download)
  except (FileNotFoundError, ValueError, OSError) as e:
    raise UserInputError("--data_dir", f"{e} (offline: point --data_dir at a folder holding "
                         f"{kriegeskorte92.STIMULI_FILE} and {kriegeskorte92.JUDGMENTS_FILE})"
                         ) from None
  inputs = {"data_dir": os.path.abspath(data_dir),
            "files_sha256": dict(kriegeskorte92.SHA256), "sha256_verified": True,
            "human": "subject-averaged dissimilarity of 16 subjects, negated (S = -D)"}
  groups = [d.category_names[c] for c in d.categories]
  return Cohort("kriegeskorte92", d.images, d.similarity, list(d.image_names), groups, inputs,
                "The 92 object images of Kriegeskorte et al. (2008) with the similarity "
                "judgments of 16 subjects (Mur et al. 2013), averaged over subjects.",
                images_arg=d.images, human_arg=d.similarity)


def custom_cohort(config: RunConfig) -> Cohort:
  from ais_jax.errors import UserInputError
  from ais_jax.io import human as human_io
  from ais_jax.io import images as images_io
  if not config.images or not config.human:
    raise UserInputError("--images" if not config.images else "--human",
                         "required for your own cohort: --images=DIR_OR_NPY and --human=MATRIX")
  images, names = images_io.load_images(config.images, image_list=config.image_list or None)
  human = human_io.load_human(config.human, key=config.human_key or None,
                              kind=config.human_kind, n_images=len(names))
  inputs = {"images": os.path.abspath(config.images), "human": os.path.abspath(config.human),
            "human_sha256": _file_sha256(config.human)}
  if os.path.isfile(config.images):
    inputs["images_sha256"] = _file_sha256(config.images)
  return Cohort("custom", images, human, list(names), ["images"] * len(names), inputs,
                f"{len(names)} images from {config.images} with the similarity in {config.human}.",
                images_arg=config.images, human_arg=config.human)


def _file_sha256(path: str) -> str:
  from ais_jax.io import runs
  return runs.sha256_file(path)


# ----------------------------------------------------------------------------------------------
# Small helpers


def _label(spec_name: str) -> str:
  return spec_name.replace("efficientnet_lite", "Lite")


def _environment() -> dict:
  import flax
  import jax
  import matplotlib
  import PIL
  import scipy
  import ais_jax
  return {"python": sys.version.split()[0], "ais_jax": ais_jax.__version__,
          "jax": jax.__version__, "flax": flax.__version__, "numpy": np.__version__,
          "scipy": scipy.__version__, "matplotlib": matplotlib.__version__,
          "pillow": PIL.__version__, "backend": jax.default_backend(),
          "devices": [f"{d.platform}:{d.device_kind}" for d in jax.devices()]}


# ----------------------------------------------------------------------------------------------
# Models


@dataclasses.dataclass
class ModelRun:
  label: str
  weights: str
  spec: Any
  variables: Any
  provenance: dict
  run: Any          # ais_jax.pipeline.AisRun
  logits: Optional[np.ndarray]
  folder: str


def run_model(weights: str, cohort: Cohort, config: RunConfig, folder: str,
              report: Callable[[str], None], *, arch: str = "",
              command: Optional[Sequence[str]] = None) -> ModelRun:
  """``ais_jax.pipeline.run_ais`` for one model on the cohort, into ``folder``.

  ``command`` (the command line) is recorded in the run folder's summary.json.
  """
  from ais_jax import pipeline
  spec, variables, provenance, module = pipeline.load_model(weights, arch or None)
  report(f"model {spec.name} ({weights}): AIS on {len(cohort.names)} images")
  run = pipeline.run_ais(
      weights=(spec, variables, provenance, module), images=cohort.images_arg,
      image_list=(config.image_list or None) if cohort.dataset == "custom" else None,
      image_names=None if cohort.dataset == "custom" else cohort.names,
      human=cohort.human_arg, human_key=(config.human_key or None) if cohort.dataset == "custom"
      else None, human_kind=config.human_kind if cohort.dataset == "custom" else "similarity",
      similarity=config.similarity, comparison=config.comparison,
      cohort_score=config.cohort_score, precision=config.precision,
      batch_size=config.batch_size, memory_budget_gb=config.memory_budget_gb,
      save_feature_maps=config.save_feature_maps, overwrite=True, out=folder,
      progress=lambda m: report(f"  {spec.name}: {m}"),
      flags={**dataclasses.asdict(config), "weights": weights, "dataset": cohort.dataset},
      command=command)
  # Groups beside the run, for experiments.saliency --ais_run=<folder>.
  with open(os.path.join(folder, "datasets.txt"), "w") as f:
    f.write("".join(f"{g}\n" for g in cohort.groups))
  return ModelRun(_label(spec.name), weights, spec, variables, provenance, run, run.logits, folder)


# ----------------------------------------------------------------------------------------------
# Selection


def run_selection(model: ModelRun, cohort: Cohort, config: RunConfig, out_dir: str,
                  report: Callable[[str], None]) -> Optional[dict]:
  """``ais_jax.selection.select_maps`` + ``summarize``; writes selection/cv.json (the format of
  experiments.selection), cv.csv, cv_arrays.npz, selection.png (Figure 1) and the mean curves
  (``ais_jax.report.selection_outputs``)."""
  from ais_jax import selection
  from ais_jax.report import selection_outputs
  n = len(cohort.names)
  if config.folds == 0:
    report("selection: skipped (--folds=0)")
    return None
  if not 2 <= config.folds <= n // 2:
    report(f"selection: skipped (--folds={config.folds}; needs 2 <= folds <= n/2 = {n // 2})")
    return None
  score = config.selection_score if config.comparison == "pearson" else "r"
  report(f"selection: {config.folds} folds x {config.seeds} seeds, score {score}, "
         f"{config.random_orders} random order(s) per split")
  t = time.perf_counter()
  res = selection.select_maps(
      model.spec.get_ablation_head(model.variables), model.run.feature_maps, cohort.human,
      folds=config.folds, seeds=config.seeds, seed=config.selection_seed, score=score,
      similarity=config.similarity, comparison=config.comparison, precision=config.precision,
      random_orders=config.random_orders, memory_budget_gb=config.memory_budget_gb)
  summary = selection.summarize(res)
  wall = time.perf_counter() - t
  _, files = selection_outputs.write_outputs(os.path.join(out_dir, "selection"), res, summary,
                                             label=f"{cohort.dataset} / {model.label}")
  out = {"mean_test_full": summary["mean_test_full"],
         "mean_test_retained": summary["mean_test_retained"],
         "mean_test_random_order": summary.get("mean_test_random_retained", float("nan")),
         "mean_m_star": summary["mean_m_star"], "median_m_star": float(np.median(res.m_star)),
         "loftus_masson_se": (summary.get("loftus_masson") or {}).get("se"),
         "tests": summary["tests"], "settings": res.settings, "undefined": res.undefined,
         "files": [os.path.relpath(p, out_dir) for p in files], "wall_s": wall}
  report(f"selection: held-out {score} all maps {out['mean_test_full']:.4f}, selected "
         f"{out['mean_test_retained']:.4f} (mean m* {out['mean_m_star']:.1f}), random order "
         f"{out['mean_test_random_order']:.4f} in {wall:.1f} s")
  return out


# ----------------------------------------------------------------------------------------------
# Planted-truth metrics


PLANTED_METHODS = ("AIS heatmap", "mean activation", "spectral residual")


def planted_analysis(cohort: Cohort, model: ModelRun, saliency_maps: Optional[list],
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
  files += _planted_examples_figure(c, maps, os.path.join(pdir, "examples.png"))
  return {"summary": summaries, "files": [os.path.relpath(p, out_dir) for p in files],
          "per_image": reports}


def _planted_mass_figure(reports: dict, summaries: dict, out_png: str) -> list[str]:
  from matplotlib.figure import Figure
  fig = Figure(figsize=(11, 3.6))
  ax = fig.add_subplot(1, 2, 1)
  names = list(reports)
  x = np.arange(len(names))
  t = [summaries[n]["target_mass"]["mean"] for n in names]
  d = [summaries[n]["distractor_mass"]["mean"] for n in names]
  ax.bar(x - 0.2, t, 0.4, color="#2ca02c", label="mass on target")
  ax.bar(x + 0.2, d, 0.4, color="#d62728", label="mass on distractor")
  ta = summaries[names[0]]["target_area"]["mean"]
  da = summaries[names[0]]["distractor_area"]["mean"]
  ax.axhline(ta, color="#2ca02c", ls="--", lw=1, label=f"target area ({ta:.3f})")
  ax.axhline(da, color="#d62728", ls=":", lw=1, label=f"distractor area ({da:.3f})")
  ax.set_xticks(x, names)
  ax.set_ylabel("mean fraction of heatmap mass")
  ax.legend(fontsize=7)
  ax.set_title("where the heatmap mass falls (mean over images)", fontsize=9)
  ax2 = fig.add_subplot(1, 2, 2)
  for name, colour in zip(names, ["#e41a1c", "#777777", "#377eb8"]):
    r = reports[name]
    ax2.scatter(r["distractor_enrichment"], r["target_enrichment"], s=12, color=colour, label=name,
                alpha=0.8)
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
  ax2.legend(fontsize=7)
  ax2.set_title("per image (above the diagonal: more on the target)", fontsize=9)
  fig.tight_layout()
  fig.savefig(out_png, dpi=110)
  return [out_png]


def _planted_examples_figure(c, maps: dict, out_png: str, count: int = 8) -> list[str]:
  from matplotlib.figure import Figure
  from ais_jax import heatmaps as heatmaps_lib
  count = min(count, c.images.shape[0])
  rows = 1 + len(maps)
  fig = Figure(figsize=(1.9 * count, 2.0 * rows))
  for i in range(count):
    ax = fig.add_subplot(rows, count, i + 1)
    ax.imshow(c.images[i])
    ax.contour(c.target_masks[i].astype(float), levels=[0.5], colors=["#00ff00"], linewidths=1.2)
    ax.contour(c.distractor_masks[i].astype(float), levels=[0.5], colors=["#ff00ff"],
               linewidths=1.2)
    ax.set_title(f"{c.image_names[i]}", fontsize=7)
    for r, (name, m) in enumerate(maps.items()):
      axr = fig.add_subplot(rows, count, (r + 1) * count + i + 1)
      axr.imshow(heatmaps_lib.overlay(c.images[i], m[i].astype(np.float32), alpha=0.7))
      axr.contour(c.target_masks[i].astype(float), levels=[0.5], colors=["#00ff00"],
                  linewidths=0.6)
      if i == 0:
        axr.set_ylabel(name, fontsize=8)
    for a in fig.axes:
      a.set_xticks([])
      a.set_yticks([])
  fig.axes[0].set_ylabel("image (green: target,\nmagenta: distractor)", fontsize=7)
  fig.tight_layout()
  fig.savefig(out_png, dpi=100)
  return [out_png]


# ----------------------------------------------------------------------------------------------
# Match, distributions, categories (Aim 2)


def match_analysis(models: list, cohort: Cohort, out_dir: str) -> dict:
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
  return {"pairs": pairs, "files": [os.path.relpath(p, out_dir) for p in files]}


def distribution_analysis(models: list, cohort: Cohort, out_dir: str) -> dict:
  from ais_jax.report import figures
  out_png = os.path.join(out_dir, "aim2", "ais_distributions.png")
  files = figures.ais_distributions({m.label: m.run.per_image_ais for m in models}, out_png,
                                    title=f"{cohort.dataset}: per-image AIS")
  with open(out_png[:-4] + ".json") as f:
    stats = json.load(f)
  return {"stats": stats, "files": [os.path.relpath(p, out_dir) for p in files]}


def category_analysis(model: ModelRun, cohort: Cohort, config: RunConfig, out_dir: str,
                      report: Callable[[str], None]) -> dict:
  """Cohort AIS on each category alone, and the correlations of those K-vectors."""
  from ais_jax import aim2
  from ais_jax import ais
  names = list(dict.fromkeys(cohort.groups))
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


# ----------------------------------------------------------------------------------------------
# Saliency (Aim 3)


def saliency_analysis(model: ModelRun, cohort: Cohort, sal_maps: list, config: RunConfig,
                      out_dir: str, examples: Sequence[int], *,
                      command: Optional[Sequence[str]] = None) -> dict:
  """``ais_jax.report.saliency_report.compare`` into ``<out>/saliency`` (as
  experiments.saliency)."""
  from ais_jax.report import saliency_report
  sdir = os.path.join(out_dir, "saliency")
  result = saliency_report.compare(cohort.images, model.run.heatmaps, cohort.names, cohort.groups,
                                   sdir, saliency=config.saliency, maps=sal_maps,
                                   index=list(examples)[:8], ais_run=model.folder,
                                   command=command)
  files = result["files"] + ["saliency_summary.json"]
  return {"saliency": config.saliency, "rows": result["rr_table"],
          "all_images": result["rr_all_images"], "undefined": result["rr_undefined"],
          "files": [os.path.relpath(os.path.join(sdir, p), out_dir) for p in files]}


# ----------------------------------------------------------------------------------------------
# The run


def _remove_previous(out: str) -> None:
  """With --overwrite: removes the files the previous run listed in its summary.json."""
  path = os.path.join(out, "summary.json")
  if not os.path.isfile(path):
    return
  try:
    with open(path) as f:
      old = json.load(f)
  except (OSError, ValueError):
    return
  for rel in old.get("files", {}) if isinstance(old.get("files"), dict) else old.get("files", []):
    root = os.path.abspath(out)
    p = os.path.abspath(os.path.join(root, rel))
    if p.startswith(root + os.sep) and os.path.isfile(p):
      os.remove(p)


def default_out(dataset: str) -> str:
  return os.path.join("runs", dataset)


def rerun_command(flag_values: dict, defaults: dict) -> str:
  args = ["python", "-m", "experiments.run"]
  for name in FLAG_NAMES:
    value = flag_values.get(name)
    if value is None or value == defaults.get(name):
      continue
    if isinstance(value, bool):
      args.append(f"--{'' if value else 'no'}{name}")
    elif isinstance(value, (list, tuple)):
      args.append(f"--{name}={','.join(map(str, value))}")
    else:
      args.append(f"--{name}={value}")
  return " ".join(shlex.quote(a) for a in args)


def run_report(config: RunConfig, *, progress: Optional[Callable[[str], None]] = None,
               command: Optional[Sequence[str]] = None) -> dict:
  """Runs everything for one cohort and writes the report; returns the summary."""
  from ais_jax.io import runs
  report = progress or (lambda message: None)
  t_start = time.perf_counter()
  timings: dict[str, float] = {}
  dataset = config.dataset
  out = config.out or default_out(dataset)
  runs.check_out_dir(out, overwrite=config.overwrite)
  if config.overwrite:
    _remove_previous(out)
  os.makedirs(out, exist_ok=True)

  def stage(name, t):
    timings[name] = round(time.perf_counter() - t, 3)

  t = time.perf_counter()
  cohort = {"planted": planted_cohort, "kriegeskorte92": k92_cohort,
            "custom": custom_cohort}[dataset](config)
  stage("cohort", t)
  n = len(cohort.names)
  report(f"cohort: {dataset}, {n} images ({timings['cohort']:.1f} s)")

  t = time.perf_counter()
  weights = config.weights or DEFAULT_WEIGHTS
  main_model = run_model(weights, cohort, config, os.path.join(out, "ais"), report,
                         arch=config.arch, command=command)
  stage("ais_main_model", t)
  models = [main_model]
  match_weights = config.match_weights
  if match_weights is None:
    match_weights = list(K92_MATCH_WEIGHTS) if dataset == "kriegeskorte92" else []
  for w in match_weights:
    if w == weights:
      continue
    t = time.perf_counter()
    name = os.path.basename(os.path.normpath(w))
    models.append(run_model(w, cohort, config, os.path.join(out, f"ais_{name}"), report,
                            command=command))
    stage(f"ais_{name}", t)

  files: list[str] = []
  results: dict[str, Any] = {
      "model": main_model.spec.name, "n_images": n, "n_maps": int(main_model.run.cohort_ais.size),
      "baseline_agreement": {m.label: m.run.summary["results"]["baseline_agreement"]
                             for m in models},
      "undefined_per_image_ais": {m.label: m.run.summary["undefined"]["per_image_ais"]["count"]
                                  for m in models},
  }
  for m in models:
    files += [os.path.relpath(os.path.join(m.folder, f), out)
              for f in list(m.run.summary["files"]) + ["summary.json", "datasets.txt"]]

  t = time.perf_counter()
  selection_summary = run_selection(main_model, cohort, config, out, report)
  stage("selection", t)
  if selection_summary is not None:
    results["selection"] = {k: selection_summary[k] for k in (
        "mean_test_full", "mean_test_retained", "mean_test_random_order", "mean_m_star",
        "median_m_star", "loftus_masson_se", "tests", "settings", "undefined")}
    files += selection_summary["files"]

  # Heatmap figures.
  t = time.perf_counter()
  from ais_jax import heatmaps as heatmaps_lib
  from ais_jax.report import figures
  fdir = os.path.join(out, "figures")
  os.makedirs(fdir, exist_ok=True)
  if dataset == "planted":
    examples = list(range(min(8, n)))
    grid_groups = None
  else:
    examples = figures.select_examples(cohort.groups, config.examples_per_group)
    grid_groups = cohort.groups
  figure_files = figures.heatmap_grid(list(cohort.images), list(main_model.run.heatmaps),
                                      os.path.join(fdir, "heatmaps.png"), names=cohort.names,
                                      groups=grid_groups, index=examples,
                                      title=f"{main_model.label}: AIS heatmaps")
  mean_maps = np.asarray(heatmaps_lib.mean_activation_maps(main_model.run.feature_maps))
  np.save(os.path.join(fdir, "mean_activation_maps.npy"), mean_maps)
  figure_files.append(os.path.join(fdir, "mean_activation_maps.npy"))
  figure_files += figures.heatmap_grid(list(cohort.images), list(mean_maps),
                                       os.path.join(fdir, "mean_activation.png"),
                                       names=cohort.names, groups=grid_groups, index=examples,
                                       title=f"{main_model.label}: mean activation (equal weights)")
  files += [os.path.relpath(p, out) for p in figure_files]
  stage("heatmap_figures", t)

  t = time.perf_counter()
  distributions = distribution_analysis(models, cohort, out)
  files += distributions["files"]
  results["ais_distributions"] = {
      label: {k: v for k, v in s.items() if "histogram" not in k}
      for label, s in distributions["stats"]["models"].items()}
  if distributions["stats"].get("ks"):
    results["ais_distributions_ks"] = distributions["stats"]["ks"]
  stage("ais_distributions", t)

  sal_maps = None
  t = time.perf_counter()
  if config.saliency not in ("", "none"):
    report(f"saliency: {config.saliency} on {n} images")
    from ais_jax.report import saliency_report
    sal_maps = saliency_report.saliency_maps(cohort.images, cohort.names, config.saliency)
  stage("saliency_maps", t)

  planted_result = None
  if dataset == "planted":
    t = time.perf_counter()
    planted_result = planted_analysis(cohort, main_model, sal_maps, out)
    files += planted_result["files"]
    results["planted"] = planted_result["summary"]
    stage("planted_metrics", t)
    s = planted_result["summary"]
    report("planted: mass on target / distractor (areas {:.3f} / {:.3f}): ".format(
        s["AIS heatmap"]["target_area"]["mean"], s["AIS heatmap"]["distractor_area"]["mean"]) +
        "; ".join(f"{k} {v['target_mass']['mean']:.3f} / {v['distractor_mass']['mean']:.3f}"
                  for k, v in s.items()))

  match_result = None
  if len(models) > 1:
    t = time.perf_counter()
    match_result = match_analysis(models, cohort, out)
    files += match_result["files"]
    results["match"] = match_result["pairs"]
    stage("match", t)

  category_result = None
  if len(set(cohort.groups)) > 1:
    t = time.perf_counter()
    category_result = category_analysis(main_model, cohort, config, out, report)
    files += category_result["files"]
    results["category_correlations"] = {"names": category_result["names"],
                                        "r": category_result["r"]}
    stage("categories", t)

  saliency_result = None
  if sal_maps is not None:
    t = time.perf_counter()
    saliency_result = saliency_analysis(main_model, cohort, sal_maps, config, out, examples,
                                        command=command)
    files += saliency_result["files"]
    results["saliency_rr_all_images"] = saliency_result["all_images"]
    stage("saliency", t)

  # Index and summary.
  t = time.perf_counter()
  flag_values = {k: v for k, v in dataclasses.asdict(config).items() if k != "overwrite"}
  flag_values.update(dataset=dataset, out=out, weights=weights)
  rerun = rerun_command(flag_values, dataclasses.asdict(RunConfig()))
  sections = build_sections(
      cohort=cohort, models=models, out=out, selection=selection_summary,
      planted=planted_result, match=match_result, categories=category_result,
      distributions=distributions, saliency=saliency_result, rerun=rerun)
  from ais_jax.report import index
  index_path = index.write_index(
      out, title=f"ais_jax report: {dataset} / {main_model.label}", sections=sections,
      intro=[cohort.description,
             f"Model: {main_model.spec.name} ({weights}); {n} images x "
             f"{results['n_maps']} feature maps of {main_model.spec.ablation_layer}; embedding: "
             f"{main_model.spec.embedding_layer}. Agreement of the model's similarity with the "
             f"human matrix ({config.comparison} of {config.similarity} similarities, all "
             f"maps): {results['baseline_agreement'][main_model.label]:.4f}."],
      footer=[f"Rerun: {rerun}", "summary.json holds the flags, seeds, versions, input sha256s "
              "and the numbers shown here."])
  files.append(os.path.relpath(index_path, out))
  stage("index", t)
  timings["total"] = round(time.perf_counter() - t_start, 3)

  file_records = {}
  for rel in dict.fromkeys(files):
    path = os.path.join(out, rel)
    if os.path.isfile(path):
      file_records[rel] = {"sha256": runs.sha256_file(path), "bytes": os.path.getsize(path)}
  summary = {
      "tool": "experiments.run", "command": list(command) if command is not None else None,
      "rerun": rerun, "flags": flag_values, "dataset": dataset,
      "seeds": {"planted": config.seed if dataset == "planted" else None,
                "selection_folds": list(range(config.selection_seed,
                                              config.selection_seed + config.seeds)),
                "random_orders": f"numpy default_rng(({config.selection_seed}, 1))"},
      "inputs": cohort.inputs,
      "models": {m.label: {"weights": m.weights, "spec": m.spec.metadata(),
                           "checkpoint": {k: v for k, v in m.provenance.items() if k != "shapes"},
                           "run_folder": os.path.relpath(m.folder, out)} for m in models},
      "environment": _environment(), "results": results, "timings_s": timings,
      "files": file_records,
  }
  files_lib.write_json(os.path.join(out, "summary.json"), summary)
  report(f"wrote {out}/index.html and {len(file_records)} files in {timings['total']:.1f} s")
  return summary


# ----------------------------------------------------------------------------------------------
# Report sections


def _fmt(v: Any, digits: int = 3) -> str:
  if v is None or (isinstance(v, float) and not np.isfinite(v)):
    return "undefined"
  return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _planted_note(planted: dict, selection: Optional[dict]) -> list[str]:
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
      "layouts (rerun with --seed to see the spread). The mean-activation baseline is one "
      "reasonable baseline, not the strongest possible one.")
  return lines


def build_sections(*, cohort: Cohort, models: list, out: str, selection: Optional[dict],
                   planted: Optional[dict], match: Optional[dict], categories: Optional[dict],
                   distributions: dict, saliency: Optional[dict], rerun: str) -> list:
  """The report's sections (ais_jax.report.index items) for what this run computed."""
  from ais_jax.report import index
  main = models[0]
  sections = []
  if planted is not None:
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
    sections.append(index.Section("Planted truth", [
        index.Figure("planted/examples.png", "The cohort and the three maps",
                     "Top row: the generated images with the target (green outline; its number of "
                     "points alone defines the similarity) and the distractor (magenta); below, "
                     "each map overlaid in colour (red = most mass), target outline repeated.",
                     data=["planted/masks.npz", "planted/images.npy",
                           "planted/human_similarity.npy"]),
        index.Figure("planted/mass.png", "Heatmap mass on target vs distractor",
                     "Left: mean fraction of each map's mass on the target (green) and distractor "
                     "(red) against their area fractions (dashed lines = what a uniform map would "
                     "give); right: one dot per image, above the diagonal = more mass on the target "
                     "than on the distractor relative to their areas.",
                     data=["planted/mass_per_image.csv", "planted/mass_summary.json"]),
        index.Table("Mass fractions, mean over images",
                    ["map", "mass on target", "mass on distractor", "target area",
                     "distractor area", "target mass/area", "distractor mass/area",
                     "images with target > distractor", "undefined (all-zero map)"], rows,
                    "A map that follows the comparison puts far more than the target's area "
                    "fraction on the target and no more than its area fraction on the distractor.",
                    data=["planted/mass_summary.json"]),
        index.Text(_planted_note(planted, selection), title="What this does and does not show"),
        index.Table("Per image", ["image", "points", "target area", "distractor area"]
                    + [f"{mth}: {w}" for mth in methods for w in ("target", "distractor")],
                    per_image, "One row per image: the fraction of each map's mass on the target "
                    "and on the distractor (compare with the two area columns).",
                    data=["planted/mass_per_image.csv"], digits=3),
    ]))
  groups_note = ("grouped by category" if len(set(cohort.groups)) > 1 else "the first images")
  sections.append(index.Section("Heatmaps", [
      index.Figure("figures/heatmaps.png", f"AIS heatmaps ({main.label})",
                   f"Each image ({groups_note}) above its AIS heatmap: the maps weighted by how much "
                   "removing them from this image lowers its agreement with the human "
                   "similarities; red = where those maps are active.",
                   data=["figures/heatmaps.json", "figures/heatmaps.npz", "ais/heatmaps.npy",
                         "ais/per_image_ais.npy"]),
      index.Figure("figures/mean_activation.png", "Baseline: mean activation (equal weights)",
                   "The same images with every map weighted equally: where the network responds "
                   "at all, whatever the comparison; differences from the AIS heatmaps show what "
                   "the human comparison adds.",
                   data=["figures/mean_activation.json", "figures/mean_activation_maps.npy"]),
  ]))
  if selection is not None:
    tests = selection["tests"]

    def p(name):
      return (tests.get(name) or {}).get("pvalue")

    rows = [["all maps", selection["mean_test_full"], "", "", ""],
            ["AIS order, first m* maps", selection["mean_test_retained"],
             selection["mean_m_star"], p("retained_vs_full_paired"),
             p("retained_vs_full_corrected")]]
    if selection["settings"]["random_orders"]:
      rows.append(["random order, first m* maps (chance control)",
                   selection["mean_test_random_order"], "",
                   p("retained_vs_random_paired"), p("retained_vs_random_corrected")])
    score = selection["settings"]["score"]
    splits = selection["settings"]["splits"]
    sections.append(index.Section("Map selection (held-out images)", [
        index.Figure("selection/selection.png", "Held-out agreement: all maps vs AIS-selected",
                     f"Mean test {score} over {splits} image-fold splits with all maps (grey), "
                     "with the maps ranked first by AIS on the training images (red; m* chosen on "
                     "the training images only, written above) and with a random order (blue); "
                     "error bars are Loftus-Masson within-split errors.",
                     data=["selection/cv.json", "selection/cv.csv", "selection/selection.csv",
                           "selection/cv_arrays.npz"]),
        index.Figure("selection/selection_curves.png", "Agreement as maps are added",
                     f"Mean {score} on the training and test images when only the first m maps "
                     "(AIS order) are kept, against a random order: the gap between the orange "
                     "and green curves is what the AIS ranking buys on held-out images.",
                     data=["selection/selection_curves.csv"], width="60%"),
        index.Table("Selection summary", ["maps", f"mean test {score}", "mean m*",
                                          "paired t p",
                                          "corrected t p"], rows,
                    "Higher is better; p compares the AIS-selected maps with all maps (row 2) and "
                    "with the random order (row 3); the corrected resampled t-test (Nadeau & "
                    "Bengio) allows for the overlap of the training sets and is the one to trust.",
                    data=["selection/cv.json"]),
    ]))
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
  sections.append(index.Section("AIS distributions", items))
  if match is not None:
    rows = []
    for pair, e in match["pairs"].items():
      c = e.get("max_entropy_correlation", {})
      rows.append([pair, e["n"], e["n_undefined"], e["mean"], e["median"], c.get("pearson_r"),
                   c.get("pearson_p"), c.get("spearman_rho"), c.get("spearman_p")])
    sections.append(index.Section("Agreement between models (Match)", [
        index.Figure("aim2/match_cdf.png", "Match score distribution",
                     "For each image, the Pearson correlation of two models' AIS heatmaps (at image "
                     "resolution); a curve far to the right means the models agree on where the "
                     "comparison-relevant features are.",
                     data=["aim2/match_per_image.csv", "aim2/match_cdf.csv",
                           "aim2/match_summary.json"]),
        index.Table("Match scores and maxEntropy",
                    ["pair", "images", "undefined", "mean", "median", "r with maxEntropy", "p",
                     "Spearman rho", "p"], rows,
                    "A negative correlation with maxEntropy (the larger of the two models' "
                    "classification entropies) means the models agree less on images they are "
                    "unsure about.", data=["aim2/match_summary.json"]),
    ]))
  if categories is not None:
    names = categories["names"]
    rows = [[a] + [categories["r"][i, j] for j in range(len(names))] for i, a in enumerate(names)]
    sections.append(index.Section("Cohort AIS by category", [
        index.Figure("aim2/category_correlations.png", "Correlations of per-category cohort AIS",
                     "Cohort AIS computed on each category's images alone, then correlated across "
                     "the maps between categories: high r = the same maps matter for both.",
                     data=["aim2/category_correlations.csv", "aim2/category_correlations.json",
                           "aim2/category_cohort_ais.npy"]),
        index.Table("Correlation matrix (r)", ["category"] + names, rows,
                    "Row/column pairs of categories; the diagonal is 1.",
                    data=["aim2/category_correlations.csv"], digits=3),
    ]))
  if saliency is not None:
    rows = [[r["dataset"], r["top"], r["mean"], r["sd"], r["n"], r["n_undefined"],
             r["undefined_reasons"]] for r in saliency["rows"]]
    sections.append(index.Section("AIS heatmaps vs saliency", [
        index.Figure("saliency/pr_curves.png", "Precision-recall of saliency against AIS targets",
                     "Target = the top pixels of the AIS heatmap (one panel per threshold); each "
                     "curve traces saliency thresholds; curves near the dashed chance line mean "
                     "saliency does not predict where the AIS heatmap is high.",
                     data=["saliency/pr_curves.csv"]),
        index.Figure("saliency/contours.png", "AIS (red) and saliency (blue) contours",
                     "Contours of the top 5/10/15% pixels of each map (thicker = smaller set) with "
                     "the relative risk printed on each image.", data=["saliency/contours.json"]),
        index.Table("Relative risk (the paper's Table 1)",
                    ["dataset", "top %", "mean RR", "sd", "images", "undefined", "why undefined"],
                    rows, "RR = P(top AIS pixel | salient) / P(top AIS pixel | not salient); 1 = "
                    "saliency says nothing about the AIS map, above 1 = they overlap.",
                    data=["saliency/rr_table.csv", "saliency/rr_table.md",
                          "saliency/rr_per_image.csv"]),
    ]))
  model_rows = [[m.label, m.weights, m.run.summary["results"]["baseline_agreement"],
                 m.run.summary["undefined"]["per_image_ais"]["count"],
                 os.path.relpath(m.folder, out)] for m in models]
  sections.append(index.Section("Runs and reproduction", [
      index.Table("Models", ["model", "weights", "agreement with humans (all maps)",
                             "undefined per-image AIS", "run folder"], model_rows,
                  "Each model's AIS run folder holds per_image_ais.npy, cohort_ais.npy, "
                  "embeddings.npy, heatmaps.npy and its own summary.json "
                  "(ais_jax.io.load_run reads it).",
                  data=[os.path.relpath(os.path.join(m.folder, "summary.json"), out)
                        for m in models]),
      index.Text([f"Rerun with: {rerun}", "Same inputs and flags give identical numbers; "
                  "summary.json records the flags, seeds, package versions and the sha256 of the "
                  "inputs and of every file written."]),
  ]))
  return sections
