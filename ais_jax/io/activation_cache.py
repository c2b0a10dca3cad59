"""On-disk cache of trunk feature maps, so a second sweep or AIS run on the same images skips the
trunk.

An entry is the float32 maps ``[n, h, w, K]`` of one model on one image set, stored under
``$AIS_JAX_HOME/activations/<digest>/`` (``$AIS_JAX_ACTIVATIONS/<digest>/`` when that is set)
where ``digest`` is the sha256 of the canonical JSON of its key (:func:`make_key`):

* ``weights_sha256``: the model's variables (every leaf's path, dtype, shape and bytes;
  :func:`variables_sha256`), so a re-converted or different checkpoint misses;
* ``arch`` and ``preprocessing`` (normalisation, resize rule, input size);
* ``trunk_precision`` (the trunk's dtype and matmul precision) and the JAX backend;
* ``images_sha256``: the uint8 images the trunk sees (after resizing), in order
  (:func:`images_sha256`): a changed, added or reordered image misses;
* ``ais_jax_version`` and ``jax_version``/``jaxlib_version``: a new release misses.

Each entry holds ``maps.npy``, ``meta.json`` (the key, the sha256 of ``maps.npy``, its shape and
size) and ``last_used`` (an empty file whose modification time orders the least-recently-used
eviction). Entries are written into a temporary sibling folder and renamed into place, so a
reader never sees half an entry; every read checks the key recorded in ``meta.json`` and the
sha256 of ``maps.npy``, and a corrupt entry is deleted and counts as a miss.

    cache = ActivationCache(max_gb=10)
    maps = cached_trunk_maps(spec, module, variables, resized_images, cache=cache)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from typing import Any, Callable, Mapping, Optional

import numpy as np

CACHE_FORMAT = 1
MAPS_FILE = "maps.npy"
META_FILE = "meta.json"
LAST_USED_FILE = "last_used"
DEFAULT_MAX_GB = 10.0
_CHUNK = 1 << 20


ROOT_ENV = "AIS_JAX_ACTIVATIONS"


def default_root() -> str:
  """``$AIS_JAX_ACTIVATIONS`` if set (e.g. a scratch disk; the test suite sets a private one),
  else ``$AIS_JAX_HOME/activations`` (default ``~/.cache/ais_jax/activations``)."""
  if os.environ.get(ROOT_ENV):
    return os.path.abspath(os.path.expanduser(os.environ[ROOT_ENV]))
  from ais_jax.io import weights as weights_io
  return os.path.join(weights_io.cache_dir(), "activations")


# ----------------------------------------------------------------------------------------------
# Key


def _update_array(digest, array: np.ndarray) -> None:
  array = np.ascontiguousarray(array)
  digest.update(f"{array.dtype.str}{list(array.shape)}\0".encode())
  digest.update(memoryview(array).cast("B"))


def variables_sha256(variables: Mapping[str, Any]) -> str:
  """sha256 of a variables tree: every leaf's path, dtype, shape and bytes, paths sorted."""
  from ais_jax.io import trees
  digest = hashlib.sha256()
  for path, leaf in sorted(trees.flatten(variables).items()):
    digest.update(f"{path}\0".encode())
    _update_array(digest, np.asarray(leaf))
  return digest.hexdigest()


def images_sha256(images: Any) -> str:
  """sha256 of an image set in order: uint8 ``[n, H, W, 3]`` or a list of ``[H_i, W_i, 3]``."""
  digest = hashlib.sha256()
  if isinstance(images, np.ndarray):
    digest.update(b"array\0")
    _update_array(digest, images)
  else:
    digest.update(f"list{len(images)}\0".encode())
    for image in images:
      _update_array(digest, np.asarray(image))
  return digest.hexdigest()


def trunk_precision_name(precision: str = "exact") -> str:
  """The trunk's arithmetic for a precision mode, e.g. ``'float32/HIGHEST'`` (DESIGN.md s. 3)."""
  from ais_jax import precision as precision_lib
  return f"float32/{precision_lib.resolve(precision).trunk_precision.name}"


def make_key(*, weights_sha256: str, arch: str, preprocessing: Mapping[str, Any],
             trunk_precision: str, images_sha256: str) -> dict:
  """The cache key (a JSON-ready dict); the package, JAX and backend versions are added here."""
  import jax
  import jaxlib
  import ais_jax
  return {"cache_format": CACHE_FORMAT, "weights_sha256": weights_sha256, "arch": arch,
          "preprocessing": dict(preprocessing), "trunk_precision": trunk_precision,
          "images_sha256": images_sha256, "ais_jax_version": ais_jax.__version__,
          "jax_version": jax.__version__, "jaxlib_version": jaxlib.__version__,
          "backend": jax.default_backend()}


