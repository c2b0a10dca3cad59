"""AlexNet, SqueezeNet 1.1 and VGG16 LPIPS taps (and the AlexNet/SqueezeNet AIS trunk/head) against
torchvision 0.29.1 and the ``lpips`` package's own ``pretrained_networks`` slices.

Random weights from a fixed seed (biases randomised too), converted by our converters; the lpips
slices (``pretrained=False``) are loaded with the very same torchvision weights. Taps are compared
at small, odd input sizes (100 px: SqueezeNet's ceil-mode pools get partial windows; AlexNet's head
then upsamples 2x2 -> 6x6 in its adaptive pool); the full AIS models at 224 px.
"""

from __future__ import annotations

import importlib.util
import os

import jax
import numpy as np
import pytest
import torch
import torchvision

from ais_jax import models
from convert import tables

TAP_TOL = 1e-5   # max |jax - torch| <= TAP_TOL x max |torch|, per tap
TOL = 1e-4


def _lpips_networks():
  """lpips/pretrained_networks.py loaded on its own: ``import lpips`` needs tqdm (and more) for
  its trainer, which the trunks do not use."""
  spec = importlib.util.find_spec("lpips")
  if spec is None or not spec.submodule_search_locations:
    pytest.fail("the lpips package (0.1.4) is required for this test: pip install lpips==0.1.4")
  path = os.path.join(spec.submodule_search_locations[0], "pretrained_networks.py")
  module_spec = importlib.util.spec_from_file_location("lpips_pretrained_networks", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def _inputs(size: int, n: int = 2) -> np.ndarray:
  rng = np.random.default_rng(1)
  coarse = rng.standard_normal((n, 5, 5, 3))
  x = np.repeat(np.repeat(coarse, -(-size // 5), axis=1), -(-size // 5), axis=2)[:, :size, :size]
  return (x + 0.5 * rng.standard_normal(x.shape)).astype(np.float32)


def _nchw(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def _rel_err(a, b) -> float:
  b = np.asarray(b, np.float64)
  return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


def _torchvision(arch: str) -> torch.nn.Module:
  torch.manual_seed(0)
  net = getattr(torchvision.models, arch)()
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
        m.bias.normal_(0.0, 0.05)
  return net.eval()


# arch: (lpips class name, torchvision features index of each tap)
LPIPS_TAPS = {
    "alexnet": ("alexnet", (1, 4, 7, 9, 11)),
    "squeezenet1_1": ("squeezenet", (1, 4, 7, 9, 10, 11, 12)),
    "vgg16": ("vgg16", (3, 8, 15, 22, 29)),
}
TAP_SIZE = {"alexnet": 100, "squeezenet1_1": 100, "vgg16": 64}


@pytest.fixture(scope="module")
def nets():
  cache = {}

  def get(arch):
    if arch not in cache:
      net = _torchvision(arch)
      sd = {k: v.numpy() for k, v in net.state_dict().items()}
      spec = models.get(arch)
      cache[arch] = (net, spec, spec.build(num_classes=1000), tables.get(arch)(sd, 1000))
    return cache[arch]
  return get


@pytest.mark.parametrize("arch", list(LPIPS_TAPS))
def test_lpips_taps_match_torchvision_and_lpips_package(nets, arch):
  net, _, module, variables = nets(arch)
  lpips_name, tap_indices = LPIPS_TAPS[arch]
  x = _inputs(TAP_SIZE[arch])
  taps = jax.jit(lambda v, x: module.apply(v, x, method=module.lpips_features))(variables, x)
  assert len(taps) == len(tap_indices)

  pn = _lpips_networks()
  lp = getattr(pn, lpips_name)(requires_grad=False, pretrained=False).eval()
  with torch.no_grad():
    for seq in (getattr(lp, f"slice{i + 1}") for i in range(lp.N_slices)):  # the same weights
      for name, layer in seq.named_children():
        layer.load_state_dict(net.features[int(name)].state_dict())
    lp_out = lp(_nchw(x))
    tv_out = [net.features[:i + 1](_nchw(x)) for i in tap_indices]
  errs = []
  for tap, ref_lp, ref_tv in zip(taps, lp_out, tv_out):
    ref_lp = ref_lp.numpy().transpose(0, 2, 3, 1)
    ref_tv = ref_tv.numpy().transpose(0, 2, 3, 1)
    assert tap.shape == ref_lp.shape == ref_tv.shape
    errs.append(max(_rel_err(tap, ref_lp), _rel_err(tap, ref_tv)))
  print(f"\n{arch} lpips taps at {TAP_SIZE[arch]} px: max rel err per tap "
        + " ".join(f"{e:.1e}" for e in errs))
  assert max(errs) <= TAP_TOL, errs


@pytest.mark.parametrize("arch,size", [("alexnet", 224), ("alexnet", 100),
                                       ("squeezenet1_1", 224)])
def test_ais_model_matches_torchvision(nets, arch, size):
  """trunk -> maps, head -> (embedding, logits), as the torchvision modules compute them."""
  net, spec, module, variables = nets(arch)
  x = _inputs(size)

  def forward(v, x):
    maps = module.apply(v, x, method=module.trunk)
    return (maps,) + module.apply(v, maps, method=module.head)
  maps, emb, logits = jax.jit(forward)(variables, x)
  with torch.no_grad():
    if arch == "alexnet":
      t_maps = net.features[:12](_nchw(x))
      pooled = torch.flatten(net.avgpool(net.features[12](t_maps)), 1)
      t_emb = net.classifier[:6](pooled)
      t_logits = net.classifier[6](t_emb)
    else:
      t_maps = net.features(_nchw(x))
      t_emb = t_maps.mean(dim=(2, 3))
      t_logits = net(_nchw(x))
  if size == spec.input_size:
    assert maps.shape == (2, spec.map_size, spec.map_size, spec.num_maps)
  assert emb.shape == (2, spec.embedding_dim) and logits.shape == (2, 1000)
  errs = [_rel_err(maps, t_maps.numpy().transpose(0, 2, 3, 1)), _rel_err(emb, t_emb.numpy()),
          _rel_err(logits, t_logits.numpy())]
  print(f"\n{arch} at {size} px: max rel err maps {errs[0]:.1e} embedding {errs[1]:.1e} "
        f"logits {errs[2]:.1e}")
  assert max(errs) <= TOL, errs


def test_alexnet_generic_ablation_head(nets):
  """The GenericHead's embed(maps, keep) is the module head; keep [m, K] adds the m axis."""
  _, spec, module, variables = nets("alexnet")
  head = spec.get_ablation_head(variables)
  maps = np.abs(np.random.default_rng(0).standard_normal((2, 13, 13, 256))).astype(np.float32)
  keep = np.ones((2, 256), np.float32)
  keep[1, :128] = 0.0
  emb = jax.jit(lambda embed, m, k: embed(m, k))(head.embed, maps, keep)  # weights traced
  assert emb.shape == (2, 2, 4096)
  plain_head = jax.jit(lambda v, m: module.apply(v, m, method=module.head)[0])
  full_and_half = plain_head(variables, np.stack([maps[0], maps[1], maps[0] * keep[1],
                                                  maps[1] * keep[1]]))
  scale = float(np.abs(full_and_half).max())
  np.testing.assert_allclose(emb.reshape(4, 4096), full_and_half, rtol=0, atol=1e-6 * scale)
  assert np.abs(np.asarray(emb[0]) - np.asarray(emb[1])).max() > 1e-2 * scale
