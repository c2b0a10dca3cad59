"""AIS heatmaps vs saliency (Aim 3) in the report: ``ais_jax.report.saliency_report.compare`` into
``<out>/saliency`` (the files of ``experiments.saliency``) and its report section."""

from __future__ import annotations

import os
from typing import Optional, Sequence

from ais_jax.report import index


def maps(cohort, config, report) -> Optional[list]:
  """The saliency maps at image resolution (None when ``--saliency`` is '' or 'none')."""
  from ais_jax.report import saliency_report
  if config.saliency in saliency_report.NO_SALIENCY:
    return None
  report(f"saliency: {config.saliency} on {len(cohort.names)} images")
  try:
    return saliency_report.saliency_maps(cohort.images, cohort.names, config.saliency,
                                         saliency_weights=config.saliency_weights,
                                         progress=report)
  except (ValueError, FileNotFoundError) as e:  # A --saliency file or folder that does not fit.
    from ais_jax.errors import UserInputError
    raise UserInputError("--saliency", str(e)) from None


def analyse(model, cohort, sal_maps: list, config, out_dir: str, *,
            command: Optional[Sequence[str]] = None) -> dict:
  """``saliency_report.compare`` for the main model into ``<out>/saliency`` (contour examples
  chosen by relative risk, highest and lowest per category)."""
  from ais_jax.report import saliency_report
  sdir = os.path.join(out_dir, "saliency")
  result = saliency_report.compare(cohort.images, model.run.heatmaps, cohort.names, cohort.groups,
                                   sdir, saliency=config.saliency, maps=sal_maps,
                                   saliency_weights=config.saliency_weights,
                                   # The folder after the run's swap, not the staging one.
                                   ais_run=os.path.join(config.out or out_dir,
                                                        os.path.relpath(model.folder, out_dir)),
                                   command=command)
  files = result["files"] + ["saliency_summary.json"]
  return {"saliency": config.saliency, "rows": result["rr_table"],
          "all_images": result["rr_all_images"], "undefined": result["rr_undefined"],
          "files": [os.path.relpath(os.path.join(sdir, p), out_dir) for p in files]}


def section(saliency: dict) -> index.Section:
  """The "AIS heatmaps vs saliency" report section for :func:`analyse`'s result."""
  rows = [[r["dataset"], r["top"], r["mean"], r["sd"], r["n"], r["n_undefined"],
           r["undefined_reasons"]] for r in saliency["rows"]]
  return index.Section("AIS heatmaps vs saliency", [
      index.Figure("saliency/pr_curves.png", "Precision-recall of saliency against AIS targets",
                   "Target = the top 40/30/20/10% pixels of the AIS heatmap (one panel each, the "
                   "paper's Figure 4 thresholds); each curve traces saliency thresholds, black = "
                   "all images, colours = categories, AUC in the legend; curves near the dashed "
                   "chance line mean saliency does not predict where the AIS heatmap is high. "
                   "The relative-risk table below uses smaller sets (top 5/10/15%, the paper's "
                   "Table 1): the two answer the same question at different strictness.",
                   data=["saliency/pr_curves.csv", "saliency/pr_curves.json"]),
      index.Figure("saliency/contours.png", "AIS (red, solid) and saliency (blue, dashed) contours",
                   "Contours of the top 5/10/15% pixels of each map (thicker = smaller set) over "
                   "a grey copy of the image, with the relative risk printed on each; in each "
                   "category the images with the highest and the lowest RR at top 10% are shown.",
                   data=["saliency/contours.json"]),
      index.Table("Relative risk (the paper's Table 1)",
                  ["dataset", "top %", "mean RR", "sd", "images", "undefined", "why undefined"],
                  rows, "RR = P(top AIS pixel | salient) / P(top AIS pixel | not salient); 1 = "
                  "saliency says nothing about the AIS map, above 1 = they overlap.",
                  data=["saliency/rr_table.csv", "saliency/rr_table.md",
                        "saliency/rr_per_image.csv"]),
  ])
