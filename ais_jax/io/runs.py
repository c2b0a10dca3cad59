"""Run folders: the files an AIS run writes, written atomically, and read back.

A run folder holds one ``<name>.npy`` per array, ``images.txt`` (the image order, one name per
line) and ``summary.json``. Every file is written under a temporary name in the same folder
(``.<name>.tmp-<random>``), flushed to disk and renamed with ``os.replace``, so an interrupted run
leaves either the old file or the complete new one, never half a file. ``summary.json`` is
written last and lists the files of the run: a folder without it is not a completed run, and
:func:`load_run` reads exactly the files it lists.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from typing import Any, Mapping, Sequence

import numpy as np

from ais_jax.errors import UserInputError

SCHEMA_VERSION = 1
SUMMARY_FILE = "summary.json"
IMAGES_FILE = "images.txt"
# Files an AIS run may write; on --overwrite the ones the new run does not write are removed, so
# an old feature_maps.npy is never mistaken for the new run's.
KNOWN_ARRAYS = ("per_image_ais", "cohort_ais", "embeddings", "heatmaps", "feature_maps")


def sha256_file(path: str, *, chunk: int = 1 << 20) -> str:
  """Hex sha256 of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(chunk), b""):
      digest.update(block)
  return digest.hexdigest()


def check_out_dir(out_dir: str, *, overwrite: bool = False) -> None:
  """Refuses (UserInputError) an out folder that is a file, or exists non-empty without overwrite.

  Call it before any expensive work so a run is not wasted on an unwritable destination.
  """
  out_dir = os.fspath(out_dir)
  if not out_dir:
    raise UserInputError("--out", "no output folder given")
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise UserInputError(out_dir, "exists and is not a folder; choose another --out")
  if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
    raise UserInputError(out_dir, "output folder exists and is not empty; choose another --out "
                         "or pass --overwrite to replace the run in it")


def jsonable(value: Any) -> Any:
  """Converts numpy scalars/arrays, tuples and non-finite floats to strict-JSON values.

  NaN and infinities become None (strict JSON has no NaN).
  """
  if isinstance(value, Mapping):
    return {str(k): jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return jsonable(value.tolist())
  if isinstance(value, np.generic):
    return jsonable(value.item())
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, (str, int, bool)) or value is None:
    return value
  return str(value)


def _atomic_write(out_dir: str, name: str, write) -> None:
  fd, tmp = tempfile.mkstemp(prefix=f".{name}.tmp-", dir=out_dir)
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, os.path.join(out_dir, name))
  except BaseException:
    try:
      os.remove(tmp)
    except OSError:
      pass
    raise


def write_run(out_dir: str, arrays: Mapping[str, Any], summary: Mapping[str, Any], *,
              image_names: Sequence[str] | None = None, overwrite: bool = False) -> dict:
  """Writes a run folder atomically, file by file.

  Args:
    out_dir: the folder (created if missing).
    arrays: name -> array, written as ``<name>.npy`` with its dtype as given (the caller fixes
      dtypes, e.g. per_image_ais float64 ``[n, K]``).
    summary: JSON-ready dict (numpy values and NaN are converted; NaN -> null). ``schema_version``
      and ``files`` (name -> {shape, dtype, sha256}) are added.
    image_names: written to ``images.txt``, one per line, when given.
    overwrite: allow replacing the files of an existing non-empty folder.

  Returns:
    The summary as written.

  Raises:
    UserInputError if the folder exists non-empty and ``overwrite`` is False (nothing is touched).
  """
  out_dir = os.fspath(out_dir)
  check_out_dir(out_dir, overwrite=overwrite)
  os.makedirs(out_dir, exist_ok=True)
  summary_path = os.path.join(out_dir, SUMMARY_FILE)
  # The old summary goes first: from here until the new one lands the folder is not a completed
  # run, so a half-replaced folder cannot be read as one.
  if os.path.exists(summary_path):
    os.remove(summary_path)
  files = {}
  for name, array in arrays.items():
    array = np.asarray(array)
    if array.dtype == object:
      raise TypeError(f"array {name!r} has dtype object; only numeric arrays are written")
    digest = hashlib.sha256()

    def write_npy(f, array=array, digest=digest):
      np.save(_HashingWriter(f, digest), array, allow_pickle=False)

    _atomic_write(out_dir, f"{name}.npy", write_npy)
    files[f"{name}.npy"] = {"shape": list(array.shape), "dtype": str(array.dtype),
                            "sha256": digest.hexdigest()}
  if image_names is not None:
    text = "".join(f"{n}\n" for n in image_names).encode("utf-8")
    _atomic_write(out_dir, IMAGES_FILE, lambda f: f.write(text))
    files[IMAGES_FILE] = {"lines": len(image_names), "sha256": hashlib.sha256(text).hexdigest()}
  for stale in KNOWN_ARRAYS:
    if f"{stale}.npy" not in files and os.path.exists(os.path.join(out_dir, f"{stale}.npy")):
      os.remove(os.path.join(out_dir, f"{stale}.npy"))
  record = {"schema_version": SCHEMA_VERSION, **jsonable(dict(summary)), "files": files}
  payload = json.dumps(record, indent=2, allow_nan=False, sort_keys=False).encode("utf-8") + b"\n"
  _atomic_write(out_dir, SUMMARY_FILE, lambda f: f.write(payload))
  return record


class _HashingWriter:
  """File-like wrapper that hashes what np.save writes (no second read of large arrays)."""

  def __init__(self, f, digest):
    self._f, self._digest = f, digest

  def write(self, data):
    self._digest.update(data)
    return self._f.write(data)

  def flush(self):
    self._f.flush()


def load_run(run_dir: str, *, mmap: bool = False) -> dict:
  """Reads a run folder written by :func:`write_run`.

  Args:
    run_dir: the folder.
    mmap: memory-map the arrays (read-only) instead of reading them.

  Returns:
    ``{<array name>: np.ndarray, ..., 'summary': dict, 'images': list[str]}`` (``images`` is
    empty if the run wrote no images.txt).

  Raises:
    UserInputError if the folder has no summary.json (not a completed run) or a listed file is
    missing.
  """
  run_dir = os.fspath(run_dir)
  summary_path = os.path.join(run_dir, SUMMARY_FILE)
  if not os.path.isfile(summary_path):
    raise UserInputError(run_dir, f"not a completed run: no {SUMMARY_FILE} (the run was "
                         "interrupted or this is not a run folder)")
  with open(summary_path, encoding="utf-8") as f:
    summary = json.load(f)
  out: dict[str, Any] = {"summary": summary, "images": []}
  for file_name in summary.get("files", {}):
    path = os.path.join(run_dir, file_name)
    if not os.path.isfile(path):
      raise UserInputError(run_dir, f"{file_name} is listed in {SUMMARY_FILE} but missing")
    if file_name.endswith(".npy"):
      out[file_name[:-4]] = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    elif file_name == IMAGES_FILE:
      with open(path, encoding="utf-8") as f:
        out["images"] = f.read().splitlines()
  return out
