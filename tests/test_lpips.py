"""LPIPS distances against the ``lpips`` PyTorch package (random backbone, same weights)."""

import numpy as np
import pytest
import torch
import torchvision

import lpips as lpips_torch
from ais_jax import lpips, models
from convert import tables

TORCHVISION = {"alex": torchvision.models.alexnet, "squeeze": torchvision.models.squeezenet1_1,
               "vgg": torchvision.models.vgg16}


def _random_backbone(net, seed=0):
  torch.manual_seed(seed)
  return TORCHVISION[net](weights=None).eval()


@pytest.fixture(scope="module")
def images():
  rng = np.random.default_rng(0)
  base = rng.integers(0, 256, size=(1, 48, 48, 3))
  # Related images (small perturbations of one) and an unrelated one: small and large distances.
  noise = rng.integers(-40, 41, size=(4, 48, 48, 3))
  out = np.clip(base + noise, 0, 255)
  out[3] = rng.integers(0, 256, size=(48, 48, 3))
  return out.astype(np.uint8)


def _lpips_package_distances(backbone, net, images):
  """[n, n] distances from the lpips package with ``backbone``'s random weights in its slices."""
  reference = lpips_torch.LPIPS(net=net, pnet_rand=True, verbose=False).eval()
  # Put the same random backbone into the lpips model (its slices keep torchvision's indices).
  features = {k: v for k, v in backbone.state_dict().items() if k.startswith("features.")}
  slice_state = {}
  for key in reference.net.state_dict():
    index_and_param = key.split(".", 1)[1]
    slice_state[key] = features[f"features.{index_and_param}"]
  reference.net.load_state_dict(slice_state)
  x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)
  n = len(images)
  want = np.zeros((n, n))
  with torch.no_grad():
    for i in range(n):
      for j in range(n):
        if i != j:
          want[i, j] = float(reference(x[i:i + 1], x[j:j + 1]))
  return want, reference


@pytest.mark.parametrize("net", ["alex", "squeeze", "vgg"])
def test_lpips_matches_the_lpips_package(net, images):
  backbone = _random_backbone(net)
  want, reference = _lpips_package_distances(backbone, net, images)
  spec = models.get(lpips.NETS[net].arch)
  variables = tables.get(spec.name)({k: v.numpy() for k, v in backbone.state_dict().items()}, 1000)
  got = lpips.cohort_distances(images, net, variables, batch_size=2)
  # The linear layers were read by the torch-free reader from the same files lpips loads.
  linear_torch = [m.model[1].weight.detach().numpy().reshape(-1) for m in reference.lins]
  for a, b in zip(lpips.load_linear_layers(net), linear_torch):
    np.testing.assert_array_equal(a, b)
  rel = np.max(np.abs(got - want)) / np.max(np.abs(want))
  print(f"LPIPS {net}: max relative difference to the lpips package {rel:.2e}")
  assert rel <= 1e-5
  assert np.allclose(got, got.T, atol=1e-12) and np.all(np.diag(got) == 0)


def test_bad_inputs_name_the_problem():
  with pytest.raises(ValueError, match="not one of"):
    lpips.load_linear_layers("resnet")
  with pytest.raises(ValueError, match="2 feature taps but 1 linear"):
    lpips.pairwise_distances([np.zeros((2, 3, 3, 4))] * 2, [np.ones(4)])


def test_lpips_baseline_command_line(tmp_path, images):
  """experiments.lpips_baseline end to end on a random AlexNet converted from torch: the saved
  distances against the lpips package, the printed agreement against numpy on those."""
  import json
  import subprocess
  import sys

  from ais_jax.io import weights as weights_io
  backbone = _random_backbone("alex", seed=3)
  torch.save(backbone.state_dict(), tmp_path / "alex.pth")
  weights_io.convert_file(tmp_path / "alex.pth", tmp_path / "alex", arch="alexnet")
  want, _ = _lpips_package_distances(backbone, "alex", images)
  np.save(tmp_path / "images.npy", images)
  rng = np.random.default_rng(1)
  human = np.corrcoef(rng.normal(size=(len(images), 5)))
  np.save(tmp_path / "human.npy", human)
  out = tmp_path / "out"
  cmd = [sys.executable, "-m", "experiments.lpips_baseline", "--net=alex",
         f"--weights={tmp_path / 'alex'}", f"--images={tmp_path / 'images.npy'}",
         f"--human={tmp_path / 'human.npy'}", f"--out={out}", "--size=48", "--noprogress"]
  subprocess.run(cmd, check=True, capture_output=True, text=True)
  distances = np.load(out / "lpips_distances.npy")
  assert np.max(np.abs(distances - want)) <= 1e-5 * np.max(want)
  summary = json.loads((out / "summary.json").read_text())
  iu = np.triu_indices(len(images), 1)
  reference_agreement = np.corrcoef(-want[iu], human[iu])[0, 1]
  assert abs(summary["agreement_pearson"] - reference_agreement) <= 1e-5
  # Refuses a second run into the same folder with a one-line error.
  again = subprocess.run(cmd, capture_output=True, text=True)
  assert again.returncode == 2 and again.stderr.strip().startswith("error:")
