"""The torch-free checkpoint reader's details that mutation testing (experiments/mutation.sh io/pth)
showed unchecked: every refusal with its exact message (error messages are user-facing), raised
before anything is read out of bounds and with nothing left behind; the bounds of a tensor inside
its storage on both sides of the limit; legacy storage views; big-endian complex storages; Python 2
strings; and the format detection of load_state_dict.

Valid hand-built files are checked against torch.load(weights_only=True) or against values worked
out by hand, never against the reader itself. Files are hand-built with a pickler whose persistent
ids are given verbatim, so malformed ids and tensors that torch.save never writes can be made.
"""

import collections
import io
import json
import os
import pickle
import struct
import tarfile
import zipfile

import ml_dtypes
import numpy as np
import pytest
import torch

from ais_jax.io import pth

_MAGIC = 0x1950A86A20F9469CFC6C
_SYS_INFO = {"protocol_version": 1001, "little_endian": True,
             "type_sizes": {"short": 2, "int": 4, "long": 4}}


# ------------------------------------------------------------------------------------------------
# Hand-built pickles and files.


class _Pid:
  """Pickled as the persistent id ``pid`` (BINPERSID), whatever ``pid`` is."""

  def __init__(self, pid):
    self.pid = pid


class _Call:
  """Pickled as ``func(*args)`` (GLOBAL + REDUCE); ``func`` must be importable by its name."""

  def __init__(self, func, *args):
    self.func, self.args = func, args

  def __reduce__(self):
    return self.func, self.args


class _Pickler(pickle.Pickler):

  def persistent_id(self, obj):
    return obj.pid if isinstance(obj, _Pid) else None


def _dumps(obj, protocol=2) -> bytes:
  """Protocol 2 as torch.save; 3 pickles bytes as bytes (2 calls _codecs.encode)."""
  out = io.BytesIO()
  _Pickler(out, protocol=protocol).dump(obj)
  return out.getvalue()


def _v2(pid, offset, size, stride, *metadata):
  return _Call(torch._utils._rebuild_tensor_v2, _Pid(pid), offset, size, stride, False,  # pylint: disable=protected-access
               collections.OrderedDict(), *metadata)


def _v3(pid, offset, size, stride, dtype, *metadata):
  return _Call(torch._utils._rebuild_tensor_v3, _Pid(pid), offset, size, stride, False,  # pylint: disable=protected-access
               collections.OrderedDict(), dtype, *metadata)


def _zip_pid(numel, key="0", storage_type=torch.FloatStorage):
  return ("storage", storage_type, key, "cpu", numel)


def _legacy_pid(numel, key="0", view=None, storage_type=torch.FloatStorage):
  return ("storage", storage_type, key, "cpu", numel, view)


def _write_zip(path, pickled: bytes, records=None, byteorder=None, prefix="archive"):
  """A torch.save-style zip: ``prefix/data.pkl``, ``prefix/data/<key>`` records, a version."""
  with zipfile.ZipFile(path, "w") as z:
    z.writestr(f"{prefix}/data.pkl", pickled)
    for key, data in (records or {}).items():
      z.writestr(f"{prefix}/data/{key}", data)
    if byteorder is not None:
      z.writestr(f"{prefix}/byteorder", byteorder)
    z.writestr(f"{prefix}/version", "3\n")
  return str(path)


def _legacy_bytes(obj_pickle: bytes, keys=("0",), storages=(), headers=None) -> bytes:
  """A legacy torch.save file: magic, protocol, sys_info, the object, the keys, the storages.

  ``storages``: (element count written in the file, raw bytes) per key.
  """
  out = io.BytesIO()
  for record in headers if headers is not None else (_MAGIC, 1001, _SYS_INFO):
    pickle.dump(record, out, protocol=2)
  out.write(obj_pickle)
  pickle.dump(list(keys), out, protocol=2)
  for count, raw in storages:
    out.write(struct.pack("<q", count) + raw)
  return out.getvalue()


def _write(path, data: bytes):
  with open(path, "wb") as f:
    f.write(data)
  return str(path)


def _refused(path, error, message):
  """load_state_dict(path) raises exactly ``error(message)`` and leaves the folder as it was."""
  folder = os.path.dirname(path)
  before = {name: open(os.path.join(folder, name), "rb").read() for name in os.listdir(folder)}
  with pytest.raises(error) as info:
    pth.load_state_dict(path)
  assert type(info.value) is error  # pylint: disable=unidiomatic-typecheck
  assert str(info.value) == message
  after = {name: open(os.path.join(folder, name), "rb").read() for name in os.listdir(folder)}
  assert after == before


def _same_as_torch(path):
  ours = pth.load_state_dict(path)
  ref = torch.load(path, weights_only=True, map_location="cpu")
  assert list(ours) == list(ref)
  for key, t in ref.items():
    assert ours[key].shape == tuple(t.shape), key
    flat = torch.empty(t.numel(), dtype=t.dtype).copy_(t.reshape(-1))
    assert ours[key].tobytes() == flat.view(torch.uint8).numpy().tobytes(), key
  return ours


