"""Ranks, correlations, similarity matrices and agreement over masks (pure, jit-able).

Every AIS number passes through these kernels; see DESIGN.md sections 1 and 3.

* All kernels are pure functions of arrays, jit-, vmap- and grad-free-safe, with no I/O.
* Public calls from eager code run in float64 inside a scoped ``jax.enable_x64`` (the caller's
  global flag is untouched) and are jitted once per input shape. Called on tracers (inside the
  caller's own ``jit``), the kernels run inline: the caller must then be inside
  :func:`ais_jax.precision.float64_scope` (the AIS engine is) or pass float32 deliberately.
* Undefined values (DESIGN.md section 1): a correlation is NaN when either vector is constant
  within float64 rounding (RMS deviation from its mean <= 1e-12 x its max |value|; an all-zero
  vector is constant), or fewer than 2 entries are selected. A NaN inside the selected entries
  makes the result NaN (never silently dropped). Cosine similarity is NaN for an all-zero vector.
* ``dtype=jnp.float32`` selects the compensated float32 forms for backends without float64
  (TPU): similarities from half squared distances of unit vectors (exact near 1, where float32
  rounding of a Gram matrix is as large as the effect), two-pass centring everywhere.

Shapes: ``n`` images, ``D`` embedding size, ``L`` vector length, ``...`` any leading batch axes.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from ais_jax.precision import PRECISIONS, float64_scope  # noqa: F401  (re-exported)
from ais_jax.validation import validate_human_similarity  # noqa: F401  (re-exported)

SIMILARITIES = ("pearson", "spearman", "cosine")
COMPARISONS = ("pearson", "spearman")
CONSTANT_RTOL = 1e-12


def _entry(*static: str):
  """Public entry: eager calls run jitted in a float64 scope; traced calls run inline."""

  def decorate(fn):
    jitted = jax.jit(fn, static_argnames=static)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
      leaves = jax.tree_util.tree_leaves((args, kwargs))
      if any(isinstance(a, jax.core.Tracer) for a in leaves):
        return fn(*args, **kwargs)
      with float64_scope():
        return jitted(*args, **kwargs)

    wrapper.kernel = fn      # the traceable function itself
    wrapper.jitted = jitted  # for compile-count tests
    return wrapper

  return decorate


def _float(x, dtype):
  return jnp.asarray(x, dtype=jnp.float64 if dtype is None else dtype)


def _check_kind(kind, allowed, what):
  if kind not in allowed:
    raise ValueError(f"{what}={kind!r} is not one of {allowed}")


# ----------------------------------------------------------------------------------------------
# Ranks


@_entry("axis", "dtype")
def rankdata(x, axis: int = -1, *, dtype=None):
  """Average-tie ranks (1-based) along ``axis``, as ``scipy.stats.rankdata(method='average')``.

  NaN entries are excluded from the ranking and stay NaN (``nan_policy='omit'``). ``+-inf`` are
  not supported (validation rejects them upstream).
  """
  x = jnp.moveaxis(_float(x, dtype), axis, -1)
  first, last = tie_bounds(x)
  ranks = (first + last).astype(x.dtype) / 2 + 1
  return jnp.moveaxis(jnp.where(jnp.isnan(x), jnp.nan, ranks), -1, axis)


def tie_bounds(x):
  """First and last 0-based sorted positions of each entry's tie group along the last axis.

  ``x [..., D]`` -> ``(first, last)`` int32 ``[..., D]`` in the original order: ``first`` = number
  of entries strictly below, ``last`` = number of entries <= it minus 1. One sort (with the
  positions as payload), the tie groups by a cumulative max / reverse cumulative min over the
  sorted values, and a scatter back (no searchsorted).
  NaN entries sort last (as +inf) and must be masked by the caller.
  """
  x = jnp.where(jnp.isnan(x), jnp.inf, x)
  lead, d = x.shape[:-1], x.shape[-1]
  flat = x.reshape(-1, d)
  b = flat.shape[0]
  pos = jnp.broadcast_to(jnp.arange(d, dtype=jnp.int32), (b, d))
  srt, perm = jax.lax.sort((flat, pos), dimension=1, num_keys=1)
  change = srt[:, 1:] != srt[:, :-1]                                    # [b, d-1]
  starts = jnp.concatenate([jnp.ones((b, 1), bool), change], axis=1)
  ends = jnp.concatenate([change, jnp.ones((b, 1), bool)], axis=1)
  first = jax.lax.cummax(jnp.where(starts, pos, 0), axis=1)
  last = jax.lax.cummin(jnp.where(ends, pos, d - 1), axis=1, reverse=True)
  rows = jnp.arange(b, dtype=jnp.int32)[:, None]
  both = jnp.zeros((b, d, 2), jnp.int32).at[rows, perm].set(jnp.stack([first, last], -1),
                                                            unique_indices=True)
  return both[..., 0].reshape(lead + (d,)), both[..., 1].reshape(lead + (d,))


# ----------------------------------------------------------------------------------------------
# Undefined-value rule and masked moments


def pairwise_sum(x, block: int = 32):
  """Sum over the last axis in a tree of ``block``-wide partial sums (rounding error grows with
  ``log(L)``, not ``L``): ``[..., L] -> [...]``. Used by the float32 forms."""
  while x.shape[-1] > block:
    length = x.shape[-1]
    pad = -length % block
    if pad:
      x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)])
    x = jnp.sum(x.reshape(x.shape[:-1] + ((length + pad) // block, block)), axis=-1)
  return jnp.sum(x, axis=-1)


def _sum_last(x, keepdims: bool = False):
  """Sum over the last axis: plain in float64, pairwise in float32 (the compensated form)."""
  if x.dtype == jnp.float64:
    return jnp.sum(x, axis=-1, keepdims=keepdims)
  total = pairwise_sum(x)
  return total[..., None] if keepdims else total


def _masked_centre(x, m, n):
  """Two-pass centring over the mask: mean, then a correction from the residuals."""
  mean = _sum_last(jnp.where(m, x, 0), keepdims=True) / n
  dev = jnp.where(m, x - mean, 0)
  dev = jnp.where(m, dev - _sum_last(dev, keepdims=True) / n, 0)
  return dev


def centre(x):
  """Two-pass centring along the last axis (every entry): ``[..., L] -> [..., L]``."""
  return _masked_centre(x, jnp.ones(x.shape, bool),
                        jnp.full(x.shape[:-1] + (1,), x.shape[-1], x.dtype))


def _is_constant(x, m, n):
  dev = _masked_centre(x, m, n)
  rms = jnp.sqrt(jnp.sum(dev * dev, axis=-1) / n[..., 0])
  maxabs = jnp.max(jnp.where(m, jnp.abs(x), 0), axis=-1)
  return rms <= CONSTANT_RTOL * maxabs


def _mask_like(x, mask):
  if mask is None:
    return jnp.ones(x.shape, bool)
  return jnp.broadcast_to(jnp.asarray(mask, bool), x.shape)


@_entry("axis", "dtype")
def is_constant(x, mask=None, axis: int = -1, *, dtype=None):
  """True where the vector along ``axis`` (restricted to ``mask``) is constant within rounding."""
  x = jnp.moveaxis(_float(x, dtype), axis, -1)
  if mask is not None and jnp.ndim(mask) == x.ndim:
    mask = jnp.moveaxis(jnp.asarray(mask, bool), axis, -1)
  m = _mask_like(x, mask)
  n = jnp.sum(m, axis=-1, keepdims=True).astype(x.dtype)
  return _is_constant(x, m, jnp.maximum(n, 1))


# ----------------------------------------------------------------------------------------------
# Correlations of vectors


def _pearson_last(x, y, m):
  """Pearson along the last axis over mask ``m`` (all broadcast to one shape)."""
  n = jnp.sum(m, axis=-1, keepdims=True).astype(x.dtype)
  safe_n = jnp.maximum(n, 1)
  dx = _masked_centre(x, m, safe_n)
  dy = _masked_centre(y, m, safe_n)
  sxy = jnp.sum(dx * dy, axis=-1)
  sxx = jnp.sum(dx * dx, axis=-1)
  syy = jnp.sum(dy * dy, axis=-1)
  r = sxy / jnp.sqrt(sxx * syy)
  undefined = (_is_constant(x, m, safe_n) | _is_constant(y, m, safe_n) | (n[..., 0] < 2))
  # A NaN inside the selected entries makes the result NaN (it already is, through the sums),
  # and so does an undefined (constant) vector.
  return jnp.where(undefined, jnp.nan, r)


def _ranks_over_mask(x, m):
  return rankdata.kernel(jnp.where(m, x, jnp.nan), axis=-1, dtype=x.dtype)


@_entry("kind", "axis", "dtype")
def correlation(x, y, mask=None, *, kind: str = "pearson", axis: int = -1, dtype=None):
  """Pearson or Spearman correlation of ``x`` and ``y`` along ``axis`` over ``mask``.

  Args:
    x, y: arrays broadcastable to one shape ``[..., L]`` (with ``axis`` moved last).
    mask: bool, broadcastable to that shape; None selects every entry. Entries outside the mask
      may hold anything (NaN included); a NaN inside the mask makes that correlation NaN.
    kind: 'pearson' | 'spearman' (ranks computed over the masked entries only, average ties).

  Returns:
    ``[...]`` correlations, NaN where undefined (DESIGN.md section 1).
  """
  _check_kind(kind, COMPARISONS, "kind")
  x = jnp.moveaxis(_float(x, dtype), axis, -1)
  y = jnp.moveaxis(_float(y, dtype), axis, -1)
  shape = jnp.broadcast_shapes(x.shape, y.shape)
  x, y = jnp.broadcast_to(x, shape), jnp.broadcast_to(y, shape)
  if mask is None:
    m = jnp.ones(shape, bool)
  else:
    m = jnp.asarray(mask, bool)
    if m.ndim == len(shape) and axis not in (-1, len(shape) - 1):
      m = jnp.moveaxis(m, axis, -1)
    m = jnp.broadcast_to(m, shape)
  if kind == "spearman":
    # The undefined rule applies to the values, not their ranks: values equal up to rounding
    # would otherwise be ranked by rounding noise.
    n = jnp.maximum(jnp.sum(m, axis=-1, keepdims=True).astype(x.dtype), 1)
    undefined = (jnp.any(m & (jnp.isnan(x) | jnp.isnan(y)), axis=-1) |
                 _is_constant(x, m, n) | _is_constant(y, m, n))
    r = _pearson_last(_ranks_over_mask(x, m), _ranks_over_mask(y, m), m)
    return jnp.where(undefined, jnp.nan, r)
  return _pearson_last(x, y, m)


def correlation_change(x, dx, y, mask=None, *, kind: str = "pearson"):
  """``(r(x, y), r(x + dx, y) - r(x, y))`` along the last axis over ``mask``, the change computed
  from ``dx`` itself (never as the difference of two rounded correlations): the compensated form
  of an ablation's effect on an agreement, accurate to rounding relative to the change.

  With centred ``x, dx, y`` over the mask, ``A = |x|^2``, ``dA = 2 x.dx + |dx|^2``,
  ``C = x.y``: ``r' - r = (dx.y / sqrt(A + dA) - C dA / (sqrt(A) sqrt(A + dA) (sqrt(A) +
  sqrt(A + dA)))) / |y|``. Spearman: ``x``, ``x + dx`` and ``y`` are ranked over the mask and
  ``dx`` becomes the (exact) change of ranks. Undefined values as :func:`correlation` (a
  constant ``x``, ``x + dx`` or ``y``, fewer than 2 entries, NaN inside the mask).

  Args:
    x, dx, y: arrays broadcastable to one shape ``[..., L]``; mask likewise (None: all).
    kind: 'pearson' | 'spearman'.

  Returns:
    ``(r [...], change [...])`` in the inputs' dtype. A traceable kernel (no float64 scope).
  """
  _check_kind(kind, COMPARISONS, "kind")
  shape = jnp.broadcast_shapes(x.shape, dx.shape, y.shape)
  x, dx, y = (jnp.broadcast_to(v, shape) for v in (x, dx, y))
  m = jnp.broadcast_to(jnp.ones((), bool) if mask is None else jnp.asarray(mask, bool), shape)
  count = jnp.sum(m, axis=-1, keepdims=True).astype(x.dtype)
  safe = jnp.maximum(count, 1)
  x1 = x + dx
  undefined = (_is_constant(x, m, safe) | _is_constant(x1, m, safe) | _is_constant(y, m, safe)
               | (count[..., 0] < 2)
               | jnp.any(m & (jnp.isnan(x) | jnp.isnan(x1) | jnp.isnan(y)), axis=-1))
  if kind == "spearman":
    rx = _ranks_over_mask(x, m)
    x, dx, y = rx, _ranks_over_mask(x1, m) - rx, _ranks_over_mask(y, m)
  xc, dxc, yc = (_masked_centre(v, m, safe) for v in (x, dx, y))
  a = _sum_last(xc * xc)
  da = _sum_last(dxc * (2 * xc + dxc))
  b = _sum_last(yc * yc)
  c = _sum_last(xc * yc)
  dc = _sum_last(dxc * yc)
  sa, sa1, sb = jnp.sqrt(a), jnp.sqrt(a + da), jnp.sqrt(b)
  r = c / (sa * sb)
  change = (dc / sa1 - c * da / (sa * sa1 * (sa + sa1))) / sb
  return jnp.where(undefined, jnp.nan, r), jnp.where(undefined, jnp.nan, change)


def similarity_change(dot, ddot, a, da, b, db):
  """Change of ``s = dot / sqrt(a b)`` when ``dot, a, b`` change by ``ddot, da, db``, from the
  changes themselves: ``ddot / sqrt(a' b') - dot (a db + da b + da db) / (sqrt(a b) sqrt(a' b')
  (sqrt(a b) + sqrt(a' b')))`` with ``a' = a + da``, ``b' = b + db`` (all broadcast)."""
  r = jnp.sqrt(a * b)
  r1 = jnp.sqrt((a + da) * (b + db))
  return ddot / r1 - dot * (a * db + da * b + da * db) / (r * r1 * (r + r1))


# ----------------------------------------------------------------------------------------------
# Similarity matrices of embeddings


def _unit_rows(v):
  norm = jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True))
  return v / jnp.where(norm > 0, norm, 1)


def undefined_rows(e, kind):
  """[..., n] True where a row's similarity is undefined."""
  if kind == "cosine":
    return jnp.max(jnp.abs(e), axis=-1) == 0
  m = jnp.ones(e.shape, bool)
  n = jnp.full(e.shape[:-1] + (1,), e.shape[-1], e.dtype)
  return _is_constant(e, m, n)


