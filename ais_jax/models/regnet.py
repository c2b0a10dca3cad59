"""RegNetY-400MF (torchvision layout) with the AIS trunk/head split.

* ``trunk(x)``: ``stem`` (3x3/2 Conv-BN-ReLU) and ``trunk_output`` (four stages of
  ResBottleneckBlocks with squeeze-excitation): ``[n, 7, 7, 440]`` at 224 px, after the last
  block's ReLU.
* ``head(maps, keep)``: global average pool = embedding (D = 440), ``fc`` = logits.

Stage widths (48, 104, 208, 440), depths (1, 3, 6, 6), group width 8, bottleneck ratio 1, SE
ratio 0.25 of the block's input width: what torchvision's
``BlockParams.from_init_params(depth=16, w_0=48, w_a=27.89, w_m=2.09, group_width=8,
se_ratio=0.25)`` computes (the parity test builds torchvision's model and compares).
BatchNorm eps 1e-5. Submodules mirror the torchvision keys
(``trunk_output.block3.block3-4.f.se.fc1`` -> ``block3_4/f_se_fc1``).
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ais_jax.models import base
from ais_jax.models.vgg import pooled_head

BN_EPS = 1e-5


def _batch_norm(name: Optional[str] = None) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, momentum=0.9, name=name)


class ResBottleneckBlock(nn.Module):
  """x (or its 1x1/stride projection) + [1x1 Conv-BN-ReLU, 3x3 grouped Conv-BN-ReLU, SE,
  1x1 Conv-BN], then ReLU."""
  width_in: int
  width_out: int
  stride: int
  group_width: int
  se_ratio: float
  precision: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``[n, h, w, width_in] -> [n, ceil(h / stride), ceil(w / stride), width_out]``."""
    conv = functools.partial(nn.Conv, use_bias=False, precision=self.precision)
    s = (self.stride, self.stride)
    w = self.width_out  # bottleneck ratio 1
    y = nn.relu(_batch_norm("f_a_1")(conv(w, (1, 1), name="f_a_0")(x)))
    y = conv(w, (3, 3), strides=s, padding=((1, 1), (1, 1)),
             feature_group_count=w // self.group_width, name="f_b_0")(y)
    y = nn.relu(_batch_norm("f_b_1")(y))
    squeeze = int(round(self.se_ratio * self.width_in))
    scale = jnp.mean(y, axis=(1, 2), keepdims=True)
    scale = nn.relu(nn.Conv(squeeze, (1, 1), precision=self.precision, name="f_se_fc1")(scale))
    scale = nn.sigmoid(nn.Conv(w, (1, 1), precision=self.precision, name="f_se_fc2")(scale))
    y = _batch_norm("f_c_1")(conv(self.width_out, (1, 1), name="f_c_0")(y * scale))
    if self.width_in != self.width_out or self.stride != 1:
      x = _batch_norm("proj_1")(conv(self.width_out, (1, 1), strides=s, name="proj_0")(x))
    return nn.relu(x + y)


class RegNet(nn.Module):
  """torchvision RegNet (Y variant: with SE) split into trunk and head.

  Attributes:
    widths, depths: per stage (every stage starts with stride 2).
    group_width, se_ratio, stem_width: torchvision's.
    num_classes: fc size; None or 0 builds no classifier (logits None).
    precision: conv/dense precision (HIGHEST: true float32, no TF32).
  """
  widths: Sequence[int] = (48, 104, 208, 440)
  depths: Sequence[int] = (1, 3, 6, 6)
  group_width: int = 8
  se_ratio: float = 0.25
  stem_width: int = 32
  num_classes: Optional[int] = 1000
  precision: Any = jax.lax.Precision.HIGHEST

  def setup(self):
    self.stem_0 = nn.Conv(self.stem_width, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                          use_bias=False, precision=self.precision)
    self.stem_1 = _batch_norm()
    width_in = self.stem_width
    for stage, (width, depth) in enumerate(zip(self.widths, self.depths), start=1):
      for i in range(depth):
        setattr(self, f"block{stage}_{i}", ResBottleneckBlock(
            width_in, width, 2 if i == 0 else 1, self.group_width, self.se_ratio, self.precision))
        width_in = width
    self.fc = nn.Dense(self.num_classes, precision=self.precision) if self.num_classes else None

  def trunk(self, x: jax.Array) -> jax.Array:
    """Preprocessed images ``[n, H, W, 3]`` -> trunk_output ``[n, H/32, W/32, 440]``."""
    x = nn.relu(self.stem_1(self.stem_0(x)))
    for stage, depth in enumerate(self.depths, start=1):
      for i in range(depth):
        x = getattr(self, f"block{stage}_{i}")(x)
    return x

  def head(self, maps: jax.Array, keep: Optional[jax.Array] = None):
    """``maps [n, h, w, 440]`` -> ``(embedding [(m,) n, 440], logits [(m,) n, C] or None)``."""
    return pooled_head(maps, keep, self.fc)

  def __call__(self, x: jax.Array):
    return self.head(self.trunk(x))


regnet_y_400mf = functools.partial(RegNet, widths=(48, 104, 208, 440), depths=(1, 3, 6, 6),
                                   group_width=8, se_ratio=0.25)

base.register(base.ModelSpec(
    name="regnet_y_400mf", family="regnet", build=regnet_y_400mf, num_maps=440,
    embedding_dim=440, input_size=224, map_size=7, normalization="imagenet", resize="square",
    ablation_layer="trunk_output (last block output, after ReLU)",
    embedding_layer="avgpool (global average of trunk_output)", pooled_head=True,
    num_classes=1000))
