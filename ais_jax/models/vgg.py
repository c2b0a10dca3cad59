"""VGG16 / VGG19 (torchvision layout) with the AIS trunk/head split.

* ``trunk(x)``: torchvision ``features[:30]`` (VGG16) / ``features[:36]`` (VGG19): conv5_3 /
  conv5_4 after ReLU, ``[n, 14, 14, 512]`` at 224 px.
* ``head(maps, keep)``: the last 2x2 max-pool, torchvision's ``AdaptiveAvgPool2d((7, 7))`` (the
  identity at 224 px), flatten in PyTorch's ``(K, h, w)`` order, fc6 -> ReLU -> fc7 -> ReLU =
  embedding (``classifier.4``, D = 4096), fc8 = logits (1000 ImageNet / 565 Ecoset classes).
  Dropout is the identity (eval mode).

Submodule names mirror the torchvision keys (``features_0`` ... ``features_34``, ``classifier_0``,
``classifier_3``, ``classifier_6``), so :mod:`convert.vgg` is a four-rule table.

The small helpers :func:`apply_keep`, :func:`adaptive_avg_pool` and :func:`pooled_head` are shared
by the other torchvision families (ResNet, AlexNet, SqueezeNet, DenseNet, Inception, EfficientNet,
RegNet).
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ais_jax.models import base

# 'M' = MaxPool2d(2, 2); integers = Conv3x3(pad 1) + ReLU with that many output channels.
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512, "M")
VGG19_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                512, 512, 512, 512, "M")
FC_DIM = 4096
POOLED_SIZE = 7  # torchvision's AdaptiveAvgPool2d((7, 7)) before fc6


# ----------------------------------------------------------------------------- shared helpers


def apply_keep(maps: jax.Array, keep: Optional[jax.Array]) -> tuple[jax.Array, tuple[int, ...]]:
  """Multiplies ``maps [n, h, w, K]`` channel-wise by ``keep`` and folds any mask axis into n.

  Args:
    maps: ``[n, h, w, K]``.
    keep: None, ``[K]`` or ``[m, K]`` (0/1 masks or weights).

  Returns:
    ``(masked [b, h, w, K], lead)``: ``b = n`` and ``lead = ()`` for None / ``[K]``; ``b = m * n``
    and ``lead = (m,)`` for ``[m, K]``. :func:`unfold` restores the leading axis on outputs.
  """
  if keep is None:
    return maps, ()
  keep = jnp.asarray(keep)
  num_maps = maps.shape[-1]
  if keep.ndim not in (1, 2) or keep.shape[-1] != num_maps:
    raise ValueError(f"keep must be [K] or [m, K] with K = {num_maps} (the maps' channel count); "
                     f"got shape {keep.shape}")
  keep = keep.astype(maps.dtype)
  if keep.ndim == 1:
    return maps * keep, ()
  m = keep.shape[0]
  masked = maps[None] * keep[:, None, None, None, :]
  return masked.reshape((m * maps.shape[0],) + maps.shape[1:]), (m,)


def unfold(y: Optional[jax.Array], lead: tuple[int, ...]) -> Optional[jax.Array]:
  """``[m * n, ...] -> [m, n, ...]`` when ``lead == (m,)``; identity otherwise (None stays None)."""
  if y is None or not lead:
    return y
  return y.reshape(lead + (y.shape[0] // lead[0],) + y.shape[1:])


def pooled_head(maps: jax.Array, keep: Optional[jax.Array], classifier: Optional[Any]):
  """Global-average-pool head of the pooled families (DenseNet, Inception, EfficientNet, RegNet).

  Args:
    maps: ``[n, h, w, K]``.
    keep: None, ``[K]`` or ``[m, K]`` channel weights; applied to the pooled vector, which gives
      the values of pooling ``maps * keep`` (pooling is linear) without an ``[m, n, h, w, K]`` copy.
    classifier: callable ``[..., K] -> [..., C]`` (a Dense), or None for no logits.

  Returns:
    ``(embedding [(m,) n, K], logits [(m,) n, C] or None)``.
  """
  embedding = jnp.mean(maps, axis=(1, 2))
  if keep is not None:
    keep = jnp.asarray(keep)
    if keep.ndim not in (1, 2) or keep.shape[-1] != maps.shape[-1]:
      raise ValueError(f"keep must be [K] or [m, K] with K = {maps.shape[-1]} (the maps' channel "
                       f"count); got shape {keep.shape}")
    keep = keep.astype(embedding.dtype)
    embedding = embedding * keep if keep.ndim == 1 else embedding[None] * keep[:, None, :]
  return embedding, (classifier(embedding) if classifier is not None else None)


def _adaptive_matrix(size_in: int, size_out: int) -> np.ndarray:
  """``[size_out, size_in]`` averaging weights of PyTorch's adaptive average pooling.

  Output cell i averages input indices ``floor(i * in / out) <= j < ceil((i + 1) * in / out)``.
  """
  a = np.zeros((size_out, size_in), np.float32)
  for i in range(size_out):
    start = (i * size_in) // size_out
    end = -((-(i + 1) * size_in) // size_out)
    a[i, start:end] = 1.0 / (end - start)
  return a


def adaptive_avg_pool(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
  """torchvision ``AdaptiveAvgPool2d(output_size)`` on ``[n, h, w, C] -> [n, oh, ow, C]``.

  Exactly the identity when the input already has the output size (VGG at 224 px).
  """
  h, w = x.shape[1], x.shape[2]
  oh, ow = output_size
  if (h, w) == (oh, ow):
    return x
  ah = jnp.asarray(_adaptive_matrix(h, oh), x.dtype)
  aw = jnp.asarray(_adaptive_matrix(w, ow), x.dtype)
  return jnp.einsum("ih,jw,nhwc->nijc", ah, aw, x, precision=jax.lax.Precision.HIGHEST)


def flatten_nchw(x: jax.Array) -> jax.Array:
  """``[n, h, w, C] -> [n, C * h * w]`` in PyTorch's ``(C, h, w)`` flatten order."""
  return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


