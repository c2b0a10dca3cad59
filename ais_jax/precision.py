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

Backends without float64 (TPU): :func:`similarity_dtype` returns float32 there; the kernels in
:mod:`ais_jax.rsa` take ``dtype=jnp.float32`` for their compensated float32 form (similarities
from half squared distances of centred unit vectors, two-pass centring; measured error in BUILD.md
and tests/test_rsa.py). The AIS engine does not select that form automatically yet.
"""

from __future__ import annotations

import contextlib
import dataclasses

import jax
import jax.numpy as jnp

PRECISIONS = ("exact", "float32", "fast")


@dataclasses.dataclass(frozen=True)
class PrecisionConfig:
  name: str
  head_dtype: object              # dtype the head runs in
  head_precision: jax.lax.Precision
  trunk_precision: jax.lax.Precision = jax.lax.Precision.HIGHEST


def resolve(name: str) -> PrecisionConfig:
  """'exact' | 'float32' | 'fast' -> PrecisionConfig (ValueError naming the choices otherwise)."""
  if name == "exact":
    return PrecisionConfig(name, jnp.float64, jax.lax.Precision.HIGHEST)
  if name == "float32":
    return PrecisionConfig(name, jnp.float32, jax.lax.Precision.HIGHEST)
  if name == "fast":
    return PrecisionConfig(name, jnp.float32, jax.lax.Precision.DEFAULT)
  raise ValueError(f"precision={name!r} is not one of {PRECISIONS}")


def float64_supported(backend: str | None = None) -> bool:
  """False on backends without native float64 (TPU)."""
  platform = jax.default_backend() if backend is None else backend
  return platform not in ("tpu",)


def similarity_dtype(backend: str | None = None):
  """float64 wherever the backend has it; float32 (compensated kernels) otherwise."""
  return jnp.float64 if float64_supported(backend) else jnp.float32


@contextlib.contextmanager
def float64_scope():
  """Enables float64 for the enclosed code only; the caller's global flag is restored after."""
  with jax.enable_x64(True):
    yield
