"""The inference command's job: load a cohort and a model, run :func:`ais_jax.inference.analyse`,
write the run folder and its report. I/O lives here; the numbers come from the pure kernels of
:mod:`ais_jax.inference`.

Files written into ``out`` (arrays float64 unless said):

* ``noise_ceiling.json``: ``{"pearson": {"lower", "upper"}, "spearman": {...}}`` (rsatoolbox
  0.3.2 ``boot_noise_ceiling`` with 'corr' / 'spearman'), plus each model's mean-over-subjects
  agreement and its agreement with the mean matrix;
* ``cohort_ais.npy [K]`` (driven by the plain mean of the subjects' matrices), ``cohort_ais_ci.npy
  [K, 2]``, ``cohort_ais_p.npy``, ``cohort_ais_p_fwer.npy``, ``cohort_ais_q.npy`` ``[K]``,
  ``top_m_frequency.npy [K]``, ``inactive_maps.npy [K]`` bool;
* ``subject_cohort_ais.npy [S, K]``, ``subject_per_image_ais.npy [S, n, K]``,
  ``subject_agreement.json``, ``split_half.json``;
* ``bootstrap_baseline.npy [B]``, ``null_baseline.npy [1 + R]`` (entry 0 observed);
* ``summary.json`` (command, flags, inputs, seeds, results, timings) and ``index.html``.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from ais_jax import inference
from ais_jax.errors import UserInputError


def cohort_maps(weights, images_uint8: np.ndarray, *, arch: Optional[str] = None,
                batch_size: int = 32, progress: Optional[Callable[[str], None]] = None):
  """``(spec, head, maps [n, h, w, K], provenance)`` for a cohort and trained weights."""
  from ais_jax import pipeline
  from ais_jax.io import images as images_io
  spec, variables, provenance, module = pipeline.load_model(weights, arch)
  resized = images_io.fit_to_model(images_uint8, spec)
  maps = pipeline.trunk_maps(spec, module, variables, resized, batch_size=batch_size,
                             progress=progress)
  return spec, spec.get_ablation_head(variables), maps, provenance


def _load_cohort(*, dataset: str, data_dir: str, images: str, human_subjects: str,
                 human_kind: Optional[str], human_key: Optional[str], image_list: str = "",
                 tfds_data_dir: str = ""):
  """``(images uint8 [n, H, W, 3], names, subjects [S, n, n] similarity, inputs record)``."""
  if dataset == "kriegeskorte92":
    from ais_jax.data import kriegeskorte92
    if images or human_subjects:
      raise UserInputError("--dataset", "kriegeskorte92 brings its own images and subjects; "
                           "leave --images and --human_subjects empty")
    # Empty --data_dir: the cache, filled from the public copy (sha256-checked), as experiments.run.
    data, data_dir = kriegeskorte92.load_for_command(data_dir)
    return (data.images, list(data.image_names), -data.subject_dissimilarity,
            {"dataset": "kriegeskorte92", "data_dir": os.path.abspath(data_dir),
             "human": "S = -D per subject (dissimilarity judgments)"})
  if dataset not in ("", "custom"):
    raise UserInputError("--dataset", f"{dataset!r}: 'kriegeskorte92', or 'custom' (or empty) "
                         "with --images and --human_subjects")
  if not images or not human_subjects:
    raise UserInputError("--images/--human_subjects", "both required (or --dataset="
                         "kriegeskorte92 --data_dir=DIR)")
  from ais_jax.io import images as images_io
  from ais_jax.io import runs
  from ais_jax.io import subjects as subjects_io
  loaded, names = images_io.load_images(images, image_list=image_list or None,
                                        tfds_data_dir=tfds_data_dir or None)
  warnings: list = []
  subjects = subjects_io.load_subject_matrices(human_subjects, kind=human_kind, key=human_key,
                                               n_images=len(loaded), warnings_out=warnings)
  source = images if images.startswith(images_io.TFDS_PREFIX) else os.path.abspath(images)
  record = {"images": source, "human_subjects": os.path.abspath(human_subjects),
            "human_kind": human_kind, "warnings": warnings}
  if image_list:
    record["image_list"] = os.path.abspath(image_list)
  if os.path.isfile(human_subjects):
    record["human_subjects_sha256"] = runs.sha256_file(human_subjects)
  return loaded, list(names), subjects, record


def _save(out: str, arrays: Mapping[str, np.ndarray]) -> list[str]:
  files = []
  for name, value in arrays.items():
    if value is None:
      continue
    np.save(os.path.join(out, name + ".npy"), np.asarray(value))
    files.append(name + ".npy")
  return files


def _agreements_of(spec_head_maps, subjects, comparison: str) -> dict:
  """Baseline agreement of an extra model: mean over subjects and with the mean matrix."""
  _, head, maps = spec_head_maps
  n = subjects.shape[1]
  iu = np.triu_indices(n, 1)
  sims = inference.model_similarities(head, maps)
  base = sims.upper[-1:]
  mask = np.all(np.isfinite(subjects[:, iu[0], iu[1]]), axis=0)
  per_subject = {kind: np.asarray(inference.agreements(
      base, np.where(mask, subjects[:, iu[0], iu[1]], 0), mask, kind=kind))[0]
      for kind in inference.COMPARISONS}
  mean = subjects.mean(0)[iu]
  return {"per_subject": {k: v.tolist() for k, v in per_subject.items()},
          "mean_over_subjects": {k: float(np.mean(v)) for k, v in per_subject.items()},
          "mean_matrix": {k: float(np.asarray(inference.agreements(
              base, np.where(mask, mean, 0)[None], mask, kind=k))[0, 0])
              for k in inference.COMPARISONS},
          "comparison": comparison}


def model_agreements(label: str, result, comparison: str) -> dict:
  """The analysed model's entry of the ``models`` mapping (as :func:`_agreements_of` gives for
  the others)."""
  return {label: {
      "per_subject": {k: np.asarray(v).tolist() for k, v in result.subject_agreement.items()},
      "mean_over_subjects": result.summary["baseline_agreement_mean_over_subjects"],
      "mean_matrix": {comparison: result.baseline_agreement}, "comparison": comparison}}


def other_model_agreements(label_head_maps: Sequence, subjects: np.ndarray,
                           comparison: str) -> dict:
  """``{label: agreements}`` of further models ``[(label, head, maps), ...]`` against the same
  subjects (baseline only: no AIS)."""
  return {label: _agreements_of((None, head, maps), subjects, comparison)
          for label, head, maps in label_head_maps}


def write_results(result, out: str, *, models: Mapping, names: Sequence[str],
                  comparison: str = "pearson"):
  """Writes an :class:`ais_jax.inference.InferenceResult` into ``out`` (the arrays and JSON
  files of this module's docstring, ``images.txt`` and the figures) and returns
  ``(report section, [files relative to out])``."""
  from ais_jax.report import files as files_lib
  from ais_jax.report import inference_section
  os.makedirs(out, exist_ok=True)
  files = _save(out, {
      "cohort_ais": result.cohort_ais, "cohort_ais_ci": result.cohort_ais_ci,
      "cohort_ais_p": result.p, "cohort_ais_p_fwer": result.p_fwer, "cohort_ais_q": result.q,
      "top_m_frequency": result.top_m_frequency, "inactive_maps": result.inactive_maps,
      "subject_cohort_ais": result.subject_cohort_ais,
      "subject_per_image_ais": result.subject_per_image_ais,
      "bootstrap_baseline": result.bootstrap_baseline, "null_baseline": result.null_baseline})
  ceiling = {kind: {"lower": c["lower"], "upper": c["upper"], "method": c["method"],
                    "per_subject_lower": np.asarray(c["per_subject_lower"]).tolist(),
                    "per_subject_upper": np.asarray(c["per_subject_upper"]).tolist()}
             for kind, c in result.noise_ceiling.items()}
  files.append(os.path.basename(files_lib.write_json(
      os.path.join(out, "noise_ceiling.json"), dict(ceiling, models=dict(models)))))
  files.append(os.path.basename(files_lib.write_json(
      os.path.join(out, "subject_agreement.json"), dict(models))))
  if result.split_half is not None:
    files.append(os.path.basename(files_lib.write_json(
        os.path.join(out, "split_half.json"),
        {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v)
         for k, v in result.split_half.items()})))
  with open(os.path.join(out, "images.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(names) + "\n")
  files.append("images.txt")
  section, figure_files = inference_section.section(result, out, models=models,
                                                    comparison=comparison)
  return section, files + list(figure_files)


def run(*, weights: str, out: str, arch: Optional[str] = None, images: str = "",
        image_list: str = "", tfds_data_dir: str = "", human_subjects: str = "",
        human_kind: Optional[str] = None, human_key: Optional[str] = None,
        dataset: str = "", data_dir: str = "", compare_weights: Sequence[str] = (),
        similarity: str = "pearson", comparison: str = "pearson", cohort_score: str = "r",
        precision: str = "exact", bootstrap: int = 1000, permutations: int = 1000,
        bootstrap_seed: int = 0, permutation_seed: int = 1, split_seed: int = 2,
        split_halves: int = 100, top_m: int = 10, batch_size: int = 32,
        overwrite: bool = False, progress: Optional[Callable[[str], None]] = None,
        flags: Optional[Mapping[str, Any]] = None, command: Optional[Sequence[str]] = None):
  """The whole inference command; returns ``(InferenceResult, summary dict)``."""
  from ais_jax.io import runs
  from ais_jax.report import files as files_lib
  from ais_jax.report import index
  report = progress or (lambda message: None)
  started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  t0 = time.perf_counter()
  if not weights:
    raise UserInputError("--weights", "required: a registered name (e.g. "
                         "efficientnet_lite0_imagenet) or a checkpoint directory")
  for name, value in (("--bootstrap", bootstrap), ("--permutations", permutations)):
    if value < 0:
      raise UserInputError(name, f"{value}: must be >= 0")
  runs.check_out_dir(out, overwrite=overwrite)
  imgs, names, subjects, inputs = _load_cohort(
      dataset=dataset, data_dir=data_dir, images=images, human_subjects=human_subjects,
      human_kind=human_kind, human_key=human_key, image_list=image_list,
      tfds_data_dir=tfds_data_dir)
  report(f"cohort: {len(names)} images, {subjects.shape[0]} subjects")
  spec, head, maps, provenance = cohort_maps(weights, imgs, arch=arch, batch_size=batch_size,
                                             progress=progress)
  try:
    result = inference.analyse(
        head, maps, subjects, similarity=similarity, comparison=comparison, score=cohort_score,
        precision=precision, bootstrap=bootstrap, permutations=permutations,
        bootstrap_seed=bootstrap_seed, permutation_seed=permutation_seed,
        split_halves=split_halves, split_seed=split_seed, top_m=top_m, progress=progress)
  except ValueError as e:
    raise UserInputError(None, str(e)) from None
  model_label = provenance.get("weights_name") or spec.name
  models = model_agreements(model_label, result, comparison)
  for other in compare_weights:
    o_spec, o_head, o_maps, o_prov = cohort_maps(other, imgs, batch_size=batch_size,
                                                 progress=progress)
    models[o_prov.get("weights_name") or o_spec.name] = _agreements_of(
        (o_spec, o_head, o_maps), subjects, comparison)
    report(f"agreement of {other}: done")

  section, files = write_results(result, out, models=models, names=names,
                                 comparison=comparison)
  summary = {
      "tool": "ais_jax.inference_job.run", "command": list(command or sys.argv),
      "flags": dict(flags or {}), "inputs": inputs,
      "model": {"name": spec.name, "weights": model_label,
                "checkpoint_dir": provenance.get("checkpoint_dir")},
      "results": result.summary, "models": models,
      "timings_s": dict(result.timings, total=time.perf_counter() - t0),
      "started_at": started, "files": files + ["index.html", "summary.json"],
  }
  files_lib.write_json(os.path.join(out, "summary.json"), summary)
  index.write_index(out, title=f"AIS inference: {model_label}", sections=[section],
                    intro=[f"{len(names)} images, {subjects.shape[0]} subjects, "
                           f"{result.cohort_ais.size} maps; {bootstrap} image resamples, "
                           f"{permutations} permutations."],
                    footer=[" ".join(summary["command"])])
  report(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
  return result, summary