# ------------------------------------------------------------------------------------------------
# The restricted unpickler: globals and persistent ids.


def test_refused_global_full_message_and_nothing_runs(tmp_path):
  marker = tmp_path / "pwned"
  path = _write(tmp_path / "evil.pth", pickle.dumps(
      _Call(exec, f"open({str(marker)!r}, 'w').close()"), protocol=4))
  _refused(path, pth.UnsafeCheckpointError,
           f"{path}: refusing to load global 'builtins.exec': a state dict only needs tensors, "
           "storages and OrderedDict, and resolving other globals could run arbitrary code. If "
           "this file pickles a whole model or a training checkpoint, load it in a trusted "
           "PyTorch session and save just `model.state_dict()` (or use safetensors).")
  assert not marker.exists()


@pytest.mark.parametrize("record", [0, 1, 2, 4])  # magic, protocol, sys_info, storage key list
def test_persistent_id_in_a_legacy_header_is_refused(tmp_path, record):
  headers = [pickle.dumps(r, protocol=2) for r in (_MAGIC, 1001, _SYS_INFO)]
  obj = _dumps({"w": _v2(_legacy_pid(2), 0, (2,), (1,))})
  keys = pickle.dumps(["0"], protocol=2)
  parts = headers + [obj, keys]
  parts[record] = _dumps(_Pid(("storage", "0")))
  path = _write(tmp_path / "header.pth", b"".join(parts) + struct.pack("<q", 2) + bytes(8))
  _refused(path, pth.UnsafeCheckpointError,
           f"{path}: unexpected persistent id ('storage', '0') in a header pickle")


@pytest.mark.parametrize("pid, shown", [("storage", "'storage'"), ((), "()"),
                                        (["storage", "x"], "['storage', 'x']")])
def test_malformed_persistent_id_is_refused(tmp_path, pid, shown):
  path = _write_zip(tmp_path / "pid.pth", _dumps({"w": _Pid(pid)}))
  _refused(path, pth.CheckpointFormatError, f"{path}: malformed persistent id {shown}")


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("kind", ["module", b"module"])
def test_persistent_id_of_another_kind_is_refused(tmp_path, fmt, kind):
  pickled = _dumps({"w": _Pid((kind, "torch.nn.Linear"))}, protocol=3)
  path = (_write_zip(tmp_path / "kind.pth", pickled) if fmt == "zip"
          else _write(tmp_path / "kind.pth", _legacy_bytes(pickled, keys=())))
  _refused(path, pth.UnsafeCheckpointError,
           f"{path}: persistent id of kind 'module' (e.g. a pickled nn.Module class) is not part "
           "of a state dict; save `model.state_dict()` instead")


def test_bytes_storage_kind_is_read(tmp_path):
  """Python 2 era pickles may name the kind b'storage': read like 'storage'."""
  values = np.array([1.5, -2.0, 3.25], np.float32)
  pid = (b"storage",) + _zip_pid(3)[1:]
  path = _write_zip(tmp_path / "b.pth", _dumps({"w": _v2(pid, 0, (3,), (1,))}, protocol=3),
                    {"0": values.tobytes()})
  np.testing.assert_array_equal(pth.load_state_dict(path)["w"], values)


def test_python2_byte_string_keys_are_utf8(tmp_path):
  """A Python 2 str (SHORT_BINSTRING, raw bytes) key is decoded as UTF-8, as torch.load does."""
  values = np.array([0.5, 1.5], np.float32)
  placeholder = "K" * 12
  pickled = _dumps({placeholder: _v2(_zip_pid(2), 0, (2,), (1,))})
  name = "café.weight".encode("utf-8")
  assert len(name) == 12
  unicode_op = b"X" + struct.pack("<I", 12) + placeholder.encode()
  assert pickled.count(unicode_op) == 1
  pickled = pickled.replace(unicode_op, b"U" + bytes([len(name)]) + name)  # SHORT_BINSTRING
  path = _write_zip(tmp_path / "py2.pth", pickled, {"0": values.tobytes()})
  ours = _same_as_torch(path)
  assert list(ours) == ["café.weight"]


