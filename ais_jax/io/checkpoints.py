"""Checkpoint store: an orbax checkpoint of the variables plus a JSON provenance record.

Layout of one checkpoint directory::

    <directory>/
      provenance.json   arch, num_classes, source file + sha256, converter version,
                        preprocessing, creation time, ais_jax version, leaf shapes
      variables/        orbax StandardCheckpointer checkpoint of {'params': ..., 'batch_stats': ...}

The directory is written in a staging folder next to it and swapped in when complete
(``ais_jax.io.runs.staged_dir``), so a reader never sees a half-written checkpoint. Loading restores into the abstract (shape-only) tree of the
recorded architecture and checks every leaf's shape and dtype.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any, Mapping, Optional

import numpy as np

import ais_jax
from ais_jax.io import trees

__all__ = ["CHECKPOINT_FORMAT", "PROVENANCE_FILE", "VARIABLES_DIR", "is_checkpoint",
           "load_checkpoint", "read_provenance", "save_checkpoint"]

CHECKPOINT_FORMAT = 1
PROVENANCE_FILE = "provenance.json"
VARIABLES_DIR = "variables"
_REQUIRED = ("arch", "num_classes")
_flatten = trees.flatten


def _to_numpy_tree(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    path = f"{prefix}/{k}" if prefix else str(k)
    if isinstance(v, Mapping):
      out[k] = _to_numpy_tree(v, path)
    else:
      arr = np.asarray(v)
      if arr.dtype != np.float32:
        raise ValueError(f"variable {path} has dtype {arr.dtype}; checkpoints hold float32 "
                         "leaves (convert with convert.core, which casts to float32)")
      out[k] = arr
  return out


def is_checkpoint(directory: str | os.PathLike) -> bool:
  """True if ``directory`` holds a provenance record and a variables checkpoint."""
  d = os.fspath(directory)
  return (os.path.isfile(os.path.join(d, PROVENANCE_FILE)) and
          os.path.isdir(os.path.join(d, VARIABLES_DIR)))


def save_checkpoint(directory: str | os.PathLike, variables: Mapping[str, Any],
                    provenance: Mapping[str, Any], *, overwrite: bool = False) -> str:
  """Writes ``variables`` and ``provenance`` atomically into ``directory``.

  Args:
    directory: the checkpoint directory to create.
    variables: nested dicts ``{'params': ..., 'batch_stats': ...}`` of float32 arrays.
    provenance: JSON-serialisable record; must contain 'arch' and 'num_classes'. Usual keys:
      'source_file', 'source_sha256', 'converter_version', 'normalization', 'resize',
      'input_size', 'weights_name'. 'created', 'ais_jax_version', 'checkpoint_format' and
      'shapes' are added here.
    overwrite: replace an existing checkpoint at ``directory`` (otherwise FileExistsError).

  Returns:
    The absolute path of the checkpoint directory.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  missing = [k for k in _REQUIRED if k not in provenance]
  if missing:
    raise ValueError(f"provenance lacks {missing}; it must record at least {list(_REQUIRED)}")
  directory = os.path.abspath(os.fspath(directory))
  if os.path.exists(directory) and not overwrite:
    raise FileExistsError(f"{directory} already exists; pass overwrite=True (--overwrite) or "
                          "choose another directory")
  tree = _to_numpy_tree(variables)
  record = dict(provenance)
  record.update({
      "checkpoint_format": CHECKPOINT_FORMAT,
      "ais_jax_version": ais_jax.__version__,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "shapes": {p: list(a.shape) for p, a in sorted(_flatten(tree).items())},
  })
  text = json.dumps(record, indent=2, sort_keys=True)  # fails early if not serialisable

  from ais_jax.io import runs  # pylint: disable=g-import-not-at-top
  # Built beside ``directory`` and swapped in whole (an old checkpoint survives any failure, and a
  # killed writer's leftovers are removed by the next save).
  with runs.staged_dir(directory, overwrite=True, input_name="--dst") as tmp:
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(os.path.join(tmp, VARIABLES_DIR), tree)
      checkpointer.wait_until_finished()
    with open(os.path.join(tmp, PROVENANCE_FILE), "w") as f:
      f.write(text + "\n")
    _follow_umask(tmp)
  return directory


