"""Reading per-subject human matrices (the ``--human_subjects`` input of experiments.inference).

Formats (``kind`` 'similarity' or 'dissimilarity'; dissimilarities are negated, ``S = -D``, as
:func:`ais_jax.io.human.load_human` does):

* ``.npy``: a numeric ``[S, n, n]`` array (read without pickle).
* ``.mat``: a numeric ``[S, n, n]`` variable, or a struct array with one matrix field per subject
  (the 92-image set's ``rdms_behav_92(s).RDM``); ``key`` picks the variable, ``field`` the struct
  field (default: the only numeric 2-D field).
* a folder: one ``[n, n]`` file per subject (``.npy``, ``.csv`` or ``.mat``, each read by
  :func:`ais_jax.io.human.load_human`), in file-name order.

Each subject's matrix is checked like ``--human`` (square, symmetric, finite or NaN, ...), and the
result has at least 2 subjects.
"""

from __future__ import annotations

import os

import numpy as np

from ais_jax import validation
from ais_jax.errors import UserInputError
from ais_jax.io import human as human_io


def _check(path: str, matrices, kind, n_images, warnings_out=None) -> np.ndarray:
  m = np.asarray(matrices)
  if m.dtype.kind not in "fiub" or m.ndim != 3 or m.shape[1] != m.shape[2]:
    raise UserInputError(path, f"expected numeric per-subject matrices [S, n, n], got dtype "
                         f"{m.dtype} shape {list(m.shape)}")
  if m.shape[0] < 2:
    raise UserInputError(path, f"{m.shape[0]} subject: a noise ceiling and per-subject "
                         "statistics need at least 2 subjects; for one matrix use --human")
  m = m.astype(np.float64)
  if kind == "dissimilarity":
    m = -m
  out = []
  for s, matrix in enumerate(m):
    try:
      out.append(validation.validate_human_similarity(matrix, n_images, name=f"subject {s}"))
      # The orientation rule of --human: an unstated kind is refused for distance-looking
      # matrices; a stated kind that the diagonal contradicts is kept, with a warning.
      warning = validation.check_human_kind(out[-1], kind_stated=kind is not None,
                                            name=f"{path}: subject {s}")
    except ValueError as e:
      raise UserInputError(path, str(e)) from None
    if warning and warnings_out is not None:
      warnings_out.append(warning)
  return np.stack(out)


def _struct_matrices(path: str, value, field):
  names = value.dtype.names
  numeric = [f for f in names if human_io._is_candidate(np.asarray(value.flat[0][f]))]  # pylint: disable=protected-access
  if field is None:
    if len(numeric) != 1:
      raise UserInputError(path, f"struct fields {list(names)}: {len(numeric)} hold a numeric "
                           "matrix; name the field")
    field = numeric[0]
  if field not in names:
    raise UserInputError(path, f"no struct field {field!r}; fields: {list(names)}")
  return np.stack([np.asarray(v[field], np.float64) for v in value.flat])


def _load_mat(path: str, key, field):
  variables = human_io.read_mat_variables(path, save_hint=".npy")

  def usable(v):
    return isinstance(v, np.ndarray) and ((v.dtype.kind in "fiub" and v.ndim == 3)
                                          or v.dtype.names is not None)

  candidates = sorted(k for k, v in variables.items() if usable(v))
  if key is None:
    if len(candidates) != 1:
      raise UserInputError(path, f"{len(candidates)} candidate variables {candidates} (a 3-D "
                           "array [S, n, n] or a struct array of matrices); choose one with "
                           "--human_key=NAME")
    key = candidates[0]
  if key not in variables:
    raise UserInputError(path, f"no variable {key!r}; candidates: {candidates}")
  value = variables[key]
  if isinstance(value, np.ndarray) and value.dtype.names is not None:
    return _struct_matrices(path, value, field)
  return value


def load_subject_matrices(path: str, *, kind: str | None = None, key: str | None = None,
                          field: str | None = None, n_images: int | None = None,
                          warnings_out: list | None = None) -> np.ndarray:
  """Per-subject similarity matrices ``[S, n, n]`` float64 (NaN where a pair is missing).

  Args:
    path: a ``.npy`` / ``.mat`` file or a folder of per-subject files (module docstring).
    kind: 'similarity', 'dissimilarity' (negated) or None (not stated: used as similarities,
      refused when the diagonals look like distances, as ``--human``).
    key: the ``.mat`` variable; field: the struct field of a struct-array variable.
    n_images: the cohort size each matrix must match (None: not checked).
    warnings_out: receives the orientation warnings of a stated kind the diagonals contradict.

  Raises:
    UserInputError naming the file and the problem.
  """
  path = os.fspath(path)
  if kind is not None and kind not in human_io.HUMAN_KINDS:
    raise UserInputError("--human_kind", f"{kind!r} is not one of {human_io.HUMAN_KINDS}")
  if os.path.isdir(path):
    files = sorted(f for f in os.listdir(path)
                   if os.path.splitext(f)[1].lower() in human_io.HUMAN_EXTENSIONS)
    if not files:
      raise UserInputError(path, "no .npy, .csv or .mat files in the folder (one [n, n] matrix "
                           "per subject)")
    # Each file as --human (its own checks, negated if dissimilarities), then all together.
    mats = [human_io.load_human(os.path.join(path, f), key=key, kind=kind, n_images=n_images)
            for f in files]
    shapes = {m.shape for m in mats}
    if len(shapes) != 1:
      raise UserInputError(path, f"the subjects' matrices differ in size: {sorted(shapes)}")
    return _check(path, np.stack(mats), "similarity", n_images)   # checked per file above
  if not os.path.isfile(path):
    raise UserInputError(path, "no such file or folder; give [S, n, n] .npy, a .mat, or a folder "
                         "of per-subject matrices")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".npy":
    try:
      matrices = np.load(path, allow_pickle=False)
    except Exception as e:
      raise UserInputError(path, f"cannot read it as a .npy array ({type(e).__name__}: "
                           f"{e})") from None
  elif ext == ".mat":
    matrices = _load_mat(path, key, field)
  else:
    raise UserInputError(path, f"unknown extension {ext!r}; expected .npy, .mat or a folder")
  return _check(path, matrices, kind, n_images, warnings_out)
