"""DenseNet-161 (torchvision layout, DenseNet-BC) with the AIS trunk/head split.

* ``trunk(x)``: ``features`` (conv0 -> norm0 -> ReLU -> 3x3/2 max-pool -> four dense blocks with
  transitions -> norm5) followed by the ReLU torchvision applies in ``forward``: ``[n, 7, 7, 2208]``
  at 224 px.
* ``head(maps, keep)``: global average pool = embedding (D = 2208), ``classifier`` = logits.

DenseNet-161: growth rate 48, blocks (6, 12, 36, 24), 96 initial features, bottleneck 4 x 48.
BatchNorm runs in inference mode (running statistics, eps 1e-5); dropout is absent (rate 0).
Submodules mirror the torchvision keys (``features.denseblock3.denselayer7.conv2`` ->
``denseblock_3/denselayer7/conv2``, ``features.transition1.conv`` -> ``transition_1/conv``), so
:mod:`convert.densenet` is a short table.
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


class DenseLayer(nn.Module):
  """norm1 -> ReLU -> 1x1 conv (bn_size x growth) -> norm2 -> ReLU -> 3x3 conv (growth)."""
  growth_rate: int
  bn_size: int
  precision: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``x [n, h, w, C]`` (all earlier features, concatenated) -> ``[n, h, w, growth]``."""
    conv = functools.partial(nn.Conv, use_bias=False, precision=self.precision)
    y = conv(self.bn_size * self.growth_rate, (1, 1), name="conv1")(
        nn.relu(_batch_norm("norm1")(x)))
    return conv(self.growth_rate, (3, 3), padding=((1, 1), (1, 1)), name="conv2")(
        nn.relu(_batch_norm("norm2")(y)))


class DenseBlock(nn.Module):
  """``num_layers`` DenseLayers, each reading the concatenation of all earlier outputs."""
  num_layers: int
  growth_rate: int
  bn_size: int
  precision: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``[n, h, w, C] -> [n, h, w, C + num_layers * growth]`` (channel order as torch.cat)."""
    features = [x]
    for i in range(self.num_layers):
      layer = DenseLayer(self.growth_rate, self.bn_size, self.precision,
                         name=f"denselayer{i + 1}")
      features.append(layer(jnp.concatenate(features, axis=-1)))
    return jnp.concatenate(features, axis=-1)


class Transition(nn.Module):
  """norm -> ReLU -> 1x1 conv (halves the channels) -> 2x2/2 average pool."""
  out_channels: int
  precision: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.out_channels, (1, 1), use_bias=False, precision=self.precision,
                name="conv")(nn.relu(_batch_norm("norm")(x)))
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


class DenseNet(nn.Module):
  """torchvision DenseNet (BC variant) split into trunk and head.

  Attributes:
    growth_rate, block_config, num_init_features, bn_size: the torchvision constructor's.
    num_classes: classifier size; None or 0 builds no classifier (logits None).
    precision: conv/dense precision (HIGHEST: true float32, no TF32).
  """
  growth_rate: int = 48
  block_config: Sequence[int] = (6, 12, 36, 24)
  num_init_features: int = 96
  bn_size: int = 4
  num_classes: Optional[int] = 1000
  precision: Any = jax.lax.Precision.HIGHEST

  def setup(self):
    self.conv0 = nn.Conv(self.num_init_features, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)),
                         use_bias=False, precision=self.precision)
    self.norm0 = _batch_norm()
    blocks, transitions = {}, {}
    channels = self.num_init_features
    for i, num_layers in enumerate(self.block_config):
      blocks[str(i + 1)] = DenseBlock(num_layers, self.growth_rate, self.bn_size, self.precision)
      channels += num_layers * self.growth_rate
      if i < len(self.block_config) - 1:
        channels //= 2
        transitions[str(i + 1)] = Transition(channels, self.precision)
    self.denseblock, self.transition = blocks, transitions
    self.norm5 = _batch_norm()
    self.classifier = (nn.Dense(self.num_classes, precision=self.precision)
                       if self.num_classes else None)

  def trunk(self, x: jax.Array) -> jax.Array:
    """Preprocessed images ``[n, H, W, 3]`` -> ReLU(norm5) ``[n, H/32, W/32, K]`` (K = 2208)."""
    x = nn.relu(self.norm0(self.conv0(x)))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i in range(1, len(self.block_config) + 1):
      x = self.denseblock[str(i)](x)
      if str(i) in self.transition:
        x = self.transition[str(i)](x)
    return nn.relu(self.norm5(x))

  def head(self, maps: jax.Array, keep: Optional[jax.Array] = None):
    """``maps [n, h, w, K]`` -> ``(embedding [(m,) n, K], logits [(m,) n, C] or None)``."""
    return pooled_head(maps, keep, self.classifier)

  def __call__(self, x: jax.Array):
    return self.head(self.trunk(x))


densenet161 = functools.partial(DenseNet, growth_rate=48, block_config=(6, 12, 36, 24),
                                num_init_features=96)

base.register(base.ModelSpec(
    name="densenet161", family="densenet", build=densenet161, num_maps=2208, embedding_dim=2208,
    input_size=224, map_size=7, normalization="imagenet", resize="square",
    ablation_layer="features (ends in norm5), then ReLU",
    embedding_layer="global average of ReLU(features)", pooled_head=True, num_classes=1000))
