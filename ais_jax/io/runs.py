"""Run folders: the files an AIS run writes, written atomically, and read back.

A run folder holds one ``<name>.npy`` per array, ``images.txt`` (the image order, one name per
line) and ``summary.json``. ``summary.json`` is written last and lists the files of the run with
their sha256: a folder without it is not a completed run, and :func:`load_run` reads (and by
default verifies) exactly the files it lists.

Replacing a run is a swap, never delete-then-write (:func:`staged_dir`): the new run is built in a
temporary sibling folder ``.<name>.staging-<pid>-<random>`` and exchanged with the old one only
when it is complete, so the old run survives any failure, Ctrl-C or kill. Temporaries left by a
killed writer (its pid no longer runs) are removed by the next writer of the same folder; a live
writer's are never touched. Files and folders get the modes the umask gives (0644/0755 under the
usual 022), not the 0600/0700 of ``tempfile``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import math
import os
import shutil
import socket
import tempfile
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ais_jax.errors import UserInputError

SCHEMA_VERSION = 1
SUMMARY_FILE = "summary.json"
IMAGES_FILE = "images.txt"
# Files an AIS run may write (a replaced run is swapped out whole, so an old feature_maps.npy is
# never mistaken for the new run's).
KNOWN_ARRAYS = ("per_image_ais", "cohort_ais", "embeddings", "heatmaps", "feature_maps")
# A non-empty folder is replaced (--overwrite) only if it holds one of these ais_jax outputs: run
# folders and reports (summary.json), checkpoints (provenance.json), selection runs (cv.json),
# sweep cells (cell.json). Anything else (a home folder, a typo'd --out=.) is refused.
REPLACEABLE_MARKERS = (SUMMARY_FILE, "provenance.json", "cv.json", "cell.json")


def sha256_file(path: str, *, chunk: int = 1 << 20) -> str:
  """Hex sha256 of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(chunk), b""):
      digest.update(block)
  return digest.hexdigest()


def check_out_dir(out_dir: str, *, overwrite: bool = False, input_name: str = "--out") -> None:
  """Refuses (UserInputError) an out folder that cannot become the run's folder.

  Refused: an empty name, a path that is a file, a non-empty folder without ``overwrite`` or
  (even with it) holding none of :data:`REPLACEABLE_MARKERS` (not an ais_jax output), and a
  folder whose parent cannot be created or written (the swap of :func:`staged_dir` needs to create
  a sibling folder there; tested by creating and removing a probe folder). Nothing is left
  behind. Call it before any expensive work so a run is not
  wasted on an unwritable destination.
  """
  out_dir = os.fspath(out_dir)
  if not out_dir:
    raise UserInputError(input_name, "no output folder given")
  if "\0" in out_dir:
    raise UserInputError(input_name, "the path contains a NUL character")
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise UserInputError(out_dir, "exists and is not a folder; choose another "
                         f"{input_name}")
  if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
    raise UserInputError(out_dir, "output folder exists and is not empty; choose another "
                         f"{input_name} or pass --overwrite to replace the run in it")
  if (os.path.isdir(out_dir) and os.listdir(out_dir) and
      not any(os.path.exists(os.path.join(out_dir, m)) for m in REPLACEABLE_MARKERS)):
    raise UserInputError(out_dir, f"is not empty and holds no ais_jax output (none of "
                         f"{', '.join(REPLACEABLE_MARKERS)}); --overwrite replaces a whole run "
                         f"folder, so choose an empty or new {input_name}")
  # The nearest existing ancestor of the parent must be a writable folder.
  parent = os.path.dirname(os.path.abspath(out_dir))
  probe = parent
  while not os.path.lexists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise UserInputError(out_dir, f"cannot be created: {probe} is not a folder; choose another "
                         f"{input_name}")
  try:  # A real probe: os.access says yes to root on read-only file systems.
    os.rmdir(tempfile.mkdtemp(prefix=".ais_jax-probe-", dir=probe))
  except OSError as e:
    raise UserInputError(out_dir, f"cannot be created: {probe} is not writable ({e.strerror}); "
                         f"choose another {input_name}") from None
  if len(os.path.basename(os.path.abspath(out_dir)).encode()) > 200:
    raise UserInputError(out_dir, "the folder name is too long (over 200 bytes); choose a "
                         f"shorter {input_name}")


# ------------------------------------------------------------------------------------------------
# Replace-by-swap

_STAGING = ".staging-"
_LOCK_FILE = ".ais_jax_writer"
_SWAPPED_OUT = "previous"


