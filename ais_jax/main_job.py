"""The main job behind ``python -m experiments.run``: one cohort, its models, every analysis and
the ``index.html`` report, assembled from the report sections (``ais_jax.report.sections``).

:func:`run_report` takes a :class:`RunConfig` (the flags of ``experiments.run`` as a library call
takes them) and runs the stages in order:

1. run folder: refused if finished and not ``overwrite``; everything is written into a staging
   folder beside it that replaces it only when complete (``ais_jax.io.runs.staged_dir``);
2. cohort: ``sections.run_data.load_cohort`` (planted, the 92 real images or your own);
3. AIS: ``sections.run_data.run_model`` per model, into ``<out>/ais`` and ``<out>/ais_<model>``
   for the Match models;
4. the sections, each writing its figures and returning its numbers: ``selection``,
   ``similarity`` (human vs model matrices), ``heatmaps``, ``top_maps``, ``aim2`` (distributions,
   Match, categories), ``planted`` (planted truth) and ``saliency``; then ``summary_text`` (what
   the run shows) and ``reproduction``;
5. ``browser.html`` (``ais_jax.report.browser``), ``index.html`` and ``summary.json`` (flags,
   seeds, versions, input sha256s, key numbers, timings, files).

User-input problems raise :class:`ais_jax.errors.UserInputError` (the command line prints them as
one line); nothing here reads flags or ``sys.argv``.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ais_jax.io import environment as environment_lib
from ais_jax.report import files as files_lib

DATASETS = ("planted", "kriegeskorte92", "custom")
DEFAULT_WEIGHTS = "efficientnet_lite0_imagenet"
K92_MATCH_WEIGHTS = ("efficientnet_lite1_imagenet", "efficientnet_lite2_imagenet")


# Flags recorded in summary.json (and replayed by its rerun command).
FLAG_NAMES = ("dataset", "data_dir", "n_images", "image_size", "planted_seed", "noise_sd",
              "arch", "weights", "images", "image_list", "tfds_data_dir", "human",
              "human_labels", "human_key", "human_kind", "similarity", "comparison",
              "cohort_score", "precision", "batch_size", "memory_budget_gb", "folds", "seeds",
              "fold_seed", "min_test_images", "selection_score", "random_orders",
              "match_weights", "saliency", "saliency_weights", "bootstrap", "permutations", "bootstrap_seed",
              "permutation_seed", "examples_per_group", "categories",
              "save_feature_maps", "out")


@dataclasses.dataclass
class RunConfig:
  """Options of one run (the flags, as a library call takes them)."""
  dataset: str = "planted"
  out: str = ""
  data_dir: str = ""
  n_images: int = 48
  image_size: int = 224
  planted_seed: int = 0
  noise_sd: float = 0.05
  arch: str = ""
  weights: str = DEFAULT_WEIGHTS
  images: str = ""
  image_list: str = ""
  tfds_data_dir: str = ""
  human: str = ""
  human_labels: str = ""
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
  fold_seed: int = 0
  min_test_images: int = 4
  selection_score: str = "r2"
  random_orders: int = 1
  match_weights: Optional[Sequence[str]] = None
  saliency: str = "spectral_residual"
  saliency_weights: str = ""   # --saliency=transalnet: its converted weights (transalnet_res)
  # Inference section (cohorts with per-subject matrices: kriegeskorte92).
  bootstrap: int = 1000
  permutations: int = 1000
  bootstrap_seed: int = 0
  permutation_seed: int = 1
  examples_per_group: int = 4
  categories: str = ""   # a name,category CSV (ais_jax.io.categories); kriegeskorte92 has its own
  save_feature_maps: bool = False
  overwrite: bool = False


# ----------------------------------------------------------------------------------------------
# Small helpers


def default_out(dataset: str) -> str:
  """The output folder of a run without --out."""
  return os.path.join("runs", dataset)


def rerun_command(flag_values: dict, defaults: dict) -> str:
  """The ``experiments.run`` command line that gives ``flag_values`` (defaults left out)."""
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


# ----------------------------------------------------------------------------------------------
# The run


def run_report(config: RunConfig, *, progress: Optional[Callable[[str], None]] = None,
               command: Optional[Sequence[str]] = None) -> dict:
  """Runs everything for one cohort and writes the report into ``config.out``; returns the summary.

  An existing non-empty ``out`` is refused unless ``config.overwrite``, before any work. The
  report is built in a staging folder beside ``out`` and swapped in whole when complete
  (``ais_jax.io.runs.staged_dir``): a refused input, an error, Ctrl-C or a kill leaves a previous
  report exactly as it was, and nothing of it survives into the new one.
  """
  from ais_jax.errors import UserInputError
  from ais_jax.io import runs
  from ais_jax.report import saliency_report
  out = config.out or default_out(config.dataset)
  looks_like_a_path = os.sep in config.saliency or config.saliency.endswith(".npy")
  if looks_like_a_path and not os.path.exists(config.saliency):  # Read late: checked now.
    raise UserInputError("--saliency", f"{config.saliency}: no such file or folder; give a .npy "
                         "[n, H, W], a folder of maps named like the images, a built-in method "
                         f"('{saliency_report.SPECTRAL_RESIDUAL}') or 'none'")
  with runs.staged_dir(out, overwrite=config.overwrite) as work:
    return _build_report(config, work, out, progress=progress, command=command)


def _number(value: Optional[float], digits: int = 4) -> str:
  """A number for the page; None (JSON null) and NaN are 'undefined' (DESIGN.md)."""
  if value is None or not np.isfinite(value):
    return "undefined"
  return f"{value:.{digits}f}"


def _build_report(config: RunConfig, out: str, final_out: str, *,
                  progress: Optional[Callable[[str], None]],
                  command: Optional[Sequence[str]]) -> dict:
  """:func:`run_report` writing into the staging folder ``out``; ``final_out`` is recorded."""
  from ais_jax.io import runs
  from ais_jax.report import index
  from ais_jax.report import browser
  from ais_jax.report.sections import aim2, heatmaps, planted, reproduction, run_data
  from ais_jax.report.sections import inference as inference_section
  from ais_jax.report.sections import saliency, selection, similarity, summary_text, top_maps
  report = progress or (lambda message: None)
  t_start = time.perf_counter()
  timings: dict[str, float] = {}
  dataset = config.dataset

  def stage(name, t):
    timings[name] = round(time.perf_counter() - t, 3)

  t = time.perf_counter()
  cohort = run_data.load_cohort(config)
  stage("cohort", t)
  n = len(cohort.names)
  report(f"cohort: {dataset}, {n} images ({timings['cohort']:.1f} s)")

  t = time.perf_counter()
  weights = config.weights or DEFAULT_WEIGHTS
  main_model = run_data.run_model(weights, cohort, config, os.path.join(out, "ais"), report,
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
    models.append(run_data.run_model(w, cohort, config, os.path.join(out, f"ais_{name}"), report,
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
  sections = []

  t = time.perf_counter()
  selection_result = selection.run(main_model, cohort, config, out, report)
  stage("selection", t)
  if selection_result is not None:
    results["selection"] = {k: selection_result[k] for k in selection.RESULT_KEYS}
    files += selection_result["files"]

  t = time.perf_counter()
  similarity_result = similarity.analyse(models, cohort, config, out)
  files += similarity_result["files"]
  results["similarity_agreement"] = similarity_result["agreement"]
  stage("similarity", t)

  t = time.perf_counter()
  row_agreement = similarity_result["row_agreement"][main_model.label]
  examples = heatmaps.examples(cohort, config, row_agreement)
  files += heatmaps.analyse(main_model, cohort, out, examples, row_agreement)["files"]
  stage("heatmap_figures", t)

  t = time.perf_counter()
  top_maps_result = top_maps.analyse(main_model, cohort, out)
  files += top_maps_result["files"]
  stage("top_maps", t)

  t = time.perf_counter()
  distributions = aim2.distribution_analysis(models, cohort, out)
  files += distributions["files"]
  results["ais_distributions"] = {
      label: {k: v for k, v in s.items() if "histogram" not in k}
      for label, s in distributions["stats"]["models"].items()}
  if distributions["stats"].get("ks"):
    results["ais_distributions_ks"] = distributions["stats"]["ks"]
  stage("ais_distributions", t)

  t = time.perf_counter()
  sal_maps = saliency.maps(cohort, config, report)
  stage("saliency_maps", t)

  planted_result = None
  if dataset == "planted":
    t = time.perf_counter()
    planted_result = planted.analyse(cohort, main_model, sal_maps, out)
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
    match_result = aim2.match_analysis(models, cohort, out)
    files += match_result["files"]
    results["match"] = match_result["pairs"]
    stage("match", t)

  category_result = None
  if len(aim2.analysable_categories(cohort.groups)) >= 2:
    t = time.perf_counter()
    category_result = aim2.category_analysis(main_model, cohort, config, out, report)
    files += category_result["files"]
    results["category_correlations"] = {"names": category_result["names"],
                                        "r": category_result["r"]}
    stage("categories", t)

  saliency_result = None
  if sal_maps is not None:
    t = time.perf_counter()
    saliency_result = saliency.analyse(main_model, cohort, sal_maps, config, out,
                                       command=command)
    files += saliency_result["files"]
    results["saliency_rr_all_images"] = saliency_result["all_images"]
    stage("saliency", t)

  inference_result = None
  if cohort.subjects is not None:
    t = time.perf_counter()
    inference_result = inference_section.analyse(models, cohort, config, out, report)
    if inference_result is not None:
      files += inference_result["files"]
      results["inference"] = inference_result["summary"]
      stage("inference", t)

  # The report, section by section, then summary.json.
  t = time.perf_counter()
  flag_values = {k: v for k, v in dataclasses.asdict(config).items() if k != "overwrite"}
  flag_values.update(dataset=dataset, out=final_out, weights=weights)
  rerun = rerun_command(flag_values, dataclasses.asdict(RunConfig()))
  sections.append(summary_text.section(
      cohort=cohort, models=models, similarity=similarity_result, selection=selection_result,
      planted=planted_result, match=match_result, categories=category_result,
      saliency=saliency_result, config=config))
  if planted_result is not None:
    sections.append(planted.section(planted_result, cohort, selection_result))
  sections.append(similarity.section(similarity_result, models, config))
  sections.append(heatmaps.section(main_model, cohort))
  sections.append(top_maps.section(top_maps_result, main_model))
  if selection_result is not None:
    sections.append(selection.section(selection_result))
  sections.append(aim2.distributions_section(distributions))
  if match_result is not None:
    sections.append(aim2.match_section(match_result))
  if category_result is not None:
    sections.append(aim2.category_section(category_result))
  if saliency_result is not None:
    sections.append(saliency.section(saliency_result))
  if inference_result is not None:
    sections.append(inference_section.section(inference_result))
  sections.append(reproduction.section(models, out, rerun))
  # The interactive browser beside index.html (linked from the page's introduction).
  files.append(os.path.relpath(browser.write_browser(
      out, cohort=cohort, models=models, similarity=similarity_result,
      saliency_maps=sal_maps), out))
  index_path = index.write_index(
      out, title=f"ais_jax report: {dataset} / {main_model.label}", sections=sections,
      intro=[cohort.description,
             f"Model: {main_model.spec.name} ({weights}); {n} images x "
             f"{results['n_maps']} feature maps of {main_model.spec.ablation_layer}; embedding: "
             f"{main_model.spec.embedding_layer}. Agreement of the model's similarity with the "
             f"human matrix ({config.comparison} of {config.similarity} similarities, all "
             f"maps): {_number(results['baseline_agreement'][main_model.label])}."],
      links=[(browser.BROWSER_FILE, "Interactive heatmap browser")],
      footer=["summary.json holds the flags, seeds, versions, input sha256s and the numbers "
              "shown here; the command that reruns this job is under 'Runs and reproduction'."])
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
      "seeds": {"planted": config.planted_seed if dataset == "planted" else None,
                "selection_folds": list(range(config.fold_seed,
                                              config.fold_seed + config.seeds)),
                "random_orders": f"numpy default_rng(({config.fold_seed}, 1))"},
      "inputs": cohort.inputs,
      "models": {m.label: {"weights": m.weights, "spec": m.spec.metadata(),
                           "checkpoint": {k: v for k, v in m.provenance.items() if k != "shapes"},
                           "run_folder": os.path.relpath(m.folder, out)} for m in models},
      "environment": environment_lib.environment(), "results": results, "timings_s": timings,
      "files": file_records,
      # Which AIS path ran (issue 15): False where the backend has no float64 (TPU) or
      # AIS_JAX_FLOAT64=0; the model run folders record it too.
      "float64": all(m.run.summary.get("float64", True) for m in models),
  }
  files_lib.write_json(os.path.join(out, "summary.json"), summary)
  report(f"wrote {final_out}/index.html and {len(file_records)} files in "
         f"{timings['total']:.1f} s")
  return summary
