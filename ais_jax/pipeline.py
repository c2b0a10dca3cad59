"""One AIS run end to end: inputs -> trunk in batches -> AIS engine -> heatmaps -> run folder.

The library function behind ``python -m experiments.ais`` and ``experiments.run``:

    run = run_ais(weights='efficientnet_lite0_imagenet', images='/data/k92.npy',
                  human='/data/k92_sim.npy', out='/tmp/k92_run')

Stages, each timed and reported in ``summary.json``:

1. weights: ``ais_jax.io.weights.load_weights`` (a registry name or a checkpoint directory).
   Random weights are refused: AIS of an untrained network says nothing about human judgments.
2. images (``ais_jax.io.images``) and the human matrix (``ais_jax.io.human``, checked against the
   number of images), then resizing to the model's input by its rule.
3. trunk (:func:`trunk_maps`): ``module.apply(variables, x, method='trunk')`` jitted once per
   model, ``batch_size`` images per call; the last batch is zero-padded to the same shape so the
   trunk compiles once. Maps come back to the host as float32 ``[n, h, w, K]``; the head's
   classifier logits of the baseline embedding too (:func:`head_logits`).
4. AIS: ``ais_jax.ais.compute_ais`` with ``spec.get_ablation_head(variables)``.
5. heatmaps: ``ais_jax.heatmaps.heatmaps`` (AIS-weighted maps at map resolution).
6. ``ais_jax.io.runs.write_run`` (atomic, refuses a non-empty folder without ``overwrite``).

Errors in the user's inputs raise :class:`ais_jax.errors.UserInputError` naming the input.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import os
import time
import warnings
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from ais_jax.errors import UserInputError
from ais_jax.io import environment as environment_lib
from ais_jax.io import images as images_io
from ais_jax.io import runs

SIMILARITIES = ("pearson", "spearman", "cosine")
COMPARISONS = ("pearson", "spearman")
COHORT_SCORES = ("r", "r2")
PRECISIONS = ("exact", "float32", "fast")
HUMAN_KINDS = ("similarity", "dissimilarity")


@dataclasses.dataclass
class AisRun:
  """What one run produced (the arrays are also in ``out`` when it was given).

  Attributes:
    per_image_ais: float64 ``[n, K]`` (NaN where undefined).
    cohort_ais: float64 ``[K]``.
    embeddings: float32 ``[n, D]``.
    heatmaps: float32 ``[n, h, w]``.
    feature_maps: float32 ``[n, h, w, K]``.
    image_names: n names, in the order of the rows.
    summary: the summary record (as written to summary.json when ``out`` was given).
    out: the run folder, or None.
    logits: float32 ``[n, C]`` classifier logits of the baseline embedding (all maps kept), or
      None when the model has no classifier.
  """
  per_image_ais: np.ndarray
  cohort_ais: np.ndarray
  embeddings: np.ndarray
  heatmaps: np.ndarray
  feature_maps: np.ndarray
  image_names: list
  summary: dict
  out: Optional[str] = None
  logits: Optional[np.ndarray] = None


def _check_choice(flag: str, value, choices) -> None:
  if value not in choices:
    raise UserInputError(flag, f"{value!r} is not one of {', '.join(choices)}")


def _check_options(*, similarity, comparison, cohort_score, precision, human_kind, batch_size,
                   memory_budget_gb) -> None:
  _check_choice("--similarity", similarity, SIMILARITIES)
  _check_choice("--comparison", comparison, COMPARISONS)
  _check_choice("--cohort_score", cohort_score, COHORT_SCORES)
  _check_choice("--precision", precision, PRECISIONS)
  if human_kind is not None:  # None: not stated (validation.check_human_kind).
    _check_choice("--human_kind", human_kind, HUMAN_KINDS)
  if cohort_score == "r2" and comparison != "pearson":
    raise UserInputError("--cohort_score", "r2 (squared Pearson r) needs --comparison=pearson; "
                         "Spearman agreement has no r^2 variant, use --cohort_score=r")
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise UserInputError("--batch_size", f"must be a positive integer, got {batch_size!r}")
  if not memory_budget_gb or memory_budget_gb <= 0:
    raise UserInputError("--memory_budget_gb", f"must be positive, got {memory_budget_gb!r}")


def sha256_array(array: np.ndarray) -> str:
  """sha256 of an array's dtype, shape and bytes (C order): equal arrays, equal digests."""
  digest = hashlib.sha256(f"{array.dtype.str}{list(array.shape)}".encode())
  digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()


def _require_weights(weights) -> None:
  if isinstance(weights, tuple) or weights:
    return
  try:
    from weights import registry
    known = ", ".join(registry.names())
  except Exception:  # The registry only improves this message.
    known = "see weights/registry.py"
  raise UserInputError("--weights", "required: a registered name (" + known + ") or a "
                       "checkpoint directory from `python -m convert.torch_to_flax`; random "
                       "weights are not allowed (AIS of an untrained network says nothing "
                       "about human judgments)")


