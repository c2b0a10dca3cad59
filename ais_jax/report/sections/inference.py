"""Inference in the report (cohorts with per-subject judgments, e.g. the 92-image set): the noise
ceiling band with every model's mean-over-subjects agreement, bootstrap intervals of the top maps
and the maps that survive FWER and FDR, written into ``<out>/inference`` with the files of
``experiments.inference`` (:mod:`ais_jax.inference_job`)."""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional

from ais_jax.report import index

FOLDER = "inference"


def analyse(models: list, cohort, config, out_dir: str,
            report: Callable[[str], None]) -> Optional[dict]:
  """``ais_jax.inference.analyse`` for the main model (``models[0]``) against ``cohort.subjects``;
  None when the cohort has no per-subject matrices or ``config.bootstrap`` and
  ``config.permutations`` are both 0."""
  if cohort.subjects is None or not (config.bootstrap or config.permutations):
    return None
  from ais_jax import inference, inference_job
  main = models[0]
  head = main.spec.get_ablation_head(main.variables)
  report(f"inference: noise ceiling, {config.bootstrap} image resamples, "
         f"{config.permutations} permutations on {cohort.subjects.shape[0]} subjects")
  result = inference.analyse(
      head, main.run.feature_maps, cohort.subjects, similarity=config.similarity,
      comparison=config.comparison, score=config.cohort_score, precision=config.precision,
      bootstrap=config.bootstrap, permutations=config.permutations,
      bootstrap_seed=config.bootstrap_seed, permutation_seed=config.permutation_seed,
      per_image=False, progress=report)
  agreements = inference_job.model_agreements(main.label, result, config.comparison)
  agreements.update(inference_job.other_model_agreements(
      [(m.label, m.spec.get_ablation_head(m.variables), m.run.feature_maps) for m in models[1:]],
      cohort.subjects, config.comparison))
  folder = os.path.join(out_dir, FOLDER)
  section, files = inference_job.write_results(result, folder, models=agreements,
                                               names=cohort.names, comparison=config.comparison)
  # The numbers behind the section's tables, as experiments.inference's summary.json holds them.
  from ais_jax.report import files as files_lib
  files_lib.write_json(os.path.join(folder, "summary.json"),
                       {"results": result.summary, "models": agreements,
                        "timings_s": result.timings})
  files.append("summary.json")
  s = result.summary
  return {"section": section, "files": [os.path.join(FOLDER, f) for f in files],
          "summary": {"noise_ceiling": s["noise_ceiling"],
                      "mean_over_subjects": {label: a["mean_over_subjects"]
                                             for label, a in agreements.items()},
                      "significant_maps": s["significant_maps"],
                      "baseline_ci": s["baseline_ci"], "baseline_p": s["baseline_p"]}}


def section(result: dict) -> index.Section:
  """The inference section, its file paths (relative to ``<out>/inference``) made relative to the
  report folder."""
  sec = result["section"]
  items = []
  for item in sec.items:
    changes = {}
    if isinstance(item, index.Figure):
      changes["path"] = os.path.join(FOLDER, item.path)
    if getattr(item, "data", None):
      changes["data"] = [os.path.join(FOLDER, d) for d in item.data]
    items.append(dataclasses.replace(item, **changes) if changes else item)
  return index.Section(sec.title, items)
