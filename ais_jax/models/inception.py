"""Inception-V3 (torchvision ``Inception3``) with the AIS trunk/head split.

* ``trunk(x)``: torchvision's ``transform_input`` (on by default here, as for the published
  weights), the stem and Mixed_5b ... Mixed_7c: Mixed_7c's output ``[n, 8, 8, 2048]`` at 299 px
  (every branch ends in BasicConv2d's ReLU, so the maps are post-nonlinearity).
* ``head(maps, keep)``: global average pool = embedding (D = 2048), ``fc`` = logits (dropout is
  the identity in eval mode).

``transform_input``: torchvision's pretrained Inception-V3 expects ImageNet mean/std inputs and
re-maps them inside the network to ``(x / 255 - 0.5) / 0.5`` per channel (the normalisation the
Google weights were trained with). The spec therefore records 'imagenet' normalisation and the
trunk applies the same re-mapping, in the same float32 operations as torchvision.

The auxiliary classifier (``AuxLogits``) only runs in training; it is not built here and the
converter skips its keys. BasicConv2d = conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU.
Submodules mirror the torchvision keys (``Mixed_6b.branch7x7_2.conv`` ->
``Mixed_6b/branch7x7_2/conv``).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ais_jax.models import base
from ais_jax.models.base import IMAGENET_MEAN, IMAGENET_STD
from ais_jax.models.vgg import pooled_head

BN_EPS = 1e-3

Pad = Sequence[tuple[int, int]]


def _pad(kernel: tuple[int, int]) -> Pad:
  """torchvision's symmetric 'same' padding for odd kernels ((1, 7) -> ((0, 0), (3, 3)))."""
  return tuple((k // 2, k // 2) for k in kernel)


class BasicConv2d(nn.Module):
  """conv (no bias) -> BatchNorm(eps 1e-3) -> ReLU; ``padding`` as torch (VALID when zero)."""
  features: int
  kernel: tuple[int, int]
  stride: int = 1
  padding: Any = ((0, 0), (0, 0))
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, self.kernel, strides=(self.stride, self.stride),
                padding=self.padding, use_bias=False, precision=self.precision, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, momentum=0.9, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  """``F.avg_pool2d(x, 3, stride=1, padding=1)`` (zeros counted, as torch's default)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=True)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), strides=(2, 2))


class _Mixed(nn.Module):
  """One Inception block: named branches of BasicConv2d chains, concatenated on channels.

  ``branches``: per branch, ``(layers, pool)`` where ``layers`` is a tuple of
  ``(name, features, kernel, stride)`` (a tuple of two layers in place of one = a split into two
  parallel convs whose outputs are concatenated, InceptionE); stride-2 convs are unpadded, the
  others padded to keep the size, as in torchvision and ``pool`` is None, 'avg' (3x3/1
  average pool before the first layer) or 'max' (a 3x3/2 max-pool branch, no layers).
  """
  branches: Any
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    outputs = []
    for layers, pool in self.branches:
      if pool == "max":
        outputs.append(_max_pool_3x3_s2(x))
        continue
      y = _avg_pool_3x3(x) if pool == "avg" else x
      for layer in layers:
        parts = layer if isinstance(layer[0], tuple) else (layer,)
        ys = []
        for name, features, kernel, stride in parts:
          kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
          padding = ((0, 0), (0, 0)) if stride == 2 else _pad(kernel)
          ys.append(BasicConv2d(features, kernel, stride, padding, self.precision, name=name)(y))
        y = ys[0] if len(ys) == 1 else jnp.concatenate(ys, axis=-1)
      outputs.append(y)
    return jnp.concatenate(outputs, axis=-1)


def inception_a(pool_features: int):
  return (((("branch1x1", 64, 1, 1),), None),
          ((("branch5x5_1", 48, 1, 1), ("branch5x5_2", 64, 5, 1)), None),
          ((("branch3x3dbl_1", 64, 1, 1), ("branch3x3dbl_2", 96, 3, 1),
            ("branch3x3dbl_3", 96, 3, 1)), None),
          ((("branch_pool", pool_features, 1, 1),), "avg"))


def inception_b():
  return (((("branch3x3", 384, 3, 2),), None),
          ((("branch3x3dbl_1", 64, 1, 1), ("branch3x3dbl_2", 96, 3, 1),
            ("branch3x3dbl_3", 96, 3, 2)), None),
          ((), "max"))


def inception_c(c7: int):
  return (((("branch1x1", 192, 1, 1),), None),
          ((("branch7x7_1", c7, 1, 1), ("branch7x7_2", c7, (1, 7), 1),
            ("branch7x7_3", 192, (7, 1), 1)), None),
          ((("branch7x7dbl_1", c7, 1, 1), ("branch7x7dbl_2", c7, (7, 1), 1),
            ("branch7x7dbl_3", c7, (1, 7), 1), ("branch7x7dbl_4", c7, (7, 1), 1),
            ("branch7x7dbl_5", 192, (1, 7), 1)), None),
          ((("branch_pool", 192, 1, 1),), "avg"))


def inception_d():
  return (((("branch3x3_1", 192, 1, 1), ("branch3x3_2", 320, 3, 2)), None),
          ((("branch7x7x3_1", 192, 1, 1), ("branch7x7x3_2", 192, (1, 7), 1),
            ("branch7x7x3_3", 192, (7, 1), 1), ("branch7x7x3_4", 192, 3, 2)), None),
          ((), "max"))


def inception_e():
  return (((("branch1x1", 320, 1, 1),), None),
          ((("branch3x3_1", 384, 1, 1),
            (("branch3x3_2a", 384, (1, 3), 1), ("branch3x3_2b", 384, (3, 1), 1))), None),
          ((("branch3x3dbl_1", 448, 1, 1), ("branch3x3dbl_2", 384, 3, 1),
            (("branch3x3dbl_3a", 384, (1, 3), 1), ("branch3x3dbl_3b", 384, (3, 1), 1))), None),
          ((("branch_pool", 192, 1, 1),), "avg"))


# Mixed blocks in torchvision's order.
MIXED = (("Mixed_5b", inception_a(32)), ("Mixed_5c", inception_a(64)),
         ("Mixed_5d", inception_a(64)), ("Mixed_6a", inception_b()),
         ("Mixed_6b", inception_c(128)), ("Mixed_6c", inception_c(160)),
         ("Mixed_6d", inception_c(160)), ("Mixed_6e", inception_c(192)),
         ("Mixed_7a", inception_d()), ("Mixed_7b", inception_e()), ("Mixed_7c", inception_e()))

# (name, features, kernel, stride, padding) of the stem; 'pool' = 3x3/2 max-pool.
STEM = (("Conv2d_1a_3x3", 32, 3, 2, 0), ("Conv2d_2a_3x3", 32, 3, 1, 0),
        ("Conv2d_2b_3x3", 64, 3, 1, 1), "pool", ("Conv2d_3b_1x1", 80, 1, 1, 0),
        ("Conv2d_4a_3x3", 192, 3, 1, 0), "pool")


def transform_input(x: jax.Array) -> jax.Array:
  """torchvision's ``Inception3._transform_input``: ImageNet-normalised input ``[n, H, W, 3]``
  -> ``(pixels / 255 - 0.5) / 0.5``, as ``x * (std / 0.5) + (mean - 0.5) / 0.5`` per channel."""
  scale = np.asarray([s / 0.5 for s in IMAGENET_STD], np.float32)
  shift = np.asarray([(m - 0.5) / 0.5 for m in IMAGENET_MEAN], np.float32)
  return x * scale + shift


class InceptionV3(nn.Module):
  """torchvision Inception3 split into trunk and head.

  Attributes:
    num_classes: fc size; None or 0 builds no classifier (logits None).
    transform_input: apply torchvision's input re-mapping (True for the published weights).
    precision: conv/dense precision (HIGHEST: true float32, no TF32).
  """
  num_classes: Optional[int] = 1000
  transform_input: bool = True
  precision: Any = jax.lax.Precision.HIGHEST

  def setup(self):
    # Attribute names = torchvision's (Conv2d_1a_3x3, Mixed_5b, ...), so the Flax paths mirror
    # the state dict keys.
    for name, features, kernel, stride, pad in (layer for layer in STEM if layer != "pool"):
      setattr(self, name, BasicConv2d(features, (kernel, kernel), stride,
                                      ((pad, pad), (pad, pad)), self.precision))
    for name, branches in MIXED:
      setattr(self, name, _Mixed(branches, self.precision))
    self.fc = nn.Dense(self.num_classes, precision=self.precision) if self.num_classes else None

  def trunk(self, x: jax.Array) -> jax.Array:
    """ImageNet-normalised images ``[n, H, W, 3]`` -> Mixed_7c ``[n, h, w, 2048]`` (8x8 at 299)."""
    if self.transform_input:
      x = transform_input(x)
    for layer in STEM:
      x = _max_pool_3x3_s2(x) if layer == "pool" else getattr(self, layer[0])(x)
    for name, _ in MIXED:
      x = getattr(self, name)(x)
    return x

  def head(self, maps: jax.Array, keep: Optional[jax.Array] = None):
    """``maps [n, h, w, 2048]`` -> ``(embedding [(m,) n, 2048], logits [(m,) n, C] or None)``."""
    return pooled_head(maps, keep, self.fc)

  def __call__(self, x: jax.Array):
    return self.head(self.trunk(x))


base.register(base.ModelSpec(
    name="inception_v3", family="inception", build=InceptionV3, num_maps=2048,
    embedding_dim=2048, input_size=299, map_size=8, normalization="imagenet", resize="square",
    ablation_layer="Mixed_7c (concatenated branch outputs, each after ReLU)",
    embedding_layer="avgpool (global average of Mixed_7c)", pooled_head=True, num_classes=1000))
