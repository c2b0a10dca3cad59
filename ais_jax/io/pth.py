"""Reads PyTorch state dicts as numpy arrays without importing torch (and without running code).

Three file formats are understood:

* the zip format of ``torch.save`` (torch >= 1.6): ``<prefix>/data.pkl`` pickles the object,
  tensors refer to storages ``<prefix>/data/<key>`` through persistent ids
  ``('storage', storage_type, key, location, numel)``; ``<prefix>/byteorder`` says 'little' or
  'big' (absent in old files: little);
* the legacy format (torch < 1.6, ``_use_new_zipfile_serialization=False``): consecutive pickles
  magic number, protocol version, sys_info, the object (persistent ids
  ``('storage', storage_type, root_key, location, numel, view_metadata)``), the sorted list of
  storage keys, then each storage's raw little-endian bytes prefixed by its int64 element count;
* ``.safetensors``: an 8-byte little-endian header length, a JSON header
  ``{name: {dtype, shape, data_offsets: [begin, end]}}``, then the raw little-endian bytes.

Pickles are read by a restricted unpickler: the only globals it resolves are the handful a state
dict needs (``collections.OrderedDict``, ``torch._utils._rebuild_tensor*``/``_rebuild_parameter*``,
the ``torch.*Storage`` types, ``torch`` dtypes, ``torch.Size``), each mapped to a stand-in written
here; any other global raises :class:`UnsafeCheckpointError` before anything is called, so a
crafted pickle cannot run code.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import pickle
import zipfile
from typing import Any, Mapping

import ml_dtypes
import numpy as np

__all__ = ["CheckpointFormatError", "UnsafeCheckpointError", "load_state_dict"]

_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_LEGACY_PROTOCOL = 1001


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
  """The pickle refers to a global that a state dict never needs (it could run code)."""


class CheckpointFormatError(ValueError):
  """The file is not a readable state dict (truncated, corrupt, or not a state dict)."""


# torch storage class name -> numpy dtype. UntypedStorage holds bytes (used with
# _rebuild_tensor_v3, which names the tensor's dtype separately, e.g. float8 tensors).
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
    "UntypedStorage": np.dtype(np.uint8),
}

# torch dtype attribute name -> numpy dtype (globals such as `torch float32` in pickles).
_TORCH_DTYPES: dict[str, np.dtype] = {
    "float64": np.dtype(np.float64), "double": np.dtype(np.float64),
    "float32": np.dtype(np.float32), "float": np.dtype(np.float32),
    "float16": np.dtype(np.float16), "half": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
    "float8_e4m3fnuz": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "float8_e5m2fnuz": np.dtype(ml_dtypes.float8_e5m2fnuz),
    "int64": np.dtype(np.int64), "long": np.dtype(np.int64),
    "int32": np.dtype(np.int32), "int": np.dtype(np.int32),
    "int16": np.dtype(np.int16), "short": np.dtype(np.int16),
    "int8": np.dtype(np.int8), "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16), "uint32": np.dtype(np.uint32), "uint64": np.dtype(np.uint64),
    "bool": np.dtype(np.bool_),
    "complex64": np.dtype(np.complex64), "cfloat": np.dtype(np.complex64),
    "complex128": np.dtype(np.complex128), "cdouble": np.dtype(np.complex128),
}

_SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn), "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64), "I32": np.dtype(np.int32), "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8), "U64": np.dtype(np.uint64), "U32": np.dtype(np.uint32),
    "U16": np.dtype(np.uint16), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}


# ------------------------------------------------------------------------------------------------
# Stand-ins for the torch objects a state-dict pickle refers to.


@dataclasses.dataclass(frozen=True)
class _StorageType:
  """Stands in for a ``torch.XStorage`` class named in a persistent id."""
  name: str
  dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _TorchDType:
  """Stands in for a ``torch.<dtype>`` global (``_rebuild_tensor_v3``)."""
  name: str
  dtype: np.dtype


class _Storage:
  """One storage: ``numel`` elements of ``dtype``; its bytes may arrive after the pickle (legacy).

  A legacy view storage shares its root's bytes from element ``offset`` on.
  """

  def __init__(self, key: str, dtype: np.dtype, numel: int, root: "_Storage | None" = None,
               offset: int = 0):
    self.key, self.dtype, self.numel = key, dtype, numel
    self.root, self.offset = root, offset
    self.data: np.ndarray | None = None  # flat [numel] array of dtype, once read

  def array(self) -> np.ndarray:
    if self.root is not None:
      return self.root.array()[self.offset:self.offset + self.numel]
    if self.data is None:
      raise CheckpointFormatError(f"storage {self.key!r} is referenced but its data is missing")
    return self.data


@dataclasses.dataclass
class _TensorRef:
  """A tensor to build once all storages are read: a strided view of ``storage``."""
  storage: _Storage
  offset: int
  size: tuple[int, ...]
  stride: tuple[int, ...]
  dtype: np.dtype | None = None  # None: the storage's dtype (v3 names it explicitly)


def _check_metadata(metadata):
  if metadata and any(bool(v) for v in dict(metadata).values()):
    raise CheckpointFormatError(
        f"tensor with lazy conjugate/negative bits {dict(metadata)} is not supported; "
        "re-save it after calling .resolve_conj().resolve_neg()")


def _rebuild_tensor(storage, storage_offset, size, stride):
  return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size),
                    tuple(int(s) for s in stride))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       metadata=None):
  del requires_grad, backward_hooks
  _check_metadata(metadata)
  return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
  del requires_grad, backward_hooks
  _check_metadata(metadata)
  if not isinstance(dtype, _TorchDType):
    raise CheckpointFormatError(f"_rebuild_tensor_v3 got dtype {dtype!r}, expected a torch dtype")
  ref = _rebuild_tensor(storage, storage_offset, size, stride)
  ref.dtype = dtype.dtype
  return ref


def _rebuild_parameter(data, requires_grad, backward_hooks):
  del requires_grad, backward_hooks
  return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
  del requires_grad, backward_hooks, state
  return data


def _torch_size(*args):
  return tuple(*args)


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch", "Size"): _torch_size,
}
for _name, _dtype in _STORAGE_DTYPES.items():
  _ALLOWED_GLOBALS[("torch", _name)] = _StorageType(_name, _dtype)
  _ALLOWED_GLOBALS[("torch.storage", _name)] = _StorageType(_name, _dtype)
for _name, _dtype in _TORCH_DTYPES.items():
  _ALLOWED_GLOBALS[("torch", _name)] = _TorchDType(_name, _dtype)


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only the globals in ``_ALLOWED_GLOBALS``; storages through ``load_storage``."""

  def __init__(self, file, *, path: str, load_storage=None):
    super().__init__(file, encoding="utf-8")
    self._path = path
    self._load_storage = load_storage

  def find_class(self, module, name):
    if (module, name) in _ALLOWED_GLOBALS:
      return _ALLOWED_GLOBALS[(module, name)]
    raise UnsafeCheckpointError(
        f"{self._path}: refusing to load global '{module}.{name}': a state dict only needs "
        "tensors, storages and OrderedDict, and resolving other globals could run arbitrary "
        "code. If this file pickles a whole model or a training checkpoint, load it in a "
        "trusted PyTorch session and save just `model.state_dict()` (or use safetensors).")

  def persistent_load(self, pid):
    if self._load_storage is None:
      raise UnsafeCheckpointError(f"{self._path}: unexpected persistent id {pid!r} in a header "
                                  "pickle")
    if not isinstance(pid, tuple) or not pid:
      raise CheckpointFormatError(f"{self._path}: malformed persistent id {pid!r}")
    typename = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if typename != "storage":
      raise UnsafeCheckpointError(
          f"{self._path}: persistent id of kind {typename!r} (e.g. a pickled nn.Module class) is "
          "not part of a state dict; save `model.state_dict()` instead")
    return self._load_storage(pid[1:])


