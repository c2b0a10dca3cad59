"""Precision modes (DESIGN.md section 3) and float64 scoping.

AIS values are small differences of correlations. Float32 rounding in the similarity/agreement
stage was measured to be as large as the effect itself, so that stage runs in float64 in every
mode. The modes differ only in the head (the layers between the ablated maps and the embedding):

=========  ===========================  ==========================
mode       head                         similarity and agreement
=========  ===========================  ==========================
exact      float64                      float64
float32    float32, precision HIGHEST   float64
fast       float32, precision DEFAULT   float64
           (TF32 / bf16 on GPU/TPU)
=========  ===========================  ==========================

The trunk always runs in float32 with precision HIGHEST (measured: rounding the trunk maps to
float32 moves per-image AIS by <= 2.3e-9).

The library never flips the caller's global ``jax_enable_x64`` flag: entry points run their
float64 stages inside :func:`float64_scope`.

Backends without float64 (TPU), or ``AIS_JAX_FLOAT64=0`` anywhere: :func:`float64_enabled` is
False and the AIS engine runs its float64-free path: head in float32 HIGHEST (in every mode but
'fast'), similarities and agreements in compensated float32 (the changes an ablation makes to the
similarities and to the agreements are computed directly from the removed terms, never as the
difference of two rounded values; sums pairwise). Measured error against float64 on the same trunk
maps: tests/test_float64_free.py and BUILD.md. The kernels in :mod:`ais_jax.rsa` take
``dtype=jnp.float32`` for their own compensated form.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import jax
import jax.numpy as jnp

PRECISIONS = ("exact", "float32", "fast")
# Set to 0 to force the float64-free path on any backend (tests run it on the CPU).
FLOAT64_ENV = "AIS_JAX_FLOAT64"


@dataclasses.dataclass(frozen=True)
class PrecisionConfig:
  name: str
  head_dtype: object              # dtype the head runs in
  head_precision: jax.lax.Precision
  trunk_precision: jax.lax.Precision = jax.lax.Precision.HIGHEST


def resolve(name: str, float64: bool = True) -> PrecisionConfig:
  """'exact' | 'float32' | 'fast' -> PrecisionConfig (ValueError naming the choices otherwise).

  ``float64=False`` (:func:`float64_enabled`): 'exact' runs its head in float32 HIGHEST.
  """
  if name == "exact":
    return PrecisionConfig(name, jnp.float64 if float64 else jnp.float32,
                           jax.lax.Precision.HIGHEST)
  if name == "float32":
    return PrecisionConfig(name, jnp.float32, jax.lax.Precision.HIGHEST)
  if name == "fast":
    return PrecisionConfig(name, jnp.float32, jax.lax.Precision.DEFAULT)
  raise ValueError(f"precision={name!r} is not one of {PRECISIONS}")


def float64_supported(backend: str | None = None) -> bool:
  """False on backends without native float64 (TPU)."""
  platform = jax.default_backend() if backend is None else backend
  return platform not in ("tpu",)


def float64_enabled(backend: str | None = None) -> bool:
  """Whether the AIS engine runs its float64 path: the backend has float64 and the environment
  variable ``AIS_JAX_FLOAT64`` is not ``0`` (which forces the float64-free path anywhere)."""
  forced = os.environ.get(FLOAT64_ENV, "").strip().lower()
  if forced in ("0", "false", "no", "off"):
    return False
  return float64_supported(backend)


def similarity_dtype(backend: str | None = None):
  """float64 wherever the engine uses it; float32 (compensated kernels) otherwise."""
  return jnp.float64 if float64_enabled(backend) else jnp.float32


@contextlib.contextmanager
def float64_scope():
  """Enables float64 for the enclosed code only; the caller's global flag is restored after."""
  with jax.enable_x64(True):
    yield


def two_sum(a, b):
  """Error-free sum: ``(s, e)`` with ``s = fl(a + b)`` and ``a + b = s + e`` exactly (Knuth)."""
  s = a + b
  bb = s - a
  return s, (a - (s - bb)) + (b - bb)


def compensated_einsum(subscripts: str, a, b, *, block: int = 32,
                       precision=jax.lax.Precision.HIGHEST):
  """``jnp.einsum(subscripts, a, b)`` with the contraction over index ``contract`` done in blocks of
  ``block`` entries whose partial products are accumulated with :func:`two_sum` (a running sum and
  its rounding error): float32 accuracy of the result no longer degrades with the contraction
  length (a plain float32 matmul over 1,280 terms was measured to err by 3e-6 relative on the
  CPU; blocked and compensated: 1.6e-7). Same flops as the plain einsum, one ``lax.scan`` step
  per block.

  Args:
    subscripts: two-operand einsum string with one contracted index, e.g. ``'id,jd->ij'``.
    a, b: the operands.
    block: entries per partial product (the CPU's float32 dot accumulates sequentially: its error
      grows with the block; 32 was measured to give 8e-8 relative on a Gram matrix).
  """
  inputs, output = subscripts.replace(" ", "").split("->")
  inputs = inputs.split(",")
  contract = next(c for c in inputs[0] if c in inputs[1] and c not in output)
  axis_a, axis_b = inputs[0].index(contract), inputs[1].index(contract)
  length = a.shape[axis_a]
  num = -(-length // block)
  if num <= 1:
    return jnp.einsum(subscripts, a, b, precision=precision)
  pad = num * block - length
  if pad:
    a = jnp.pad(a, [(0, pad if i == axis_a else 0) for i in range(a.ndim)])
    b = jnp.pad(b, [(0, pad if i == axis_b else 0) for i in range(b.ndim)])
  part = lambda j: jnp.einsum(
      subscripts, jax.lax.dynamic_slice_in_dim(a, j * block, block, axis_a),
      jax.lax.dynamic_slice_in_dim(b, j * block, block, axis_b), precision=precision)

  def body(carry, j):
    total, error = carry
    total, e = two_sum(total, part(j))
    return (total, error + e), None

  first = part(0)
  (total, error), _ = jax.lax.scan(body, (first, jnp.zeros_like(first)), jnp.arange(1, num))
  return total + error
