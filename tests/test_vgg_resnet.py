"""VGG16/19, ResNet-50/152, ResNeXt-50 32x4d and a Barlow-Twins-style ResNet-50 against
torchvision 0.29.1 (random weights from a fixed seed, converted by our converters).

Each architecture is compiled once (trunk + head in one jitted call) and compared on 2 inputs:
maps, embedding and logits, max |jax - torch| <= 1e-4 x max |torch| (float32, HIGHEST). VGG and
the 50-layer nets run at 224 px; ResNet-152 runs at 64 px to keep the suite fast (same weights
and code path; the spatial size only changes the map size). The measured relative errors are
printed at the end of the module (``pytest -s``).
"""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
import torch
import torchvision

from ais_jax import models
from ais_jax.models import vgg as vgg_lib
from convert import tables
from convert.core import ConversionError

TOL = 1e-4
ERRORS: dict[str, dict[str, float]] = {}


def _inputs(size: int, n: int = 2, seed: int = 0) -> np.ndarray:
  """``n`` image-like inputs: different coarse 4x4 colour layouts plus pixel noise."""
  rng = np.random.default_rng(seed)
  coarse = rng.standard_normal((n, 4, 4, 3))
  x = np.repeat(np.repeat(coarse, size // 4, axis=1), size // 4, axis=2)
  return (x + 0.5 * rng.standard_normal(x.shape)).astype(np.float32)


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
  """torchvision's own init plus random biases and BatchNorm parameters; model.eval().

  BatchNorm running statistics are first calibrated on a few random images (so that signals
  propagate through 50-150 random layers instead of being swamped by constant offsets), then
  perturbed, so the stored statistics are neither 0/1 nor exactly the batch's.
  """
  torch.manual_seed(seed)
  bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None:
        m.bias.normal_(0.0, 0.05)
    for m in bns:
      m.weight.uniform_(0.5, 1.5)
      m.bias.uniform_(-0.2, 0.2)
      m.momentum = None  # cumulative average over the calibration pass
    for m in model.modules():
      # Residual branches start small (as zero_init_residual, but not zero): a random 150-layer
      # net is otherwise chaotic and float32 itself loses 3e-4 (measured against float64).
      if isinstance(m, torchvision.models.resnet.Bottleneck):
        m.bn3.weight.uniform_(0.1, 0.3)
    if bns:
      model.train()
      model(torch.from_numpy(_inputs(64, n=4, seed=seed).transpose(0, 3, 1, 2).copy()))
      for m in bns:
        m.momentum = 0.1
        m.running_mean.add_(0.1 * m.running_var.sqrt() * torch.randn_like(m.running_mean))
        m.running_var.mul_(torch.empty_like(m.running_var).uniform_(0.8, 1.25))
  return model.eval()


def _torch_model(arch: str, num_classes) -> torch.nn.Module:
  torch.manual_seed(0)
  net = getattr(torchvision.models, arch)(num_classes=num_classes or 1000)
  if not num_classes:
    net.fc = torch.nn.Identity()  # as the Barlow Twins checkpoint: no fc keys at all
  return _randomize(net, seed=1)


def _torch_outputs(arch: str, net: torch.nn.Module, x: np.ndarray):
  """(maps NHWC, embedding, logits or None) computed with torchvision's own submodules."""
  with torch.no_grad():
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    if arch.startswith("vgg"):
      cut = {"vgg16": 30, "vgg19": 36}[arch]
      maps = net.features[:cut](xt)
      pooled = torch.flatten(net.avgpool(net.features[cut:](maps)), 1)
      emb = net.classifier[:5](pooled)
      logits = net.classifier[5:](emb)
    else:
      y = net.maxpool(net.relu(net.bn1(net.conv1(xt))))
      maps = net.layer4(net.layer3(net.layer2(net.layer1(y))))
      emb = torch.flatten(net.avgpool(maps), 1)
      logits = net.fc(emb)
      if isinstance(net.fc, torch.nn.Identity):
        logits = None
  return (maps.numpy().transpose(0, 2, 3, 1), emb.numpy(),
          None if logits is None else logits.numpy())


def _rel_err(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


def _forward(module):
  def f(variables, x):
    maps = module.apply(variables, x, method=module.trunk)
    emb, logits = module.apply(variables, maps, method=module.head)
    return maps, emb, logits
  return jax.jit(f)


class Parity:
  """One converted architecture and its torch/jax outputs (built once per module)."""

  def __init__(self, arch, num_classes, size, name=None):
    self.arch, self.name = arch, name or arch
    self.net = _torch_model(arch, num_classes)
    self.state_dict = {k: v.numpy() for k, v in self.net.state_dict().items()}
    self.spec = models.get(arch)
    self.variables = tables.get(self.spec.name)(self.state_dict, num_classes)
    self.module = self.spec.build(num_classes=num_classes)
    self.x = _inputs(size)
    self.jax_out = _forward(self.module)(self.variables, self.x)
    self.torch_out = _torch_outputs(arch, self.net, self.x)


CASES = {  # name: (arch, num_classes, input px)
    "vgg16": ("vgg16", 1000, 224),
    "vgg19_ecoset": ("vgg19", 565, 224),
    "resnet50": ("resnet50", 1000, 224),
    "resnext50_32x4d": ("resnext50_32x4d", 1000, 224),
    "resnet152": ("resnet152", 1000, 64),
    "barlowtwins_resnet50": ("resnet50", None, 224),
}


@pytest.fixture(scope="module")
def parity():
  cache = {}

  def get(name):
    if name not in cache:
      arch, num_classes, size = CASES[name]
      cache[name] = Parity(arch, num_classes, size, name)
    return cache[name]
  yield get
  if ERRORS:
    print("\nmax |jax - torch| / max |torch| (float32 HIGHEST, 2 inputs):")
    for name, errs in ERRORS.items():
      print(f"  {name:24s} " + "  ".join(f"{k} {v:.2e}" for k, v in errs.items()))


@pytest.mark.parametrize("name", list(CASES))
def test_matches_torchvision(parity, name):
  p = parity(name)
  arch, num_classes, size = CASES[name]
  maps, emb, logits = p.jax_out
  t_maps, t_emb, t_logits = p.torch_out
  side = p.spec.map_size * size // p.spec.input_size
  assert maps.shape == (2, side, side, p.spec.num_maps)
  assert emb.shape == (2, p.spec.embedding_dim)
  errs = {"maps": _rel_err(maps, t_maps), "embedding": _rel_err(emb, t_emb)}
  if num_classes:
    assert logits.shape == (2, num_classes)
    errs["logits"] = _rel_err(logits, t_logits)
  else:
    assert logits is None and t_logits is None
    assert "fc" not in p.variables["params"]
  ERRORS[f"{name} ({size} px)"] = errs
  for what, err in errs.items():
    assert err <= TOL, f"{name} {what}: relative error {err:.2e}"
  # Non-degenerate comparison: outputs differ between the two images and are not all zero.
  assert np.abs(t_emb[0] - t_emb[1]).max() > 1e-2 * np.abs(t_emb).max()


def test_vgg_keep_masks_zero_before_pool_equals_after(parity):
  """head(maps, keep) zeroes maps before the last max-pool; zeroing the pooled maps in torch
  (after the pool) gives the same embedding and logits (DESIGN.md section 2)."""
  p = parity("vgg16")
  maps = np.asarray(p.jax_out[0])
  num_maps = maps.shape[-1]
  rng = np.random.default_rng(3)
  keep = (rng.random((3, num_maps)) > 0.5).astype(np.float32)
  keep[0] = 1.0
  keep[1, :] = 1.0
  keep[1, 7] = 0.0                         # remove one map
  head = jax.jit(lambda v, m, k: p.module.apply(v, m, k, method=p.module.head))
  emb, logits = head(p.variables, maps, keep)
  assert emb.shape == (3, 2, 4096) and logits.shape == (3, 2, 1000)
  with torch.no_grad():
    pooled = p.net.features[30](torch.from_numpy(maps.transpose(0, 3, 1, 2).copy()))
    for i in range(3):
      masked = pooled * torch.from_numpy(keep[i])[None, :, None, None]   # zero after the pool
      t_emb = p.net.classifier[:5](torch.flatten(p.net.avgpool(masked), 1))
      t_logits = p.net.classifier[5:](t_emb)
      assert _rel_err(emb[i], t_emb.numpy()) <= TOL
      assert _rel_err(logits[i], t_logits.numpy()) <= TOL
  # keep [K] equals the matching row of keep [m, K]; keep of ones equals no keep.
  emb1, _ = head(p.variables, maps, keep[2])
  np.testing.assert_allclose(emb1, emb[2], rtol=0, atol=1e-6 * float(np.abs(emb).max()))
  np.testing.assert_allclose(emb[0], p.jax_out[1], rtol=0, atol=1e-6 * float(np.abs(emb).max()))
  # The pooling identity itself, exactly: maxpool(maps * keep) == maxpool(maps) * keep.
  pool = lambda a: a.reshape(2, 7, 2, 7, 2, num_maps).max(axis=(2, 4))
  np.testing.assert_array_equal(pool(maps * keep[2]), pool(maps) * keep[2])


def test_vgg_fc_head_float64_reproduces_head(parity):
  """The engine's FcHead (from spec.get_ablation_head) in a float64 numpy computation gives the
  module's embedding, and its per-map contribution algebra equals removing the map."""
  p = parity("vgg16")
  fc = p.spec.get_ablation_head(p.variables)
  assert fc.pool_window == 2 and fc.w1.shape == (512 * 49, 4096)
  maps = np.asarray(p.jax_out[0], np.float64)
  w1, b1, w2, b2 = (np.asarray(a, np.float64) for a in (fc.w1, fc.b1, fc.w2, fc.b2))
  n, h, w, k = maps.shape
  pw = fc.pool_window
  pooled = maps.reshape(n, h // pw, pw, w // pw, pw, k).max(axis=(2, 4))      # [n, 7, 7, K]
  pk = pooled.transpose(0, 3, 1, 2).reshape(n, k, -1)                          # [n, K, 49]
  w1k = w1.reshape(k, -1, w1.shape[1])                                         # [K, 49, D1]
  a = np.einsum("nks,ksd->nd", pk, w1k, optimize=True) + b1                  # sum over maps
  emb64 = np.maximum(np.maximum(a, 0) @ w2 + b2, 0)
  assert _rel_err(p.jax_out[1], emb64) <= 1e-5
  # Removing map 11: a - d_11 against the module's head with keep = 1 - e_11.
  d = np.einsum("ns,sd->nd", pk[:, 11], w1k[11])
  emb_removed = np.maximum(np.maximum(a - d, 0) @ w2 + b2, 0)
  keep = np.ones(k, np.float32)
  keep[11] = 0.0
  emb_jax, _ = jax.jit(lambda v, m, k: p.module.apply(v, m, k, method=p.module.head))(
      p.variables, p.jax_out[0], keep)
  assert _rel_err(emb_jax, emb_removed) <= 1e-5
  assert np.abs(emb_removed - emb64).max() > 0  # the removal changed something


def test_keep_mask_pooled_head_zeroes_coordinates(parity):
  p = parity("resnet50")
  maps = p.jax_out[0]
  keep = np.ones((2, 2048), np.float32)
  keep[1, [0, 5, 2047]] = 0.0
  emb, logits = p.module.apply(p.variables, maps, keep, method=p.module.head)
  assert emb.shape == (2, 2, 2048) and logits.shape == (2, 2, 1000)
  expected = np.asarray(maps, np.float64).mean(axis=(1, 2))
  np.testing.assert_allclose(emb[0], expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(emb[1], expected * keep[1], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="keep must be"):
    p.module.apply(p.variables, maps, np.ones(100), method=p.module.head)


def test_adaptive_avg_pool_matches_torch():
  rng = np.random.default_rng(0)
  for (h, w), out in (((7, 7), (7, 7)), ((10, 13), (7, 7)), ((3, 2), (7, 7)), ((14, 9), (6, 6))):
    x = rng.standard_normal((2, h, w, 5)).astype(np.float32)
    ours = np.asarray(vgg_lib.adaptive_avg_pool(x, out))
    ref = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
                                                  out).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


def test_conversion_errors_name_the_problem(parity):
  sd = parity("barlowtwins_resnet50").state_dict
  with pytest.raises(ConversionError, match="fc"):
    tables.get("resnet50")(sd, 1000)          # a Barlow checkpoint has no fc
  sd_fc = parity("resnet50").state_dict
  with pytest.raises(ConversionError, match="fc.weight"):
    tables.get("resnet50")(sd_fc, None)
  with pytest.raises(ConversionError, match=r"wrong shape .*layer1\.0\.conv2\.weight"):
    tables.get("resnext50_32x4d")(sd_fc, 1000)  # resnet50 weights for a ResNeXt
  vgg_sd = parity("vgg16").state_dict
  with pytest.raises(ConversionError, match="classifier_6"):
    tables.get("vgg16")(vgg_sd, 565)             # ImageNet fc8 for an Ecoset model


def test_pth_file_round_trip(parity, tmp_path):
  """torch.save -> ais_jax.io.pth (torch-free reader) -> convert gives the same variables."""
  from ais_jax.io import pth
  p = parity("barlowtwins_resnet50")
  path = os.path.join(tmp_path, "barlow_resnet50.pth")
  torch.save(p.net.state_dict(), path)
  variables = tables.get(p.spec.name)(pth.load_state_dict(path), None)
  flat_a = jax.tree_util.tree_leaves_with_path(variables)
  flat_b = dict(jax.tree_util.tree_leaves_with_path(p.variables))
  assert len(flat_a) == len(flat_b)
  for path_, leaf in flat_a:
    np.testing.assert_array_equal(leaf, flat_b[path_])