def similarity_vectors(e, kind):
  """The vectors whose normalised dot products are the similarities: ``[..., D] -> [..., D]``
  (pearson: centred, spearman: centred average-tie ranks, cosine: unchanged)."""
  if kind == "spearman":
    e = rankdata.kernel(e, axis=-1, dtype=e.dtype)
  if kind in ("pearson", "spearman"):
    e = centre(e)
  return e


def _unit_vectors(e, kind):
  return _unit_rows(similarity_vectors(e, kind))


def poison(s, bad, bad_cols=None):
  """NaN rows ``bad [..., n]`` and columns ``bad_cols [..., m]`` (default ``bad``) of
  ``s [..., n, m]``."""
  bad_cols = bad if bad_cols is None else bad_cols
  return jnp.where(bad[..., :, None] | bad_cols[..., None, :], jnp.nan, s)



@_entry("kind", "dtype")
def similarity_matrix(embeddings, *, kind: str = "pearson", dtype=None):
  """Row-wise similarity ``[..., n, D] -> [..., n, n]`` (pearson | spearman | cosine).

  Rows whose similarity is undefined (constant rows for pearson/spearman, all-zero rows for
  cosine) give NaN rows and columns. With ``dtype=float32`` the values are ``1 - d`` with ``d``
  from :func:`dissimilarity_matrix` (compensated form); prefer that function there, since
  storing ``1 - d`` in float32 rounds again.
  """
  _check_kind(kind, SIMILARITIES, "kind")
  e = _float(embeddings, dtype)
  bad = undefined_rows(e, kind)
  if e.dtype == jnp.float32:
    return poison(1 - _half_squared_distances(_unit_vectors(e, kind)), bad)
  u = _unit_vectors(e, kind)
  s = jnp.einsum("...id,...jd->...ij", u, u, precision=jax.lax.Precision.HIGHEST)
  return poison(s, bad)


