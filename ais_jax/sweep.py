"""The Aim 4 sweep over architectures (Figure 6), resumable cell by cell.

The library behind ``python -m experiments.architectures``. For every cohort (the whole image set,
and with ``by_category`` each category alone) and every model (``--weights``: registered names or
checkpoint directories), one **cell** runs the Aim 1 cross-validation
(:func:`ais_jax.selection.select_maps` and :func:`~ais_jax.selection.summarize`): all maps
("full") against the maps AIS selects on the training images ("pruned"), on held-out images.
Every model of a cohort sees the same splits (same folds and seeds).

Cohorts and folds: a cohort's folds follow the minimum-test-size rule
(:func:`ais_jax.selection.plan_folds`): when the requested folds would leave fewer than
``min_test_images`` test images, they are reduced (said on the console, in the CSV's ``folds``
and ``fold_note`` columns and in the report); a category with fewer than ``2 * min_test_images``
images is skipped with a message (the whole set is required to fit).

Trunk: each model's maps are computed once on the whole set (through the activation cache,
:mod:`ais_jax.io.activation_cache`) and sliced per cohort.

Folder layout (``out``)::

    sweep.json               settings (inputs' sha256, analysis options), cohorts, cells, timings
    cells/<cohort>/<weights>/cell.json   inputs and their hash, the row, the tests, timings
    cells/<cohort>/<weights>/cv.json     every split (the cv.json of experiments.selection)
    architectures.csv        one row per cell of this sweep (:data:`CSV_COLUMNS`)
    figure6.png (+ .csv)     Figure 6 (:mod:`ais_jax.report.figure6`)
    index.html               the report

Resuming: each cell is written whole by a swap (:func:`ais_jax.io.runs.staged_dir`), so a killed
sweep loses only the cell in progress. Rerunning the same sweep skips the cells whose recorded
input hash matches (and says so); models or categories may be added. A sweep whose settings
differ from the folder's ``sweep.json`` is refused unless ``overwrite``, which recomputes every
cell of the sweep. A non-empty folder that is not a sweep needs ``overwrite`` too.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
import sys
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

import ais_jax
from ais_jax.errors import UserInputError
from ais_jax.io import runs

DATASETS = ("kriegeskorte92", "custom")
SWEEP_FILE = "sweep.json"
CELL_FILE = "cell.json"
CV_FILE = "cv.json"
CELLS_DIR = "cells"
CSV_FILE = "architectures.csv"
FIGURE_FILE = "figure6.png"
WHOLE_SET = "all images"
SWEEP_FORMAT = 1
CSV_COLUMNS = ("cohort", "weights", "arch", "num_maps", "n_images", "folds_requested", "folds",
               "n_splits", "splits_used", "splits_dropped", "min_test_pairs", "full_mean", "pruned_mean", "random_order_mean", "se",
               "m_star_mean", "m_star_median", "t", "p", "t_corrected", "p_corrected",
               "rank_full", "rank_pruned", "fold_note", "split_warning", "input_hash")
# Options that define a sweep: a folder's sweep.json must hold the same to resume it.
ANALYSIS_OPTIONS = ("folds", "seeds", "fold_seed", "random_orders", "min_test_images",
                    "selection_score", "similarity", "comparison", "precision", "alternative")


@dataclasses.dataclass
class SweepConfig:
  """Options of one sweep (the flags of ``experiments.architectures``)."""
  weights: Sequence[str] = ()
  out: str = ""
  dataset: str = ""              # '' = 'custom' when images are given
  data_dir: str = ""
  images: str = ""
  image_list: str = ""
  human: str = ""
  human_key: str = ""
  human_kind: Optional[str] = None
  human_labels: str = ""
  categories: str = ""
  by_category: bool = False
  folds: int = 5
  seeds: int = 8
  fold_seed: int = 0
  random_orders: int = 1
  min_test_images: int = 4
  selection_score: str = "r2"
  similarity: str = "pearson"
  comparison: str = "pearson"
  precision: str = "exact"
  alternative: str = "two-sided"
  batch_size: int = 32
  memory_budget_gb: float = 2.0
  cache: bool = True
  cache_max_gb: float = 10.0
  overwrite: bool = False

  @property
  def score(self) -> str:
    """The selection score: Spearman agreement has no r^2 variant, so it uses r."""
    return "r" if self.comparison == "spearman" else self.selection_score


@dataclasses.dataclass
class ImageSet:
  """The images of a sweep: uint8 ``[n, H, W, 3]`` (or a list), human ``[n, n]``, names, the
  category of each image (None when unknown) and provenance."""
  images: Any
  human: np.ndarray
  names: list
  categories: Optional[list]
  inputs: dict


@dataclasses.dataclass
class SweepCohort:
  """A cohort of the sweep: ``name`` (shown), ``folder`` (under cells/), image ``indices``,
  folds used and the reduction message (None when the requested folds are used)."""
  name: str
  folder: str
  indices: np.ndarray
  folds: int
  fold_note: Optional[str]


@dataclasses.dataclass
class SweepResult:
  rows: list
  out: str
  files: list
  computed: int
  skipped: int
  notes: list
  table: str


# ----------------------------------------------------------------------------------------------
# Inputs


def _sha256_bytes(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _json_sha256(value: Any) -> str:
  return _sha256_bytes(json.dumps(runs.jsonable(value), sort_keys=True).encode())


def load_image_set(config: SweepConfig) -> ImageSet:
  """The sweep's images, human matrix, names and categories (``--categories`` wins over the
  92-image set's own categories)."""
  from ais_jax.io import activation_cache
  from ais_jax.io import categories as categories_io
  dataset = config.dataset or ("custom" if config.images else "")
  if dataset not in DATASETS:
    raise UserInputError("--dataset", f"{config.dataset!r}: use --dataset=kriegeskorte92 "
                         "(with --data_dir) or give your own cohort with --images and --human")
  if dataset == "kriegeskorte92":
    from ais_jax.data import kriegeskorte92
    if config.images or config.human:
      raise UserInputError("--dataset", "kriegeskorte92 brings its own images and judgments; "
                           "drop --images/--human or drop --dataset")
    d, _ = kriegeskorte92.load_for_command(config.data_dir)
    images, human, names = d.images, d.similarity, list(d.image_names)
    categories = [d.category_names[c] for c in d.categories]
    inputs = {"dataset": dataset, "files_sha256": dict(kriegeskorte92.SHA256),
              "human": "subject-averaged dissimilarity of 16 subjects, negated (S = -D)"}
  else:
    from ais_jax.io import human as human_io
    from ais_jax.io import images as images_io
    if not config.images or not config.human:
      raise UserInputError("--images" if not config.images else "--human",
                           "required for your own cohort: --images=DIR_OR_NPY and "
                           "--human=MATRIX (or --dataset=kriegeskorte92)")
    images, names = images_io.load_images(os.path.expanduser(config.images),
                                          image_list=config.image_list or None)
    # human_kind None = not stated: load_human's default rule applies (as in experiments.ais).
    kind = {} if config.human_kind is None else {"kind": config.human_kind}
    human = human_io.load_human(os.path.expanduser(config.human), key=config.human_key or None,
                                n_images=len(names), image_names=names,
                                labels=os.path.expanduser(config.human_labels) or None, **kind)
    categories = None
    inputs = {"dataset": "custom", "images": os.path.abspath(config.images),
              "human": os.path.abspath(config.human), "human_kind": config.human_kind}
  if config.categories:
    categories = categories_io.load_categories(os.path.expanduser(config.categories), names)
    inputs["categories_file"] = os.path.abspath(config.categories)
  inputs.update(images_sha256=activation_cache.images_sha256(images),
                human_sha256=_sha256_bytes(np.ascontiguousarray(human, np.float64).tobytes()),
                names_sha256=_json_sha256(names),
                categories_sha256=_json_sha256(categories) if categories else None)
  return ImageSet(images, np.asarray(human, np.float64), list(names), categories, inputs)