# ------------------------------------------------------------------------------------------------
# Storage ids and records.


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_storage_id_checks(tmp_path, fmt):
  def write(pid, name):
    pickled = _dumps({"w": _v2(pid, 0, (2,), (1,))})
    if fmt == "zip":
      return _write_zip(tmp_path / name, pickled, {"0": bytes(8)})
    return _write(tmp_path / name, _legacy_bytes(pickled, storages=[(2, bytes(8))]))
  fields = ("FloatStorage", "0", "cpu", 2) + ((None,) if fmt == "legacy" else ())
  word = "storage" if fmt == "zip" else "legacy storage"
  path = write(("storage",) + fields[:-1], "short.pth")
  _refused(path, pth.CheckpointFormatError, f"{path}: malformed {word} id {fields[:-1]!r}")
  path = write(("storage",) + fields + ("extra",), "long.pth")
  _refused(path, pth.CheckpointFormatError,
           f"{path}: malformed {word} id {fields + ('extra',)!r}")
  path = write(("storage",) + fields, "type.pth")  # the type named by a string, not a global
  _refused(path, pth.CheckpointFormatError,
           f"{path}: storage type 'FloatStorage' is not a torch storage class")


def test_zip_storage_record_missing_or_short(tmp_path):
  pickled = _dumps({"w": _v2(_zip_pid(2, key="7"), 0, (2,), (1,))})
  path = _write_zip(tmp_path / "missing.pth", pickled, {"0": bytes(8)})
  _refused(path, pth.CheckpointFormatError,
           f"{path}: storage record 'archive/data/7' is missing (truncated archive?)")
  path = _write_zip(tmp_path / "short.pth", pickled, {"7": bytes(6)})
  _refused(path, pth.CheckpointFormatError,
           f"{path}: storage 'archive/data/7' has 6 bytes, expected 8 (truncated file?)")


def test_zip_record_longer_than_numel_holds_numel_elements(tmp_path):
  """The persistent id's element count is the storage's size, extra bytes are not part of it
  (torch.load refuses such a record outright)."""
  raw = np.array([1.0, 2.0, 3.0], np.float32).tobytes() + b"\x01"
  ok = _write_zip(tmp_path / "ok.pth", _dumps({"w": _v2(_zip_pid(2), 0, (2,), (1,))}), {"0": raw})
  np.testing.assert_array_equal(pth.load_state_dict(ok)["w"], [1.0, 2.0])
  bad = _write_zip(tmp_path / "bad.pth", _dumps({"w": _v2(_zip_pid(2), 0, (3,), (1,))}),
                   {"0": raw})
  _refused(bad, pth.CheckpointFormatError,
           f"{bad}: tensor (offset 0, size (3,), stride (1,)) reaches element 2 of a storage "
           "with 2 elements; the file is corrupt")


def test_zip_archive_layout_checks(tmp_path):
  path = _write_zip(tmp_path / "order.pth", _dumps({}), byteorder="middle")
  _refused(path, pth.CheckpointFormatError, f"{path}: unknown byteorder record 'middle'")
  path = str(tmp_path / "none.pth")
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/weights.bin", b"x")
  _refused(path, pth.CheckpointFormatError,
           f"{path}: zip archive without exactly one '<prefix>/data.pkl' record (found []); "
           "not a torch.save file")
  path = str(tmp_path / "two.pth")
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("a/data.pkl", _dumps({}))
    z.writestr("b/data.pkl", _dumps({}))
  _refused(path, pth.CheckpointFormatError,
           f"{path}: zip archive without exactly one '<prefix>/data.pkl' record (found "
           "['a/data.pkl', 'b/data.pkl']); not a torch.save file")
  empty = str(tmp_path / "empty.pth")
  zipfile.ZipFile(empty, "w").close()  # only an end-of-central-directory record: b'PK\x05\x06'
  assert open(empty, "rb").read(4) == b"PK\x05\x06"
  _refused(empty, pth.CheckpointFormatError,
           f"{empty}: zip archive without exactly one '<prefix>/data.pkl' record (found []); "
           "not a torch.save file")


def test_truncated_data_pkl_message(tmp_path):
  cut = b"\x80\x02}q\x00"  # an empty dict, then no STOP
  try:
    pickle.Unpickler(io.BytesIO(cut)).load()
  except EOFError as e:  # CPython's own words for it
    reason = str(e)
  path = _write_zip(tmp_path / "cut.pth", cut)
  _refused(path, pth.CheckpointFormatError, f"{path}: data.pkl is truncated or corrupt: {reason}")


# ------------------------------------------------------------------------------------------------
# Tensors: metadata, dtypes, sizes, strides, offsets, bounds.


@pytest.mark.parametrize("lazy, bits", [(lambda t: t.conj(), "{'conj': True}"),
                                        (lambda t: t._neg_view(), "{'neg': True}")])  # pylint: disable=protected-access
def test_lazy_conjugate_or_negative_tensor_is_refused(tmp_path, lazy, bits):
  path = str(tmp_path / "lazy.pth")
  torch.save({"w": lazy(torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex64))}, path)
  _refused(path, pth.CheckpointFormatError,
           f"tensor with lazy conjugate/negative bits {bits} is not supported; re-save it after "
           "calling .resolve_conj().resolve_neg()")
  resolved = str(tmp_path / "resolved.pth")  # the fix the message names works
  torch.save({"w": lazy(torch.tensor([1 + 2j, 3 - 1j])).resolve_conj().resolve_neg()}, resolved)
  _same_as_torch(resolved)


