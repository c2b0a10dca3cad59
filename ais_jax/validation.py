"""Checks at the public boundary (numpy, never inside jitted code) and undefined-value reports."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

# Relative tolerance for the symmetry check of a human matrix (relative to the largest finite
# off-diagonal magnitude, whatever the matrix's scale).
SYMMETRY_RTOL = 1e-8
MIN_FINITE_PER_ROW = 3
# A similarity matrix whose finite diagonal is the minimum of at least this share of its rows
# looks like a dissimilarity (distance) matrix.
DISSIMILARITY_DIAGONAL_SHARE = 0.9


class HumanKindWarning(UserWarning):
  """An explicitly stated --human_kind that the matrix's diagonal contradicts."""


def diagonal_minimum_rows(similarity) -> tuple[int, int]:
  """``(rows whose finite diagonal is <= every finite off-diagonal entry, rows with a finite
  diagonal and finite off-diagonal entries)`` of a square ``[n, n]`` matrix.

  Similarities are largest on the diagonal (an image is most similar to itself); distances are
  smallest there. Rows with a NaN diagonal are not counted.
  """
  h = np.asarray(similarity, np.float64)
  n = h.shape[0]
  off = np.where(np.eye(n, dtype=bool), np.nan, h)
  diag = np.diagonal(h)
  counted = np.isfinite(diag) & np.isfinite(off).any(axis=1)
  if not counted.any():
    return 0, 0
  row_min = np.nanmin(off[counted], axis=1)  # every counted row has a finite entry: no warning
  return int((diag[counted] <= row_min).sum()), int(counted.sum())


def check_human_kind(similarity, *, kind_stated: bool, name: str = "human") -> str | None:
  """The orientation rule of a human matrix, as similarities (after ``S = -D``).

  A finite diagonal that is the minimum of nearly every row (:data:`DISSIMILARITY_DIAGONAL_SHARE`
  of the rows with a finite diagonal, at least 4) is what a dissimilarity matrix looks like.

  Args:
    similarity: ``[n, n]`` similarities (already negated if the user said dissimilarity).
    kind_stated: whether the user stated ``--human_kind`` explicitly.
    name: the input's name for messages.

  Returns:
    None when the diagonal agrees (or is NaN: the rule is skipped), else (stated kind only) a
    warning message for the run's summary.

  Raises:
    ValueError when the kind was not stated and the matrix looks like dissimilarities.
  """
  at_min, counted = diagonal_minimum_rows(similarity)
  if counted < 4 or at_min < DISSIMILARITY_DIAGONAL_SHARE * counted:
    return None
  if not kind_stated:
    raise ValueError(
        f"{name}: the diagonal is the smallest value of {at_min} of {counted} rows, as in a "
        "dissimilarity (distance) matrix, but it would be used as similarities; state what the "
        "file holds: --human_kind=dissimilarity (negated, S = -D) or --human_kind=similarity "
        "(use it as it is)")
  return (f"{name}: used as stated (--human_kind), although its diagonal is the smallest value "
          f"of {at_min} of {counted} rows as similarities, which is what the other kind looks "
          "like; check --human_kind")


# Values per row block of the human-matrix checks (float64: 32 MB per temporary).
VALIDATION_BLOCK_VALUES = 2**22


def _locate(mask: np.ndarray, limit: int = 10) -> str:
  idx = np.argwhere(mask)
  shown = ", ".join(str(tuple(int(v) for v in row)) for row in idx[:limit])
  more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
  return shown + more


def validate_human_similarity(human, n_images: int | None = None, *, name: str = "human",
                              symmetry_rtol: float = SYMMETRY_RTOL,
                              kind_stated: bool | None = None) -> np.ndarray:
  """Checks a human similarity matrix and returns it as float64 ``[n, n]``.

  Missing judgments are NaN and are excluded pair by pair later; the diagonal is ignored by the
  analyses (only the orientation rule reads it).

  Args:
    human: ``[n, n]`` similarities.
    n_images: the cohort size it must match (None: not checked).
    name: the input's name for messages.
    symmetry_rtol: symmetry tolerance relative to the largest finite off-diagonal magnitude.
    kind_stated: None: no orientation rule (internal callers, already checked); False: the user
      did not state --human_kind, so a matrix that looks like dissimilarities is refused; True:
      stated, so it is used, with a :class:`HumanKindWarning` when the diagonal contradicts it
      (:func:`check_human_kind`).

  Raises:
    ValueError naming the problem and the rows/entries: not 2-D square, wrong size for the
    cohort, infinite entries, not symmetric (values or missing pattern), a row with fewer than 3
    finite off-diagonal entries, a row whose finite off-diagonal entries are constant, or (see
    ``kind_stated``) a dissimilarity-looking matrix of unstated kind.
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
  finite_off = off & ~nan
  # Row blocks: no n x n float temporaries (n = 5,000: 0.2 GB each) beside the matrix itself.
  rows = max(1, VALIDATION_BLOCK_VALUES // n)
  blocks = [(i0, min(i0 + rows, n)) for i0 in range(0, n, rows)]
  scale = max(float(np.max(np.abs(np.where(finite_off[i0:i1], h[i0:i1], 0))))
              for i0, i1 in blocks)
  asym = np.zeros((n, n), bool)
  with np.errstate(invalid="ignore"):
    for i0, i1 in blocks:
      asym[i0:i1] = ((np.abs(h[i0:i1] - h[:, i0:i1].T) > symmetry_rtol * scale)
                     & finite_off[i0:i1])
  if asym.any():
    with np.errstate(invalid="ignore"):  # an infinite diagonal: inf - inf, not in asym
      gap = np.where(asym, np.abs(h - h.T), -1)
    worst = np.unravel_index(np.argmax(gap), h.shape)
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
  if kind_stated is not None:
    message = check_human_kind(h, kind_stated=kind_stated, name=name)
    if message:
      warnings.warn(message, HumanKindWarning, stacklevel=2)
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


def repeated(items) -> list:
  """The items that occur more than once, in the order of their second occurrence."""
  seen, repeats = set(), []
  for item in items:
    if item in seen:
      repeats.append(item)
    seen.add(item)
  return repeats