# ------------------------------------------------------------------------------------------------
# Building arrays.


def _swap_to_native(raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
  """Byte-swaps a flat array of big-endian ``dtype`` elements (complex: per component)."""
  unit = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
  if unit == 1:
    return raw
  return raw.view(np.dtype(f"u{unit}")).byteswap().view(dtype)


def _materialize(ref: _TensorRef, path: str) -> np.ndarray:
  base = ref.storage.array()
  dtype = ref.dtype if ref.dtype is not None else base.dtype
  if dtype != base.dtype:
    if base.dtype != np.uint8:
      raise CheckpointFormatError(f"{path}: a {base.dtype} storage read as {dtype}")
    usable = base.size - base.size % dtype.itemsize
    base = base[:usable].view(dtype)
  if len(ref.size) != len(ref.stride):
    raise CheckpointFormatError(f"{path}: tensor size {ref.size} and stride {ref.stride} differ "
                                "in length")
  if any(s < 0 for s in ref.size) or any(s < 0 for s in ref.stride) or ref.offset < 0:
    raise CheckpointFormatError(f"{path}: negative size/stride/offset in a tensor")
  if math.prod(ref.size) == 0:
    return np.zeros(ref.size, dtype)
  last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
  if last >= base.size:
    raise CheckpointFormatError(
        f"{path}: tensor (offset {ref.offset}, size {ref.size}, stride {ref.stride}) reaches "
        f"element {last} of a storage with {base.size} elements; the file is corrupt")
  view = np.lib.stride_tricks.as_strided(
      base[ref.offset:], shape=ref.size, strides=tuple(s * dtype.itemsize for s in ref.stride),
      writeable=False)
  return np.array(view, dtype=dtype, copy=True, order="C")


def _materialize_tree(obj, path: str):
  if isinstance(obj, _TensorRef):
    return _materialize(obj, path)
  if isinstance(obj, collections.OrderedDict):
    return collections.OrderedDict((k, _materialize_tree(v, path)) for k, v in obj.items())
  if isinstance(obj, dict):
    return {k: _materialize_tree(v, path) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_materialize_tree(v, path) for v in obj]
  if isinstance(obj, tuple):
    return tuple(_materialize_tree(v, path) for v in obj)
  if isinstance(obj, (_Storage, _StorageType, _TorchDType)):
    raise CheckpointFormatError(f"{path}: holds a bare torch storage/type, not a state dict")
  return obj


def _as_state_dict(obj, path: str) -> dict[str, np.ndarray]:
  """Unwraps ``{'state_dict': ...}`` and 'module.' prefixes; checks every value is a tensor."""
  from ais_jax.io.trees import strip_wrappers  # pylint: disable=g-import-not-at-top
  if not isinstance(obj, Mapping):
    raise CheckpointFormatError(
        f"{path}: holds a {type(obj).__name__}, not a state dict (a mapping from parameter names "
        "to tensors, as saved by torch.save(model.state_dict(), ...))")
  sd = strip_wrappers(obj)
  if not sd:
    raise CheckpointFormatError(f"{path}: the state dict is empty")
  bad = [f"{k!r} ({type(v).__name__})" for k, v in sd.items()
         if not isinstance(k, str) or not isinstance(v, np.ndarray)]
  if bad:
    raise CheckpointFormatError(
        f"{path}: not a state dict: {len(bad)} of {len(sd)} entries are not tensors with string "
        f"names: {', '.join(bad[:8])}{' ...' if len(bad) > 8 else ''}. Save only "
        "`model.state_dict()` (a training checkpoint may keep it under 'state_dict').")
  return dict(sd)


# ------------------------------------------------------------------------------------------------
# The three formats.


def _load_zip(path: str) -> Any:
  try:
    archive = zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError, EOFError) as e:
    raise CheckpointFormatError(f"{path}: not a readable zip archive (truncated or corrupt "
                                f"download?): {e}") from e
  with archive:
    pkl_names = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pkl_names) != 1:
      raise CheckpointFormatError(f"{path}: zip archive without exactly one '<prefix>/data.pkl' "
                                  f"record (found {pkl_names}); not a torch.save file")
    prefix = pkl_names[0][:-len("data.pkl")]
    names = set(archive.namelist())
    byteorder = "little"
    if prefix + "byteorder" in names:
      byteorder = archive.read(prefix + "byteorder").decode("ascii").strip()
      if byteorder not in ("little", "big"):
        raise CheckpointFormatError(f"{path}: unknown byteorder record {byteorder!r}")
    storages: dict[str, _Storage] = {}

    def load_storage(data):
      if len(data) != 4:
        raise CheckpointFormatError(f"{path}: malformed storage id {data!r}")
      storage_type, key, _, numel = data
      if not isinstance(storage_type, _StorageType):
        raise CheckpointFormatError(f"{path}: storage type {storage_type!r} is not a torch "
                                    "storage class")
      if key in storages:
        return storages[key]
      record = f"{prefix}data/{key}"
      if record not in names:
        raise CheckpointFormatError(f"{path}: storage record {record!r} is missing (truncated "
                                    "archive?)")
      raw = archive.read(record)
      nbytes = int(numel) * storage_type.dtype.itemsize
      if len(raw) < nbytes:
        raise CheckpointFormatError(f"{path}: storage {record!r} has {len(raw)} bytes, expected "
                                    f"{nbytes} (truncated file?)")
      flat = np.frombuffer(raw, dtype=storage_type.dtype, count=int(numel))
      if byteorder == "big":
        flat = _swap_to_native(flat.copy(), storage_type.dtype)
      storage = _Storage(str(key), storage_type.dtype, int(numel))
      storage.data = flat
      storages[key] = storage
      return storage

    with archive.open(pkl_names[0]) as f:
      try:
        obj = _RestrictedUnpickler(f, path=path, load_storage=load_storage).load()
      except UnsafeCheckpointError:
        raise
      except (EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise CheckpointFormatError(f"{path}: data.pkl is truncated or corrupt: {e}") from e
    return _materialize_tree(obj, path)


def _read_exact(f, n: int, path: str, what: str) -> bytes:
  buf = f.read(n)
  if len(buf) != n:
    raise CheckpointFormatError(f"{path}: file ends inside {what} (read {len(buf)} of {n} bytes); "
                                "truncated or corrupt download?")
  return buf


def _load_legacy(path: str) -> Any:
  with open(path, "rb") as f:
    def header(what):
      try:
        return _RestrictedUnpickler(f, path=path).load()
      except EOFError as e:
        raise CheckpointFormatError(f"{path}: file ends inside the {what} (truncated?)") from e
      except UnsafeCheckpointError:
        raise
      except pickle.UnpicklingError as e:
        raise CheckpointFormatError(f"{path}: {what} unreadable (truncated or corrupt file, or "
                                    f"not a torch.save file): {e}") from e

    magic = header("magic number")
    if magic != _TORCH_MAGIC:
      raise CheckpointFormatError(
          f"{path}: a pickle, but not a torch.save file (magic number {magic!r}); only state "
          "dicts saved by torch.save are read")
    protocol = header("protocol version")
    if protocol != _TORCH_LEGACY_PROTOCOL:
      raise CheckpointFormatError(f"{path}: unknown legacy protocol version {protocol!r}")
    sys_info = header("sys_info record")
    if isinstance(sys_info, Mapping) and not sys_info.get("little_endian", True):
      raise CheckpointFormatError(f"{path}: written on a big-endian machine; re-save it with a "
                                  "current torch.save (zip format) on that machine")

    storages: dict[str, _Storage] = {}

    def load_storage(data):
      if len(data) != 5:
        raise CheckpointFormatError(f"{path}: malformed legacy storage id {data!r}")
      storage_type, root_key, _, numel, view_metadata = data
      if not isinstance(storage_type, _StorageType):
        raise CheckpointFormatError(f"{path}: storage type {storage_type!r} is not a torch "
                                    "storage class")
      if root_key not in storages:
        storages[root_key] = _Storage(str(root_key), storage_type.dtype, int(numel))
      root = storages[root_key]
      if view_metadata is None:
        return root
      view_key, offset, view_size = view_metadata
      if view_key not in storages:
        storages[view_key] = _Storage(str(view_key), root.dtype, int(view_size), root=root,
                                      offset=int(offset))
      return storages[view_key]

    try:
      obj = _RestrictedUnpickler(f, path=path, load_storage=load_storage).load()
    except UnsafeCheckpointError:
      raise
    except (EOFError, pickle.UnpicklingError) as e:
      raise CheckpointFormatError(f"{path}: file ends inside the pickled object or it is corrupt "
                                  f"(truncated?): {e}") from e
    keys = header("list of storage keys")
    if not isinstance(keys, list):
      raise CheckpointFormatError(f"{path}: storage key list is a {type(keys).__name__}")
    for key in keys:
      if key not in storages or storages[key].root is not None:
        raise CheckpointFormatError(f"{path}: storage key {key!r} was never referenced")
      storage = storages[key]
      (count,) = np.frombuffer(_read_exact(f, 8, path, f"storage {key!r} header"), "<i8")
      if int(count) != storage.numel:
        raise CheckpointFormatError(f"{path}: storage {key!r} holds {int(count)} elements, the "
                                    f"pickle says {storage.numel}; the file is corrupt")
      raw = _read_exact(f, storage.numel * storage.dtype.itemsize, path, f"storage {key!r}")
      storage.data = np.frombuffer(raw, dtype=storage.dtype)
  return _materialize_tree(obj, path)


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    (header_len,) = np.frombuffer(_read_exact(f, 8, path, "the safetensors header length"), "<u8")
    header_len = int(header_len)
    if header_len > size - 8:
      raise CheckpointFormatError(f"{path}: safetensors header of {header_len} bytes does not fit "
                                  f"in a {size}-byte file (truncated?)")
    try:
      header = json.loads(f.read(header_len))  # fits: checked above
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise CheckpointFormatError(f"{path}: safetensors header is not valid JSON: {e}") from e
    if not isinstance(header, dict):
      raise CheckpointFormatError(f"{path}: safetensors header is not a JSON object")
    data = f.read()
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    try:
      dtype = _SAFETENSORS_DTYPES[info["dtype"]]
      shape = tuple(int(s) for s in info["shape"])
      begin, end = (int(o) for o in info["data_offsets"])
    except (KeyError, TypeError, ValueError) as e:
      raise CheckpointFormatError(f"{path}: bad safetensors entry for {name!r}: {info!r} "
                                  f"({e!r})") from e
    if end > len(data):
      raise CheckpointFormatError(f"{path}: tensor {name!r} ends at byte {end} of a {len(data)}-"
                                  "byte data section (truncated file?)")
    if not 0 <= begin <= end or end - begin != math.prod(shape) * dtype.itemsize:
      raise CheckpointFormatError(f"{path}: tensor {name!r}: offsets [{begin}, {end}) do not hold "
                                  f"shape {shape} of {dtype}")
    out[name] = np.frombuffer(data, dtype=dtype, count=math.prod(shape),
                              offset=begin).reshape(shape).copy()
  return out


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a PyTorch state dict (.pth/.pt zip or legacy, or .safetensors) without torch.

  Args:
    path: the file.

  Returns:
    parameter name -> numpy array (C-contiguous copies; float32/float16/bfloat16 (ml_dtypes)/
    int64/... exactly as stored), with ``{'state_dict': ...}``-style wrappers and 'module.'
    prefixes removed.

  Raises:
    UnsafeCheckpointError: the pickle names a global outside the state-dict allow-list.
    CheckpointFormatError (a ValueError): truncated/corrupt file, unknown format, or an object
      that is not a mapping from names to tensors.
    FileNotFoundError: no such file.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no state dict file at {path}")
  with open(path, "rb") as f:
    head = f.read(512)
  if not head:
    raise CheckpointFormatError(f"{path}: the file is empty")
  if path.endswith(".safetensors"):
    return _as_state_dict(_load_safetensors(path), path)
  if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
    obj = _load_zip(path)
  elif head[0:1] == b"\x80":
    obj = _load_legacy(path)
  elif head[257:262] == b"ustar":
    raise CheckpointFormatError(f"{path}: tar-based torch.save file (PyTorch < 0.4); load and "
                                "re-save it with a newer torch")
  elif head[8:9] == b"{":
    return _as_state_dict(_load_safetensors(path), path)
  else:
    raise CheckpointFormatError(f"{path}: unknown format (expected a torch.save zip or legacy "
                                "pickle file, or .safetensors)")
  return _as_state_dict(obj, path)
