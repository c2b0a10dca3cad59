"""The last report section: the models, their run folders and the command that reruns the job."""

from __future__ import annotations

import os

from ais_jax.report import index


def section(models: list, out: str, rerun: str) -> index.Section:
  """The "Runs and reproduction" section."""
  model_rows = [[m.label, m.weights, m.run.summary["results"]["baseline_agreement"],
                 m.run.summary["undefined"]["per_image_ais"]["count"],
                 os.path.relpath(m.folder, out)] for m in models]
  return index.Section("Runs and reproduction", [
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
  ])
