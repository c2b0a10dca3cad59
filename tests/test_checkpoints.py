"""Checkpoint store: convert -> save -> load round trip, provenance checks, atomic writes.

Defines a tiny test-only architecture ('tiny_convnet_test': two Conv/BatchNorm layers as the
trunk, mean pool + Dense as the head) with a convert table built on convert.core, so these tests
do not depend on any real family. tests/test_convert_cli.py reuses it.
"""

import json
import os
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from ais_jax import models
from ais_jax.io import checkpoints
from convert import core, tables

TINY = "tiny_convnet_test"
TINY_CLASSES = 3


class TinyConvNet(nn.Module):
  """conv0 -> bn0 -> relu -> conv1 (stride 2) -> bn1 -> relu = maps [n, h, w, 6]; mean -> fc."""
  num_classes: Optional[int] = TINY_CLASSES

  def setup(self):
    self.conv0 = nn.Conv(4, (3, 3), padding=1, precision="highest")
    self.bn0 = nn.BatchNorm(use_running_average=True, epsilon=1e-5)
    self.conv1 = nn.Conv(6, (3, 3), strides=2, padding=1, precision="highest")
    self.bn1 = nn.BatchNorm(use_running_average=True, epsilon=1e-5)
    self.fc = nn.Dense(self.num_classes, precision="highest") if self.num_classes else None

  def trunk(self, x):
    x = nn.relu(self.bn0(self.conv0(x)))
    return nn.relu(self.bn1(self.conv1(x)))

  def head(self, maps, keep=None):
    if keep is not None:
      maps = maps * jnp.asarray(keep)[..., None, None, None, :]
    embedding = maps.mean(axis=(-3, -2))
    return embedding, (self.fc(embedding) if self.fc is not None else None)

  def __call__(self, x):
    return self.head(self.trunk(x))


TINY_RULES = [
    core.Rule(r"(conv\d)\.weight", r"params/\1/kernel", "conv"),
    core.Rule(r"(conv\d|bn\d|fc)\.bias", r"params/\1/bias"),
    core.Rule(r"(bn\d)\.weight", r"params/\1/scale"),
    core.Rule(r"(bn\d)\.running_mean", r"batch_stats/\1/mean"),
    core.Rule(r"(bn\d)\.running_var", r"batch_stats/\1/var"),
    core.Rule(r"(bn\d)\.num_batches_tracked", "", "ignore"),
    core.Rule(r"fc\.weight", r"params/fc/kernel", "dense"),
]


def _tiny_convert(state_dict, num_classes=TINY_CLASSES):
  spec = models.get(TINY)
  return core.convert_state_dict(state_dict, TINY_RULES,
                                 models.abstract_variables(spec, num_classes), arch=TINY)


def _register_tiny():
  if TINY not in models.names():
    models.register(models.ModelSpec(
        name=TINY, family="test", build=lambda num_classes=TINY_CLASSES: TinyConvNet(num_classes),
        num_maps=6, embedding_dim=6, input_size=8, map_size=4, normalization="imagenet",
        resize="square", ablation_layer="bn1 + ReLU", embedding_layer="mean pool",
        pooled_head=True, num_classes=TINY_CLASSES))
    tables.register(TINY, _tiny_convert)
  return models.get(TINY)


TINY_SPEC = _register_tiny()


class TorchTiny(torch.nn.Module):
  """The same network in PyTorch (the source of the state dicts)."""

  def __init__(self, num_classes=TINY_CLASSES):
    super().__init__()
    self.conv0 = torch.nn.Conv2d(3, 4, 3, padding=1)
    self.bn0 = torch.nn.BatchNorm2d(4)
    self.conv1 = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1)
    self.bn1 = torch.nn.BatchNorm2d(6)
    self.fc = torch.nn.Linear(6, num_classes)

  def forward(self, x):
    x = torch.relu(self.bn0(self.conv0(x)))
    x = torch.relu(self.bn1(self.conv1(x)))
    return self.fc(x.mean(dim=(2, 3)))


def torch_tiny(seed=0, num_classes=TINY_CLASSES):
  """A TorchTiny in eval mode with random non-trivial BatchNorm statistics."""
  torch.manual_seed(seed)
  net = TorchTiny(num_classes)
  with torch.no_grad():
    for bn in (net.bn0, net.bn1):
      bn.running_mean.normal_()
      bn.running_var.uniform_(0.5, 2.0)
      bn.weight.normal_()
      bn.bias.normal_()
  return net.eval()


def assert_trees_bit_identical(a, b):
  fa, fb = core.flatten_variables(a), core.flatten_variables(b)
  assert sorted(fa) == sorted(fb)
  for path in fa:
    x, y = np.asarray(fa[path]), np.asarray(fb[path])
    assert x.dtype == y.dtype == np.float32, path
    assert x.shape == y.shape and x.tobytes() == y.tobytes(), path


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
  net = torch_tiny()
  path = str(tmp_path_factory.mktemp("tiny") / "tiny.pth")
  torch.save(net.state_dict(), path)
  return net, path


