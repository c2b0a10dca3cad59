"""The sections of the ``experiments.run`` report, one module per section.

Each section module holds the analysis, the figures and the HTML items (``ais_jax.report.index``
items) of one part of the report, so a figure's code is found by its section's name:

* :mod:`.run_data`   - the cohort (planted / 92 images / your own) and one AIS run per model;
* :mod:`.planted`    - planted truth: heatmap mass on the target vs the distractor;
* :mod:`.heatmaps`   - AIS heatmaps, the mean-activation baseline, per-image overlays, top maps;
* :mod:`.similarity` - the human and model similarity matrices side by side (RDMs) and their
  scatter;
* :mod:`.selection`  - cross-validated map selection (``ais_jax.selection``) and its figures;
* :mod:`.aim2`       - AIS distributions, Match between models, cohort AIS by category;
* :mod:`.saliency`   - AIS heatmaps vs saliency (precision-recall, relative risk, contours);
* :mod:`.reproduction` - the models table and the rerun command.

A section function takes the run's data (:class:`run_data.Cohort`, :class:`run_data.ModelRun`, the
output folder) and returns a :class:`SectionOutput`: the report items, the files it wrote
(relative to the output folder) and the numbers for ``summary.json``. ``ais_jax.main_job`` calls
them in order and assembles ``index.html``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from ais_jax.report import index


@dataclasses.dataclass
class SectionOutput:
  """What one section produced.

  section: the report section (None: nothing to show); files: written paths relative to the
  output folder; results: numbers recorded in summary.json under the section's key.
  """
  section: Optional[index.Section]
  files: list
  results: Any = None


def relative(paths, out_dir: str) -> list:
  """``paths`` relative to ``out_dir``."""
  return [os.path.relpath(p, out_dir) for p in paths]


def fmt(v: Any, digits: int = 3) -> str:
  """A number for running text: ``digits`` decimals, None/NaN as 'undefined'."""
  import math
  if v is None or (isinstance(v, float) and not math.isfinite(v)):
    return "undefined"
  return f"{v:.{digits}f}" if isinstance(v, float) else str(v)