def test_lazy_bits_in_rebuild_tensor_v3(tmp_path):
  raw = np.array([1.0, 2.0], np.float16).tobytes()
  pid = _zip_pid(4, storage_type=torch.UntypedStorage)
  for metadata, refused in [({"neg": True}, True), ({"conj": False, "neg": False}, False)]:
    path = _write_zip(tmp_path / f"v3_{refused}.pth",
                      _dumps({"w": _v3(pid, 0, (2,), (1,), torch.float16, metadata)}), {"0": raw})
    if refused:
      _refused(path, pth.CheckpointFormatError,
               "tensor with lazy conjugate/negative bits {'neg': True} is not supported; re-save "
               "it after calling .resolve_conj().resolve_neg()")
    else:  # bits present but all false: nothing lazy, read as is
      np.testing.assert_array_equal(pth.load_state_dict(path)["w"], np.array([1, 2], np.float16))


def test_all_false_metadata_in_rebuild_tensor_v2_is_read(tmp_path):
  values = np.array([4.0, -1.0], np.float32)
  path = _write_zip(tmp_path / "v2.pth", _dumps(
      {"w": _v2(_zip_pid(2), 0, (2,), (1,), {"conj": False})}), {"0": values.tobytes()})
  np.testing.assert_array_equal(pth.load_state_dict(path)["w"], values)


def test_rebuild_tensor_v3_dtype_checks(tmp_path):
  raw = np.array([1.0, 2.0], np.float32).tobytes()
  path = _write_zip(tmp_path / "str.pth", _dumps(
      {"w": _v3(_zip_pid(2), 0, (2,), (1,), "float16")}), {"0": raw})
  _refused(path, pth.CheckpointFormatError,
           "_rebuild_tensor_v3 got dtype 'float16', expected a torch dtype")
  path = _write_zip(tmp_path / "typed.pth", _dumps(
      {"w": _v3(_zip_pid(2), 0, (2,), (1,), torch.float16)}), {"0": raw})
  _refused(path, pth.CheckpointFormatError, f"{path}: a float32 storage read as float16")


def test_untyped_storage_with_a_partial_last_element(tmp_path):
  """7 bytes read as float16 hold 3 whole elements (torch.load agrees); a 4th is out of bounds."""
  raw = bytes(range(1, 8))
  pid = _zip_pid(7, storage_type=torch.UntypedStorage)
  path = _write_zip(tmp_path / "odd.pth", _dumps(
      {"w": _v3(pid, 0, (3,), (1,), torch.float16)}), {"0": raw})
  np.testing.assert_array_equal(_same_as_torch(path)["w"], np.frombuffer(raw[:6], np.float16))
  path = _write_zip(tmp_path / "over.pth", _dumps(
      {"w": _v3(pid, 0, (4,), (1,), torch.float16)}), {"0": raw})
  _refused(path, pth.CheckpointFormatError,
           f"{path}: tensor (offset 0, size (4,), stride (1,)) reaches element 3 of a storage "
           "with 3 elements; the file is corrupt")


@pytest.mark.parametrize("offset, size, stride", [(0, (2,), (1, 1)), (0, (2, 1), (1,)),
                                                  (0, (), (1,))])
def test_size_and_stride_of_different_length(tmp_path, offset, size, stride):
  path = _write_zip(tmp_path / "len.pth", _dumps(
      {"w": _v2(_zip_pid(4), offset, size, stride)}), {"0": bytes(16)})
  _refused(path, pth.CheckpointFormatError,
           f"{path}: tensor size {size} and stride {stride} differ in length")


@pytest.mark.parametrize("offset, size, stride", [
    (0, (-1, 2), (2, 1)),   # negative size alone
    (3, (2,), (-1,)),       # negative stride alone: would read before the storage's start
    (-1, (2,), (1,)),       # negative offset alone
])
def test_negative_size_stride_or_offset_is_refused(tmp_path, offset, size, stride):
  path = _write_zip(tmp_path / "neg.pth", _dumps(
      {"w": _v2(_zip_pid(4), offset, size, stride)}), {"0": bytes(16)})
  _refused(path, pth.CheckpointFormatError, f"{path}: negative size/stride/offset in a tensor")


def test_zero_stride_of_an_expanded_tensor_is_read(tmp_path):
  """torch.save keeps an expanded tensor's stride 0; each row repeats the storage."""
  path = str(tmp_path / "expand.pth")
  torch.save({"w": torch.arange(3.0).expand(4, 3), "c": torch.tensor(7.0).expand(2)}, path)
  ours = _same_as_torch(path)
  np.testing.assert_array_equal(ours["w"], [[0.0, 1.0, 2.0]] * 4)
  np.testing.assert_array_equal(ours["c"], [7.0, 7.0])