def test_round_trip_is_bit_identical_and_matches_torch(tiny_file, tmp_path):
  from ais_jax.io import pth
  net, path = tiny_file
  converted = tables.get(TINY)(pth.load_state_dict(path), TINY_CLASSES)
  directory = checkpoints.save_checkpoint(
      tmp_path / "ckpt", converted,
      {"arch": TINY, "num_classes": TINY_CLASSES, "source_file": "tiny.pth"})
  assert sorted(os.listdir(directory)) == ["provenance.json", "variables"]
  assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]
  restored, record = checkpoints.load_checkpoint(directory, expected_arch=TINY)
  assert_trees_bit_identical(restored, converted)
  assert record["arch"] == TINY and record["num_classes"] == TINY_CLASSES
  assert record["source_file"] == "tiny.pth" and record["checkpoint_format"] == 1
  assert record["shapes"]["params/conv0/kernel"] == [3, 3, 3, 4]
  # The restored variables compute what PyTorch computes (checks the conv/dense transforms too).
  x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)
  _, logits = TinyConvNet(TINY_CLASSES).apply(restored, x)
  with torch.no_grad():
    want = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
  np.testing.assert_allclose(np.asarray(logits), want, rtol=0, atol=1e-5)


def test_arch_and_shape_mismatches_are_refused(tiny_file, tmp_path):
  from ais_jax.io import pth
  _, path = tiny_file
  converted = tables.get(TINY)(pth.load_state_dict(path), TINY_CLASSES)
  directory = checkpoints.save_checkpoint(tmp_path / "c", converted,
                                          {"arch": TINY, "num_classes": TINY_CLASSES})
  with pytest.raises(ValueError, match=f"holds weights for '{TINY}', but 'vgg16' was requested"):
    checkpoints.load_checkpoint(directory, expected_arch="vgg16")
  # A record whose num_classes disagrees with the stored variables: fc shapes differ.
  lying = checkpoints.save_checkpoint(tmp_path / "lying", converted,
                                      {"arch": TINY, "num_classes": 5})
  with pytest.raises(ValueError, match=r"params/fc/kernel: stored \(6, 3\).*model \(6, 5\)"):
    checkpoints.load_checkpoint(lying)
  with pytest.raises(FileNotFoundError, match="not an ais_jax checkpoint"):
    checkpoints.load_checkpoint(tmp_path)


def test_save_is_atomic_and_does_not_clobber(tiny_file, tmp_path, monkeypatch):
  import orbax.checkpoint as ocp
  from ais_jax.io import pth
  _, path = tiny_file
  converted = tables.get(TINY)(pth.load_state_dict(path), TINY_CLASSES)
  record = {"arch": TINY, "num_classes": TINY_CLASSES}
  target = tmp_path / "ckpt"
  checkpoints.save_checkpoint(target, converted, record)
  with pytest.raises(FileExistsError, match="already exists"):
    checkpoints.save_checkpoint(target, converted, record)
  # Overwrite replaces the contents (new values), leaving no temp or backup directory behind.
  changed = jax.tree.map(lambda a: a + np.float32(1), converted)
  checkpoints.save_checkpoint(target, changed, record, overwrite=True)
  assert_trees_bit_identical(checkpoints.load_checkpoint(target)[0], changed)
  assert sorted(os.listdir(tmp_path)) == ["ckpt"]

  # A failure half way leaves neither a checkpoint nor a temp directory.
  def broken_save(*args, **kwargs):
    raise OSError("disk full")
  monkeypatch.setattr(ocp.StandardCheckpointer, "save", broken_save)
  with pytest.raises(OSError, match="disk full"):
    checkpoints.save_checkpoint(tmp_path / "half", converted, record)
  assert sorted(os.listdir(tmp_path)) == ["ckpt"]
  assert_trees_bit_identical(checkpoints.load_checkpoint(target)[0], changed)


def test_save_validates_inputs(tmp_path):
  variables = {"params": {"w": np.zeros(2, np.float32)}}
  with pytest.raises(ValueError, match="provenance lacks"):
    checkpoints.save_checkpoint(tmp_path / "a", variables, {"arch": TINY})
  with pytest.raises(ValueError, match="params/w has dtype float64"):
    checkpoints.save_checkpoint(tmp_path / "b", {"params": {"w": np.zeros(2)}},
                                {"arch": TINY, "num_classes": 3})
  assert os.listdir(tmp_path) == []


def test_provenance_file_is_plain_json(tiny_file, tmp_path):
  from ais_jax.io import pth
  _, path = tiny_file
  converted = tables.get(TINY)(pth.load_state_dict(path), TINY_CLASSES)
  directory = checkpoints.save_checkpoint(tmp_path / "c", converted,
                                          {"arch": TINY, "num_classes": TINY_CLASSES,
                                           "normalization": "imagenet"})
  with open(os.path.join(directory, "provenance.json")) as f:
    record = json.load(f)
  import ais_jax
  assert record["ais_jax_version"] == ais_jax.__version__
  assert record["normalization"] == "imagenet" and "created" in record