def umask_mode(base: int = 0o666) -> int:
  """``base`` masked by the process umask (0o666 -> 0o644 under umask 022)."""
  mask = os.umask(0)
  os.umask(mask)
  return base & ~mask


def _process_start(pid: int) -> str | None:
  """The kernel's start time of a process (field 22 of /proc/PID/stat), None where unknown."""
  try:
    with open(f"/proc/{pid}/stat", "rb") as f:
      stat = f.read().decode("ascii", "replace")
    return stat[stat.rindex(")") + 2:].split()[19]
  except (OSError, ValueError, IndexError):
    return None


def _writer_alive(lock: dict) -> bool:
  """Whether the writer recorded in a lock may still run (unknown counts as alive)."""
  if lock.get("host") != socket.gethostname():
    return True  # Another machine's writer (shared file system): never touched.
  try:
    pid = int(lock["pid"])
  except (KeyError, TypeError, ValueError):
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except OSError:  # EPERM: it exists (another user's process).
    return True
  recorded = lock.get("start")
  current = _process_start(pid)
  return recorded is None or current is None or recorded == current  # Else: a reused pid.


def _read_lock(folder: str) -> dict | None:
  try:
    with open(os.path.join(folder, _LOCK_FILE), encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _staging_pid(name: str, base: str) -> int | None:
  """The writer pid encoded in a staging folder name ``.<base>.staging-<pid>-<random>``."""
  prefix = f".{base}{_STAGING}"
  if not name.startswith(prefix):
    return None
  head = name[len(prefix):].split("-", 1)[0]
  return int(head) if head.isdigit() else None


def clean_stale(out_dir: str) -> list[str]:
  """Removes the staging folders that killed writers left beside ``out_dir``; returns them.

  A staging folder is stale when the writer recorded in its lock file (pid, host, process start
  time) no longer runs on this host. A live writer's folder, another host's, or one whose
  writer cannot be told are kept. If ``out_dir`` itself is missing and a stale folder holds a
  complete run that was being swapped out (a kill between the two renames of the fallback swap),
  that run is put back instead of being removed.
  """
  out_dir = os.path.abspath(os.fspath(out_dir))
  parent, base = os.path.split(out_dir)
  removed = []
  try:
    names = os.listdir(parent)
  except OSError:
    return removed
  for name in sorted(names):
    pid = _staging_pid(name, base)
    if pid is None:
      continue
    path = os.path.join(parent, name)
    lock = _read_lock(path)
    if lock is None:
      # The lock is written right after the folder is created; without one, judge by the pid in
      # the name (a folder just created by a live writer keeps its pid alive).
      lock = {"pid": pid, "host": socket.gethostname(), "start": None}
    if _writer_alive(lock):
      continue
    if (lock.get("swapped_out") and not os.path.lexists(out_dir) and
        os.path.isdir(os.path.join(path, _SWAPPED_OUT))):
      os.rename(os.path.join(path, _SWAPPED_OUT), out_dir)
    shutil.rmtree(path, ignore_errors=True)
    removed.append(path)
  return removed


def _write_lock(folder: str, **extra) -> None:
  lock = {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid()),
          **extra}
  with open(os.path.join(folder, _LOCK_FILE), "w", encoding="utf-8") as f:
    json.dump(lock, f)


