"""Aim 4 architectures (DenseNet-161, Inception-V3, EfficientNet-B3, RegNetY-400MF) against
torchvision 0.29.1, through the whole AIS pipeline.

Per architecture, one case: torchvision's model with random weights (fixed seeds), random
BatchNorm affine parameters and BatchNorm scales calibrated on the test images is saved with
``torch.save`` (DenseNet-161 with the old ``norm.1`` / ``conv.1`` keys of torchvision's published
file, Inception-V3 with its ``AuxLogits.*``), converted by ``ais_jax.io.weights.convert_file``
(our table), loaded by ``ais_jax.pipeline.load_model`` and run through
``ais_jax.pipeline.run_ais`` on N images at the registry's input size (224 / 299 / 300 / 224). Checked against torchvision's own
forward pass on the same preprocessed input:

* maps, embedding and logits within 1e-5 relative (max |jax - torch| / max |torch|, float32 with
  precision HIGHEST);
* cohort AIS within 1e-6 (absolute) of AIS computed in float64 from torchvision's maps by a plain
  numpy loop (zero one map, recompute the Pearson similarity matrix and its Pearson agreement
  with the human matrix).

``pytest -s`` prints the measured errors (BUILD.md's parity table).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from ais_jax import models, pipeline
from ais_jax.io import weights
from convert import tables
from convert.core import ConversionError

ARCHS = ("densenet161", "inception_v3", "efficientnet_b3", "regnet_y_400mf")
N = 6
PARITY_TOL = 1e-5
AIS_TOL = 1e-6
# torchvision submodule whose output is the ablated layer (DenseNet: before the forward's ReLU).
ABLATED_MODULE = {"densenet161": "features", "inception_v3": "Mixed_7c",
                  "efficientnet_b3": "features", "regnet_y_400mf": "trunk_output"}


def _torchvision_model(arch: str, calibration: np.ndarray) -> torch.nn.Module:
  """torchvision's model with random weights (seed 0) and data-calibrated BatchNorm.

  With its own initialisation and unit BatchNorm statistics a deep random network forgets its
  input (EfficientNet-B3's pooled maps differ by 4e-9 between images), which would make the AIS
  comparison meaningless. So the running statistics are set to the batch statistics of
  ``calibration`` (float32 [n, 3, H, W]; one pass with BatchNorm in training mode, cumulative
  averages), and the affine parameters are randomised.
  """
  torch.manual_seed(0)
  if arch == "inception_v3":  # As the published weights: aux classifier present, input re-mapped.
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, transform_input=True,
                                          init_weights=True)
  else:
    net = getattr(torchvision.models, arch)(weights=None)
  g = torch.Generator().manual_seed(1)
  norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  with torch.no_grad():
    for m in norms:
      m.reset_running_stats()
      m.momentum = None
      m.weight.copy_(1 + 0.2 * torch.randn(m.num_features, generator=g))
      m.bias.copy_(0.2 * torch.randn(m.num_features, generator=g))
    net.eval()
    for m in norms:  # Only BatchNorm in training mode: no dropout, no auxiliary classifier.
      m.train()
    net(torch.from_numpy(calibration))
    for m in norms:  # Scale only (unit RMS), no centring: centring invites cancellation.
      m.running_var.add_(m.running_mean ** 2)
      m.running_mean.zero_()
  return net.eval()


def _published_keys(arch: str, state_dict: dict) -> dict:
  """torchvision's DenseNet release files name dense-layer parameters 'norm.1' / 'conv.2'."""
  if arch != "densenet161":
    return state_dict
  old = re.compile(r"^(.*denselayer\d+\.(?:norm|conv))([12])\.(.*)$")
  return {old.sub(r"\1.\2.\3", k): v for k, v in state_dict.items()}


def _torch_forward(arch: str, net: torch.nn.Module, x: torch.Tensor):
  """One forward pass of torchvision's model: ``(maps [n, K, h, w], logits [n, C])``, the maps
  being the ablated layer's output captured by a hook (DenseNet: ReLU of ``features``, which
  torchvision applies in ``forward``)."""
  captured = []
  hook = getattr(net, ABLATED_MODULE[arch]).register_forward_hook(
      lambda module, inputs, output: captured.append(output))
  try:
    with torch.no_grad():
      logits = net(x)
  finally:
    hook.remove()
  maps = torch.relu(captured[0]) if arch == "densenet161" else captured[0]
  return maps.numpy(), logits.numpy()


def _images(size: int) -> np.ndarray:
  """N distinct smooth colour images, uint8: random colour grids of 2x2 ... 21x21 cells upsampled
  bicubically. Different scales keep the random networks' embeddings apart (pairwise correlations
  0.93-0.99 rather than all near 0.99), so cohort AIS is well conditioned: float32 rounding in the
  maps moves it by ~1e-7 (about 5x more with six same-scale images)."""
  rng = np.random.default_rng(7)
  grids = (2, 3, 5, 8, 13, 21)[:N]
  return np.stack([
      np.asarray(Image.fromarray(rng.integers(0, 256, (g, g, 3), dtype=np.uint8))
                 .resize((size, size), Image.BICUBIC)) for g in grids])


def _human() -> np.ndarray:
  features = np.random.default_rng(3).normal(size=(N, 5))
  return np.corrcoef(features)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
  a = a - a.mean()
  b = b - b.mean()
  return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def _float64_cohort_ais(maps_nkhw: np.ndarray, human: np.ndarray) -> np.ndarray:
  """Cohort AIS per map in float64: maps ``[n, K, h, w]`` (torch layout) -> ``[K]``."""
  embedding = maps_nkhw.astype(np.float64).mean(axis=(2, 3))
  n, k = embedding.shape
  pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
  h = np.array([human[i, j] for i, j in pairs])

  def agreement(e):
    sims = np.array([_pearson(e[i], e[j]) for i, j in pairs])
    return _pearson(sims, h)

  base = agreement(embedding)
  out = np.empty(k)
  for m in range(k):
    ablated = embedding.copy()
    ablated[:, m] = 0.0
    out[m] = base - agreement(ablated)
  return out


def _relative(got, want) -> float:
  want = np.asarray(want, np.float64)
  return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


@pytest.fixture(scope="module", params=ARCHS)
def case(request, tmp_path_factory):
  arch = request.param
  spec = models.get(arch)
  images = _images(spec.input_size)
  x = torch.from_numpy(np.asarray(spec.preprocess(images.astype(np.float32)))).permute(0, 3, 1, 2)
  net = _torchvision_model(arch, x[:, :, ::2, ::2].numpy())  # Calibrated at half size: cheaper.
  state_dict = _published_keys(arch, net.state_dict())
  root = tmp_path_factory.mktemp(arch)
  torch.save(state_dict, root / f"{arch}.pth")
  checkpoint = weights.convert_file(root / f"{arch}.pth", root / "ckpt", arch=arch)
  human = _human()
  loaded = pipeline.load_model(checkpoint)  # (spec, variables, provenance, module)
  # The budget counts every live buffer of the process (earlier cases' too): give it room.
  run = pipeline.run_ais(weights=loaded, images=images, human=human, precision="exact",
                         batch_size=N, memory_budget_gb=8.0)
  maps, logits = _torch_forward(arch, net, x)
  return dict(arch=arch, spec=spec, run=run, maps=maps, logits=logits, human=human,
              variables=loaded[1], module=loaded[3])


def test_maps_embedding_logits_match_torchvision(case):
  spec, run = case["spec"], case["run"]
  maps_nhwk = np.transpose(case["maps"], (0, 2, 3, 1))
  assert run.feature_maps.shape == (N, spec.map_size, spec.map_size, spec.num_maps)
  assert maps_nhwk.shape == run.feature_maps.shape
  errors = {"maps": _relative(run.feature_maps, maps_nhwk),
            "embedding": _relative(run.embeddings, maps_nhwk.mean(axis=(1, 2))),
            "logits": _relative(run.logits, case["logits"])}
  print(f"\n{case['arch']} at {spec.input_size} px, n = {N}: max relative error " +
        ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
  assert max(errors.values()) <= PARITY_TOL, errors
  assert np.abs(maps_nhwk).max() > 0 and (maps_nhwk > 0).mean() > 0.05  # Not degenerate.


def test_head_keep_masks_equal_pooling_masked_maps(case):
  maps = case["run"].feature_maps
  k = maps.shape[-1]
  keep = np.ones((2, k), np.float32)
  keep[0, ::3] = 0.0
  keep[1, 5] = 0.25
  module, variables = case["module"], case["variables"]
  embedding, logits = module.apply(variables, maps, keep, method="head")
  _, logits_0 = module.apply(variables, maps * keep[0], method="head")
  assert embedding.shape == (2, N, k) and logits.shape == (2, N, 1000)
  np.testing.assert_allclose(embedding, (maps[None] * keep[:, None, None, None]).mean(axis=(2, 3)),
                             rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(logits[0], logits_0, rtol=1e-5, atol=1e-6)


def test_cohort_ais_matches_a_float64_loop_on_torchvision_maps(case):
  want = _float64_cohort_ais(case["maps"], case["human"])
  got = case["run"].cohort_ais
  error = float(np.abs(got - want).max())
  print(f"\n{case['arch']}: cohort AIS max |pipeline - float64(torchvision maps)| = {error:.1e} "
        f"(max |AIS| {np.abs(want).max():.1e})")
  assert np.isfinite(want).all() and np.abs(want).max() > 1e-4  # The comparison is not vacuous.
  assert error <= AIS_TOL


def test_converter_names_missing_unexpected_and_misshaped_keys():
  # One family suffices (the check is convert.core's, shared by every table); RegNet is cheap.
  state_dict = {k: v.numpy() for k, v in torchvision.models.regnet_y_400mf().state_dict().items()}
  convert = tables.get("regnet_y_400mf")
  first, second = [k for k in state_dict if k.endswith("running_var")][:2]
  del state_dict[first]
  state_dict["extra.weight"] = np.zeros(3, np.float32)
  state_dict[second] = np.zeros(7, np.float32)
  with pytest.raises(ConversionError) as info:
    convert(state_dict, 1000)
  message = str(info.value)
  assert "missing in checkpoint (1)" in message and "extra.weight" in message
  assert "wrong shape (1)" in message and second in message
  with pytest.raises(ConversionError, match=r"fc\.weight"):
    tables.get("regnet_y_400mf")({k: v for k, v in state_dict.items()}, 10)


def test_inception_converter_accepts_state_dicts_without_the_aux_classifier():
  net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
  variables = tables.get("inception_v3")(net.state_dict(), 1000)
  np.testing.assert_array_equal(variables["params"]["Mixed_7c"]["branch_pool"]["conv"]["kernel"],
                                net.Mixed_7c.branch_pool.conv.weight.detach().numpy()
                                .transpose(2, 3, 1, 0))


def test_registry_entries_record_torchvisions_weights_and_preprocessing():
  from ais_jax.models.base import IMAGENET_MEAN, IMAGENET_STD
  from weights import registry
  enums = {"densenet161": torchvision.models.DenseNet161_Weights,
           "inception_v3": torchvision.models.Inception_V3_Weights,
           "efficientnet_b3": torchvision.models.EfficientNet_B3_Weights,
           "regnet_y_400mf": torchvision.models.RegNet_Y_400MF_Weights}
  for arch, enum in enums.items():
    published = enum.IMAGENET1K_V1
    entry, spec = registry.get(f"{arch}_imagenet"), models.get(arch)
    transform = published.transforms()
    assert entry.arch == arch and entry.url == published.url
    assert entry.url.endswith(f"-{entry.sha256_prefix}.pth") and len(entry.sha256_prefix) == 8
    assert entry.input_size == spec.input_size == transform.crop_size[0]
    assert entry.normalization == spec.normalization == "imagenet"
    assert tuple(transform.mean) == IMAGENET_MEAN and tuple(transform.std) == IMAGENET_STD
    assert f"Resize({transform.resize_size[0]}" in entry.notes
    assert entry.num_classes == len(published.meta["categories"]) == spec.num_classes
  # The published Inception-V3 weights are used with transform_input=True; so is our trunk.
  assert "transform_input=True" in registry.get("inception_v3_imagenet").notes
  assert models.get("inception_v3").build().transform_input