def folder_name(text: str) -> str:
  """A readable, filesystem-safe folder name: ``'human face'`` -> ``'human-face'``."""
  name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.") or "x"
  return name[:80]


def weights_folder(weights: str) -> str:
  """Cell folder of a ``--weights`` value: the registered name, or a checkpoint directory's base
  name plus a hash of its absolute path (two folders named alike stay apart)."""
  if os.path.isdir(weights):
    path = os.path.abspath(weights)
    return f"{folder_name(os.path.basename(path))}-{_sha256_bytes(path.encode())[:8]}"
  return folder_name(weights)


def plan_cohorts(image_set: ImageSet, config: SweepConfig,
                 report: Callable[[str], None]) -> tuple[list[SweepCohort], list[str]]:
  """The whole set, then (``by_category``) each category in order of first appearance.

  Returns ``(cohorts, notes)``: notes say which folds were reduced and which categories were
  skipped as too small. The whole set must fit the minimum test size (UserInputError otherwise).
  """
  from ais_jax import selection
  from ais_jax.io import categories as categories_io
  n = len(image_set.names)
  groups = [(WHOLE_SET, np.arange(n))]
  if config.by_category:
    if not image_set.categories:
      raise UserInputError("--by_category", "needs categories: give --categories=FILE (a CSV "
                           "'name,category' with one row per image) or use "
                           "--dataset=kriegeskorte92")
    per_category = categories_io.cohorts_by_category(image_set.categories)
    groups += [(name, np.asarray(idx)) for name, idx in per_category.items()]
  cohorts, notes, folders = [], [], set()
  for name, idx in groups:
    try:
      folds, message = selection.plan_folds(idx.size, config.folds, config.min_test_images)
    except UserInputError as e:
      if name == WHOLE_SET:
        raise
      note = f"cohort {name!r} ({idx.size} images) skipped: {e.problem}"
      report(note)
      notes.append(note)
      continue
    if message:
      message = f"cohort {name!r}: {message}"
      report(message)
      notes.append(message)
    folder = folder_name(name)
    while folder in folders:  # Two categories that differ only in punctuation.
      folder += "_"
    folders.add(folder)
    cohorts.append(SweepCohort(name, folder, idx, folds, message))
  return cohorts, notes