# The last element a tensor reads is offset + sum((size - 1) * stride), worked out by hand below;
# it must lie inside the storage (4 elements here): element 3 is read, element 4 is refused.
_BOUNDS = [
    # offset, size, stride, last element read
    (0, (4,), (1,), 3),
    (0, (5,), (1,), 4),
    (0, (2,), (3,), 3),
    (0, (3,), (2,), 4),
    (1, (3,), (1,), 3),
    (1, (4,), (1,), 4),
    (1, (2, 2), (2, 1), 4),
    (0, (2, 2), (2, 1), 3),
    (2, (2, 3), (0, 1), 4),
    (3, (1, 1), (5, 7), 3),
]


@pytest.mark.parametrize("offset, size, stride, last", _BOUNDS)
def test_tensor_bounds_inside_its_storage(tmp_path, offset, size, stride, last):
  values = np.array([10.0, 20.0, 30.0, 40.0], np.float32)
  path = _write_zip(tmp_path / "bounds.pth", _dumps(
      {"w": _v2(_zip_pid(4), offset, size, stride)}), {"0": values.tobytes()})
  if last >= 4:
    _refused(path, pth.CheckpointFormatError,
             f"{path}: tensor (offset {offset}, size {size}, stride {stride}) reaches element "
             f"{last} of a storage with 4 elements; the file is corrupt")
    return
  expected = np.empty(size, np.float32)
  for index in np.ndindex(*size):
    expected[index] = values[offset + sum(i * s for i, s in zip(index, stride))]
  ours = _same_as_torch(path)["w"]
  np.testing.assert_array_equal(ours, expected)
  assert ours.flags.c_contiguous and ours.flags.writeable


def _bad(key="0"):
  """A tensor reading past its 2-element storage's end."""
  return _v2(_zip_pid(2, key=key), 0, (3,), (1,))


@pytest.mark.parametrize("wrap", [
    lambda t: {"w": t},
    lambda t: collections.OrderedDict(w=t),
    lambda t: {"state_dict": collections.OrderedDict([("module.w", t)])},
    lambda t: {"w": [t]},
    lambda t: {"w": (t,)},
    lambda t: {"w": ({"x": [1, t]},)},
])
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_bounds_error_names_the_file_in_any_container(tmp_path, wrap, fmt):
  if fmt == "zip":
    path = _write_zip(tmp_path / "nested.pth", _dumps(wrap(_bad())), {"0": bytes(8)})
  else:
    tensor = _v2(_legacy_pid(2), 0, (3,), (1,))
    path = _write(tmp_path / "nested.pth", _legacy_bytes(_dumps(wrap(tensor)),
                                                         storages=[(2, bytes(8))]))
  _refused(path, pth.CheckpointFormatError,
           f"{path}: tensor (offset 0, size (3,), stride (1,)) reaches element 2 of a storage "
           "with 2 elements; the file is corrupt")


def test_tensors_inside_lists_and_tuples_are_materialized(tmp_path):
  """Containers are rebuilt with arrays in them (then refused: a state dict maps to tensors)."""
  values = np.array([1.0, 2.0], np.float32)
  t = _v2(_zip_pid(2), 0, (2,), (1,))
  path = _write_zip(tmp_path / "seq.pth", _dumps({"a": [t, 5], "b": (t, "x")}),
                    {"0": values.tobytes()})
  _refused(path, pth.CheckpointFormatError,
           f"{path}: not a state dict: 2 of 2 entries are not tensors with string names: "
           "'a' (list), 'b' (tuple). Save only `model.state_dict()` (a training checkpoint may "
           "keep it under 'state_dict').")


def test_bare_storage_is_refused(tmp_path):
  path = str(tmp_path / "storage.pth")
  torch.save({"w": torch.ones(2).untyped_storage()}, path)
  _refused(path, pth.CheckpointFormatError,
           f"{path}: holds a bare torch storage/type, not a state dict")
  dtype_value = _write_zip(tmp_path / "dtype.pth", _dumps({"w": torch.float32}))
  _refused(dtype_value, pth.CheckpointFormatError,
           f"{dtype_value}: holds a bare torch storage/type, not a state dict")


# ------------------------------------------------------------------------------------------------
# What the file holds.


def test_not_a_mapping_message(tmp_path):
  path = str(tmp_path / "list.pth")
  torch.save([torch.ones(2)], path)
  _refused(path, pth.CheckpointFormatError,
           f"{path}: holds a list, not a state dict (a mapping from parameter names to tensors, "
           "as saved by torch.save(model.state_dict(), ...))")


@pytest.mark.parametrize("n_bad", [1, 8, 9, 10])
def test_non_tensor_entries_message(tmp_path, n_bad):
  obj = {"w": torch.ones(1)}
  obj.update({f"k{i}": i for i in range(n_bad)})
  path = str(tmp_path / "entries.pth")
  torch.save(obj, path)
  shown = ", ".join(f"'k{i}' (int)" for i in range(min(n_bad, 8)))
  more = " ..." if n_bad > 8 else ""
  _refused(path, pth.CheckpointFormatError,
           f"{path}: not a state dict: {n_bad} of {n_bad + 1} entries are not tensors with string "
           f"names: {shown}{more}. Save only `model.state_dict()` (a training checkpoint may keep "
           "it under 'state_dict').")


