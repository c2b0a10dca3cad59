"""ResNet-50 / ResNet-152 / ResNeXt-50 32x4d (torchvision Bottleneck layout), trunk/head split.

* ``trunk(x)``: conv1 -> bn1 -> ReLU -> 3x3/2 max-pool -> layer1..layer4; the output of layer4
  (after the last block's ReLU) ``[n, 7, 7, 2048]`` at 224 px.
* ``head(maps, keep)``: global average pool = embedding (D = 2048), then ``fc`` = logits; logits
  are None when the model has no classifier (``num_classes`` None or 0: the Barlow Twins ResNet-50,
  whose published checkpoint is torchvision's resnet50 with ``fc = Identity``).

BatchNorm runs in inference mode (running statistics, eps 1e-5). Submodule names mirror the
torchvision keys: ``conv1``, ``bn1``, ``layer1_0/conv1`` ... ``layer4_2/bn3``,
``layer1_0/downsample_0`` (1x1 conv), ``layer1_0/downsample_1`` (BN), ``fc``.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ais_jax.models import base
from ais_jax.models.vgg import apply_keep, unfold

EXPANSION = 4
BN_EPS = 1e-5


def _batch_norm(name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, momentum=0.9, name=name)


class Bottleneck(nn.Module):
  """torchvision ``Bottleneck``: 1x1 -> 3x3 (stride, groups) -> 1x1 (x4), projection shortcut."""
  planes: int
  stride: int = 1
  groups: int = 1
  width_per_group: int = 64
  downsample: bool = False
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = int(self.planes * (self.width_per_group / 64.0)) * self.groups
    conv = functools.partial(nn.Conv, use_bias=False, precision=self.precision)
    y = conv(width, (1, 1), name="conv1")(x)
    y = nn.relu(_batch_norm("bn1")(y))
    y = conv(width, (3, 3), strides=(self.stride, self.stride), padding=((1, 1), (1, 1)),
             feature_group_count=self.groups, name="conv2")(y)
    y = nn.relu(_batch_norm("bn2")(y))
    y = conv(self.planes * EXPANSION, (1, 1), name="conv3")(y)
    y = _batch_norm("bn3")(y)
    if self.downsample:
      x = conv(self.planes * EXPANSION, (1, 1), strides=(self.stride, self.stride),
               name="downsample_0")(x)
      x = _batch_norm("downsample_1")(x)
    return nn.relu(y + x)


class ResNet(nn.Module):
  """torchvision ResNet with Bottleneck blocks.

  Attributes:
    layers: blocks per stage ((3, 4, 6, 3) ResNet-50 / ResNeXt-50, (3, 8, 36, 3) ResNet-152).
    groups, width_per_group: ResNeXt cardinality and width (1, 64 for plain ResNets).
    num_classes: fc size; None or 0 means no classifier (logits None).
    precision: conv/dense precision (HIGHEST: true float32, no TF32).
  """
  layers: Sequence[int] = (3, 4, 6, 3)
  groups: int = 1
  width_per_group: int = 64
  num_classes: Optional[int] = 1000
  precision: Any = jax.lax.Precision.HIGHEST

  def setup(self):
    self.conv1 = nn.Conv(64, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                         precision=self.precision)
    self.bn1 = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, momentum=0.9)
    stages = []
    in_channels = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), self.layers)):
      stride = 1 if stage == 0 else 2
      stage_blocks = []
      for b in range(blocks):
        s = stride if b == 0 else 1
        stage_blocks.append(Bottleneck(
            planes=planes, stride=s, groups=self.groups, width_per_group=self.width_per_group,
            downsample=(b == 0 and (s != 1 or in_channels != planes * EXPANSION)),
            precision=self.precision))
        in_channels = planes * EXPANSION
      stages.append(stage_blocks)
    self.layer1, self.layer2, self.layer3, self.layer4 = stages
    self.fc = nn.Dense(self.num_classes, precision=self.precision) if self.num_classes else None

  def stages(self, x: jax.Array) -> tuple[jax.Array, ...]:
    """Preprocessed images ``[n, H, W, 3]`` -> the outputs of layer1..layer4
    (``[n, H/4, W/4, 256]`` ... ``[n, H/32, W/32, 2048]``); decoders such as TranSalNet's use
    several."""
    x = nn.relu(self.bn1(self.conv1(x)))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    outputs = []
    for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
      for block in stage:
        x = block(x)
      outputs.append(x)
    return tuple(outputs)

  def trunk(self, x: jax.Array) -> jax.Array:
    """Preprocessed images ``[n, H, W, 3]`` -> layer4 output ``[n, H/32, W/32, 2048]``."""
    return self.stages(x)[-1]

  def head(self, maps: jax.Array, keep: Optional[jax.Array] = None):
    """``maps [n, h, w, 2048]`` -> ``(embedding [(m,) n, 2048], logits [(m,) n, C] or None)``."""
    x, lead = apply_keep(maps, keep)
    embedding = jnp.mean(x, axis=(1, 2))
    logits = self.fc(embedding) if self.fc is not None else None
    return unfold(embedding, lead), unfold(logits, lead)

  def __call__(self, x: jax.Array):
    return self.head(self.trunk(x))


resnet50 = functools.partial(ResNet, layers=(3, 4, 6, 3))
resnet152 = functools.partial(ResNet, layers=(3, 8, 36, 3))
resnext50_32x4d = functools.partial(ResNet, layers=(3, 4, 6, 3), groups=32, width_per_group=4)

for _name, _build in (("resnet50", resnet50), ("resnet152", resnet152),
                      ("resnext50_32x4d", resnext50_32x4d)):
  base.register(base.ModelSpec(
      name=_name, family="resnet", build=_build, num_maps=2048, embedding_dim=2048,
      input_size=224, map_size=7, normalization="imagenet", resize="square",
      ablation_layer="layer4 (last Bottleneck output, after ReLU)",
      embedding_layer="avgpool (global average of layer4)", pooled_head=True,
      num_classes=1000))