def settings_record(image_set: ImageSet, config: SweepConfig) -> dict:
  """What must match for a folder to be resumed: the inputs' hashes and the analysis options."""
  options = {k: getattr(config, k) for k in ANALYSIS_OPTIONS}
  options["selection_score"] = config.score
  inputs = {k: image_set.inputs.get(k) for k in ("dataset", "images_sha256", "human_sha256",
                                                  "names_sha256", "categories_sha256")}
  return {"sweep_format": SWEEP_FORMAT, "inputs": inputs, "options": options}


def check_sweep_folder(out: str, settings: dict, *, overwrite: bool) -> Optional[dict]:
  """Refuses a folder that is not this sweep (unless ``overwrite``); returns its old sweep.json.

  The sweep folder is the one exception to "a non-empty --out needs --overwrite": a folder whose
  sweep.json records the same settings is resumed.
  """
  path = os.path.join(out, SWEEP_FILE)
  if os.path.exists(out) and not os.path.isdir(out):
    raise UserInputError(out, "exists and is not a folder; choose another --out")
  if not os.path.isdir(out) or not os.listdir(out):
    return None
  if not os.path.isfile(path):
    if overwrite:
      return None
    raise UserInputError(out, "folder is not empty and holds no sweep (no sweep.json); choose "
                         "another --out or pass --overwrite to write the sweep into it")
  try:
    with open(path) as f:
      old = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    if overwrite:
      return None
    raise UserInputError(path, f"unreadable ({e}); pass --overwrite to recompute the sweep")
  if old.get("settings") != runs.jsonable(settings) and not overwrite:
    differences = _differences(old.get("settings") or {}, runs.jsonable(settings))
    raise UserInputError(out, "holds a sweep with different settings ("
                         f"{'; '.join(differences[:4])}); rerun with the same settings to resume "
                         "it, choose another --out, or pass --overwrite to recompute every cell")
  return old


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += _differences(a, b, f"{prefix}{key}.")
    elif a != b:
      out.append(f"{prefix}{key}: folder {a!r}, now {b!r}")
  return out