def _follow_umask(root: str) -> None:
  """Gives every folder and file under ``root`` the mode the umask gives new ones."""
  from ais_jax.io import runs  # pylint: disable=g-import-not-at-top
  dir_mode, file_mode = runs.umask_mode(0o777), runs.umask_mode(0o666)
  for folder, _, names in os.walk(root):
    os.chmod(folder, dir_mode)
    for name in names:
      os.chmod(os.path.join(folder, name), file_mode)


def read_provenance(directory: str | os.PathLike) -> dict:
  """The provenance record of a checkpoint directory (clear error if it is not one)."""
  d = os.fspath(directory)
  path = os.path.join(d, PROVENANCE_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{d} is not an ais_jax checkpoint (no {PROVENANCE_FILE}); create one with "
        "`python -m convert.torch_to_flax` or `python -m convert.fetch`")
  with open(path) as f:
    try:
      record = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON: {e}") from e
  missing = [k for k in _REQUIRED if k not in record]
  if missing:
    raise ValueError(f"{path} lacks {missing}; re-create the checkpoint")
  return record


def load_checkpoint(directory: str | os.PathLike, *, expected_arch: Optional[str] = None
                    ) -> tuple[dict, dict]:
  """Restores a checkpoint written by :func:`save_checkpoint`.

  Args:
    directory: the checkpoint directory.
    expected_arch: if given, the recorded architecture must be this one.

  Returns:
    ``(variables, provenance)``: nested dicts of float32 numpy arrays with exactly the tree of
    ``ais_jax.models.abstract_variables(get(arch), num_classes)``, and the provenance record.

  Raises:
    ValueError: architecture mismatch, or a stored leaf whose shape/dtype differs from the model.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from ais_jax import models  # pylint: disable=g-import-not-at-top
  directory = os.path.abspath(os.fspath(directory))
  record = read_provenance(directory)
  arch = record["arch"]
  if expected_arch is not None and arch != expected_arch:
    raise ValueError(f"{directory} holds weights for {arch!r}, but {expected_arch!r} was "
                     "requested; pick the matching --weights or --arch")
  spec = models.get(arch)
  abstract = models.abstract_variables(spec, record["num_classes"])
  variables_dir = os.path.join(directory, VARIABLES_DIR)
  if not os.path.isdir(variables_dir):
    raise FileNotFoundError(f"{directory}: {VARIABLES_DIR}/ is missing (incomplete checkpoint)")
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      restored = checkpointer.restore(variables_dir, abstract)
  except Exception as e:  # pylint: disable=broad-except
    # orbax/tensorstore report damage as ValueError, FileNotFoundError, JSON or tensorstore
    # errors whose text can run to thousands of characters (a full tensorstore spec).
    cause = " ".join(str(e).split())
    cause = cause[:200] + (" ..." if len(cause) > 200 else "")
    raise ValueError(f"{directory}: cannot restore the stored variables of {arch!r} "
                     f"(num_classes={record['num_classes']}): the checkpoint is damaged or "
                     f"incomplete ({type(e).__name__}: {cause}); create it again with "
                     "`python -m convert.torch_to_flax --overwrite` or `python -m convert.fetch "
                     "--force`") from None
  # orbax restores a ShapeDtypeStruct target at the stored shape without complaint; check here.
  want = _flatten(abstract)
  got = _flatten(restored)
  problems = [f"{p}: stored {tuple(np.shape(got.get(p)))} {getattr(got.get(p), 'dtype', None)}, "
              f"model {tuple(w.shape)} {w.dtype}"
              for p, w in sorted(want.items())
              if p not in got or tuple(np.shape(got[p])) != tuple(w.shape) or
              np.asarray(got[p]).dtype != w.dtype]
  if problems or set(got) != set(want):
    extra = sorted(set(got) - set(want))
    raise ValueError(f"{directory}: stored variables do not match {arch!r} "
                     f"(num_classes={record['num_classes']}): " +
                     "; ".join(problems[:10] + [f"unexpected {p}" for p in extra[:10]]))
  variables = _to_numpy_tree(restored)
  return variables, record