def load_model(weights, arch: Optional[str] = None, *, kind: str = "embedding"):
  """Loads trained weights and builds their module.

  Args:
    weights: a registry name or a checkpoint directory (``--weights``), or an already loaded
      ``(spec, variables, provenance)`` or ``(spec, variables, provenance, module)`` tuple.
    arch: if given, must match the weights' architecture (``--arch``).
    kind: the kind of model the caller needs ('embedding' for AIS; 'saliency' for TranSalNet):
      weights of another kind are refused.

  Returns:
    ``(spec, variables, provenance, module)``: the model spec (with the checkpoint's
    preprocessing when it records one), the variables, the provenance record (a new dict; its
    ``checkpoint_dir`` is the directory the weights were read from, when read from disk) and the
    flax module built for the checkpoint's number of classes.

  Raises:
    UserInputError naming ``--weights`` or ``--arch`` when they are missing, unknown or disagree.
  """
  from ais_jax import models
  if arch:
    try:
      models.get(arch)
    except ValueError as e:
      raise UserInputError("--arch", str(e)) from None
  module = None
  if isinstance(weights, tuple):  # Already loaded by the caller.
    if len(weights) == 4:
      spec, variables, provenance, module = weights
    else:
      spec, variables, provenance = weights
    provenance = dict(provenance)
  else:
    _require_weights(weights)
    from ais_jax.io import weights as weights_io
    try:
      spec, variables, provenance = weights_io.load_weights(weights)
      provenance = dict(provenance, checkpoint_dir=weights_io.resolve(weights))
    except (ValueError, FileNotFoundError, KeyError, OSError) as e:
      message = str(e).strip().strip("'\"")
      if "--weights" in message:
        raise UserInputError(None, message) from None
      raise UserInputError(f"--weights {weights}", message) from None
  if spec.kind != kind:
    label = weights if not isinstance(weights, tuple) else spec.name
    problem = f"holds a {spec.kind} model ({spec.name}), not a model of kind {kind!r}"
    if kind == "embedding":
      problem += ("; AIS needs a CNN with a trunk and a head (e.g. efficientnet_lite0_imagenet); "
                  "saliency models go to experiments.saliency --saliency_weights")
    raise UserInputError(f"--weights {label}", problem)
  if arch and arch != spec.name:
    label = weights if not isinstance(weights, tuple) else (
        provenance.get("weights_name") or "the given weights")
    raise UserInputError("--arch", f"{arch!r} does not match --weights {label}, which holds "
                         f"weights for {spec.name!r}; use --arch={spec.name} or other weights")
  # The checkpoint records the preprocessing its weights were trained with; it wins.
  overrides = {k: provenance[k] for k in ("normalization", "resize")
               if provenance.get(k) and provenance[k] != getattr(spec, k)}
  if overrides:
    spec = dataclasses.replace(spec, **overrides)
  if module is None:
    module = spec.build(num_classes=provenance.get("num_classes", spec.num_classes))
  return spec, variables, provenance, module


def _describe_images(images, image_list, names, loaded=None) -> dict:
  if isinstance(images, (str, os.PathLike)) and os.fspath(images).startswith(
      images_io.TFDS_PREFIX):
    record = {"path": os.fspath(images), "kind": "tfds",
              "sha256": _describe_images(loaded, None, names)["sha256"]}
  elif isinstance(images, (str, os.PathLike)):
    path = os.fspath(images)
    if os.path.isdir(path):
      per_file = [{"name": n, "sha256": runs.sha256_file(os.path.join(path, n))} for n in names]
      combined = hashlib.sha256("".join(f"{f['name']}\0{f['sha256']}\n" for f in per_file)
                                .encode()).hexdigest()
      record = {"path": os.path.abspath(path), "kind": "directory", "sha256": combined,
                "sha256_of": "name NUL file-sha256 newline, per image in order",
                "files": per_file}
    else:
      record = {"path": os.path.abspath(path), "kind": "npy", "sha256": runs.sha256_file(path)}
  else:
    if isinstance(images, np.ndarray):
      digest = sha256_array(images)
    else:  # A list of differently sized images: hash of the per-image hashes.
      digest = hashlib.sha256("".join(sha256_array(np.asarray(im)) + "\n" for im in images)
                              .encode()).hexdigest()
    record = {"path": None, "kind": "array", "sha256": digest}
  if image_list:
    record["image_list"] = {"path": os.path.abspath(image_list),
                            "sha256": runs.sha256_file(image_list)}
  return record


@functools.lru_cache(maxsize=16)
def _jitted_apply(module, method: str):
  """``module.apply(variables, x, method=method)`` jitted, built once per (equal) module.

  Flax modules are hashable dataclasses, so every call with the same architecture (and number of
  classes) reuses one jitted function, whose compiled code jax caches per input shape: with the
  fixed batch shape of :func:`trunk_maps` a model compiles its trunk once per process.
  """
  import jax
  return jax.jit(functools.partial(module.apply, method=method))