# ------------------------------------------------------------------------------------------------
# The legacy format.


def test_legacy_header_records_cut_short(tmp_path):
  records = [pickle.dumps(r, protocol=2) for r in (_MAGIC, 1001, _SYS_INFO)]
  obj = _dumps({"w": _v2(_legacy_pid(2), 0, (2,), (1,))})
  cases = [
      (b"\x80\x02", "magic number"),
      (records[0], "protocol version"),
      (b"".join(records[:2]), "sys_info record"),
      (b"".join(records) + obj, "list of storage keys"),
  ]
  for i, (data, what) in enumerate(cases):
    path = _write(tmp_path / f"cut{i}.pth", data)
    _refused(path, pth.CheckpointFormatError, f"{path}: file ends inside the {what} (truncated?)")


def test_legacy_header_values(tmp_path):
  obj = _dumps({"w": _v2(_legacy_pid(2), 0, (2,), (1,))})
  storages = [(2, np.array([1.0, 2.0], np.float32).tobytes())]
  path = _write(tmp_path / "plain.pth", pickle.dumps(5, protocol=2))
  _refused(path, pth.CheckpointFormatError,
           f"{path}: a pickle, but not a torch.save file (magic number 5); only state dicts saved "
           "by torch.save are read")
  path = _write(tmp_path / "proto.pth", _legacy_bytes(obj, storages=storages,
                                                      headers=(_MAGIC, 1000, _SYS_INFO)))
  _refused(path, pth.CheckpointFormatError, f"{path}: unknown legacy protocol version 1000")
  big = dict(_SYS_INFO, little_endian=False)
  path = _write(tmp_path / "big.pth", _legacy_bytes(obj, storages=storages,
                                                    headers=(_MAGIC, 1001, big)))
  _refused(path, pth.CheckpointFormatError,
           f"{path}: written on a big-endian machine; re-save it with a current torch.save (zip "
           "format) on that machine")
  for name, sys_info in [("nokey", {"protocol_version": 1001}), ("notmap", [1001])]:
    # no byte-order entry (or no mapping) is read as little-endian, as torch.load does
    path = _write(tmp_path / f"{name}.pth", _legacy_bytes(obj, storages=storages,
                                                          headers=(_MAGIC, 1001, sys_info)))
    np.testing.assert_array_equal(pth.load_state_dict(path)["w"], [1.0, 2.0])


def test_legacy_storage_key_list_checks(tmp_path):
  obj = _dumps({"w": _v2(_legacy_pid(2), 0, (2,), (1,))})
  raw = np.array([1.0, 2.0], np.float32).tobytes()
  path = str(tmp_path / "keys.pth")
  out = io.BytesIO()
  for r in (_MAGIC, 1001, _SYS_INFO):
    pickle.dump(r, out, protocol=2)
  out.write(obj)
  pickle.dump({"0": 2}, out, protocol=2)
  _write(path, out.getvalue())
  _refused(path, pth.CheckpointFormatError, f"{path}: storage key list is a dict")
  path = _write(tmp_path / "unref.pth", _legacy_bytes(obj, keys=("9",), storages=[(2, raw)]))
  _refused(path, pth.CheckpointFormatError, f"{path}: storage key '9' was never referenced")
  view = _dumps({"w": _v2(_legacy_pid(4, view=("v", 1, 2)), 0, (2,), (1,))})
  path = _write(tmp_path / "viewkey.pth", _legacy_bytes(view, keys=("v",), storages=[(2, raw)]))
  _refused(path, pth.CheckpointFormatError, f"{path}: storage key 'v' was never referenced")
  path = _write(tmp_path / "nodata.pth", _legacy_bytes(obj, keys=()))
  _refused(path, pth.CheckpointFormatError, "storage '0' is referenced but its data is missing")


def test_legacy_storage_records_checked(tmp_path):
  obj = _dumps({"w": _v2(_legacy_pid(2), 0, (2,), (1,))})
  raw = np.array([1.0, 2.0], np.float32).tobytes()
  path = _write(tmp_path / "count.pth", _legacy_bytes(obj, storages=[(3, raw + raw[:4])]))
  _refused(path, pth.CheckpointFormatError,
           f"{path}: storage '0' holds 3 elements, the pickle says 2; the file is corrupt")
  whole = _legacy_bytes(obj, storages=[(2, raw)])
  path = _write(tmp_path / "head.pth", whole[:-len(raw) - 5])
  _refused(path, pth.CheckpointFormatError,
           f"{path}: file ends inside storage '0' header (read 3 of 8 bytes); truncated or "
           "corrupt download?")
  path = _write(tmp_path / "data.pth", whole[:-4])
  _refused(path, pth.CheckpointFormatError,
           f"{path}: file ends inside storage '0' (read 4 of 8 bytes); truncated or corrupt "
           "download?")