def model_key(spec, variables, images_uint8, *, precision: str = "exact",
              weights_sha256: Optional[str] = None) -> dict:
  """:func:`make_key` for a model spec, its variables and the resized uint8 images it sees."""
  preprocessing = {"normalization": spec.normalization, "resize": spec.resize,
                   "input_size": int(spec.input_size)}
  return make_key(weights_sha256=weights_sha256 or variables_sha256(variables), arch=spec.name,
                  preprocessing=preprocessing, trunk_precision=trunk_precision_name(precision),
                  images_sha256=images_sha256(images_uint8))


def key_digest(key: Mapping[str, Any]) -> str:
  """sha256 of the key's canonical JSON (sorted keys): the entry's folder name."""
  return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _sha256_file(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(_CHUNK), b""):
      digest.update(block)
  return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# Store


@dataclasses.dataclass(frozen=True)
class Entry:
  digest: str
  path: str
  size_bytes: int
  last_used: float


class ActivationCache:
  """Trunk maps on disk with a size bound (least recently used entries evicted).

  Args:
    root: the cache folder (default :func:`default_root`); created on first write.
    max_gb: bound on the total size of the entries in GiB (``--cache_max_gb``); an entry larger
      than the bound is not stored.
  """

  def __init__(self, root: Optional[str] = None, *, max_gb: float = DEFAULT_MAX_GB):
    if not max_gb or max_gb <= 0:
      from ais_jax.errors import UserInputError
      raise UserInputError("--cache_max_gb", f"must be positive, got {max_gb!r}")
    self.root = os.path.abspath(os.path.expanduser(root or default_root()))
    self.max_bytes = int(max_gb * 2**30)

  def entry_dir(self, key: Mapping[str, Any]) -> str:
    return os.path.join(self.root, key_digest(key))

  def entries(self) -> list[Entry]:
    """Complete entries, least recently used first."""
    out = []
    if not os.path.isdir(self.root):
      return out
    for name in os.listdir(self.root):
      path = os.path.join(self.root, name)
      if name.startswith(".") or not os.path.isfile(os.path.join(path, META_FILE)):
        continue
      try:
        size = sum(e.stat().st_size for e in os.scandir(path) if e.is_file())
        last_used = os.stat(os.path.join(path, LAST_USED_FILE)).st_mtime
      except FileNotFoundError:  # Evicted by another process meanwhile.
        continue
      out.append(Entry(name, path, size, last_used))
    return sorted(out, key=lambda e: (e.last_used, e.digest))

  def total_bytes(self) -> int:
    return sum(e.size_bytes for e in self.entries())

  def _drop(self, path: str, reason: str) -> None:
    warnings.warn(f"activation cache: {reason}; entry {path} removed, the maps are recomputed")
    shutil.rmtree(path, ignore_errors=True)

  def get(self, key: Mapping[str, Any]) -> Optional[np.ndarray]:
    """The cached maps for ``key``, or None (miss). Verifies the key and the file's sha256."""
    path = self.entry_dir(key)
    meta_path = os.path.join(path, META_FILE)
    maps_path = os.path.join(path, MAPS_FILE)
    try:
      with open(meta_path) as f:
        meta = json.load(f)
    except FileNotFoundError:
      return None
    except (OSError, json.JSONDecodeError) as e:
      self._drop(path, f"unreadable {META_FILE} ({e})")
      return None
    if meta.get("key") != json.loads(json.dumps(dict(key))):
      self._drop(path, "the recorded key differs from the requested one")
      return None
    try:
      digest = _sha256_file(maps_path)
    except FileNotFoundError:
      self._drop(path, f"{MAPS_FILE} is missing")
      return None
    if digest != meta.get("maps_sha256"):
      self._drop(path, f"{MAPS_FILE} has sha256 {digest}, recorded {meta.get('maps_sha256')}")
      return None
    maps = np.load(maps_path, allow_pickle=False)
    self._touch(path)
    return maps

  @staticmethod
  def _touch(path: str, when: Optional[float] = None) -> None:
    marker = os.path.join(path, LAST_USED_FILE)
    try:
      with open(marker, "a"):
        pass
      os.utime(marker, None if when is None else (when, when))
    except FileNotFoundError:  # Evicted meanwhile; nothing to mark.
      pass

  def put(self, key: Mapping[str, Any], maps: np.ndarray) -> Optional[str]:
    """Stores ``maps`` under ``key`` (atomically), then evicts least-recently-used entries until
    the total fits ``max_gb``. Returns the entry folder, or None when the maps alone exceed the
    bound (nothing stored)."""
    maps = np.ascontiguousarray(maps)
    if maps.nbytes > self.max_bytes:
      warnings.warn(f"activation cache: maps of {maps.nbytes / 2**30:.2f} GiB exceed the bound "
                    f"of {self.max_bytes / 2**30:.2f} GiB (--cache_max_gb); not cached")
      return None
    os.makedirs(self.root, exist_ok=True)
    final = self.entry_dir(key)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.tmp-", dir=self.root)
    try:
      maps_path = os.path.join(tmp, MAPS_FILE)
      with open(maps_path, "wb") as f:
        np.save(f, maps, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
      meta = {"key": dict(key), "maps_sha256": _sha256_file(maps_path),
              "shape": list(maps.shape), "dtype": maps.dtype.str, "bytes": int(maps.nbytes),
              "created": time.time()}
      with open(os.path.join(tmp, META_FILE), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
      self._touch(tmp)
      if os.path.isdir(final):  # A stale or corrupt entry under the same key: replace it.
        shutil.rmtree(final, ignore_errors=True)
      os.rename(tmp, final)
    except OSError:
      shutil.rmtree(tmp, ignore_errors=True)
      if os.path.isfile(os.path.join(final, META_FILE)):  # Another writer won the race.
        return final
      raise
    self.evict(keep=os.path.basename(final))
    return final

  def evict(self, *, keep: Optional[str] = None) -> list[str]:
    """Removes least-recently-used entries (never ``keep``) until the total fits the bound;
    returns the removed digests."""
    entries = self.entries()
    total = sum(e.size_bytes for e in entries)
    removed = []
    for entry in entries:
      if total <= self.max_bytes:
        break
      if entry.digest == keep:
        continue
      shutil.rmtree(entry.path, ignore_errors=True)
      total -= entry.size_bytes
      removed.append(entry.digest)
    return removed


def open_cache(enabled: bool, max_gb: float = DEFAULT_MAX_GB,
               root: Optional[str] = None) -> Optional[ActivationCache]:
  """An :class:`ActivationCache` for ``--cache``/``--cache_max_gb``, or None when disabled."""
  return ActivationCache(root, max_gb=max_gb) if enabled else None


def cached_trunk_maps(spec, module, variables, images_uint8: np.ndarray, *,
                      cache: Optional[ActivationCache], precision: str = "exact",
                      batch_size: int = 32, weights_sha256: Optional[str] = None,
                      progress: Optional[Callable[[str], None]] = None,
                      timings: Optional[dict] = None) -> np.ndarray:
  """``ais_jax.pipeline.trunk_maps`` through the cache (``cache=None``: always the trunk).

  Args:
    spec, module, variables: the model (``ais_jax.pipeline.load_model``).
    images_uint8: uint8 ``[n, H, W, 3]`` at the model's input size (``fit_to_model``).
    cache: the cache, or None to bypass it.
    precision: the run's precision mode (names the trunk's arithmetic in the key).
    weights_sha256: :func:`variables_sha256` of ``variables`` when the caller has it already.
    progress: receives one line per step.
    timings: if given, receives ``trunk`` (seconds) and ``trunk_cache`` ('hit' | 'miss' | 'off').

  Returns:
    float32 ``[n, h, w, K]``.
  """
  from ais_jax import pipeline
  report = progress or (lambda message: None)
  timings = {} if timings is None else timings
  if cache is None:
    timings["trunk_cache"] = "off"
    return pipeline.trunk_maps(spec, module, variables, images_uint8, batch_size=batch_size,
                               progress=progress, timings=timings)
  start = time.perf_counter()
  key = model_key(spec, variables, images_uint8, precision=precision,
                  weights_sha256=weights_sha256)
  maps = cache.get(key)
  if maps is not None:
    timings["trunk"] = time.perf_counter() - start
    timings["trunk_cache"] = "hit"
    report(f"trunk: {maps.shape[0]} images from the activation cache "
           f"({key_digest(key)[:12]}, {timings['trunk']:.1f} s)")
    return maps
  maps = pipeline.trunk_maps(spec, module, variables, images_uint8, batch_size=batch_size,
                             progress=progress, timings=timings)
  timings["trunk_cache"] = "miss"
  try:
    cache.put(key, maps)
  except OSError as e:  # A full or read-only cache must not fail the run.
    warnings.warn(f"activation cache: could not store the maps in {cache.root} ({e})")
  return maps

