"""EfficientNet-B3 (torchvision's EfficientNet V1 definition) with the AIS trunk/head split.

Not the Lite family (:mod:`ais_jax.models.efficientnet_lite`): B3 has SiLU activations,
squeeze-excitation in every MBConv block, symmetric PyTorch padding and a scaled stem and head.

* ``trunk(x)``: ``features`` = stem Conv-BN-SiLU, seven MBConv stages, and the last 1x1
  Conv-BN-SiLU: ``[n, 10, 10, 1536]`` at 300 px.
* ``head(maps, keep)``: global average pool = embedding (D = 1536), ``classifier.1`` = logits
  (dropout and stochastic depth are training-only and absent).

Width 1.2 / depth 1.4 applied to the B0 table as torchvision does (channels rounded to multiples
of 8, never below 90%; repeats ceil(depth x n)). BatchNorm eps 1e-5 (torchvision's default for
the V1 family). Submodules mirror the torchvision keys with '.' -> '_' before the last part
(``features.3.1.block.2.fc1`` -> ``features_3_1/block_2_fc1``), so :mod:`convert.efficientnet` is
a short table.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ais_jax.models import base
from ais_jax.models.vgg import pooled_head

BN_EPS = 1e-5

# EfficientNet-B0 stages: (expand ratio, kernel, stride, in, out, repeats), torchvision's table.
B0_STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
             (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
             (6, 3, 1, 192, 320, 1))


def make_divisible(value: float, divisor: int = 8) -> int:
  """torchvision's ``_make_divisible``: nearest multiple of ``divisor``, at least 90% of value."""
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * value:
    rounded += divisor
  return rounded


@dataclasses.dataclass(frozen=True)
class MBConvConfig:
  """One MBConv block after width/depth scaling."""
  expand_ratio: int
  kernel: int
  stride: int
  in_channels: int
  out_channels: int


def stage_configs(width: float, depth: float) -> tuple[tuple[MBConvConfig, ...], ...]:
  """Blocks per stage (the torchvision ``features.1`` ... ``features.7``) for the multipliers."""
  stages = []
  for expand, kernel, stride, cin, cout, repeats in B0_STAGES:
    cin, cout = make_divisible(cin * width), make_divisible(cout * width)
    blocks = [MBConvConfig(expand, kernel, stride, cin, cout)]
    blocks += [MBConvConfig(expand, kernel, 1, cout, cout)
               for _ in range(int(math.ceil(repeats * depth)) - 1)]
    stages.append(tuple(blocks))
  return tuple(stages)


def _batch_norm(name: Optional[str] = None) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, momentum=0.9, name=name)


class MBConv(nn.Module):
  """[1x1 expand Conv-BN-SiLU], kxk depthwise Conv-BN-SiLU, squeeze-excitation, 1x1 Conv-BN,
  residual when the stride is 1 and the widths match. Layer names follow torchvision's
  ``block.<i>`` indices (without the expand layer, every index is one lower)."""
  config: MBConvConfig
  precision: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``[n, h, w, in] -> [n, ceil(h / stride), ceil(w / stride), out]``."""
    c = self.config
    conv = functools.partial(nn.Conv, use_bias=False, precision=self.precision)
    hidden = make_divisible(c.in_channels * c.expand_ratio)
    y, index = x, 0
    if hidden != c.in_channels:
      y = nn.silu(_batch_norm(f"block_{index}_1")(conv(hidden, (1, 1), name=f"block_{index}_0")(y)))
      index += 1
    pad = (c.kernel - 1) // 2
    y = conv(hidden, (c.kernel, c.kernel), strides=(c.stride, c.stride),
             padding=((pad, pad), (pad, pad)), feature_group_count=hidden,
             name=f"block_{index}_0")(y)
    y = nn.silu(_batch_norm(f"block_{index}_1")(y))
    index += 1
    squeeze = max(1, c.in_channels // 4)
    scale = jnp.mean(y, axis=(1, 2), keepdims=True)
    scale = nn.silu(nn.Conv(squeeze, (1, 1), precision=self.precision,
                            name=f"block_{index}_fc1")(scale))
    scale = nn.sigmoid(nn.Conv(hidden, (1, 1), precision=self.precision,
                               name=f"block_{index}_fc2")(scale))
    y = y * scale
    index += 1
    y = _batch_norm(f"block_{index}_1")(conv(c.out_channels, (1, 1), name=f"block_{index}_0")(y))
    if c.stride == 1 and c.in_channels == c.out_channels:
      y = y + x
    return y


class EfficientNet(nn.Module):
  """torchvision EfficientNet (V1) split into trunk and head.

  Attributes:
    width, depth: the compound-scaling multipliers (B3: 1.2, 1.4).
    num_classes: classifier size; None or 0 builds no classifier (logits None).
    precision: conv/dense precision (HIGHEST: true float32, no TF32).
  """
  width: float = 1.2
  depth: float = 1.4
  num_classes: Optional[int] = 1000
  precision: Any = jax.lax.Precision.HIGHEST

  def setup(self):
    stages = stage_configs(self.width, self.depth)
    stem = stages[0][0].in_channels
    last_in = stages[-1][-1].out_channels
    self.features_0_0 = nn.Conv(stem, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                                use_bias=False, precision=self.precision)
    self.features_0_1 = _batch_norm()
    for s, blocks in enumerate(stages, start=1):
      for b, config in enumerate(blocks):
        setattr(self, f"features_{s}_{b}", MBConv(config, self.precision))
    head = len(stages) + 1
    setattr(self, f"features_{head}_0", nn.Conv(4 * last_in, (1, 1), use_bias=False,
                                                precision=self.precision))
    setattr(self, f"features_{head}_1", _batch_norm())
    self.classifier_1 = (nn.Dense(self.num_classes, precision=self.precision)
                         if self.num_classes else None)

  def trunk(self, x: jax.Array) -> jax.Array:
    """Preprocessed images ``[n, H, W, 3]`` -> last Conv-BN-SiLU ``[n, h, w, 4 x last stage]``
    (B3: ``[n, 10, 10, 1536]`` at 300 px)."""
    stages = stage_configs(self.width, self.depth)
    x = nn.silu(self.features_0_1(self.features_0_0(x)))
    for s, blocks in enumerate(stages, start=1):
      for b in range(len(blocks)):
        x = getattr(self, f"features_{s}_{b}")(x)
    head = len(stages) + 1
    return nn.silu(getattr(self, f"features_{head}_1")(getattr(self, f"features_{head}_0")(x)))

  def head(self, maps: jax.Array, keep: Optional[jax.Array] = None):
    """``maps [n, h, w, K]`` -> ``(embedding [(m,) n, K], logits [(m,) n, C] or None)``."""
    return pooled_head(maps, keep, self.classifier_1)

  def __call__(self, x: jax.Array):
    return self.head(self.trunk(x))


efficientnet_b3 = functools.partial(EfficientNet, width=1.2, depth=1.4)

base.register(base.ModelSpec(
    name="efficientnet_b3", family="efficientnet", build=efficientnet_b3, num_maps=1536,
    embedding_dim=1536, input_size=300, map_size=10, normalization="imagenet", resize="square",
    ablation_layer="features (features.8: last 1x1 Conv-BN-SiLU)",
    embedding_layer="avgpool (global average of features)", pooled_head=True, num_classes=1000))
