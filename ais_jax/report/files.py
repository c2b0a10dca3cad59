"""Small writers shared by the report modules: CSV with round-trip floats, strict JSON."""

from __future__ import annotations

import csv
import json
import os
from typing import Any, Sequence

import numpy as np

from ais_jax.io import runs


def csv_cell(value: Any) -> Any:
  """A CSV cell: floats in ``repr`` (round-trip exact), NaN/inf/None as empty cells."""
  if isinstance(value, (float, np.floating)):
    return repr(float(value)) if np.isfinite(value) else ""
  if isinstance(value, np.integer):
    return int(value)
  return "" if value is None else value


def write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """Writes a CSV (one header line, :func:`csv_cell` cells); returns ``path``."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for row in rows:
      writer.writerow([csv_cell(v) for v in row])
  return path


def write_json(path: str, data: Any) -> str:
  """Writes strict JSON (NaN and infinities as null, numpy values as Python); returns ``path``."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(runs.jsonable(data), f, indent=1, allow_nan=False)
  return path


def nanmean(x: Any, axis) -> np.ndarray:
  """``np.nanmean`` in float64 without the all-NaN warning (all-NaN slices give NaN)."""
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return np.nanmean(np.asarray(x, np.float64), axis=axis)