# ----------------------------------------------------------------------------------------------
# Cells


def cell_inputs(settings: dict, cohort: SweepCohort, weights: str, model: dict) -> dict:
  """Everything a cell's numbers depend on (its hash decides whether a finished cell is reused)."""
  return {"settings": settings, "cohort": cohort.name, "indices_sha256": _json_sha256(
              [int(i) for i in cohort.indices]), "n_images": int(cohort.indices.size),
          "folds_used": cohort.folds, "weights": weights, **model,
          "ais_jax_version": ais_jax.__version__}


def read_cell(cell_dir: str) -> Optional[dict]:
  """A finished cell's cell.json, or None."""
  try:
    with open(os.path.join(cell_dir, CELL_FILE)) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return None


def _p(tests: dict, name: str, field: str) -> Optional[float]:
  return (tests.get(name) or {}).get(field)


def cell_row(cohort: SweepCohort, weights: str, spec, result, summary: dict, config: SweepConfig,
             input_hash: str) -> dict:
  """The CSV row of one cell (before ranks)."""
  tests = summary.get("tests") or {}
  usage = summary.get("split_usage") or {}
  lm = summary.get("loftus_masson") or {}
  m_star = np.asarray(result.m_star, np.float64)
  return {"cohort": cohort.name, "weights": weights, "arch": spec.name,
          "num_maps": int(spec.num_maps), "n_images": int(cohort.indices.size),
          "folds_requested": config.folds, "folds": cohort.folds,
          "n_splits": int(summary["n_splits"]), "splits_used": usage.get("used"),
          "splits_dropped": usage.get("dropped"), "min_test_pairs": usage.get("min_test_pairs"),
          "full_mean": summary["mean_test_full"], "pruned_mean": summary["mean_test_retained"],
          "random_order_mean": summary.get("mean_test_random_retained"), "se": lm.get("se"),
          "m_star_mean": summary["mean_m_star"],
          "m_star_median": float(np.median(m_star[m_star > 0])) if (m_star > 0).any() else None,
          "t": _p(tests, "retained_vs_full_paired", "statistic"),
          "p": _p(tests, "retained_vs_full_paired", "pvalue"),
          "t_corrected": _p(tests, "retained_vs_full_corrected", "statistic"),
          "p_corrected": _p(tests, "retained_vs_full_corrected", "pvalue"),
          "fold_note": cohort.fold_note, "split_warning": usage.get("warning"),
          "input_hash": input_hash}