def test_legacy_storage_views(tmp_path):
  """Old torch.save files share a root storage through views (view key, element offset, size)."""
  root = np.arange(10, dtype=np.float32) * 1.5
  view = ("v", 6, 3)   # elements 6, 7, 8 of the root
  other = ("u", 2, 4)  # elements 2..5
  obj = {
      "a": _v2(_legacy_pid(10, view=view), 0, (3,), (1,)),
      "b": _v2(_legacy_pid(10, view=view), 1, (2,), (1,)),  # the same view again
      "c": _v2(_legacy_pid(10, view=other), 0, (2, 2), (1, 2)),
      "d": _v2(_legacy_pid(10), 2, (2, 2), (1, 3)),  # the root itself
  }
  path = _write(tmp_path / "views.pth", _legacy_bytes(_dumps(obj), storages=[(10, root.tobytes())]))
  ours = _same_as_torch(path)
  np.testing.assert_array_equal(ours["a"], root[6:9])
  np.testing.assert_array_equal(ours["b"], root[7:9])
  np.testing.assert_array_equal(ours["c"], [[root[2], root[4]], [root[3], root[5]]])
  np.testing.assert_array_equal(ours["d"], [[root[2], root[5]], [root[3], root[6]]])
  # A view is as long as it says: reading past it is refused even inside the root.
  over = {"a": _v2(_legacy_pid(10, view=view), 1, (3,), (1,))}
  path = _write(tmp_path / "over.pth", _legacy_bytes(_dumps(over),
                                                     storages=[(10, root.tobytes())]))
  _refused(path, pth.CheckpointFormatError,
           f"{path}: tensor (offset 1, size (3,), stride (1,)) reaches element 3 of a storage "
           "with 3 elements; the file is corrupt")


# ------------------------------------------------------------------------------------------------
# Byte order.


def test_big_endian_zip_of_every_element_width(tmp_path):
  """Complex numbers swap each component; one-byte types are not swapped."""
  rng = np.random.default_rng(3)
  arrays = {
      "c64": (rng.standard_normal(4) + 1j * rng.standard_normal(4)).astype(np.complex64),
      "c128": rng.standard_normal(3) + 1j * rng.standard_normal(3),
      "f16": rng.standard_normal(5).astype(np.float16),
      "i8": np.array([-128, -1, 0, 127], np.int8),
      "u8": np.array([0, 1, 255], np.uint8),
      "b": np.array([True, False, True]),
  }
  types = {"c64": torch.ComplexFloatStorage, "c128": torch.ComplexDoubleStorage,
           "f16": torch.HalfStorage, "i8": torch.CharStorage, "u8": torch.ByteStorage,
           "b": torch.BoolStorage}
  obj, records = {}, {}
  for key, a in arrays.items():
    obj[key] = _v2(_zip_pid(a.size, key=key, storage_type=types[key]), 0, a.shape, (1,))
    records[key] = a.astype(a.dtype.newbyteorder(">")).tobytes()  # numpy's own big-endian bytes
  path = _write_zip(tmp_path / "big.pth", _dumps(obj), records, byteorder="big")
  ours = pth.load_state_dict(path)
  for key, a in arrays.items():
    assert ours[key].dtype == a.dtype and ours[key].dtype.isnative, key
    np.testing.assert_array_equal(ours[key], a)


# ------------------------------------------------------------------------------------------------
# safetensors.


def _safetensors(header: dict, data: bytes = b"", pad_to: int = 0) -> bytes:
  text = json.dumps(header).encode()
  text += b" " * max(0, pad_to - len(text))  # the safetensors library pads with spaces
  return struct.pack("<Q", len(text)) + text + data


_F32 = np.array([1.5, -2.0], np.float32)


