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