def run_cell(cell_dir: str, cohort: SweepCohort, weights: str, spec, head, maps: np.ndarray,
             human: np.ndarray, config: SweepConfig, inputs: dict, input_hash: str) -> dict:
  """Cross-validation of one model on one cohort; writes the cell folder by a swap."""
  from ais_jax import selection
  from ais_jax.report import files as files_lib
  from ais_jax.report import selection_outputs
  t0 = time.perf_counter()
  idx = cohort.indices
  try:
    result = selection.select_maps(
        head, maps[idx], human[np.ix_(idx, idx)], folds=cohort.folds, seeds=config.seeds,
        seed=config.fold_seed, score=config.score, similarity=config.similarity,
        comparison=config.comparison, precision=config.precision,
        random_orders=config.random_orders, memory_budget_gb=config.memory_budget_gb)
  except ValueError as e:
    raise UserInputError(f"cohort {cohort.name!r}", str(e)) from None
  summary = selection.summarize(result, alternative=config.alternative)
  row = cell_row(cohort, weights, spec, result, summary, config, input_hash)
  wall = time.perf_counter() - t0
  record = {"input_hash": input_hash, "inputs": inputs, "row": row,
            "tests": summary.get("tests"), "split_usage": summary.get("split_usage"),
            "undefined": result.undefined, "timings_s": {"selection": wall},
            "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds")}
  cv = selection_outputs.cv_record(result, summary, label=f"{cohort.name} / {spec.name}",
                                  extra={"cohort": cohort.name, "weights": weights,
                                         "image_indices": idx})
  with runs.staged_dir(cell_dir, overwrite=True, input_name="cell folder") as work:
    # No per-cell figures: drawing them cost more than the selection itself on small cohorts.
    files_lib.write_json(os.path.join(work, CV_FILE), cv)
    files_lib.write_json(os.path.join(work, CELL_FILE), record)
  return row


def _load_model(weights: str, report: Callable[[str], None]):
  from ais_jax import pipeline
  from ais_jax.io import activation_cache
  t = time.perf_counter()
  spec, variables, _, module = pipeline.load_model(weights)
  digest = activation_cache.variables_sha256(variables)
  report(f"model {weights}: {spec.name}, K = {spec.num_maps} maps, input {spec.input_size} "
         f"({time.perf_counter() - t:.1f} s; weights sha256 {digest[:12]})")
  model = {"weights_sha256": digest, "arch": spec.name,
           "preprocessing": {"normalization": spec.normalization, "resize": spec.resize,
                             "input_size": int(spec.input_size)}}
  return spec, variables, module, model


# ----------------------------------------------------------------------------------------------
# The sweep


def _label(row: dict) -> str:
  return row["arch"].replace("efficientnet_lite", "Lite") if row["weights"] == \
      f"{row['arch']}_imagenet" else os.path.basename(os.path.normpath(row["weights"]))


def _model_cells(weights: str, cohorts: Sequence[SweepCohort], image_set: ImageSet,
                 settings: dict, config: SweepConfig, cache, out: str,
                 report: Callable[[str], None], *, first_cell: int, total: int):
  """The cells of one model: finished ones are read back (``row["skipped"] = True``), the others
  computed on the model's trunk maps (computed once, through the activation cache).

  Returns ``(rows, timings)``.
  """
  from ais_jax.io import activation_cache
  from ais_jax.io import images as images_io
  t_model = time.perf_counter()
  spec, variables, module, model = _load_model(weights, report)
  maps = head = None
  timings: dict[str, Any] = {}
  rows = []
  for number, cohort in enumerate(cohorts, start=first_cell):
    cell_dir = os.path.join(out, CELLS_DIR, cohort.folder, weights_folder(weights))
    inputs = cell_inputs(settings, cohort, weights, model)
    input_hash = _json_sha256(inputs)
    where = f"cell {number}/{total} [{cohort.name} / {weights}]"
    old = read_cell(cell_dir)
    if old is not None and old.get("input_hash") == input_hash and not config.overwrite:
      report(f"{where}: finished earlier (input hash {input_hash[:12]}), skipped")
      rows.append(dict(old["row"], skipped=True))
      continue
    if maps is None:
      t = time.perf_counter()
      resized = images_io.fit_to_model(image_set.images, spec, names=image_set.names)
      maps = activation_cache.cached_trunk_maps(
          spec, module, variables, resized, cache=cache, precision=config.precision,
          batch_size=config.batch_size, weights_sha256=model["weights_sha256"],
          progress=lambda m: report(f"  {weights}: {m}"), timings=timings)
      timings["trunk_with_resize"] = time.perf_counter() - t
      report(f"  {weights}: maps {list(maps.shape)} ({timings['trunk_cache']}, "
             f"{timings['trunk_with_resize']:.1f} s)")
      head = spec.get_ablation_head(variables)
    report(f"{where}: {cohort.indices.size} images, {cohort.folds} folds x {config.seeds} "
           "seeds ...")
    t = time.perf_counter()
    row = run_cell(cell_dir, cohort, weights, spec, head, maps, image_set.human, config,
                   inputs, input_hash)
    report(f"{where}: done in {time.perf_counter() - t:.1f} s: full {_fmt(row['full_mean'])}, "
           f"pruned {_fmt(row['pruned_mean'])} (mean m* {_fmt(row['m_star_mean'], 1)}/"
           f"{row['num_maps']}; {row['splits_used']} of {row['n_splits']} splits used)")
    if row["split_warning"]:
      report(f"{where}: {row['split_warning']}")
    rows.append(row)
  timings["total"] = time.perf_counter() - t_model
  return rows, timings