def _half_squared_distances(u):
  """0.5 * ||u_i - u_j||^2 from explicit differences (accurate where u_i ~ u_j)."""
  diff = u[..., :, None, :] - u[..., None, :, :]
  return 0.5 * jnp.sum(diff * diff, axis=-1)


@_entry("kind", "dtype")
def dissimilarity_matrix(embeddings, *, kind: str = "pearson", dtype=None):
  """``1 - similarity`` ``[..., n, D] -> [..., n, n]``, computed as half squared distances of the
  centred unit vectors. Use it as ``-d`` where float64 is unavailable: Pearson and Spearman
  agreement are invariant to the affine map ``s = 1 - d``.

  Memory is ``n * n * D`` per batch element; the float64 path uses the Gram form instead.
  """
  _check_kind(kind, SIMILARITIES, "kind")
  e = _float(embeddings, dtype)
  bad = undefined_rows(e, kind)
  u = _unit_vectors(e, kind)
  if e.dtype == jnp.float32:
    return poison(_half_squared_distances(u), bad)
  s = jnp.einsum("...id,...jd->...ij", u, u, precision=jax.lax.Precision.HIGHEST)
  return poison(1 - s, bad)


# ----------------------------------------------------------------------------------------------
# Triangles and rows


def upper_triangle_indices(n: int):
  """Static ``(rows, cols)`` of the strict upper triangle, row-major (as numpy.triu_indices)."""
  return np.triu_indices(n, k=1)


