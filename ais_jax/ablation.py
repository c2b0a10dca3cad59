"""Heads as the AIS engine sees them, and the ablation algebra of DESIGN.md section 2.

A model's ``spec.ablation_head(variables)`` returns one of:

* :class:`PooledHead` - embedding = global average of the maps ``[n, h, w, K] -> [n, K]``;
  removing map k zeroes embedding coordinate k (no network pass at all).
* :class:`FcHead` - VGG-type: ``P = maxpool(maps, pool_window)`` ``[n, h', w', K]``, flattened in
  PyTorch's ``(K, h', w')`` order, ``e = relu(relu(P_flat @ w1 + b1) @ w2 + b2)``. Removing map k
  subtracts its contribution ``d_k = P_k W1_k`` from the fc6 pre-activation (exact).
* :class:`GenericHead` - any ``embed(maps, keep) -> [..., n, D]``; one head pass per mask.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class PooledHead:
  """Embedding = mean of each map over (h, w)."""


@flax.struct.dataclass
class FcHead:
  """Two fully connected layers after a max-pool, as VGG's fc6/fc7 (ReLU after each).

  Attributes:
    w1: ``[K * S, D1]`` Dense kernel, rows in (K, h', w') order (PyTorch's NCHW flatten),
      S = h' * w' (VGG16: 512 * 49 -> 4096).
    b1: ``[D1]``.
    w2: ``[D1, D2]`` (VGG16: 4096 x 4096).
    b2: ``[D2]``.
    pool_window: max-pool window = stride applied to the maps first (VGG: 2, 14x14 -> 7x7).
  """
  w1: Any
  b1: Any
  w2: Any
  b2: Any
  pool_window: int = flax.struct.field(pytree_node=False, default=2)


@dataclasses.dataclass(frozen=True)
class GenericHead:
  """Any head: ``embed(maps [n,h,w,K], keep None|[K]|[m,K]) -> [n,D] | [m,n,D]``."""
  embed: Callable[..., Any]


# ----------------------------------------------------------------------------------------------
# The algebra (pure, jit-able)


def pooled_embeddings(maps):
  """Global average of each map: ``[n, h, w, K] -> [n, K]`` (a :class:`PooledHead` embedding)."""
  maps = jnp.asarray(maps)
  if maps.ndim != 4:
    raise ValueError(f"maps must be [n, h, w, K], got shape {maps.shape}")
  return jnp.mean(maps, axis=(1, 2))


def max_pool(maps, window: int):
  """Non-overlapping max-pool ``[n, h, w, K] -> [n, h // window, w // window, K]``.

  Window = stride, trailing rows/columns that do not fill a window are dropped (PyTorch's
  ``MaxPool2d`` floor mode). Zeroing a non-negative map before the pool equals zeroing it after.
  """
  n, h, w, k = maps.shape
  hp, wp = h // window, w // window
  if hp == 0 or wp == 0:
    raise ValueError(f"maps of {h}x{w} are smaller than the pool window {window}")
  x = maps[:, :hp * window, :wp * window, :]
  return x.reshape(n, hp, window, wp, window, k).max(axis=(2, 4))


def fc_pooled_maps(head: FcHead, maps, *, dtype=None):
  """``P`` as fc6 sees it: ``[n, h, w, K] -> [n, K, S]`` (S = h' * w', rows in (K, h', w') order),
  checked against ``w1``'s rows."""
  maps = jnp.asarray(maps)
  if maps.ndim != 4:
    raise ValueError(f"maps must be [n, h, w, K], got shape {maps.shape}")
  if dtype is not None:
    maps = maps.astype(dtype)
  pooled = max_pool(maps, head.pool_window)
  n, hp, wp, k = pooled.shape
  s = hp * wp
  if head.w1.shape[0] != k * s:
    raise ValueError(
        f"FcHead.w1 has {head.w1.shape[0]} rows but the maps give K * h' * w' = {k} * {hp} * "
        f"{wp} = {k * s} after the {head.pool_window}x{head.pool_window} max-pool; check the maps' "
        "size (VGG16: 14x14 at 224 px) and that the maps are [n, h, w, K]")
  return jnp.transpose(pooled, (0, 3, 1, 2)).reshape(n, k, s)


def _w1_by_map(head: FcHead, num_maps: int, dtype):
  w1 = jnp.asarray(head.w1, dtype)
  return w1.reshape(num_maps, w1.shape[0] // num_maps, w1.shape[1])


def fc_pre_activation(head: FcHead, pooled, *, dtype, precision=None):
  """Baseline fc6 pre-activation ``a = P_flat @ w1 + b1``: ``pooled [n, K, S] -> [n, D1]``."""
  n, k, s = pooled.shape
  flat = pooled.astype(dtype).reshape(n, k * s)
  return (jnp.matmul(flat, jnp.asarray(head.w1, dtype), precision=precision)
          + jnp.asarray(head.b1, dtype))


def fc_map_contributions(head: FcHead, pooled, maps_idx, *, dtype, precision=None):
  """Contributions of the maps ``maps_idx [c]`` to fc6: ``pooled [n, K, S] -> d [c, n, D1]``,
  ``d[j, n] = sum_s P[n, maps_idx[j], s] * w1[maps_idx[j] * S + s]`` (map-major: the layout
  the batched matmul produces fastest)."""
  n, k, s = pooled.shape
  w1 = _w1_by_map(head, k, dtype)
  p = jnp.take(pooled.astype(dtype), maps_idx, axis=1)
  return jnp.einsum("ncs,csd->cnd", p, jnp.take(w1, maps_idx, axis=0), precision=precision)


def fc_contributions(head: FcHead, maps, *, dtype=jnp.float64, precision=None):
  """fc6 pre-activation and each map's contribution to it (DESIGN.md section 2).

  Args:
    head: the fully connected head.
    maps: ``[n, h, w, K]`` post-ReLU feature maps.
    dtype: computation dtype (float64 needs a float64 scope, see ais_jax.precision).
    precision: ``jax.lax.Precision`` of the matmuls.

  Returns:
    ``(a, d)``: ``a [n, D1]`` baseline pre-activation including the bias (``sum_k d[:, k] + b1``),
    ``d [n, K, D1]`` per-map contributions; ``a - d[:, k]`` is the pre-activation with map k
    removed (exact up to rounding).
  """
  pooled = fc_pooled_maps(head, maps, dtype=dtype)
  k = pooled.shape[1]
  w1 = _w1_by_map(head, k, dtype)
  d = jnp.einsum("nks,ksd->nkd", pooled, w1, precision=precision)
  a = jnp.sum(d, axis=1) + jnp.asarray(head.b1, dtype)
  return a, d


def fc_embed(head: FcHead, pre_activation, *, dtype=jnp.float64, precision=None):
  """The rest of the head from the fc6 pre-activation: ``[..., D1] -> relu(relu(x) @ w2 + b2)``
  ``[..., D2]``."""
  x = jax.nn.relu(jnp.asarray(pre_activation, dtype))
  y = jnp.matmul(x, jnp.asarray(head.w2, dtype), precision=precision) + jnp.asarray(head.b2, dtype)
  return jax.nn.relu(y)


def fc_embeddings(head: FcHead, maps, *, dtype=jnp.float64, precision=None):
  """Full head ``[n, h, w, K] -> [n, D2]`` (baseline embeddings)."""
  pooled = fc_pooled_maps(head, maps, dtype=dtype)
  a = fc_pre_activation(head, pooled, dtype=dtype, precision=precision)
  return fc_embed(head, a, dtype=dtype, precision=precision)
