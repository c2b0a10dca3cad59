"""Checks at the public boundary (numpy, never inside jitted code) and undefined-value reports."""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Relative tolerance for the symmetry check of a human matrix.
SYMMETRY_RTOL = 1e-8
MIN_FINITE_PER_ROW = 3


def _locate(mask: np.ndarray, limit: int = 10) -> str:
  idx = np.argwhere(mask)
  shown = ", ".join(str(tuple(int(v) for v in row)) for row in idx[:limit])
  more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
  return shown + more


def validate_human_similarity(human, n_images: int | None = None, *, name: str = "human",
                              symmetry_rtol: float = SYMMETRY_RTOL) -> np.ndarray:
  """Checks a human similarity matrix and returns it as float64 ``[n, n]``.

  Missing judgments are NaN and are excluded pair by pair later; the diagonal is ignored.

  Raises:
    ValueError naming the problem and the rows/entries: not 2-D square, wrong size for the
    cohort, infinite entries, not symmetric (values or missing pattern), a row with fewer than 3
    finite off-diagonal entries, or a row whose finite off-diagonal entries are constant.
  """
  h = np.asarray(human)
  if h.dtype.kind not in "fiub":
    raise ValueError(f"{name}: expected a numeric matrix, got dtype {h.dtype}")
  h = h.astype(np.float64)
  if h.ndim != 2 or h.shape[0] != h.shape[1]:
    raise ValueError(f"{name}: expected a square [n, n] matrix, got shape {h.shape}")
  n = h.shape[0]
  if n_images is not None and n != n_images:
    raise ValueError(f"{name}: matrix is {n}x{n} but the cohort has {n_images} images; the "
                     "matrix must list the images in the same order as the images")
  if n < 4:
    raise ValueError(f"{name}: at least 4 images are needed, got {n}")
  off = ~np.eye(n, dtype=bool)
  inf = np.isinf(h) & off
  if inf.any():
    raise ValueError(f"{name}: infinite entries at {_locate(inf)}; use NaN for missing pairs")
  nan = np.isnan(h)
  asym_nan = (nan != nan.T) & off
  if asym_nan.any():
    raise ValueError(f"{name}: missing (NaN) pattern is not symmetric at {_locate(np.triu(asym_nan))}"
                     "; a missing pair must be missing in both (i, j) and (j, i)")
  scale = max(1.0, float(np.nanmax(np.abs(np.where(off, h, np.nan)))) if (off & ~nan).any() else 1.0)
  with np.errstate(invalid="ignore"):
    asym = (np.abs(h - h.T) > symmetry_rtol * scale) & off & ~nan
  if asym.any():
    worst = np.unravel_index(np.nanargmax(np.where(asym, np.abs(h - h.T), -1)), h.shape)
    raise ValueError(
        f"{name}: matrix is not symmetric: {int(asym.sum()) // 2} pairs differ, e.g. "
        f"({worst[0]}, {worst[1]}) = {h[worst]} vs ({worst[1]}, {worst[0]}) = {h[worst[::-1]]}; "
        "average it with its transpose if the asymmetry is noise")
  finite = np.isfinite(h) & off
  counts = finite.sum(axis=1)
  few = np.flatnonzero(counts < MIN_FINITE_PER_ROW)
  if few.size:
    raise ValueError(f"{name}: rows {few[:10].tolist()} have fewer than {MIN_FINITE_PER_ROW} "
                     f"finite off-diagonal entries ({counts[few[:10]].tolist()}); drop those "
                     "images or supply their judgments")
  constant_rows = []
  for i in range(n):
    v = h[i, finite[i]]
    dev = np.sqrt(np.mean((v - v.mean()) ** 2))
    if dev <= 1e-12 * np.max(np.abs(v)):
      constant_rows.append(i)
  if constant_rows:
    raise ValueError(f"{name}: rows {constant_rows[:10]} are constant over their finite "
                     "off-diagonal entries, so no correlation with them is defined; check the file")
  return h


def undefined_summary(values, axis_names: Sequence[str], *, limit: int = 50) -> dict:
  """Counts and locates NaN entries of an array for run reports.

  Returns ``{'count': int, 'total': int, 'locations': [{axis_name: index, ...}, ...] (first
  ``limit``), 'per_<axis>': {index: count}}`` for the first axis.
  """
  v = np.asarray(values)
  nan = np.isnan(v)
  idx = np.argwhere(nan)
  out = {"count": int(nan.sum()), "total": int(v.size),
         "locations": [dict(zip(axis_names, map(int, row))) for row in idx[:limit]],
         "locations_truncated": bool(len(idx) > limit)}
  if v.ndim >= 1 and nan.any():
    per = nan.reshape(v.shape[0], -1).sum(axis=1)
    out[f"per_{axis_names[0]}"] = {int(i): int(c) for i, c in enumerate(per) if c}
  return out
