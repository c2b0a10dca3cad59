"""TranSalNet_Res (Lou et al. 2022, Neurocomputing): the gaze-prediction model of the paper's Aim 3.

A ResNet-50 encoder (the zoo's :class:`ais_jax.models.resnet.ResNet`, stages 2-4), three
transformer encoders on the 36x48, 18x24 and 9x12 grids with learned position embeddings, and a
convolutional decoder with nearest x2 upsampling and a sigmoid, on 288 x 384 inputs:

    x3 = layer2 [36x48x512]   x4 = layer3 [18x24x1024]   x5 = layer4 [9x12x2048]
    x5 = up(relu(bn1(conv1(T1(x5)))))                      768 ch, 18x24
    x4 = up(relu(bn2(conv2(relu(x5 * T2(x4))))))           512 ch, 36x48
    x3 = up(relu(bn3(conv3(relu(x4 * T3(x3))))))           256 ch, 72x96
    x2 = relu(bn5(conv5(up(relu(bn4(conv4(x3)))))))        64 ch, 144x192
    out = sigmoid(conv7(relu(bn6(conv6(up(x2))))))          1 ch, 288x384

Submodule names mirror the authors' state-dict keys (``decoder.TransEncoder2.transformer_encoder
.layer.1.attn.query.weight`` -> ``params/decoder/TransEncoder2/transformer_encoder/layer_1/attn/
query/kernel``), so ``convert/transalnet.py`` is a short table. The input is what the authors'
test-time path feeds the network (BGR pixels / 255, no mean/std; see :mod:`ais_jax.transalnet`).
Precision HIGHEST everywhere (true float32), BatchNorm in inference mode, exact (erf) GELU and
LayerNorm with eps 1e-6 as in the PyTorch code.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ais_jax.models import base
from ais_jax.models.resnet import BN_EPS, ResNet

INPUT_HEIGHT, INPUT_WIDTH = 288, 384
# (hidden size, heads) of TransEncoder1..3; each has two layers and an MLP of 4 x hidden.
ENCODER_CONFIGS = ((768, 12), (768, 12), (512, 8))
ENCODER_LAYERS = 2
LAYER_NORM_EPS = 1e-6


class Attention(nn.Module):
  hidden: int
  heads: int
  precision: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``x [n, tokens, hidden]`` -> multi-head self-attention output, same shape."""
    head_size = self.hidden // self.heads
    dense = functools.partial(nn.Dense, self.heads * head_size, precision=self.precision)
    split = lambda t: t.reshape(t.shape[:-1] + (self.heads, head_size))
    q, k, v = (split(dense(name=name)(x)) for name in ("query", "key", "value"))
    scores = jnp.einsum("nqhd,nkhd->nhqk", q, k, precision=self.precision) / math.sqrt(head_size)
    context = jnp.einsum("nhqk,nkhd->nqhd", jax.nn.softmax(scores, axis=-1), v,
                         precision=self.precision)
    context = context.reshape(context.shape[:-2] + (self.heads * head_size,))
    return nn.Dense(self.hidden, precision=self.precision, name="out")(context)


class Mlp(nn.Module):
  hidden: int
  precision: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Dense(4 * self.hidden, precision=self.precision, name="fc1")(x)
    x = nn.gelu(x, approximate=False)
    return nn.Dense(self.hidden, precision=self.precision, name="fc2")(x)


def _layer_norm(name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=LAYER_NORM_EPS, use_fast_variance=False, name=name)


class Block(nn.Module):
  """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""
  hidden: int
  heads: int
  precision: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + Attention(self.hidden, self.heads, self.precision, name="attn")(
        _layer_norm("attention_norm")(x))
    return x + Mlp(self.hidden, self.precision, name="ffn")(_layer_norm("ffn_norm")(x))


class TransformerEncoder(nn.Module):
  hidden: int
  heads: int
  precision: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(ENCODER_LAYERS):
      x = Block(self.hidden, self.heads, self.precision, name=f"layer_{i}")(x)
    return _layer_norm("encoder_norm")(x)


class TransEncoder(nn.Module):
  """1x1 patch embedding of a feature grid, learned position embeddings, two transformer layers;
  ``[n, h, w, C]`` -> ``[n, h, w, hidden]`` (tokens in row-major grid order, as torch's
  ``flatten(2)`` of NCHW)."""
  hidden: int
  heads: int
  precision: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n, h, w, _ = x.shape
    x = nn.Conv(self.hidden, (1, 1), precision=self.precision, name="patch_embeddings")(x)
    tokens = x.reshape(n, h * w, self.hidden)
    position = self.param("position_embeddings", nn.initializers.zeros, (1, h * w, self.hidden))
    tokens = TransformerEncoder(self.hidden, self.heads, self.precision,
                                name="transformer_encoder")(tokens + position)
    return tokens.reshape(n, h, w, self.hidden)


def _up(x: jax.Array) -> jax.Array:
  """Nearest-neighbour x2 upsampling of ``[n, h, w, C]``."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Decoder(nn.Module):
  precision: Any

  @nn.compact
  def __call__(self, x3: jax.Array, x4: jax.Array, x5: jax.Array) -> jax.Array:
    conv = lambda c, i: nn.Conv(c, (3, 3), padding=((1, 1), (1, 1)), precision=self.precision,
                                name=f"conv{i}")
    bn = lambda i: nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, momentum=0.9,
                                name=f"batchnorm{i}")
    encoders = [TransEncoder(hidden, heads, self.precision, name=f"TransEncoder{i + 1}")
                for i, (hidden, heads) in enumerate(ENCODER_CONFIGS)]
    x5 = _up(nn.relu(bn(1)(conv(768, 1)(encoders[0](x5)))))
    x4 = _up(nn.relu(bn(2)(conv(512, 2)(nn.relu(x5 * encoders[1](x4))))))
    x3 = _up(nn.relu(bn(3)(conv(256, 3)(nn.relu(x4 * encoders[2](x3))))))
    x2 = _up(nn.relu(bn(4)(conv(128, 4)(x3))))
    x2 = nn.relu(bn(5)(conv(64, 5)(x2)))
    x1 = nn.relu(bn(6)(conv(32, 6)(_up(x2))))
    return jax.nn.sigmoid(conv(1, 7)(x1))


class TranSalNetRes(nn.Module):
  """``x [n, 288, 384, 3]`` (BGR / 255) -> saliency ``[n, 288, 384]`` in (0, 1)."""
  num_classes: Optional[int] = None  # unused: the registry's build(num_classes=...) contract
  precision: Any = jax.lax.Precision.HIGHEST

  def setup(self):
    self.encoder = ResNet(layers=(3, 4, 6, 3), num_classes=None, precision=self.precision)
    self.decoder = Decoder(self.precision)

  def __call__(self, x: jax.Array) -> jax.Array:
    _, x3, x4, x5 = self.encoder.stages(x)
    return self.decoder(x3, x4, x5)[..., 0]


base.register(base.ModelSpec(
    name="transalnet_res", family="transalnet", build=TranSalNetRes, num_maps=0,
    embedding_dim=0, input_size=INPUT_WIDTH, input_height=INPUT_HEIGHT, map_size=0,
    normalization="unit", resize="letterbox",
    ablation_layer="(none: a saliency model)", embedding_layer="(none: a saliency model)",
    pooled_head=False, num_classes=None, kind="saliency"))