def upper_triangle(m):
  """``[..., n, n] -> [..., n(n-1)/2]`` strict upper triangle, row-major."""
  rows, cols = upper_triangle_indices(m.shape[-1])
  return m[..., rows, cols]


def row_without_diagonal(m, i):
  """Row ``i`` of ``[..., n, n]`` without its diagonal element -> ``[..., n-1]`` (``i`` may be
  traced)."""
  n = m.shape[-1]
  j = jnp.arange(n - 1)
  j = j + (j >= i)
  return jnp.take(jnp.take(m, i, axis=-2), j, axis=-1)


# ----------------------------------------------------------------------------------------------
# Agreement with the human matrix (second-order isomorphism)


@_entry("kind", "dtype")
def agreement(model_similarity, human_similarity, *, kind: str = "pearson", dtype=None):
  """Cohort agreement ``[..., n, n], [n, n] -> [...]``: correlation of the strict upper triangles
  over the pairs where the human matrix is finite."""
  _check_kind(kind, COMPARISONS, "kind")
  x = upper_triangle(_float(model_similarity, dtype))
  y = upper_triangle(_float(human_similarity, dtype))
  return correlation.kernel(x, y, jnp.isfinite(y), kind=kind, dtype=x.dtype)


@_entry("kind", "dtype")
def row_agreement(model_similarity, human_similarity, *, kind: str = "pearson", dtype=None):
  """Per-image agreement ``[..., n, n], [n, n] -> [..., n]``: row i of the model matrix against
  row i of the human matrix, over j != i where the human entry is finite."""
  _check_kind(kind, COMPARISONS, "kind")
  x = _float(model_similarity, dtype)
  y = _float(human_similarity, dtype)
  n = y.shape[-1]
  mask = jnp.isfinite(y) & ~jnp.eye(n, dtype=bool)
  return correlation.kernel(x, y, mask, kind=kind, dtype=x.dtype)


def human_mask(human_similarity, *, upper: bool = True):
  """Finite off-diagonal entries: ``[n(n-1)/2]`` (upper) or ``[n, n]``."""
  h = jnp.asarray(human_similarity)
  if upper:
    return jnp.isfinite(upper_triangle(h))
  return jnp.isfinite(h) & ~jnp.eye(h.shape[-1], dtype=bool)