_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
  """Atomically swaps two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = libc.renameat2
  except (OSError, AttributeError):
    return False
  at_fdcwd = -100
  result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
  if result == 0:
    return True
  err = ctypes.get_errno()
  if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
    return False
  raise OSError(err, os.strerror(err), a)


def _swap_in(staging: str, out_dir: str) -> None:
  """Puts the complete ``staging`` folder at ``out_dir``; the old ``out_dir`` is then removed."""
  if not os.path.lexists(out_dir):
    os.rename(staging, out_dir)
    return
  if _exchange(staging, out_dir):
    # ``staging`` now holds the old run (or the old symbolic link); it is named with this
    # process's pid, so if we are killed during the removal the next writer finishes it.
    if os.path.islink(staging):
      os.remove(staging)
    else:
      shutil.rmtree(staging, ignore_errors=True)
    return
  # Fallback: two renames. The old run first moves into a staging folder marked "swapped_out",
  # so a kill between the renames lets the next writer put it back (:func:`clean_stale`).
  parent, base = os.path.split(out_dir)
  old = tempfile.mkdtemp(prefix=f".{base}{_STAGING}{os.getpid()}-", dir=parent)
  _write_lock(old, swapped_out=True)
  os.rename(out_dir, os.path.join(old, _SWAPPED_OUT))
  os.rename(staging, out_dir)
  shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(out_dir: str, *, overwrite: bool = False,
               input_name: str = "--out") -> Iterator[str]:
  """Builds a folder's new contents beside it and swaps them in only when complete.

  ::

      with staged_dir("runs/planted", overwrite=True) as work:
          ...write every file of the new run under ``work``...
      # Here runs/planted is the new run. Had the block raised (or been interrupted, or the
      # process killed), runs/planted would still be exactly the old run.

  Steps: (1) refuse, before anything is created, what :func:`check_out_dir` refuses; (2) remove
  stale staging folders of killed writers (:func:`clean_stale`); (3) create the staging folder
  ``.<name>.staging-<pid>-<random>`` next to ``out_dir`` (mode from the umask) with a lock file
  (pid, host, process start time); (4) yield its path; (5) on normal exit drop the lock and swap
  it with ``out_dir`` (one atomic ``renameat2(RENAME_EXCHANGE)`` on Linux, else two renames
  recoverable by the next writer), then remove the old contents. On an exception (including
  KeyboardInterrupt) the staging folder is removed and folders created for it are removed again;
  ``out_dir`` is untouched.

  The caller writes only inside the yielded folder and must not record that path (write paths
  relative to the run, or ``out_dir``). Used by :func:`write_run`, the main job and per cell by
  resumable sweeps.

  Args:
    out_dir: the final folder (need not exist).
    overwrite: allow replacing an existing non-empty ``out_dir``.
    input_name: how the user named it, for error messages (``--out``, ``--dst``).

  Yields:
    The absolute path of the staging folder (empty apart from the hidden lock file).

  Raises:
    UserInputError as :func:`check_out_dir`, before anything is created.
  """
  out_dir = os.path.abspath(os.fspath(out_dir))
  check_out_dir(out_dir, overwrite=overwrite, input_name=input_name)
  parent, base = os.path.split(out_dir)
  created = []
  probe = parent
  while not os.path.isdir(probe):
    created.append(probe)
    probe = os.path.dirname(probe)
  staging = None
  try:
    os.makedirs(parent, mode=umask_mode(0o777), exist_ok=True)
    clean_stale(out_dir)
    staging = tempfile.mkdtemp(prefix=f".{base}{_STAGING}{os.getpid()}-", dir=parent)
    os.chmod(staging, umask_mode(0o777))
    _write_lock(staging)
    yield staging
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
      raise UserInputError(out_dir, f"became a file during the run; the new run is not "
                           f"written; choose another {input_name}")
    os.remove(os.path.join(staging, _LOCK_FILE))
    _swap_in(staging, out_dir)
    staging = None
  except BaseException:
    if staging is not None:
      shutil.rmtree(staging, ignore_errors=True)
    for folder in created:  # Innermost first; only if still empty.
      try:
        os.rmdir(folder)
      except OSError:
        break
    raise


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
  """Writes ``out_dir/name`` through a temporary file and ``os.replace`` (mode from the umask)."""
  fd, tmp = tempfile.mkstemp(prefix=f".{name}.tmp-", dir=out_dir)
  try:
    os.fchmod(fd, umask_mode())
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
              image_names: Sequence[str] | None = None, overwrite: bool = False,
              extra_files: Callable[[str], Sequence[str]] | None = None) -> dict:
  """Writes a run folder: built beside it and swapped in complete (:func:`staged_dir`).

  Args:
    out_dir: the folder (created if missing).
    arrays: name -> array, written as ``<name>.npy`` with its dtype as given (the caller fixes
      dtypes, e.g. per_image_ais float64 ``[n, K]``).
    summary: JSON-ready dict (numpy values and NaN are converted; NaN -> null). ``schema_version``
      and ``files`` (name -> {shape, dtype, sha256}) are added.
    image_names: written to ``images.txt``, one per line, when given.
    overwrite: allow replacing an existing non-empty folder (the whole folder is replaced by the
      new run, only once the new run is complete).
    extra_files: optional ``write(folder) -> relative paths``: writes more files (figures,
      tables) into the staging folder before summary.json; they are listed in ``files`` with their
      sha256 and swapped in with the run (an error there leaves ``out_dir`` untouched).

  Returns:
    The summary as written.

  Raises:
    UserInputError if the folder exists non-empty and ``overwrite`` is False, or cannot be
    created (nothing is touched).
  """
  for name, array in arrays.items():
    if np.asarray(array).dtype == object:
      raise TypeError(f"array {name!r} has dtype object; only numeric arrays are written")
  with staged_dir(out_dir, overwrite=overwrite) as work:
    files = {}
    for name, array in arrays.items():
      array = np.asarray(array)
      digest = hashlib.sha256()

      def write_npy(f, array=array, digest=digest):
        np.save(_HashingWriter(f, digest), array, allow_pickle=False)

      _atomic_write(work, f"{name}.npy", write_npy)
      files[f"{name}.npy"] = {"shape": list(array.shape), "dtype": str(array.dtype),
                              "sha256": digest.hexdigest()}
    if image_names is not None:
      text = "".join(f"{n}\n" for n in image_names).encode("utf-8")
      _atomic_write(work, IMAGES_FILE, lambda f: f.write(text))
      files[IMAGES_FILE] = {"lines": len(image_names), "sha256": hashlib.sha256(text).hexdigest()}
    if extra_files is not None:
      for relative in extra_files(work):
        path = os.path.join(work, relative)
        files[os.path.relpath(path, work)] = {"bytes": os.path.getsize(path),
                                              "sha256": sha256_file(path)}
    record = {"schema_version": SCHEMA_VERSION, **jsonable(dict(summary)), "files": files}
    payload = json.dumps(record, indent=2, allow_nan=False,
                         sort_keys=False).encode("utf-8") + b"\n"
    _atomic_write(work, SUMMARY_FILE, lambda f: f.write(payload))
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


def load_run(run_dir: str, *, mmap: bool = False, verify: bool = True) -> dict:
  """Reads a run folder written by :func:`write_run`.

  Args:
    run_dir: the folder.
    mmap: memory-map the arrays (read-only) instead of reading them.
    verify: check every listed file against the sha256 that summary.json records (an edited or
      damaged file is an error); False skips the check (large runs read often).

  Returns:
    ``{<array name>: np.ndarray, ..., 'summary': dict, 'images': list[str]}`` (``images`` is
    empty if the run wrote no images.txt).

  Raises:
    UserInputError naming the folder and the file: no summary.json (not a completed run), an
    unreadable summary, a listed file missing, outside the folder, unreadable, or (with
    ``verify``) whose sha256 differs from the recorded one.
  """
  run_dir = os.fspath(run_dir)
  summary_path = os.path.join(run_dir, SUMMARY_FILE)
  if not os.path.isfile(summary_path):
    raise UserInputError(run_dir, f"not a completed run: no {SUMMARY_FILE} (the run was "
                         "interrupted or this is not a run folder)")
  try:
    with open(summary_path, encoding="utf-8") as f:
      summary = json.load(f)
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise UserInputError(summary_path, f"cannot be read as JSON ({type(e).__name__}: "
                         f"{str(e)[:200]}); the run folder is damaged, run it again") from None
  files = summary.get("files", {}) if isinstance(summary, dict) else None
  if not isinstance(files, dict):
    raise UserInputError(summary_path, "has no 'files' record; it was not written by ais_jax "
                         "(run it again)")
  out: dict[str, Any] = {"summary": summary, "images": []}
  root = os.path.abspath(run_dir)
  for file_name, record in files.items():
    path = os.path.abspath(os.path.join(root, file_name))
    if not path.startswith(root + os.sep):
      raise UserInputError(run_dir, f"{SUMMARY_FILE} lists {file_name!r}, which is outside the "
                           "run folder; the summary was edited, run it again")
    if not os.path.isfile(path):
      raise UserInputError(run_dir, f"{file_name} is listed in {SUMMARY_FILE} but missing")
    want = record.get("sha256") if isinstance(record, dict) else None
    if verify and want is not None and sha256_file(path) != want:
      raise UserInputError(run_dir, f"{file_name} does not match the sha256 recorded in "
                           f"{SUMMARY_FILE} (edited or damaged after the run); run it again, or "
                           "load_run(..., verify=False) to read it anyway")
    if file_name.endswith(".npy"):
      try:
        out[file_name[:-4]] = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
      except (OSError, ValueError, EOFError) as e:
        raise UserInputError(run_dir, f"{file_name} cannot be read as a .npy array "
                             f"({type(e).__name__}: {str(e)[:200]})") from None
    elif file_name == IMAGES_FILE:
      try:
        with open(path, encoding="utf-8") as f:
          out["images"] = f.read().splitlines()
      except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(run_dir, f"{file_name} cannot be read ({e})") from None
  return out
