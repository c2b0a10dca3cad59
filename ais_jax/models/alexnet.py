"""torchvision AlexNet with the AIS trunk/head split and the LPIPS 'alex' taps.

Layout (torchvision ``features`` indices): 0 conv11/4 -> 1 ReLU -> 2 maxpool3/2 -> 3 conv5 ->
4 ReLU -> 5 maxpool -> 6 conv3 -> 7 ReLU -> 8 conv3 -> 9 ReLU -> 10 conv3 -> 11 ReLU -> 12 maxpool;
``avgpool`` = AdaptiveAvgPool2d((6, 6)); ``classifier``: 0 dropout, 1 fc6, 2 ReLU, 3 dropout,
4 fc7, 5 ReLU, 6 fc8.

* ``trunk(x)``: ``features[:12]``, conv5 after ReLU: K = 256 maps, 13x13 at 224 px (the last
  convolutional layer, as conv5_3 for VGG16).
* ``head(maps, keep)``: maxpool 3x3/2 (13 -> 6), adaptive average pool to 6x6 (identity at
  224 px), ``(K, h, w)`` flatten, fc6 -> ReLU -> fc7 -> ReLU = embedding (``classifier.5``,
  D = 4096), fc8 = logits. The overlapping 3x3/2 pool is not the engine's ``FcHead`` (window =
  stride), so :func:`ablation_head` returns a :class:`ais_jax.ablation.GenericHead`.
* ``lpips_features(x)``: relu1..relu5 = outputs of features 1, 4, 7, 9, 11, the taps of the
  ``lpips`` package's ``pretrained_networks.alexnet`` slices (0-1, 2-4, 5-7, 8-9, 10-11).
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax

from ais_jax.models import base
from ais_jax.models.vgg import adaptive_avg_pool, apply_keep, flatten_nchw, unfold

FC_DIM = 4096
POOLED_SIZE = 6
# (features index, out channels, kernel, stride, padding, max-pool before it)
_CONVS = ((0, 64, 11, 4, 2, False), (3, 192, 5, 1, 2, True), (6, 384, 3, 1, 1, True),
          (8, 256, 3, 1, 1, False), (10, 256, 3, 1, 1, False))


class AlexNet(nn.Module):
  """torchvision AlexNet. ``num_classes`` is fc8's size; ``precision`` that of convs/dense."""
  num_classes: int = 1000
  precision: Any = jax.lax.Precision.HIGHEST

  def setup(self):
    self.features = {
        str(i): nn.Conv(ch, (k, k), strides=(s, s), padding=((p, p), (p, p)),
                        precision=self.precision)
        for i, ch, k, s, p, _ in _CONVS}
    if not self.num_classes:
      raise ValueError("AlexNet needs num_classes >= 1")
    self.classifier = {"1": nn.Dense(FC_DIM, precision=self.precision),
                       "4": nn.Dense(FC_DIM, precision=self.precision),
                       "6": nn.Dense(self.num_classes, precision=self.precision)}

  def lpips_features(self, x: jax.Array) -> list[jax.Array]:
    """Preprocessed images ``[n, H, W, 3]`` -> [relu1, ..., relu5] (NHWC; 64, 192, 384, 256,
    256 channels)."""
    taps = []
    for i, _, _, _, _, pool_before in _CONVS:
      if pool_before:
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
      x = nn.relu(self.features[str(i)](x))
      taps.append(x)
    return taps

  def trunk(self, x: jax.Array) -> jax.Array:
    """Preprocessed images ``[n, H, W, 3]`` -> conv5 after ReLU ``[n, 13, 13, 256]`` at 224 px."""
    return self.lpips_features(x)[-1]

  def head(self, maps: jax.Array, keep: Optional[jax.Array] = None):
    """``maps [n, h, w, 256]`` -> ``(embedding [(m,) n, 4096], logits [(m,) n, C])``."""
    x, lead = apply_keep(maps, keep)
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    x = flatten_nchw(adaptive_avg_pool(x, (POOLED_SIZE, POOLED_SIZE)))
    x = nn.relu(self.classifier["1"](x))
    embedding = nn.relu(self.classifier["4"](x))
    logits = self.classifier["6"](embedding)
    return unfold(embedding, lead), unfold(logits, lead)

  def __call__(self, x: jax.Array):
    return self.head(self.trunk(x))


def head_embedding(variables, maps: jax.Array, keep: Optional[jax.Array] = None) -> jax.Array:
  """The AlexNet head's embedding ``[(m,) n, 4096]`` for ``variables`` (fc8 size read from them)."""
  num_classes = variables["params"]["classifier_6"]["bias"].shape[0]
  module = AlexNet(num_classes=num_classes)
  return module.apply(variables, maps, keep, method=AlexNet.head)[0]


def ablation_head(variables):
  """:class:`ais_jax.ablation.GenericHead` running the module's own head (one pass per mask).

  ``embed`` is a ``jax.tree_util.Partial`` holding the variables as pytree leaves, so passing it
  into a jitted function traces the weights instead of baking 57M constants into the program.
  """
  from ais_jax.ablation import GenericHead
  return GenericHead(embed=jax.tree_util.Partial(head_embedding, variables))


base.register(base.ModelSpec(
    name="alexnet", family="alexnet", build=AlexNet, num_maps=256, embedding_dim=FC_DIM,
    input_size=224, map_size=13, normalization="imagenet", resize="square",
    ablation_layer="features.11 (conv5 + ReLU)", embedding_layer="classifier.5 (fc7 + ReLU)",
    pooled_head=False, num_classes=1000, ablation_head=ablation_head))