# ----------------------------------------------------------------------------- the module


def feature_plan(config: Sequence[Any]) -> tuple[tuple[str, int, int], ...]:
  """``(kind, torchvision features index, channels)`` per layer; kind is 'conv' (conv + its
  ReLU) or 'pool'."""
  plan, index = [], 0
  for v in config:
    if v == "M":
      plan.append(("pool", index, 0))
      index += 1
    else:
      plan.append(("conv", index, int(v)))
      index += 2  # Conv2d, ReLU
  return tuple(plan)


class VGG(nn.Module):
  """torchvision VGG (no batch norm) split into trunk and head.

  Attributes:
    config: channel list with 'M' for max-pools (VGG16_CONFIG / VGG19_CONFIG).
    num_classes: fc8 size (1000 ImageNet, 565 Ecoset).
    precision: matmul/conv precision (HIGHEST: true float32 on GPUs, no TF32).
  """
  config: Sequence[Any] = VGG16_CONFIG
  num_classes: int = 1000
  precision: Any = jax.lax.Precision.HIGHEST

  def setup(self):
    plan = feature_plan(self.config)
    self.features = {
        str(index): nn.Conv(ch, (3, 3), padding=((1, 1), (1, 1)), precision=self.precision)
        for kind, index, ch in plan if kind == "conv"}
    if not self.num_classes:
      raise ValueError("VGG needs num_classes >= 1 (1000 ImageNet, 565 Ecoset)")
    self.classifier = {
        "0": nn.Dense(FC_DIM, precision=self.precision),
        "3": nn.Dense(FC_DIM, precision=self.precision),
        "6": nn.Dense(self.num_classes, precision=self.precision),
    }

  def _features(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    """Runs features up to (not including) the last max-pool; taps = the ReLU before each pool."""
    plan = feature_plan(self.config)
    outputs = []
    for i, (kind, index, _) in enumerate(plan[:-1]):
      if kind == "conv":
        x = nn.relu(self.features[str(index)](x))
        if plan[i + 1][0] == "pool":
          outputs.append(x)
      else:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    return x, outputs

  def trunk(self, x: jax.Array) -> jax.Array:
    """Preprocessed images ``[n, H, W, 3]`` -> conv5_3 / conv5_4 after ReLU
    ``[n, H/16, W/16, 512]``."""
    return self._features(x)[0]

  def lpips_features(self, x: jax.Array) -> list[jax.Array]:
    """The ReLU outputs before each max-pool (VGG16: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3,
    features indices 3, 8, 15, 22, 29 as the ``lpips`` package's vgg16 slices); NHWC each."""
    return self._features(x)[1]

  def head(self, maps: jax.Array, keep: Optional[jax.Array] = None):
    """``maps [n, h, w, 512]`` -> ``(embedding [(m,) n, 4096], logits [(m,) n, C])``."""
    x, lead = apply_keep(maps, keep)
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = adaptive_avg_pool(x, (POOLED_SIZE, POOLED_SIZE))
    x = flatten_nchw(x)
    x = nn.relu(self.classifier["0"](x))
    embedding = nn.relu(self.classifier["3"](x))
    logits = self.classifier["6"](embedding)
    return unfold(embedding, lead), unfold(logits, lead)

  def __call__(self, x: jax.Array):
    return self.head(self.trunk(x))


def ablation_head(variables):
  """The engine's fast-path description of the VGG head (:class:`ais_jax.ablation.FcHead`).

  Valid when the maps are 14x14 (224 px input): the 2x2 max-pool gives 7x7 and the adaptive
  average pool is the identity, so fc6 sees the pooled maps directly.
  """
  from ais_jax.ablation import FcHead
  p = variables["params"]
  return FcHead(w1=p["classifier_0"]["kernel"], b1=p["classifier_0"]["bias"],
                w2=p["classifier_3"]["kernel"], b2=p["classifier_3"]["bias"], pool_window=2)


vgg16 = functools.partial(VGG, config=VGG16_CONFIG)
vgg19 = functools.partial(VGG, config=VGG19_CONFIG)

for _name, _build, _layer in (("vgg16", vgg16, "features.29 (conv5_3 + ReLU)"),
                              ("vgg19", vgg19, "features.35 (conv5_4 + ReLU)")):
  base.register(base.ModelSpec(
      name=_name, family="vgg", build=_build, num_maps=512, embedding_dim=FC_DIM,
      input_size=224, map_size=14, normalization="imagenet", resize="square",
      ablation_layer=_layer, embedding_layer="classifier.4 (fc7 + ReLU)", pooled_head=False,
      num_classes=1000, ablation_head=ablation_head))
