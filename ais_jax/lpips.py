"""LPIPS distances (Zhang et al. 2018) for every image pair of a cohort, the Aim 1 baseline.

``d(x0, x1) = sum_l mean_hw sum_c w_lc (f0_lhwc - f1_lhwc)^2`` where ``f`` are a backbone's ReLU
taps (VGG16: 5, AlexNet: 5, SqueezeNet 1.1: 7), unit-normalised over channels at each location,
and ``w_l`` the LPIPS linear layers (1x1 convs without bias). Inputs are RGB in [-1, 1], shifted and
scaled by the LPIPS scaling layer (version 0.1).

All pairs at once: per layer, ``sum_c w_c (f_i - f_j)^2 = A_i + A_j - 2 G_ij`` with
``G_ij = sum_c w_c f_ic f_jc`` averaged over locations, a Gram matrix in float64 (the cancellation
``A_i + A_j - 2 G_ij`` is harmless there).

The backbone weights are the model zoo's (convert torchvision's ImageNet ``vgg16``, ``alexnet``,
``squeezenet1_1`` with ``convert.torch_to_flax``); the linear layers come from the ``lpips``
package's files when it is installed, otherwise from their published URL (sha256 checked), read by
the torch-free reader. Agreement with human similarity is only meaningful with real backbone
weights.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ais_jax.precision import float64_scope

# The LPIPS scaling layer (version 0.1): (x - shift) / scale on inputs in [-1, 1].
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)
EPS = 1e-10  # as lpips.normalize_tensor


@dataclasses.dataclass(frozen=True)
class LpipsNet:
  arch: str              # model-zoo architecture whose ``lpips_features`` gives the taps
  channels: tuple        # channels of each tap


NETS = {
    "vgg": LpipsNet("vgg16", (64, 128, 256, 512, 512)),
    "alex": LpipsNet("alexnet", (64, 192, 384, 256, 256)),
    "squeeze": LpipsNet("squeezenet1_1", (64, 128, 256, 384, 384, 512, 512)),
}
LINEAR_URL = ("https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/"
              "v{version}/{net}.pth")
LINEAR_SHA256 = {
    ("0.1", "alex"): "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    ("0.1", "squeeze"): "4a5350f23600cb79923ce65bb07cbf57dca461329894153e05a1346bd531cf76",
    ("0.1", "vgg"): "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
}


def _check_net(net: str) -> LpipsNet:
  if net not in NETS:
    raise ValueError(f"LPIPS net {net!r} is not one of {sorted(NETS)}")
  return NETS[net]


def linear_layers_path(net: str, version: str = "0.1") -> str:
  """The linear-layer file: the installed ``lpips`` package's copy, else downloaded and verified
  into the ais_jax cache."""
  _check_net(net)
  if (version, net) not in LINEAR_SHA256:
    raise ValueError(f"LPIPS version {version!r} is not supported; use '0.1'")
  spec = importlib.util.find_spec("lpips")
  if spec is not None and spec.origin:
    local = os.path.join(os.path.dirname(spec.origin), "weights", f"v{version}", f"{net}.pth")
    if os.path.exists(local):
      return local
  from ais_jax.io import weights as weights_io
  dst = os.path.join(weights_io.cache_dir(), "lpips", f"v{version}", f"{net}.pth")
  if not os.path.exists(dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    url = LINEAR_URL.format(version=version, net=net)
    import urllib.request
    tmp = dst + ".part"
    try:
      urllib.request.urlretrieve(url, tmp)
    except OSError as e:
      raise OSError(f"LPIPS linear layers for {net!r} are not installed (pip install --no-deps "
                    f"lpips) and could not be downloaded from {url}: {e}") from e
    os.replace(tmp, dst)
  from ais_jax.io.runs import sha256_file
  got = sha256_file(dst)
  if got != LINEAR_SHA256[(version, net)]:
    raise ValueError(f"{dst}: sha256 {got} does not match {LINEAR_SHA256[(version, net)]}")
  return dst


def load_linear_layers(net: str, version: str = "0.1", path: str | None = None) -> list[np.ndarray]:
  """The LPIPS linear layers as ``[C_l]`` weight vectors, read without torch."""
  from ais_jax.io.pth import load_state_dict
  info = _check_net(net)
  path = path or linear_layers_path(net, version)
  state = load_state_dict(path)
  out = []
  for layer, channels in enumerate(info.channels):
    key = f"lin{layer}.model.1.weight"
    if key not in state:
      raise ValueError(f"{path}: no {key}; is this an LPIPS v{version} '{net}' file? "
                       f"keys: {sorted(state)[:8]}")
    w = np.asarray(state[key], np.float32)
    if w.shape != (1, channels, 1, 1):
      raise ValueError(f"{path}: {key} has shape {w.shape}, expected {(1, channels, 1, 1)}")
    out.append(w.reshape(channels))
  return out


def scale_inputs(images_uint8) -> np.ndarray:
  """uint8 RGB ``[n, H, W, 3]`` -> LPIPS input: [-1, 1], then the v0.1 scaling layer."""
  x = np.asarray(images_uint8, np.float32) / 127.5 - 1.0
  return (x - SHIFT) / SCALE


def _normalize(f):
  return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + EPS)


@jax.jit
def _layer_distances(features, weight):
  """``[n, h, w, C]`` taps and ``[C]`` weights -> ``[n, n]`` mean over locations of
  ``sum_c w_c (f_i - f_j)^2`` (unit-normalised f), via a float64 Gram matrix."""
  f = _normalize(features.astype(jnp.float64))
  n = f.shape[0]
  flat = f.reshape(n, -1, f.shape[-1])
  locations = flat.shape[1]
  w = weight.astype(jnp.float64)
  gram = jnp.einsum("ipc,jpc->ij", flat * w, flat, precision=jax.lax.Precision.HIGHEST)
  sq = jnp.einsum("ipc,ipc->i", flat * w, flat, precision=jax.lax.Precision.HIGHEST)
  d = (sq[:, None] + sq[None, :] - 2 * gram) / locations
  return d.at[jnp.diag_indices(n)].set(0.0)


def pairwise_distances(taps: Sequence, linear: Sequence[np.ndarray]) -> np.ndarray:
  """LPIPS distance of every pair: ``taps`` (per layer ``[n, h, w, C]``) -> ``[n, n]`` float64."""
  if len(taps) != len(linear):
    raise ValueError(f"{len(taps)} feature taps but {len(linear)} linear layers")
  with float64_scope():
    total = 0.0
    for f, w in zip(taps, linear):
      if f.shape[-1] != w.shape[0]:
        raise ValueError(f"tap with {f.shape[-1]} channels vs linear layer of {w.shape[0]}")
      total = total + _layer_distances(jnp.asarray(f), jnp.asarray(w))
    return np.asarray(total)


def cohort_distances(images_uint8, net: str, variables, *, linear=None, batch_size: int = 16,
                     size: int | None = None) -> np.ndarray:
  """LPIPS distances ``[n, n]`` of a cohort of uint8 images ``[n, H, W, 3]`` (one size).

  Args:
    net: 'vgg' | 'alex' | 'squeeze'.
    variables: the backbone's Flax variables (model zoo ``vgg16`` / ``alexnet`` /
      ``squeezenet1_1``).
    linear: the linear layers (default: :func:`load_linear_layers`).
    size: resize images to ``size`` x ``size`` first (PIL bilinear) if given.
  """
  from ais_jax import models
  info = _check_net(net)
  spec = models.get(info.arch)
  images = np.asarray(images_uint8)
  if size is not None:
    from ais_jax.io.images import resize_images
    images = resize_images(images, size)
  linear = load_linear_layers(net) if linear is None else linear
  module = spec.build(num_classes=_num_classes(variables, spec))
  taps_fn = jax.jit(lambda x: module.apply(variables, x, method=module.lpips_features))
  x = scale_inputs(images)
  n = len(x)
  pad = (-n) % batch_size
  x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
  chunks = [taps_fn(jnp.asarray(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
  taps = [np.concatenate([np.asarray(c[layer]) for c in chunks])[:n]
          for layer in range(len(info.channels))]
  return pairwise_distances(taps, linear)


def _num_classes(variables, spec):
  """Classifier size of converted variables (a checkpoint may have another head size)."""
  leaves = jax.tree_util.tree_leaves_with_path(variables.get("params", {}))
  last = [leaf for path, leaf in leaves if "bias" in jax.tree_util.keystr(path)
          and "classifier" in jax.tree_util.keystr(path)]
  return int(last[-1].shape[0]) if last else spec.num_classes
