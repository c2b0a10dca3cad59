"""Reading human similarity judgments (the user-facing ``--human`` input).

Formats:

* ``.npy``: a numeric ``[n, n]`` array (read without pickle).
* ``.csv``: numbers only, comma-separated, no header; ``nan`` (any case) or an empty field marks a
  missing pair. Or labelled, as ``pandas.DataFrame.to_csv`` writes a matrix: a header row of an
  (empty) corner cell and the column labels, and each row starting with its label.
* ``.mat``: MATLAB v4-v7.2 (``scipy.io.loadmat``). ``key`` picks the variable; without it the file
  must hold exactly one candidate, a numeric 2-D variable with both sides > 1 (1 x n vectors such
  as label lists are not candidates). v7.3 (HDF5) files are not supported: save with ``-v7``.

An unlabelled matrix lists the images in the cohort's order. A labelled one (a labelled ``.csv``,
or any format with ``labels``, e.g. ``--human_labels=FILE`` for a ``.npy``) is reordered to the
image order: labels match image names (the file name or its stem), and a label set that differs
from the images is an error listing the first differences. Dissimilarities
(``kind='dissimilarity'``) are negated, ``S = -D`` (AIS needs similarities; Pearson and Spearman agreement are unchanged by any
decreasing affine map, and ``-D`` keeps the values recognisable). The result is then checked by
:func:`ais_jax.validation.validate_human_similarity`.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Optional, Sequence

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


def _is_number(field: str) -> bool:
  if not field:
    return True
  try:
    float(field)
  except ValueError:
    return False
  return True


def _parse_row(path, line_no, fields, first_col):
  row = []
  for col_no, field in enumerate(fields, start=first_col):
    if not field:
      row.append(np.nan)
      continue
    try:
      row.append(float(field))
    except ValueError:
      raise UserInputError(path, f"line {line_no}, column {col_no}: {field[:30]!r} is not a "
                           "number; the file must hold numbers only ('nan' or empty for missing "
                           "pairs), optionally with a header row and row labels as pandas' "
                           "to_csv writes them") from None
  return row


def _load_csv(path: str, image_names: Optional[Sequence[str]] = None):
  """-> ``(matrix [r, c] float64, row_labels or None, column_labels or None)``."""
  try:
    with open(path, encoding="utf-8-sig", newline="") as f:
      lines = f.read().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise UserInputError(path, f"cannot read it as a text file ({e})") from None
  while lines and not lines[-1].strip():  # Trailing blank lines only; inner ones are errors.
    lines.pop()
  if not lines:
    raise UserInputError(path, "the file is empty")
  table = [[field.strip() for field in fields] for fields in csv.reader(lines)]
  widths = {len(r) for r in table}
  if len(widths) != 1:
    first_bad = next(i for i, r in enumerate(table, start=1) if len(r) != len(table[0]))
    raise UserInputError(path, f"rows have different numbers of fields: line 1 has "
                         f"{len(table[0])}, line {first_bad} has {len(table[first_bad - 1])}")
  header, body = table[0], table[1:]
  square = len(body) == len(header) - 1 > 0  # n + 1 lines of n + 1 fields
  labelled = square and (not all(_is_number(f) for f in header[1:])
                         or not all(_is_number(r[0]) for r in body))
  if not labelled and square and image_names is not None and not header[0]:
    # Labels that look like numbers (images named 001.png, ...) are labels when they are the
    # image names.
    keys = set(image_names) | {os.path.splitext(n)[0] for n in image_names}
    labelled = set(header[1:]) <= keys and {r[0] for r in body} <= keys
  if not labelled:
    return np.asarray([_parse_row(path, i, r, 1) for i, r in enumerate(table, start=1)],
                      np.float64), None, None
  rows = [_parse_row(path, i, r[1:], 2) for i, r in enumerate(body, start=2)]
  return np.asarray(rows, np.float64).reshape(len(body), len(header) - 1), \
      [r[0] for r in body], header[1:]


def _is_candidate(value) -> bool:
  return (isinstance(value, np.ndarray) and value.dtype.kind in "fiub" and value.ndim == 2
          and min(value.shape) > 1)


def read_mat_variables(path: str, *, save_hint: str = ".npy/.csv") -> dict:
  """The variables of a MATLAB file (``scipy.io.loadmat``, MATLAB's own ``__header__`` entries
  left out); unreadable files and v7.3 (HDF5) files are a :class:`UserInputError` naming ``path``."""
  import scipy.io
  try:
    contents = scipy.io.loadmat(path)
  except NotImplementedError:
    raise UserInputError(path, "MATLAB v7.3 (HDF5) files are not supported; save with "
                         f"save(..., '-v7') or as {save_hint}") from None
  except Exception as e:
    raise UserInputError(path, f"cannot read it as a .mat file ({type(e).__name__}: {e})") from None
  return {k: v for k, v in contents.items() if not k.startswith("__")}


def _load_mat(path: str, key: str | None) -> np.ndarray:
  variables = read_mat_variables(path)
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


@dataclasses.dataclass(frozen=True)
class HumanMatrix:
  """A human matrix in the image order, and the labels it came with.

  Attributes:
    matrix: float64 ``[n, n]`` similarity in the image order, NaN where a pair is missing.
    labels: the row labels in the file's order (None: an unlabelled matrix, taken as given).
    order: ``[n]`` file row of each image (None when unlabelled).
  """
  matrix: np.ndarray
  labels: Optional[list] = None
  order: Optional[np.ndarray] = None

  @property
  def reordered(self) -> bool:
    return self.order is not None and not np.array_equal(self.order, np.arange(self.order.size))


def read_labels(path: str) -> list[str]:
  """One label per line (blank lines ignored): the ``--human_labels`` file."""
  try:
    with open(path, encoding="utf-8-sig") as f:
      return [line.strip() for line in f if line.strip()]
  except (OSError, UnicodeDecodeError) as e:
    raise UserInputError(path, f"cannot read the labels file ({e}); give one image name per "
                         "line") from None


def match_labels(labels: Sequence[str], image_names: Sequence[str], *, source: str) -> np.ndarray:
  """``order [n]`` with ``labels[order[i]]`` the label of image ``i``.

  A label matches an image by its full name or its stem (``cat.png`` or ``cat``).

  Raises:
    UserInputError (named ``source``) for duplicate labels or a label set that differs from the
    images; the message lists the first differences.
  """
  labels = [str(l) for l in labels]
  duplicates = validation.repeated(labels)
  if duplicates:
    raise UserInputError(source, f"duplicate labels {duplicates[:5]}; each image must appear "
                         "once")
  index = {l: i for i, l in enumerate(labels)}
  order, unmatched = [], []
  for name in image_names:
    stem = os.path.splitext(name)[0]
    hit = index.get(name, index.get(stem))
    if hit is None:
      unmatched.append(name)
    else:
      order.append(hit)
  used = set(order)
  extra = [l for i, l in enumerate(labels) if i not in used]
  if unmatched or extra or len(labels) != len(image_names):
    firsts = [f"position {i}: image {n!r} vs label {l!r}" for i, (n, l) in
              enumerate(zip(image_names, labels))
              if n != l and os.path.splitext(n)[0] != l][:3]
    raise UserInputError(source, f"the labels do not match the images ({len(labels)} labels, "
                         f"{len(image_names)} images): images without a label "
                         f"{unmatched[:5]}, labels matching no image {extra[:5]}; first "
                         f"differences in order: {firsts}. Labels must be the image file names "
                         "or their stems (with a .npy --images, name the images with "
                         "--image_list)")
  return np.asarray(order, int)


def load_human_labelled(path: str, *, key: str | None = None, kind: str | None = None,
                        n_images: int | None = None,
                        image_names: Optional[Sequence[str]] = None,
                        labels: Optional[Sequence[str] | str] = None) -> HumanMatrix:
  """Reads, reorders and checks a human similarity matrix.

  Args:
    path: ``.npy``, ``.csv`` or ``.mat`` file (formats in the module docstring).
    key: the variable of a ``.mat`` file (required when it holds several candidates).
    kind: 'similarity' or 'dissimilarity' (negated: ``S = -D``); None: not stated, used as
      similarities but refused if its diagonal says dissimilarities (a stated kind that the
      diagonal contradicts runs with a ``validation.HumanKindWarning``).
    n_images: the cohort size the matrix must match (None: not checked).
    image_names: the images' names in the cohort order (needed for a labelled matrix).
    labels: labels of the rows/columns (a list, or a text file with one per line) for a file
      without its own labels; not allowed with a labelled ``.csv``.

  Returns:
    :class:`HumanMatrix` (matrix float64 ``[n, n]`` in the image order).

  Raises:
    UserInputError naming the file and the problem (unreadable, wrong format, not square, not
    symmetric, infinite entries, too few finite entries in a row, constant rows, wrong size,
    labels that do not match the images).
  """
  path = os.fspath(path)
  if kind is not None and kind not in HUMAN_KINDS:
    raise UserInputError("human_kind", f"{kind!r} is not one of {HUMAN_KINDS}")
  if not os.path.isfile(path):
    raise UserInputError(path, "no such file; give a .npy, .csv or .mat matrix [n, n]")
  ext = os.path.splitext(path)[1].lower()
  if key and ext != ".mat":
    raise UserInputError(path, f"a variable name (key {key!r}) only applies to .mat files")
  row_labels = col_labels = None
  if ext == ".npy":
    matrix = _load_npy(path)
  elif ext == ".csv":
    matrix, row_labels, col_labels = _load_csv(path, image_names)
  elif ext == ".mat":
    matrix = _load_mat(path, key)
  else:
    raise UserInputError(path, f"unknown extension {ext!r}; expected one of {HUMAN_EXTENSIONS}")
  labels_source = path
  if labels is not None and not isinstance(labels, (list, tuple)):
    labels_source = os.fspath(labels)
    labels = read_labels(labels_source)
  if labels is not None:
    if row_labels is not None:
      raise UserInputError(labels_source, f"{path} has its own row and column labels; drop "
                           "the separate labels")
    row_labels = col_labels = list(labels)
  matrix = np.asarray(matrix)
  if matrix.dtype.kind not in "fiub":
    raise UserInputError(path, f"expected a numeric matrix, got dtype {matrix.dtype}")
  matrix = matrix.astype(np.float64)
  order = None
  if row_labels is not None:
    if image_names is None:
      raise UserInputError(labels_source, "a labelled matrix is matched to the image names, "
                           "but none are known here (precomputed --maps, or a .npy --images "
                           "without --image_list)")
    if matrix.ndim != 2 or matrix.shape != (len(row_labels), len(col_labels)):
      raise UserInputError(labels_source, f"{len(row_labels)} row / {len(col_labels)} column "
                           f"labels for a matrix of shape {list(matrix.shape)}")
    order = match_labels(row_labels, image_names, source=labels_source)
    col_order = match_labels(col_labels, image_names, source=labels_source)
    matrix = matrix[np.ix_(order, col_order)]
  if kind == "dissimilarity":
    matrix = -matrix
  try:
    matrix = validation.validate_human_similarity(matrix, n_images, name=path,
                                                  kind_stated=kind is not None)
  except ValueError as e:
    # The validator's message starts with the name we gave it; keep it one line.
    message = str(e)
    prefix = f"{path}: "
    raise UserInputError(path, message[len(prefix):] if message.startswith(prefix)
                         else message) from None
  return HumanMatrix(matrix=matrix, labels=row_labels, order=order)


def load_human(path: str, *, key: str | None = None, kind: str | None = None,
               n_images: int | None = None, image_names: Optional[Sequence[str]] = None,
               labels: Optional[Sequence[str] | str] = None) -> np.ndarray:
  """:func:`load_human_labelled`'s matrix: float64 ``[n, n]`` in the image order."""
  return load_human_labelled(path, key=key, kind=kind, n_images=n_images,
                             image_names=image_names, labels=labels).matrix