def run_sweep(config: SweepConfig, *, progress: Optional[Callable[[str], None]] = None,
              command: Optional[Sequence[str]] = None) -> SweepResult:
  """Runs (or resumes) the sweep; writes the files of the module docstring into ``config.out``.

  Raises:
    UserInputError for wrong inputs, a folder holding something else or another sweep.
  """
  from ais_jax.io import activation_cache
  report = progress or (lambda message: None)
  t_start = time.perf_counter()
  weights_list = [os.path.expandvars(os.path.expanduser(w.strip())) for w in config.weights
                  if w.strip()]
  if not weights_list:
    raise UserInputError("--weights", "required: a comma-separated list of registered names or "
                         "checkpoint directories, e.g. --weights=efficientnet_lite0_imagenet,"
                         "efficientnet_lite1_imagenet")
  duplicates = sorted({w for w in weights_list if weights_list.count(w) > 1})
  if duplicates:
    raise UserInputError("--weights", f"listed more than once: {', '.join(duplicates)}")
  if not config.out:
    raise UserInputError("--out", "required: the sweep folder")
  out = os.path.abspath(os.path.expanduser(config.out))
  cache = activation_cache.open_cache(config.cache, config.cache_max_gb)

  image_set = load_image_set(config)
  n = len(image_set.names)
  report(f"images: {n} ({image_set.inputs['dataset']})")
  cohorts, notes = plan_cohorts(image_set, config, report)
  settings = settings_record(image_set, config)
  check_sweep_folder(out, settings, overwrite=config.overwrite)
  os.makedirs(out, exist_ok=True)
  started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  sweep_record = {"settings": settings, "inputs": image_set.inputs, "weights": weights_list,
                  "cohorts": [{"name": c.name, "folder": c.folder, "n_images": int(c.indices.size),
                               "folds": c.folds, "fold_note": c.fold_note} for c in cohorts],
                  "notes": notes, "command": list(command) if command else None,
                  "config": dataclasses.asdict(config), "started_at": started_at}
  _write_json(os.path.join(out, SWEEP_FILE), sweep_record)  # Before any cell: claims the folder.

  total = len(cohorts) * len(weights_list)
  rows, timings = [], {"models": {}}
  for weights in weights_list:
    model_rows, timings["models"][weights] = _model_cells(
        weights, cohorts, image_set, settings, config, cache, out, report,
        first_cell=len(rows) + 1, total=total)
    rows += model_rows
  computed = sum(not r.get("skipped") for r in rows)
  skipped = len(rows) - computed
  from ais_jax.report import figure6
  cohort_order = {c.name: i for i, c in enumerate(cohorts)}
  rows.sort(key=lambda r: cohort_order[r["cohort"]])  # Cohort by cohort, models in --weights order.
  for row in rows:  # One note per cohort and warning (the models of a cohort share its splits).
    note = f"cohort {row['cohort']!r}: {row.get('split_warning')}"
    if row.get("split_warning") and note not in notes:
      notes.append(note)
  for row in rows:
    row["label"] = _label(row)
  rows = figure6.add_ranks(rows)
  files = _write_outputs(out, rows, notes, config)
  table = format_table(rows, score=config.score)
  timings["total"] = time.perf_counter() - t_start
  sweep_record.update(timings_s=timings, computed_cells=computed, skipped_cells=skipped,
                      finished_at=datetime.datetime.now(datetime.timezone.utc).isoformat(
                          timespec="seconds"), files=[os.path.relpath(p, out) for p in files])
  _write_json(os.path.join(out, SWEEP_FILE), sweep_record)
  report(f"sweep: {computed} cell(s) computed, {skipped} finished earlier; "
         f"{timings['total']:.1f} s")
  return SweepResult(rows, out, files, computed, skipped, notes, table)


