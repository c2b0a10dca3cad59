"""EfficientNet-Lite0/1/2 in Flax, parameter for parameter as `efficientnet-lite-pytorch` 0.1.0.

The PyTorch package (a port of TensorFlow's ``efficientnet_lite_builder``) defines the family as
EfficientNet-B0's seven MBConv stages with three changes: ReLU6 instead of swish, no
squeeze-excitation, and a stem (32 channels) and head (1280 channels) that are not scaled with
the width multiplier; the first and last stages are not repeated more with the depth multiplier.

Architecture details that this module reproduces (checked against the package source):

* Convolutions use TensorFlow 'SAME' padding (output size ``ceil(in / stride)``, the extra pixel
  of an odd total padding on the bottom/right). The package precomputes this padding for its
  configured image size; here it is computed from the actual input, which is identical at the
  model's input size (and the only correct choice at any other size).
* BatchNorm: epsilon 1e-3, momentum 0.99 in Flax's convention (0.01 in PyTorch's); inference uses
  the running statistics.
* Residual connection in every block whose stride is 1 and whose input and output widths match
  (the repeated blocks of each stage); drop-connect is a training-only operation and is absent.
* Dropout before ``_fc`` is a training-only operation and is absent.

Submodules are named as the PyTorch state dict keys with ``.`` -> ``_`` at list indices
(``_blocks.3._depthwise_conv`` -> ``_blocks_3/_depthwise_conv``), so ``convert/efficientnet_lite.py``
is a short table.

The ablated maps are the head convolution's output after ``_bn1`` and ReLU6: ``[n, h, w, 1280]``,
7x7 / 8x8 / 9x9 at 224 / 240 / 260 px. The embedding is their global average (1280-d).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ais_jax.models import base

# TensorFlow's EfficientNet-Lite stages: (repeats, kernel, stride, expand ratio, in, out).
_BASE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99  # Flax convention: running = momentum * running + (1 - momentum) * batch.
DEPTH_DIVISOR = 8

# (width multiplier, depth multiplier, input size) as the package's `efficientnet_params`.
COEFFICIENTS = {
    "efficientnet_lite0": (1.0, 1.0, 224),
    "efficientnet_lite1": (1.0, 1.1, 240),
    "efficientnet_lite2": (1.1, 1.2, 260),
}


@dataclasses.dataclass(frozen=True)
class BlockConfig:
  """One MBConv block (after width/depth scaling)."""
  kernel_size: int
  stride: int
  expand_ratio: int
  in_filters: int
  out_filters: int


def round_filters(filters: int, width: float) -> int:
  """Width scaling as TensorFlow's builder: nearest multiple of 8, never more than 10% down."""
  scaled = filters * width
  rounded = max(DEPTH_DIVISOR, int(scaled + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
  if rounded < 0.9 * scaled:
    rounded += DEPTH_DIVISOR
  return int(rounded)


def block_configs(width: float, depth: float) -> tuple[BlockConfig, ...]:
  """The flat list of MBConv blocks for the given multipliers (Lite rules: fixed stem and head)."""
  blocks = []
  last = len(_BASE_STAGES) - 1
  for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(_BASE_STAGES):
    in_filters = round_filters(cin, width)
    out_filters = round_filters(cout, width)
    if i == 0 or i == last:
      # The Lite builder keeps the first and last stages at one block; the first stage reads the
      # unscaled 32-channel stem.
      if i == 0:
        in_filters = STEM_FILTERS
    else:
      repeats = int(math.ceil(depth * repeats))
    blocks.append(BlockConfig(kernel, stride, expand, in_filters, out_filters))
    for _ in range(repeats - 1):
      blocks.append(BlockConfig(kernel, 1, expand, out_filters, out_filters))
  return tuple(blocks)


def _batch_norm(name: Optional[str] = None) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=True, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                      name=name)


class MBConvBlock(nn.Module):
  """Inverted residual block: [1x1 expand, BN, ReLU6], kxk depthwise, BN, ReLU6, 1x1 project, BN."""
  config: BlockConfig
  precision: str = "highest"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``x [n, h, w, in_filters]`` -> ``[n, ceil(h / stride), ceil(w / stride), out_filters]``."""
    c = self.config
    inputs = x
    hidden = c.in_filters * c.expand_ratio
    if c.expand_ratio != 1:
      x = nn.Conv(hidden, (1, 1), use_bias=False, precision=self.precision,
                  name="_expand_conv")(x)
      x = jax.nn.relu6(_batch_norm("_bn0")(x))
    x = nn.Conv(hidden, (c.kernel_size, c.kernel_size), strides=(c.stride, c.stride),
                padding="SAME", feature_group_count=hidden, use_bias=False,
                precision=self.precision, name="_depthwise_conv")(x)
    x = jax.nn.relu6(_batch_norm("_bn1")(x))
    x = nn.Conv(c.out_filters, (1, 1), use_bias=False, precision=self.precision,
                name="_project_conv")(x)
    x = _batch_norm("_bn2")(x)
    if c.stride == 1 and c.in_filters == c.out_filters:
      x = x + inputs
    return x


class EfficientNetLite(nn.Module):
  """EfficientNet-Lite with the AIS interface (``trunk``, ``head``).

  Attributes:
    width: width multiplier (Lite0/1: 1.0, Lite2: 1.1).
    depth: depth multiplier (Lite0: 1.0, Lite1: 1.1, Lite2: 1.2).
    num_classes: classifier size; None builds no ``_fc`` (logits are None).
    precision: precision of every convolution and of ``_fc`` ('highest' = true float32 on
      accelerators whose default is TF32/bf16).
  """
  width: float = 1.0
  depth: float = 1.0
  num_classes: Optional[int] = 1000
  precision: str = "highest"

  def setup(self):
    self._conv_stem = nn.Conv(STEM_FILTERS, (3, 3), strides=(2, 2), padding="SAME",
                              use_bias=False, precision=self.precision)
    self._bn0 = _batch_norm()
    self._blocks = [MBConvBlock(c, precision=self.precision)
                    for c in block_configs(self.width, self.depth)]
    self._conv_head = nn.Conv(HEAD_FILTERS, (1, 1), use_bias=False, precision=self.precision)
    self._bn1 = _batch_norm()
    if self.num_classes is not None:
      self._fc = nn.Dense(self.num_classes, precision=self.precision)

  def trunk(self, x: jax.Array) -> jax.Array:
    """Preprocessed images ``[n, H, W, 3]`` -> head maps after ``_bn1`` + ReLU6 ``[n, h, w, 1280]``."""
    x = jax.nn.relu6(self._bn0(self._conv_stem(x)))
    for block in self._blocks:
      x = block(x)
    return jax.nn.relu6(self._bn1(self._conv_head(x)))

  def head(self, maps: jax.Array, keep: Optional[jax.Array] = None):
    """Maps ``[n, h, w, K]`` -> ``(embedding, logits)``.

    Args:
      maps: ``[n, h, w, 1280]`` from :meth:`trunk`.
      keep: None, ``[K]`` or ``[m, K]`` channel weights (0/1 masks) applied to the maps before
        pooling. Pooling is linear, so the mask is applied to the pooled vector (the same values).

    Returns:
      embedding ``[n, K]`` (``[m, n, K]`` with an ``[m, K]`` keep) = global average of
      ``maps * keep``; logits ``[n, C]`` / ``[m, n, C]`` from ``_fc``, or None without a classifier.
    """
    embedding = jnp.mean(maps, axis=(1, 2))
    if keep is not None:
      keep = jnp.asarray(keep, embedding.dtype)
      if keep.ndim not in (1, 2) or keep.shape[-1] != embedding.shape[-1]:
        raise ValueError(f"keep must be None, [K] or [m, K] with K = {embedding.shape[-1]} maps; "
                         f"got shape {keep.shape}")
      if keep.ndim == 1:
        embedding = embedding * keep
      else:
        embedding = embedding[None, :, :] * keep[:, None, :]
    logits = self._fc(embedding) if self.num_classes is not None else None
    return embedding, logits

  def __call__(self, x: jax.Array):
    return self.head(self.trunk(x))


def _build(num_classes: Optional[int] = 1000, *, width: float, depth: float,
           precision: str = "highest") -> EfficientNetLite:
  return EfficientNetLite(width=width, depth=depth, num_classes=num_classes, precision=precision)


for _name, (_width, _depth, _size) in COEFFICIENTS.items():
  base.register(base.ModelSpec(
      name=_name,
      family="efficientnet_lite",
      build=functools.partial(_build, width=_width, depth=_depth),
      num_maps=HEAD_FILTERS,
      embedding_dim=HEAD_FILTERS,
      input_size=_size,
      map_size=int(math.ceil(_size / 32)),
      normalization="tf_127",
      resize="square",
      ablation_layer="_bn1 + ReLU6 (head conv)",
      embedding_layer="global average pool",
      pooled_head=True,
      num_classes=1000,
  ))