def trunk_batches(spec, module, variables, images_uint8, *, batch_size: int = 32,
                  progress: Optional[Callable[[str], None]] = None,
                  timings: Optional[dict] = None):
  """Feature maps of the ablated layer, one fixed-shape batch at a time (a generator).

  Args: as :func:`trunk_maps`; ``images_uint8`` may be any sliceable ``[n, H, W, 3]`` uint8 (an
  array, or :class:`NpyImages` reading a .npy file a batch at a time).

  Yields:
    ``(start, maps)``: float32 ``[b, h, w, K]`` host maps of images ``start .. start + b - 1``.
    One batch is in flight on the device while the previous one is handed out, so at most two
    batches of maps exist at once.
  """
  import jax
  report = progress or (lambda message: None)
  timings = {} if timings is None else timings
  n = len(images_uint8)
  if n == 0 or len(images_uint8.shape) != 4:
    raise ValueError(f"images_uint8 must be [n, H, W, 3] with n >= 1; got shape "
                     f"{list(images_uint8.shape)}")
  trunk = _jitted_apply(module, "trunk")
  device_variables = jax.device_put(variables)
  size = min(batch_size, n)
  num_batches = -(-n // size)
  start = time.perf_counter()
  pending = None  # (start index, count, device array)

  def collect(item):
    i0, count, maps = item
    maps = np.asarray(maps, np.float32)[:count]
    report(f"trunk: {i0 + count}/{n} images (batch {i0 // size + 1}/{num_batches}, "
           f"{time.perf_counter() - start:.1f} s)")
    return i0, maps

  for b in range(num_batches):
    i0 = b * size
    chunk = np.asarray(images_uint8[i0:i0 + size])
    count = chunk.shape[0]
    x = np.asarray(spec.preprocess(chunk.astype(np.float32)), np.float32)
    if count < size:
      x = np.concatenate([x, np.zeros((size - count,) + x.shape[1:], np.float32)])
    maps = trunk(device_variables, x)
    if pending is not None:
      yield collect(pending)
    pending = (i0, count, maps)
    if b == 0:
      jax.block_until_ready(maps)
      timings["trunk_first_batch_incl_compile"] = time.perf_counter() - start
  yield collect(pending)
  timings["trunk"] = time.perf_counter() - start


def trunk_maps(spec, module, variables, images_uint8: np.ndarray, *, batch_size: int = 32,
               progress: Optional[Callable[[str], None]] = None,
               timings: Optional[dict] = None) -> np.ndarray:
  """Feature maps of the ablated layer for a cohort, in fixed-shape batches.

  Args:
    spec: the model spec (its ``preprocess`` is applied on the host).
    module: the flax module (``load_model``'s fourth value).
    variables: the module's variables.
    images_uint8: uint8 ``[n, H, W, 3]`` already at the model's input size
      (``ais_jax.io.images.fit_to_model``).
    batch_size: images per trunk call; the last batch is zero-padded to this size (or to n when
      smaller) so the trunk compiles once.
    progress: receives one line per batch (None: silent).
    timings: if given, receives ``trunk_first_batch_incl_compile`` and ``trunk`` (seconds).

  Returns:
    float32 ``[n, h, w, K]`` on the host.
  """
  images_uint8 = np.asarray(images_uint8)
  out = None
  for i0, maps in trunk_batches(spec, module, variables, images_uint8, batch_size=batch_size,
                                progress=progress, timings=timings):
    if out is None:
      out = np.empty((images_uint8.shape[0],) + maps.shape[1:], np.float32)
    out[i0:i0 + maps.shape[0]] = maps
  return out


# ----------------------------------------------------------------------------------------------
# Memory: planning from the budget, streaming the maps


class NpyImages:
  """A uint8 ``[n, H, W, 3]`` .npy file read a slice at a time with plain reads (no memory map,
  whose touched pages would count in the resident memory): ``len``, ``shape``, ``[i:j]``."""

  def __init__(self, path: str):
    self.path = os.fspath(path)
    with open(self.path, "rb") as f:
      major, _ = np.lib.format.read_magic(f)
      read_header = (np.lib.format.read_array_header_1_0 if major == 1
                     else np.lib.format.read_array_header_2_0)
      shape, fortran, dtype = read_header(f)
      self.offset = f.tell()
    if fortran or dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3:
      raise UserInputError(self.path, f"expected a C-order uint8 [n, H, W, 3] array, got "
                           f"{dtype} {list(shape)}")
    self.shape = tuple(int(v) for v in shape)
    self.dtype = np.dtype(np.uint8)

  def __len__(self):
    return self.shape[0]

  def __getitem__(self, index):
    if not isinstance(index, slice) or index.step not in (None, 1):
      raise TypeError("NpyImages supports contiguous slices only")
    start, stop, _ = index.indices(self.shape[0])
    per = int(np.prod(self.shape[1:]))
    with open(self.path, "rb") as f:
      data = np.fromfile(f, np.uint8, count=max(stop - start, 0) * per,
                         offset=self.offset + start * per)
    return data.reshape((-1,) + self.shape[1:])


class MapStore:
  """Feature maps spilled to a raw float32 file batch by batch, read back a batch at a time
  (plain reads: the maps are never all in memory). ``read(i0, i1) -> [i1 - i0, h, w, K]``."""

  def __init__(self, folder: str, map_shape):
    os.makedirs(folder, exist_ok=True)
    self.path = os.path.join(folder, "feature_maps.f32")
    self.map_shape = tuple(map_shape)
    self.count = 0
    self._file = open(self.path, "wb")

  def append(self, maps: np.ndarray):
    np.ascontiguousarray(maps, np.float32).tofile(self._file)
    self.count += maps.shape[0]

  def close(self):
    self._file.close()

  def memmap(self) -> np.ndarray:
    """The whole store as a read-only memory map ``[n, h, w, K]`` (for writing it out)."""
    return np.memmap(self.path, np.float32, "r", shape=(self.count,) + self.map_shape)

  def remove(self):
    import shutil
    shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)

  def read(self, i0: int, i1: int) -> np.ndarray:
    per = int(np.prod(self.map_shape))
    with open(self.path, "rb") as f:
      data = np.fromfile(f, np.float32, count=(i1 - i0) * per, offset=i0 * per * 4)
    return data.reshape((-1,) + self.map_shape)


