"""The sections of the ``experiments.run`` report, one module per section.

Each section module holds the analysis, the figures and the HTML items (``ais_jax.report.index``
items) of one part of the report, so a figure's code is found by its section's name:

* :mod:`.run_data`   - the cohort (planted / 92 images / your own) and one AIS run per model;
* :mod:`.summary_text` - "What this run shows": the interpretation paragraph, from the numbers;
* :mod:`.planted`    - planted truth: heatmap mass on the target vs the distractor;
* :mod:`.similarity` - the human and model similarity matrices side by side, ordered by category,
  with their agreement, scatter and per-image agreement;
* :mod:`.heatmaps`   - AIS heatmaps and the mean-activation baseline for examples chosen by
  per-image agreement;
* :mod:`.top_maps`   - the maps ranked first by cohort AIS, with the images activating each most;
* :mod:`.selection`  - cross-validated map selection (``ais_jax.selection``) and its figures;
* :mod:`.aim2`       - AIS distributions, Match between models, cohort AIS by category;
* :mod:`.saliency`   - AIS heatmaps vs saliency (precision-recall, relative risk, contours);
* :mod:`.reproduction` - the models table and the rerun command.

Each section module has an analysis function that takes the run's data
(:class:`run_data.Cohort`, :class:`run_data.ModelRun`, the output folder), writes its figures and
returns its numbers with the files it wrote (``'files'``, relative to the output folder), and a
``section(...)`` function that turns those numbers into the report items. ``ais_jax.main_job`` calls
them in order and assembles ``index.html``; ``ais_jax.report.browser`` writes the interactive
``browser.html`` beside it.
"""

from __future__ import annotations

import os
from typing import Any


def relative(paths, out_dir: str) -> list:
  """``paths`` relative to ``out_dir``."""
  return [os.path.relpath(p, out_dir) for p in paths]


def fmt(v: Any, digits: int = 3) -> str:
  """A number for running text: ``digits`` decimals, None/NaN as 'undefined'."""
  import math
  if v is None or (isinstance(v, float) and not math.isfinite(v)):
    return "undefined"
  return f"{v:.{digits}f}" if isinstance(v, float) else str(v)
