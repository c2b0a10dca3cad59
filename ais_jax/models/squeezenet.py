"""torchvision SqueezeNet 1.1 with the AIS trunk/head split and the LPIPS 'squeeze' taps.

Layout (torchvision ``features`` indices): 0 conv3x3/2 (64) -> 1 ReLU -> 2 maxpool3/2 (ceil) ->
3, 4 Fire(16, 64, 64) -> 5 maxpool (ceil) -> 6, 7 Fire(32, 128, 128) -> 8 maxpool (ceil) ->
9, 10 Fire(48, 192, 192) -> 11, 12 Fire(64, 256, 256); ``classifier``: 0 dropout, 1 conv1x1 to
the classes, 2 ReLU, 3 global average pool.

* ``trunk(x)``: the output of the last Fire module (``features.12``, after its ReLUs): K = 512
  maps, 13x13 at 224 px.
* ``head(maps, keep)``: embedding = global average of the maps (D = 512; a pooled head, as the
  ResNets: SqueezeNet has no fully connected layer); logits = average of ReLU(conv1x1(maps)).
* ``lpips_features(x)``: relu1..relu7 = outputs of features 1, 4, 7, 9, 10, 11, 12, the taps of
  the ``lpips`` package's ``pretrained_networks.squeezenet`` slices (0-1, 2-4, 5-7, 8-9, 10, 11,
  12).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ais_jax.models import base
from ais_jax.models.vgg import apply_keep, unfold

# features index -> (squeeze, expand1x1, expand3x3) channels
_FIRES = {3: (16, 64, 64), 4: (16, 64, 64), 6: (32, 128, 128), 7: (32, 128, 128),
          9: (48, 192, 192), 10: (48, 192, 192), 11: (64, 256, 256), 12: (64, 256, 256)}
_POOLS = (2, 5, 8)
_TAPS = (1, 4, 7, 9, 10, 11, 12)


def max_pool_ceil(x: jax.Array, window: int, stride: int) -> jax.Array:
  """PyTorch ``MaxPool2d(window, stride, ceil_mode=True)`` on ``[n, h, w, C]`` (no padding).

  Ceil mode adds a last, partial window on the right/bottom when it starts inside the input.
  """
  pads = []
  for size in x.shape[1:3]:
    out = math.ceil((size - window) / stride) + 1
    if (out - 1) * stride >= size:
      out -= 1
    pads.append((0, max(0, (out - 1) * stride + window - size)))
  return nn.max_pool(x, (window, window), strides=(stride, stride), padding=tuple(pads))


class Fire(nn.Module):
  """torchvision ``Fire``: squeeze 1x1 + ReLU, then concat(ReLU(expand1x1), ReLU(expand3x3))."""
  squeeze_channels: int
  expand1x1_channels: int
  expand3x3_channels: int
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(nn.Conv, precision=self.precision)
    x = nn.relu(conv(self.squeeze_channels, (1, 1), name="squeeze")(x))
    e1 = nn.relu(conv(self.expand1x1_channels, (1, 1), name="expand1x1")(x))
    e3 = nn.relu(conv(self.expand3x3_channels, (3, 3), padding=((1, 1), (1, 1)),
                      name="expand3x3")(x))
    return jnp.concatenate([e1, e3], axis=-1)


class SqueezeNet11(nn.Module):
  """torchvision SqueezeNet 1.1. ``num_classes``: the classifier conv's outputs."""
  num_classes: int = 1000
  precision: Any = jax.lax.Precision.HIGHEST

  def setup(self):
    features = {"0": nn.Conv(64, (3, 3), strides=(2, 2), padding="VALID",
                             precision=self.precision)}
    for i, channels in _FIRES.items():
      features[str(i)] = Fire(*channels, precision=self.precision)
    self.features = features
    if not self.num_classes:
      raise ValueError("SqueezeNet needs num_classes >= 1")
    self.classifier = {"1": nn.Conv(self.num_classes, (1, 1), precision=self.precision)}

  def lpips_features(self, x: jax.Array) -> list[jax.Array]:
    """Preprocessed images ``[n, H, W, 3]`` -> [relu1, ..., relu7] (NHWC; 64, 128, 256, 384,
    384, 512, 512 channels)."""
    taps = []
    for i in range(13):
      if i == 1:
        x = nn.relu(x)
      elif i in _POOLS:
        x = max_pool_ceil(x, 3, 2)
      else:
        x = self.features[str(i)](x)
      if i in _TAPS:
        taps.append(x)
    return taps

  def trunk(self, x: jax.Array) -> jax.Array:
    """Preprocessed images ``[n, H, W, 3]`` -> last Fire output ``[n, 13, 13, 512]`` at 224 px."""
    return self.lpips_features(x)[-1]

  def head(self, maps: jax.Array, keep: Optional[jax.Array] = None):
    """``maps [n, h, w, 512]`` -> ``(embedding [(m,) n, 512], logits [(m,) n, C])``."""
    x, lead = apply_keep(maps, keep)
    embedding = jnp.mean(x, axis=(1, 2))
    logits = jnp.mean(nn.relu(self.classifier["1"](x)), axis=(1, 2))
    return unfold(embedding, lead), unfold(logits, lead)

  def __call__(self, x: jax.Array):
    return self.head(self.trunk(x))


base.register(base.ModelSpec(
    name="squeezenet1_1", family="squeezenet", build=SqueezeNet11, num_maps=512,
    embedding_dim=512, input_size=224, map_size=13, normalization="imagenet", resize="square",
    ablation_layer="features.12 (last Fire, after ReLU)",
    embedding_layer="global average of features.12", pooled_head=True, num_classes=1000))