def _write_json(path: str, data: Any) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(runs.jsonable(data), f, indent=1, allow_nan=False)
  os.replace(tmp, path)


def _write_outputs(out: str, rows: list, notes: list, config: SweepConfig) -> list[str]:
  from ais_jax.report import figure6
  from ais_jax.report import files as files_lib
  from ais_jax.report import index
  from ais_jax.report import selection_outputs
  csv_path = files_lib.write_csv(os.path.join(out, CSV_FILE), CSV_COLUMNS,
                                 [[row.get(c) for c in CSV_COLUMNS] for row in rows])
  paths = [csv_path]
  paths += figure6.figure6(rows, os.path.join(out, FIGURE_FILE),
                           score_label=selection_outputs.score_label(config.score))
  section = figure6.section(rows, figure=FIGURE_FILE, csv=CSV_FILE, notes=notes,
                            score=config.score)
  intro = [f"Aim 4: the Aim 1 cross-validation ({config.folds} folds requested x {config.seeds} "
           f"seeds from seed {config.fold_seed}, score {config.score}, similarity "
           f"{config.similarity}, comparison {config.comparison}, precision {config.precision}) "
           f"for {len(dict.fromkeys(r['weights'] for r in rows))} models on "
           f"{len(dict.fromkeys(r['cohort'] for r in rows))} cohort(s). Every cell's files are "
           f"under {CELLS_DIR}/<cohort>/<weights>/; {SWEEP_FILE} records the settings."]
  paths.append(index.write_index(out, title="ais_jax sweep: architectures (Figure 6)",
                                 sections=[section], intro=intro))
  return paths


def _fmt(value, digits: int = 4) -> str:
  if value is None or (isinstance(value, float) and not np.isfinite(value)):
    return "undef."
  return f"{value:.{digits}f}"


def format_table(rows: Sequence[dict], *, score: str = "r2") -> str:
  """The console table: one line per cell, the two best per cohort and condition marked."""
  header = ("cohort", "model", "n", "folds", f"full {score}", f"pruned {score}", "m*", "p",
            "p corr.")
  lines = []
  for r in rows:
    def ranked(condition):
      rank = r.get(f"rank_{condition}")
      return _fmt(r[f"{condition}_mean"]) + (f" ({rank})" if rank else "")
    lines.append((r["cohort"], r.get("label") or r["arch"], str(r["n_images"]), str(r["folds"]),
                  ranked("full"), ranked("pruned"), _fmt(r["m_star_mean"], 1),
                  _fmt_p(r.get("p")), _fmt_p(r.get("p_corrected"))))
  widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
  def join(cells):
    return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                     enumerate(zip(cells, widths)))
  text = [join(header), join(["-" * w for w in widths])] + [join(line) for line in lines]
  return "\n".join(text)


def _fmt_p(value) -> str:
  if value is None or not np.isfinite(value):
    return "undef."
  return f"{value:.3g}"


def print_table(result: SweepResult, stream=None) -> None:
  print(result.table, file=stream or sys.stdout)
