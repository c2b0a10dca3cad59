"""Reading human similarity judgments (the user-facing ``--human`` input).

Formats:

* ``.npy``: a numeric ``[n, n]`` array (read without pickle).
* ``.csv``: numbers only, comma-separated, no header; ``nan`` (any case) or an empty field marks a
  missing pair.
* ``.mat``: MATLAB v4-v7.2 (``scipy.io.loadmat``). ``key`` picks the variable; without it the file
  must hold exactly one candidate, a numeric 2-D variable with both sides > 1 (1 x n vectors such
  as label lists are not candidates). v7.3 (HDF5) files are not supported: save with ``-v7``.

The matrix lists the images in the cohort's order. Dissimilarities (``kind='dissimilarity'``) are
negated, ``S = -D`` (AIS needs similarities; Pearson and Spearman agreement are unchanged by any
decreasing affine map, and ``-D`` keeps the values recognisable). The result is then checked by
:func:`ais_jax.validation.validate_human_similarity`.
"""

from __future__ import annotations

import os

import numpy as np

from ais_jax import validation
from ais_jax.errors import UserInputError

HUMAN_KINDS = ("similarity", "dissimilarity")
HUMAN_EXTENSIONS = (".npy", ".csv", ".mat")


def _load_npy(path: str) -> np.ndarray:
  try:
    return np.load(path, allow_pickle=False)
  except Exception as e:
    raise UserInputError(path, f"cannot read it as a .npy array ({type(e).__name__}: "
                         f"{e})") from None


def _load_csv(path: str) -> np.ndarray:
  try:
    with open(path, encoding="utf-8-sig") as f:
      lines = f.read().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise UserInputError(path, f"cannot read it as a text file ({e})") from None
  while lines and not lines[-1].strip():  # Trailing blank lines only; inner ones are errors.
    lines.pop()
  if not lines:
    raise UserInputError(path, "the file is empty")
  rows = []
  for line_no, line in enumerate(lines, start=1):
    row = []
    for col_no, field in enumerate(line.split(","), start=1):
      field = field.strip()
      if not field:
        row.append(np.nan)
        continue
      try:
        value = float(field)
      except ValueError:
        raise UserInputError(path, f"line {line_no}, column {col_no}: {field[:30]!r} is not a "
                             "number; the file must hold numbers only (no header, no row "
                             "labels), 'nan' or empty for missing pairs") from None
      row.append(value)
    rows.append(row)
  widths = {len(r) for r in rows}
  if len(widths) != 1:
    first_bad = next(i for i, r in enumerate(rows, start=1) if len(r) != len(rows[0]))
    raise UserInputError(path, f"rows have different numbers of fields: line 1 has "
                         f"{len(rows[0])}, line {first_bad} has {len(rows[first_bad - 1])}")
  return np.asarray(rows, dtype=np.float64)


def _is_candidate(value) -> bool:
  return (isinstance(value, np.ndarray) and value.dtype.kind in "fiub" and value.ndim == 2
          and min(value.shape) > 1)


def _load_mat(path: str, key: str | None) -> np.ndarray:
  import scipy.io
  try:
    contents = scipy.io.loadmat(path)
  except NotImplementedError:
    raise UserInputError(path, "MATLAB v7.3 (HDF5) files are not supported; save the matrix "
                         "with save(..., '-v7') or as .npy/.csv") from None
  except Exception as e:
    raise UserInputError(path, f"cannot read it as a .mat file ({type(e).__name__}: {e})") from None
  variables = {k: v for k, v in contents.items() if not k.startswith("__")}
  candidates = sorted(k for k, v in variables.items() if _is_candidate(v))
  if key:
    if key not in variables:
      raise UserInputError(path, f"no variable {key!r}; variables in the file: "
                           f"{sorted(variables)}; numeric 2-D candidates: {candidates}")
    if not _is_candidate(variables[key]):
      v = variables[key]
      raise UserInputError(path, f"variable {key!r} is not a numeric 2-D matrix (type "
                           f"{type(v).__name__}, dtype {getattr(v, 'dtype', '?')}, shape "
                           f"{list(getattr(v, 'shape', []))}); candidates: {candidates}")
    return variables[key]
  if not candidates:
    raise UserInputError(path, f"no numeric 2-D matrix in the file (variables: "
                         f"{sorted(variables)})")
  if len(candidates) > 1:
    raise UserInputError(path, f"{len(candidates)} candidate matrices {candidates}; choose one "
                         "with --human_key=NAME")
  return variables[candidates[0]]


def load_human(path: str, *, key: str | None = None, kind: str = "similarity",
               n_images: int | None = None) -> np.ndarray:
  """Reads and checks a human similarity matrix.

  Args:
    path: ``.npy``, ``.csv`` or ``.mat`` file (formats in the module docstring).
    key: the variable of a ``.mat`` file (required when it holds several candidates).
    kind: 'similarity' or 'dissimilarity' (negated: ``S = -D``).
    n_images: the cohort size the matrix must match (None: not checked).

  Returns:
    float64 ``[n, n]`` similarity, NaN where a pair is missing.

  Raises:
    UserInputError naming the file and the problem (unreadable, wrong format, not square, not
    symmetric, infinite entries, too few finite entries in a row, constant rows, wrong size).
  """
  path = os.fspath(path)
  if kind not in HUMAN_KINDS:
    raise UserInputError("human_kind", f"{kind!r} is not one of {HUMAN_KINDS}")
  if not os.path.isfile(path):
    raise UserInputError(path, "no such file; give a .npy, .csv or .mat matrix [n, n]")
  ext = os.path.splitext(path)[1].lower()
  if key and ext != ".mat":
    raise UserInputError(path, f"a variable name (key {key!r}) only applies to .mat files")
  if ext == ".npy":
    matrix = _load_npy(path)
  elif ext == ".csv":
    matrix = _load_csv(path)
  elif ext == ".mat":
    matrix = _load_mat(path, key)
  else:
    raise UserInputError(path, f"unknown extension {ext!r}; expected one of {HUMAN_EXTENSIONS}")
  matrix = np.asarray(matrix)
  if matrix.dtype.kind not in "fiub":
    raise UserInputError(path, f"expected a numeric matrix, got dtype {matrix.dtype}")
  matrix = matrix.astype(np.float64)
  if kind == "dissimilarity":
    matrix = -matrix
  try:
    return validation.validate_human_similarity(matrix, n_images, name=path)
  except ValueError as e:
    # The validator's message starts with the name we gave it; keep it one line.
    message = str(e)
    prefix = f"{path}: "
    raise UserInputError(path, message[len(prefix):] if message.startswith(prefix)
                         else message) from None