def test_safetensors_header_length_checks(tmp_path):
  path = _write(tmp_path / "tiny.safetensors", b"\x05\x00\x00")
  _refused(path, pth.CheckpointFormatError,
           f"{path}: file ends inside the safetensors header length (read 3 of 8 bytes); "
           "truncated or corrupt download?")
  # The header may take the whole rest of the file (here: only empty tensors, no data).
  exact = _safetensors({"e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]}})
  ours = pth.load_state_dict(_write(tmp_path / "exact.safetensors", exact))
  assert ours["e"].shape == (0, 3) and ours["e"].dtype == np.float32
  longer = struct.pack("<Q", len(exact) - 7) + exact[8:]
  path = _write(tmp_path / "long.safetensors", longer)
  _refused(path, pth.CheckpointFormatError,
           f"{path}: safetensors header of {len(exact) - 7} bytes does not fit in a "
           f"{len(exact)}-byte file (truncated?)")


def test_safetensors_header_json_checks(tmp_path):
  bad = b'{"w": '
  try:
    json.loads(bad)
  except json.JSONDecodeError as e:  # the json module's own words
    reason = str(e)
  path = _write(tmp_path / "bad.safetensors", struct.pack("<Q", len(bad)) + bad)
  _refused(path, pth.CheckpointFormatError,
           f"{path}: safetensors header is not valid JSON: {reason}")
  path = _write(tmp_path / "list.safetensors", struct.pack("<Q", 2) + b"[]")
  _refused(path, pth.CheckpointFormatError, f"{path}: safetensors header is not a JSON object")


def test_safetensors_entry_checks(tmp_path):
  data = _F32.tobytes()
  entry = {"shape": [2], "data_offsets": [0, 8]}
  path = _write(tmp_path / "nodtype.safetensors", _safetensors({"w": entry}, data))
  _refused(path, pth.CheckpointFormatError,
           f"{path}: bad safetensors entry for 'w': {{'shape': [2], 'data_offsets': [0, 8]}} "
           "(KeyError('dtype'))")
  entry = {"dtype": "F128", "shape": [2], "data_offsets": [0, 8]}
  path = _write(tmp_path / "f128.safetensors", _safetensors({"w": entry}, data))
  _refused(path, pth.CheckpointFormatError,
           f"{path}: bad safetensors entry for 'w': {{'dtype': 'F128', 'shape': [2], "
           "'data_offsets': [0, 8]} (KeyError('F128'))")
  entry = {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}
  path = _write(tmp_path / "past.safetensors", _safetensors({"w": entry}, data))
  _refused(path, pth.CheckpointFormatError,
           f"{path}: tensor 'w' ends at byte 12 of a 8-byte data section (truncated file?)")
  for name, offsets in [("wide", [0, 8]), ("reversed", [4, 0]), ("minus", [-4, 4])]:
    entry = {"dtype": "F32", "shape": [1], "data_offsets": offsets}
    path = _write(tmp_path / f"{name}.safetensors", _safetensors({"w": entry}, data))
    _refused(path, pth.CheckpointFormatError,
             f"{path}: tensor 'w': offsets [{offsets[0]}, {offsets[1]}) do not hold shape (1,) "
             "of float32")
  # An empty tensor may start anywhere inside the data, a full one where its bytes are.
  header = {"e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},
            "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}
  ours = pth.load_state_dict(_write(tmp_path / "ok.safetensors", _safetensors(header, data)))
  assert ours["e"].shape == (0,)
  np.testing.assert_array_equal(ours["w"], _F32[1:])


# ------------------------------------------------------------------------------------------------
# Format detection.


def test_safetensors_found_by_name_or_by_content(tmp_path):
  header = {"__metadata__": {"format": "pt"},
            "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
  # A header padded to 128 bytes: the file's first byte is 0x80, as in a pickle; the name decides.
  padded = _safetensors(header, _F32.tobytes(), pad_to=128)
  assert padded[:1] == b"\x80"
  np.testing.assert_array_equal(
      pth.load_state_dict(_write(tmp_path / "w.safetensors", padded))["w"], _F32)
  # Under another name, the '{' at byte 8 says safetensors.
  plain = _safetensors(header, _F32.tobytes())
  np.testing.assert_array_equal(pth.load_state_dict(_write(tmp_path / "w.bin", plain))["w"], _F32)
  for name in ("empty.safetensors", "empty.bin"):
    path = _write(tmp_path / name, _safetensors({"__metadata__": {"format": "pt"}}))
    _refused(path, pth.CheckpointFormatError, f"{path}: the state dict is empty")


def test_missing_empty_tar_and_unknown_files(tmp_path):
  missing = str(tmp_path / "missing.pth")
  with pytest.raises(FileNotFoundError) as info:
    pth.load_state_dict(missing)
  assert str(info.value) == f"no state dict file at {missing}"
  path = _write(tmp_path / "empty.pth", b"")
  _refused(path, pth.CheckpointFormatError, f"{path}: the file is empty")
  # torch.save before PyTorch 0.4 wrote a tar archive ('ustar' at byte 257 of its first block).
  path = str(tmp_path / "old.pth")
  member = tmp_path / "sys_info"
  member.write_bytes(b"x" * 10)
  with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
    tar.add(member, arcname="sys_info")
  member.unlink()
  _refused(path, pth.CheckpointFormatError,
           f"{path}: tar-based torch.save file (PyTorch < 0.4); load and re-save it with a newer "
           "torch")
  for name, data in [("text.pth", b"just some notes\n" * 40), ("short.pth", b"hello")]:
    path = _write(tmp_path / name, data)
    _refused(path, pth.CheckpointFormatError,
             f"{path}: unknown format (expected a torch.save zip or legacy pickle file, or "
             ".safetensors)")