def _big_npy(path: str, memory_budget_gb: float) -> bool:
  """True when a .npy image file takes more than a tenth of the budget (then it is streamed)."""
  return os.path.getsize(path) > 0.1 * memory_budget_gb * 2**30


def current_rss_bytes() -> int:
  """Resident memory of this process now (Linux /proc; 0 where unknown)."""
  return _proc_status("VmRSS")


def peak_rss_bytes() -> int:
  """Peak resident memory of this process so far (VmHWM, or getrusage)."""
  peak = _proc_status("VmHWM")
  if not peak:
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  return peak


def _proc_status(key: str) -> int:
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(key + ":"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return 0


# Host + XLA bytes per input pixel of one image in a trunk batch (activations of the widest layers,
# measured order of magnitude for the registered CNNs at 224 px; a planning constant).
TRUNK_BYTES_PER_INPUT_VALUE = 96
# What compiling the trunk leaves resident (XLA's programs and allocator pools), measured 0.27-0.3
# GB for Lite0 at 224 px: without it, n = 500 at a 1 GB budget kept a 23-image batch and peaked
# at 1.03 GB.
TRUNK_COMPILE_BYTES = int(0.3 * 2**30)


def plan_memory(*, n: int, map_shape, input_shape, head, batch_size: int,
                memory_budget_gb: float, runtime_bytes: int, similarity: str = "pearson",
                comparison: str = "pearson") -> dict:
  """How a run fits ``memory_budget_gb`` (the whole process's resident memory).

  The budget left after the runtime (JAX, the model, the inputs already read: ``runtime_bytes``)
  is split: the trunk batch (the requested one unless it would take over half, or a quarter when
  streaming), the feature maps kept whole only when they take at most a quarter (else spilled to disk batch by batch, and the AIS engine gets what it needs:
  pooled float64 embeddings for pooled heads, 2x2 max-pooled maps for fc heads), the AIS engine's
  chunks the rest.

  Args:
    n: images. map_shape: ``(h, w, K)``. input_shape: ``(H, W, 3)``. head: the ablation head.
    batch_size: requested trunk batch. memory_budget_gb: the budget. runtime_bytes: RSS now.
    similarity, comparison: the AIS options (whether the engine can split one map's n x n
      matrices into row blocks: pooled heads, Pearson or cosine similarity, Pearson agreement).

  Returns:
    A dict for summary.json: ``budget_gb, runtime_gb, free_gb, maps_gb, keep_maps,
    engine_input_gb, trunk_batch, engine_budget_gb, engine_one_map_gb, engine_row_blocks`` and
    ``fits`` (False when
    even one map per engine chunk exceeds the budget: the run goes on, and a warning says so).
  """
  from ais_jax.ablation import FcHead, PooledHead
  gib = 2.0 ** 30
  h, w, k = (int(v) for v in map_shape)
  budget = memory_budget_gb * gib
  free = max(budget - runtime_bytes, 0.1 * budget)
  maps_bytes = n * h * w * k * 4
  streamable = isinstance(head, (PooledHead, FcHead))
  keep_maps = not streamable or maps_bytes <= free / 4
  if keep_maps:
    engine_input = maps_bytes
  elif isinstance(head, PooledHead):
    engine_input = n * k * 8
  else:
    engine_input = n * (h // head.pool_window) * (w // head.pool_window) * k * 4
  per_image = TRUNK_BYTES_PER_INPUT_VALUE * int(np.prod(input_shape))
  # The requested batch unless it would take over half of what is free (a quarter when streaming);
  # with the maps kept, half of what the maps and the trunk's compilation leave.
  if keep_maps:
    trunk_free = max(free - maps_bytes - TRUNK_COMPILE_BYTES, 0.1 * budget) / 2
  else:
    trunk_free = free / 4
  trunk_batch = int(max(1, min(batch_size, trunk_free // per_image)))
  engine_budget = max(free - engine_input - min(maps_bytes, free / 4) - trunk_batch * per_image,
                      0.05 * budget) / 2
  # The engine's floor. Whole matrices: one map per chunk, its n x n rows and cohort matrices
  # (measured: n = 2,000, Lite0, float64, 0.53 GB over the runtime = 17 n^2 doubles). Row blocks
  # (the pooled rank-one path with Pearson agreement, ais.compute_ais' row_block): the Gram and
  # human matrices and their host copies (measured ~4 n^2 doubles at n = 5,000).
  from ais_jax import precision as precision_mod
  blocks = (isinstance(head, PooledHead) and similarity in ("pearson", "cosine")
            and comparison == "pearson" and precision_mod.float64_enabled())
  one_map = (4 if blocks else 17) * n * n * 8
  return {"budget_gb": memory_budget_gb, "runtime_gb": runtime_bytes / gib, "free_gb": free / gib,
          "maps_gb": maps_bytes / gib, "keep_maps": bool(keep_maps),
          "engine_input_gb": engine_input / gib, "trunk_batch": trunk_batch,
          "engine_budget_gb": engine_budget / gib, "engine_one_map_gb": one_map / gib,
          "engine_row_blocks": bool(blocks),
          "fits": bool(runtime_bytes + engine_input + one_map <= budget)}


def engine_maps(head, maps: np.ndarray, precision: str):
  """What the AIS engine needs of a batch of maps when the maps are not kept: pooled heads the
  embedding as ``[b, 1, 1, K]`` (float64 where the engine runs in float64: the same values as
  pooling inside the engine), fc heads the max-pooled maps (the head then pools with window 1)."""
  from ais_jax import precision as precision_mod
  from ais_jax.ablation import FcHead, PooledHead
  if isinstance(head, PooledHead):
    dtype = np.float64 if precision_mod.float64_enabled() else np.float32
    return np.mean(maps, axis=(1, 2), dtype=dtype, keepdims=True)
  if isinstance(head, FcHead):
    from ais_jax import ablation
    return np.asarray(ablation.max_pool(maps, head.pool_window))
  raise TypeError(f"{type(head).__name__}: maps cannot be reduced; keep them")


def map_shape(module, variables, input_shape):
  """``(h, w, K)`` of the trunk's maps for one ``input_shape`` image (shape inference only)."""
  import jax
  x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), np.float32)
  out = jax.eval_shape(functools.partial(module.apply, method="trunk"), variables, x)
  return tuple(int(v) for v in out.shape[1:])


def _streamed_trunk(spec, module, variables, images, head, memory, shape_maps, precision, report,
                    timings):
  """Trunk in batches with the maps spilled to a :class:`MapStore`: ``(None, store, engine input,
  logits)``; in memory at once: one batch of maps and the engine's reduced input."""
  import tempfile
  store = MapStore(tempfile.mkdtemp(prefix="ais_jax_maps_"), shape_maps)
  reduced, logits = [], []
  for _, batch in trunk_batches(spec, module, variables, images, batch_size=memory["trunk_batch"],
                                progress=report, timings=timings):
    store.append(batch)
    reduced.append(engine_maps(head, batch, precision))
    logits.append(head_logits(module, variables, batch, batch_size=memory["trunk_batch"]))
  store.close()
  logits = None if logits[0] is None else np.concatenate(logits)
  return None, store, np.concatenate(reduced), logits


def engine_head(head, keep_maps: bool):
  """The head matching :func:`engine_maps` (fc: max-pool window 1 on pre-pooled maps)."""
  from ais_jax.ablation import FcHead
  if keep_maps or not isinstance(head, FcHead):
    return head
  return head.replace(pool_window=1)


def head_logits(module, variables, maps: np.ndarray, *,
                batch_size: int = 32) -> Optional[np.ndarray]:
  """Classifier logits of the baseline embedding (all maps kept), in fixed-shape batches.

  Args:
    module: the flax module; its ``head(maps)`` returns ``(embedding, logits)``.
    variables: the module's variables.
    maps: float32 ``[n, h, w, K]`` (``trunk_maps``).
    batch_size: maps per head call (the last batch is zero-padded).

  Returns:
    float32 ``[n, C]``, or None when the head has no classifier (it returns no logits).
  """
  import jax
  head = _jitted_apply(module, "head")
  maps = np.asarray(maps, np.float32)
  n = maps.shape[0]
  size = min(batch_size, n)
  parts = []
  for i0 in range(0, n, size):
    chunk = maps[i0:i0 + size]
    count = chunk.shape[0]
    if count < size:
      chunk = np.concatenate([chunk, np.zeros((size - count,) + chunk.shape[1:], np.float32)])
    logits = head(variables, chunk)[1]
    if logits is None:
      return None
    parts.append(np.asarray(jax.device_get(logits), np.float32)[:count])
  return np.concatenate(parts)


def run_ais(*, weights, images, human, out: Optional[str] = None, arch: Optional[str] = None,
            image_list: Optional[str] = None, image_names: Optional[Sequence[str]] = None,
            tfds_data_dir: Optional[str] = None, human_labels: Optional[str] = None,
            human_key: Optional[str] = None, human_kind: Optional[str] = None,
            similarity: str = "pearson", comparison: str = "pearson", cohort_score: str = "r",
            precision: str = "exact", batch_size: int = 32, memory_budget_gb: float = 2.0,
            save_feature_maps: bool = False, overwrite: bool = False,
            trunk_cache=None, extra_files=None,
            progress: Optional[Callable[[str], None]] = None,
            flags: Optional[Mapping[str, Any]] = None,
            command: Optional[Sequence[str]] = None) -> AisRun:
  """Computes per-image and cohort AIS and heatmaps for a cohort, and writes a run folder.

  Args:
    weights: a registry name or a checkpoint directory (``--weights``), or an already loaded
      ``(spec, variables, provenance[, module])`` tuple (:func:`load_model`).
    images: a directory of images or a ``.npy`` path (``--images``), or uint8 ``[n, H, W, 3]``
      (or a list of uint8 ``[H_i, W_i, 3]``).
    human: ``.npy``/``.csv``/``.mat`` path (``--human``) or a ``[n, n]`` similarity array.
    out: run folder (None: nothing is written).
    arch: if given, must match the weights' architecture.
    image_list: order file for a directory of images.
    image_names: names for in-memory images (default ``'0'``, ``'1'``, ...).
    tfds_data_dir: tfds' data_dir for ``images='tfds:NAME[:SPLIT][:COUNT]'``.
    human_labels: text file naming the rows of a ``.npy``/``.mat`` ``human`` (a labelled
      ``.csv`` names its own): the matrix is reordered to the image order
      (:func:`ais_jax.io.human.load_human_labelled`).
    human_key: ``.mat`` variable name.
    human_kind: 'similarity' or 'dissimilarity' (negated); None: not stated (used as similarity,
      refused if its diagonal says dissimilarity; a stated kind the diagonal contradicts is
      recorded in the summary's warnings).
    similarity: 'pearson' | 'spearman' | 'cosine' (model similarity between embeddings).
    comparison: 'pearson' | 'spearman' (agreement with the human matrix).
    cohort_score: 'r' | 'r2' (cohort AIS on r or on squared Pearson r).
    precision: 'exact' | 'float32' | 'fast' (DESIGN.md section 3).
    batch_size: images per trunk call.
    memory_budget_gb: bounds the AIS stage's chunks.
    save_feature_maps: also write ``feature_maps.npy`` ``[n, h, w, K]``.
    overwrite: replace the files of a non-empty ``out``.
    trunk_cache: an ``ais_jax.io.activation_cache.ActivationCache`` (``--cache``): the trunk
      maps are read from it when cached, stored in it otherwise (None: the trunk always runs).
    extra_files: optional ``write(folder, run) -> relative paths`` (``run`` the
      :class:`AisRun`): more files (overlays, tables) written into the run folder before it is
      swapped in and listed in summary.json, so a failure there loses nothing (``out`` only).
    progress: receives one line per step (None: silent).
    flags: the command-line flags, recorded in the summary (default: the options above).
    command: the command line, recorded in the summary.

  Returns:
    :class:`AisRun`.

  Raises:
    UserInputError naming the input when an input or option is wrong.
  """
  report = progress or (lambda message: None)
  t_start = time.perf_counter()
  started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  options = dict(similarity=similarity, comparison=comparison, cohort_score=cohort_score,
                 precision=precision, batch_size=batch_size, memory_budget_gb=memory_budget_gb,
                 save_feature_maps=save_feature_maps, human_kind=human_kind)
  _check_options(**{k: v for k, v in options.items() if k != "save_feature_maps"})
  _require_weights(weights)
  from ais_jax import distributed
  if out is not None:  # Before any expensive work; process 0 only, its failure ends all.
    distributed.primary_first(lambda: runs.check_out_dir(out, overwrite=overwrite))
  timings: dict[str, Any] = {}
  run_warnings: list[str] = []

  t = time.perf_counter()
  if isinstance(images, (str, os.PathLike)):
    if not os.fspath(images):
      raise UserInputError("--images", "required: a directory of images or a .npy uint8 array "
                           "[n, H, W, 3]")
    if (os.fspath(images).lower().endswith(".npy") and not image_list
        and os.path.isfile(os.fspath(images)) and _big_npy(os.fspath(images), memory_budget_gb)):
      # Read a batch at a time (issue 15: bounded memory); needs no resizing (checked below).
      loaded = NpyImages(os.fspath(images))
      names = [f"{os.path.basename(os.fspath(images))}[{i}]" for i in range(len(loaded))]
    else:
      loaded, names = images_io.load_images(images, image_list=image_list,
                                            tfds_data_dir=tfds_data_dir)
  else:
    if image_list:
      raise UserInputError("--image_list", "only applies to a directory of images")
    loaded = images if isinstance(images, list) else np.asarray(images)
    if isinstance(loaded, np.ndarray) and (loaded.dtype != np.uint8 or loaded.ndim != 4
                                           or loaded.shape[-1] != 3):
      raise UserInputError("images", f"expected uint8 [n, H, W, 3], got {loaded.dtype} "
                           f"{list(loaded.shape)}")
    names = list(image_names) if image_names is not None else [str(i) for i in range(len(loaded))]
  n = len(loaded)
  images_record = _describe_images(images, image_list, names, loaded)
  if len(names) != n:
    raise UserInputError("image_names", f"{len(names)} names for {n} images")
  timings["load_images"] = time.perf_counter() - t
  report(f"images: {n} loaded in {timings['load_images']:.1f} s")

  t = time.perf_counter()
  if isinstance(human, (str, os.PathLike)):
    if not os.fspath(human):
      raise UserInputError("--human", "required: a .npy, .csv or .mat similarity matrix [n, n] "
                           "in the image order")
    from ais_jax.io import human as human_io
    labelled = human_io.load_human_labelled(human, key=human_key, kind=human_kind, n_images=n,
                                            image_names=names, labels=human_labels or None)
    human_matrix = labelled.matrix
    human_record = {"path": os.path.abspath(os.fspath(human)), "sha256": runs.sha256_file(human),
                    "key": human_key, "kind": human_kind, "labels": labelled.labels,
                    "labels_file": os.path.abspath(human_labels) if human_labels else None,
                    "reordered_to_image_order": labelled.reordered}
  else:
    from ais_jax import validation
    matrix = np.asarray(human, np.float64)
    matrix = -matrix if human_kind == "dissimilarity" else matrix
    try:
      human_matrix = validation.validate_human_similarity(matrix, n, name="human",
                                                          kind_stated=human_kind is not None)
    except ValueError as e:
      raise UserInputError(None, str(e)) from None
    human_record = {"path": None, "sha256": sha256_array(np.asarray(human)), "key": None,
                    "kind": human_kind}
  human_record["missing_pairs"] = int(np.isnan(human_matrix[np.triu_indices(n, 1)]).sum())
  if human_kind is not None:  # Stated, but the diagonal says the other kind: recorded.
    from ais_jax import validation
    kind_note = validation.check_human_kind(human_matrix, kind_stated=True,
                                            name=os.fspath(human) if isinstance(
                                                human, (str, os.PathLike)) else "human")
    if kind_note:
      run_warnings.append(kind_note)
      human_record["kind_warning"] = kind_note
  timings["load_human"] = time.perf_counter() - t

  t = time.perf_counter()
  spec, variables, provenance, module = load_model(weights, arch)
  checkpoint_dir = provenance.get("checkpoint_dir")
  timings["load_weights"] = time.perf_counter() - t
  report(f"weights: {spec.name} ({provenance.get('weights_name') or checkpoint_dir or 'in memory'})"
         f" in {timings['load_weights']:.1f} s")

  t = time.perf_counter()
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    if isinstance(loaded, NpyImages) and loaded.shape[1:3] == (spec.input_size,) * 2:
      resized = loaded
    else:
      resized = images_io.fit_to_model(
          np.asarray(loaded[:]) if isinstance(loaded, NpyImages) else loaded, spec, names=names)
  for w in caught:
    run_warnings.append(str(w.message))
    warnings.warn(str(w.message), w.category, stacklevel=2)
  del loaded
  timings["resize"] = time.perf_counter() - t
  report(f"images: resized to {resized.shape[1]}x{resized.shape[2]} ({spec.resize}) in "
         f"{timings['resize']:.1f} s")

  # Activation cache (issue 14): trunk_maps runs only when the cache misses or is off.
  from ais_jax.io import activation_cache
  # Memory plan (issue 15): the maps are kept whole only when they fit the budget.
  head = spec.get_ablation_head(variables)
  shape_maps = map_shape(module, variables, resized.shape[1:])
  memory = plan_memory(n=n, map_shape=shape_maps, input_shape=resized.shape[1:], head=head,
                       batch_size=batch_size, memory_budget_gb=float(memory_budget_gb),
                       runtime_bytes=current_rss_bytes(), similarity=similarity,
                       comparison=comparison)
  if not memory["fits"]:
    message = (f"--memory_budget_gb={memory_budget_gb}: the AIS engine needs about "
               f"{memory['engine_one_map_gb']:.2f} GB for one map at n = {n} on top of "
               f"{memory['runtime_gb']:.2f} GB already in use; the run goes on above the budget")
    run_warnings.append(message)
    warnings.warn(message, UserWarning, stacklevel=2)
  h, w, k = shape_maps
  store = None
  if memory["keep_maps"]:
    maps = activation_cache.cached_trunk_maps(
        spec, module, variables, resized[:] if isinstance(resized, NpyImages) else resized,
        cache=trunk_cache, precision=precision,
        batch_size=memory["trunk_batch"], progress=report, timings=timings)
    t = time.perf_counter()
    logits = head_logits(module, variables, maps, batch_size=memory["trunk_batch"])
    timings["logits"] = time.perf_counter() - t
    ais_maps = maps
  else:
    maps, store, ais_maps, logits = _streamed_trunk(spec, module, variables, resized, head,
                                                    memory, shape_maps, precision, report,
                                                    timings)
  memory["peak_rss_gb_after_trunk"] = peak_rss_bytes() / 2**30

  report(f"ais: {n} images x {k} maps ({h}x{w}), precision {precision}"
         + ("" if store is None else " (maps streamed through a file)"))
  from ais_jax import ais
  mesh = distributed.global_mesh() if distributed.process_count() > 1 else None
  t = time.perf_counter()
  result = ais.compute_ais(engine_head(head, store is None), ais_maps, human_matrix,
                           similarity=similarity, comparison=comparison,
                           cohort_score=cohort_score, precision=precision,
                           memory_budget_gb=float(memory["engine_budget_gb"]), mesh=mesh)
  timings["ais"] = time.perf_counter() - t
  del ais_maps
  per_image = np.asarray(result.per_image, np.float64)
  cohort = np.asarray(result.cohort, np.float64)
  embeddings = np.asarray(result.embeddings, np.float32)
  from ais_jax import validation
  engine_undefined = dict(result.undefined or {})
  undefined = {
      "per_image_ais": validation.undefined_summary(per_image, ("image", "map")),
      "cohort_ais": validation.undefined_summary(cohort, ("map",)),
      "undefined_baseline_rows": engine_undefined.get("undefined_baseline_rows"),
      "baseline_undefined": engine_undefined.get("baseline_undefined"),
  }
  active = getattr(result, "active", None)
  report(f"ais: done in {timings['ais']:.1f} s; undefined: {undefined['per_image_ais']['count']}"
         f"/{per_image.size} per-image, {undefined['cohort_ais']['count']}/{cohort.size} cohort")

  from ais_jax import heatmaps as heatmaps_lib
  t = time.perf_counter()
  if store is None:
    heat = np.asarray(heatmaps_lib.heatmaps(maps, per_image), np.float32)
  else:
    step = memory["trunk_batch"]
    heat = np.concatenate([np.asarray(heatmaps_lib.heatmaps(store.read(i0, min(i0 + step, n)),
                                                            per_image[i0:i0 + step]), np.float32)
                           for i0 in range(0, n, step)])
  timings["heatmaps"] = time.perf_counter() - t
  memory["peak_rss_gb"] = peak_rss_bytes() / 2**30

  baseline_rows = np.asarray(result.baseline_rows, np.float64)
  summary = {
      "tool": "ais_jax.pipeline.run_ais",
      "command": list(command) if command is not None else None,
      "flags": dict(flags) if flags is not None else dict(options, arch=arch, out=out),
      "options": options,
      "model": spec.metadata(),
      "checkpoint": {"dir": checkpoint_dir,
                     **{k_: v for k_, v in provenance.items()
                        if k_ not in ("shapes", "checkpoint_dir")}},
      "inputs": {"images": images_record, "human": human_record},
      "counts": {"images": n, "maps": int(k), "map_size": [int(h), int(w)],
                 "embedding_dim": int(embeddings.shape[-1]),
                 "input_size": [int(resized.shape[1]), int(resized.shape[2])]},
      "results": {
          "baseline_agreement": float(result.baseline),
          "baseline_rows": baseline_rows,
          "inactive_image_map_pairs": (int((~np.asarray(active, bool)).sum())
                                       if active is not None else None),
          # Undefined maps are never "top" (all undefined: an empty list).
          "cohort_ais_top10_maps": [int(i) for i in np.argsort(-np.nan_to_num(cohort, nan=-np.inf),
                                                                 kind="stable")[:10]
                                    if np.isfinite(cohort[i])],
      },
      "undefined": undefined,
      "float64": bool(result.options.get("float64", True)),
      "memory_plan": memory,
      "distributed": {"processes": distributed.process_count(),
                      "mesh": dict(mesh.shape) if mesh is not None else None},
      "environment": environment_lib.environment(),
      "engine": {"options": dict(getattr(result, "options", None) or {}),
                 "timings_s": dict(result.timings or {})},
      "warnings": run_warnings,
      "started_at": started_at,
  }
  arrays = {"per_image_ais": per_image, "cohort_ais": cohort, "embeddings": embeddings,
            "heatmaps": heat}
  if save_feature_maps:
    arrays["feature_maps"] = maps if store is None else store.memmap()
  if out is not None and not distributed.is_primary():
    out = None  # Only process 0 writes the run folder.
  run = AisRun(per_image_ais=per_image, cohort_ais=cohort, embeddings=embeddings, heatmaps=heat,
               feature_maps=maps, image_names=list(names), summary=summary, out=out,
               logits=logits)
  if out is not None:
    t = time.perf_counter()
    summary["timings_s"] = dict(timings, total_before_write=time.perf_counter() - t_start)
    summary["finished_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds")
    run.summary = runs.write_run(
        out, arrays, summary, image_names=names, overwrite=overwrite,
        extra_files=None if extra_files is None else lambda folder: extra_files(folder, run))
    timings["write"] = time.perf_counter() - t
    report(f"wrote {out} ({len(run.summary['files'])} files) in {timings['write']:.1f} s; total "
           f"{time.perf_counter() - t_start:.1f} s")
  else:
    summary["timings_s"] = dict(timings, total=time.perf_counter() - t_start)
  if store is not None:
    store.remove()
  return run
