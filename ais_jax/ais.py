"""Alignment-importance scores (AIS) of every feature map, for a whole cohort in one compiled call.

Semantics (DESIGN.md section 1), with ``E [n, D]`` the embeddings, ``H [n, n]`` the human
similarity, ``sim`` the first-order similarity and ``cmp`` the agreement:

* per-image AIS ``[n, K]``: map k is zeroed in image i only, so only row i of the model similarity
  changes: ``AIS_ik = cmp(s_i, H_i) - cmp(s_i^(-k), H_i)`` over ``j != i`` where ``H_ij`` is finite.
* cohort AIS ``[K]``: map k is zeroed in every image: ``cmp(upper(Z), upper(H)) -
  cmp(upper(Z^(-k)), upper(H))``; ``score='r2'`` gives ``r^2(all) - r^2(without k)`` (Pearson
  only).
* Undefined values: a per-image row whose baseline agreement is NaN is NaN for every map; a map
  that is inactive in image i (zero contribution) has per-image AIS exactly 0 when the baseline is
  defined (and a map inactive in every image has cohort AIS exactly 0); any other NaN similarity or
  agreement gives NaN (reported in ``AisResult.undefined``).

How (DESIGN.md section 2): for every chunk of maps the kernel builds the ablated embeddings of all
(map, image) pairs - or, for pooled heads with Pearson/cosine similarity, rank-one updates of the
Gram matrix without any embedding; with Spearman similarity, the new average-tie ranks from the
baseline order and tie counts without any sort, see :func:`spearman_removal_terms` - and derives
from them both the changed rows (per-image) and the whole ablated matrices (cohort). Fully connected heads (VGG) subtract each map's fc6 contribution
from the baseline pre-activation, so only fc7 runs per ablation, and only for the active pairs
(compacted, fixed-size sub-batches, a data-dependent trip count: shapes stay static). The chunk
loop is ``jax.lax.map`` over a map axis padded to a multiple of the chunk size, so one cohort shape
compiles once. When even one map's n x n matrices exceed the memory budget, the pooled rank-one
path (float64, Pearson agreement) computes them a block of rows at a time: per-image rows block by
block, the cohort agreement from masked sums over the blocks in two passes (mean, then centred
moments), so memory grows as n^2 only through the Gram and human matrices. Image and map axes can be split over a device mesh (``mesh`` with axes 'images'
and 'maps', via ``jax.shard_map``).

Precision (DESIGN.md section 3, :mod:`ais_jax.precision`): the head runs in float64 ('exact'),
float32 HIGHEST ('float32') or float32 DEFAULT ('fast'); similarities and agreements run in
float64 inside a scoped x64 context (the caller's global flag is untouched). Without float64 (TPU,
or ``AIS_JAX_FLOAT64=0``) the float64-free path runs instead (``options['float64']`` False): head
in float32 HIGHEST, and each ablation's effect computed directly from the terms it removes -
changes of dot products and norms, then of similarities (:func:`ais_jax.rsa.similarity_change`),
then of agreements (:func:`ais_jax.rsa.correlation_change`) - with compensated (blocked, two-sum)
matmuls and pairwise sums, so float32 rounding stays relative to the effect. Measured against
float64 on the same trunk maps (Pearson similarity and agreement): 2.0e-8 (EfficientNet-Lite0, 92
images), 5.6e-8 (VGG16 fc head, random weights, 24 images). Rank-based steps (Spearman) can flip
the order of values tied within float32 resolution: errors up to 1e-3 there (tests bound them).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from ais_jax import ablation
from ais_jax import rsa
from ais_jax import validation
from ais_jax.ablation import FcHead, GenericHead, PooledHead
from ais_jax.errors import UserInputError
from ais_jax.precision import compensated_einsum, float64_enabled, float64_scope, resolve

SIMILARITIES = rsa.SIMILARITIES
COMPARISONS = rsa.COMPARISONS
COHORT_SCORES = ("r", "r2")
# Computation paths: 'pooled_rank_one' and 'pooled_spearman' are the update paths of pooled heads
# (either name picks the one that fits the similarity).
PATHS = ("generic", "pooled_dense", "pooled_rank_one", "pooled_spearman", "fc")
IMAGE_AXIS = "images"
MAP_AXIS = "maps"
# Rows per fc7 matmul on the fc path (active (map, image) pairs, compacted).
SUB_BATCH = 1024
# Fewest rows per block when the n x n matrices of one map are split (plan.row_block).
ROW_BLOCK_MIN = 8

# Number of times each kernel variant was traced (for compile-count tests and diagnostics).
TRACE_COUNTS: dict[str, int] = {}


@dataclasses.dataclass
class AisResult:
  """Output of :func:`compute_ais`.

  Attributes:
    per_image: ``[n, K]`` float64 per-image AIS (NaN where undefined).
    cohort: ``[K]`` float64 cohort AIS with the requested ``cohort_score``.
    embeddings: ``[n, D]`` float32 baseline embeddings (computed in the head's precision).
    baseline_rows: ``[n]`` float64 per-image baseline agreement ``cmp(s_i, H_i)``.
    baseline: float, cohort baseline agreement ``cmp(upper(Z), upper(H))`` (r, not r^2).
    active: ``[n, K]`` bool, False where map k contributes nothing to image i (AIS exactly 0).
    undefined: counts and locations of NaN values (``per_image``, ``cohort``) and
      ``undefined_baseline_rows``: the images whose baseline row agreement is undefined.
    timings: seconds per stage (``prepare``, ``kernel`` (includes compilation on the first call of
      a shape, see ``compiled``), ``finalize``, ``total``).
    options: the options used (similarity, comparison, cohort_score, precision, chunk sizes).
  """
  per_image: np.ndarray
  cohort: np.ndarray
  embeddings: np.ndarray
  baseline_rows: np.ndarray
  baseline: float
  active: np.ndarray
  undefined: dict
  timings: dict
  options: dict


# ----------------------------------------------------------------------------------------------
# Similarity pieces that match ais_jax.rsa's definitions (unit vectors whose dot products are the
# similarities), so that only the changed rows need recomputing.


def _unit_vectors(e, kind: str):
  """``[..., D] -> ([..., D] unit vectors, [...] undefined)`` for similarity ``kind``.

  pearson: two-pass centred, spearman: average-tie ranks then centred, cosine: raw; undefined as
  :func:`ais_jax.rsa.similarity_matrix` (constant vectors; all-zero for cosine).
  """
  bad = rsa.undefined_rows(e, kind)
  e = rsa.similarity_vectors(e, kind)
  norm = jnp.sqrt(jnp.sum(e * e, axis=-1, keepdims=True))
  return e / jnp.where(norm > 0, norm, 1), bad


_HI = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------------------------------------
# Kernel


@dataclasses.dataclass(frozen=True)
class _Plan:
  """Static configuration of one kernel variant (hashable: part of the jit cache key)."""
  path: str                 # 'pooled_rank_one' | 'pooled_dense' | 'fc' | 'generic'
  similarity: str
  comparison: str
  head_dtype: Any
  head_precision: Any
  chunk: int                # maps per lax.map step
  sub_batch: int            # fc path: (map, image) pairs per fc7 call
  num_maps: int             # K
  map_pad: int              # padded map axis (multiple of chunk x map devices)
  image_pad: int            # padded target axis (multiple of image devices)
  generic_embed: Any = None  # GenericHead.embed (static), or None
  generic_kind: str = "user"  # 'user': embed(maps, keep); 'pooled' | 'fc': reference from the head
  mesh: Any = None
  image_devices: int = 1
  float64: bool = True      # False: the float64-free path (float32 compensated)
  row_block: int = 0        # > 0: rows of the n x n matrices per step (pooled_rank_one, float64,
                            # Pearson agreement) when one map's whole matrices exceed the budget


def _baseline_embeddings(plan: _Plan, head, maps):
  """``[n, D]`` in the head dtype, plus fc intermediates."""
  hd, hp = plan.head_dtype, plan.head_precision
  if plan.path.startswith("pooled"):
    return ablation.pooled_embeddings(maps.astype(hd)), None
  if plan.path == "fc":
    pooled = ablation.fc_pooled_maps(head, maps, dtype=hd)
    a = ablation.fc_pre_activation(head, pooled, dtype=hd, precision=hp)
    return ablation.fc_embed(head, a, dtype=hd, precision=hp), (pooled, a)
  return _generic_embed(plan, head, maps.astype(hd), None), None


def _generic_embed(plan: _Plan, head, maps, keep):
  """One head pass per mask: ``keep None | [m, K]`` -> ``[n, D] | [m, n, D]`` (head dtype)."""
  hd = plan.head_dtype
  if plan.generic_kind == "user":
    return jnp.asarray(plan.generic_embed(maps, keep), hd)
  if keep is not None:
    maps = maps[None] * keep[:, None, None, None, :]
  lead = maps.shape[:-3]
  flat = maps.reshape((-1,) + maps.shape[-3:])
  if plan.generic_kind == "pooled":
    e = ablation.pooled_embeddings(flat)
  else:
    e = ablation.fc_embeddings(head, flat, dtype=hd, precision=plan.head_precision)
  return e.reshape(lead + e.shape[-1:])


def _active_pairs(plan: _Plan, maps, embeddings, fc_parts):
  """``[n, K]`` bool: map k changes image i's embedding (False means AIS exactly 0)."""
  if plan.path.startswith("pooled"):
    return embeddings != 0
  if plan.path == "fc":
    pooled = fc_parts[0]
    return jnp.any(pooled != 0, axis=-1)
  return jnp.any(maps != 0, axis=(1, 2))


def _agreements(plan: _Plan, s_rows, z, human, targets):
  """Row agreements ``[c, t]`` of ``s_rows [c, t, n]`` (row i of target ``targets[i]``, its
  diagonal entry excluded) and cohort agreements ``[c]`` of ``z [c, n, n]``."""
  n = human.shape[0]
  row_mask = jnp.isfinite(human) & ~jnp.eye(n, dtype=bool)
  rows = rsa.correlation.kernel(s_rows, human[targets], row_mask[targets],
                                kind=plan.comparison, dtype=jnp.float64)
  cohort = _cohort_agreement(plan, z, human)
  return rows, cohort


def _cohort_agreement(plan: _Plan, z, human):
  """``rsa.agreement`` of ``z [c, n, n]`` for the engine. Pearson: over the whole matrices with
  the strict upper triangle as a mask (built from iotas: no n(n-1)/2 index constants to fold at
  compile time, no gathered copies of the triangle); the same value within rounding."""
  if plan.comparison != "pearson":
    return rsa.agreement.kernel(z, human, kind=plan.comparison, dtype=jnp.float64)
  n = human.shape[0]
  upper = jnp.arange(n)[:, None] < jnp.arange(n)[None, :]
  mask = (upper & jnp.isfinite(human)).reshape(-1)
  return rsa.correlation.kernel(z.reshape(z.shape[0], -1), human.reshape(-1), mask,
                                kind="pearson", dtype=jnp.float64)


def _gather_images(x, axis: int, plan: _Plan):
  if plan.image_devices == 1:
    return x
  return jax.lax.all_gather(x, IMAGE_AXIS, axis=axis, tiled=True)


def _chunk_dense(plan, head, maps, human, base, ks, kvalid, targets, tvalid):
  """Ablated embeddings of the pairs (ks x targets) -> similarities -> agreements."""
  embeddings, fc_parts, active, u0, bad0 = base
  n = human.shape[0]
  hd = plan.head_dtype
  c = ks.shape[0]
  slots, ks = ks, ks % plan.num_maps
  pair_active = (active[targets][:, ks] & kvalid[None, :] & tvalid[:, None]).T  # [c, t]
  if plan.path == "pooled_dense":
    keep = 1 - jax.nn.one_hot(ks, plan.num_maps, dtype=hd) * kvalid[:, None]  # [c, K]
    ablated = embeddings[targets][None, :, :] * keep[:, None, :]          # [c, t, K]
  elif plan.path == "generic":
    keep = 1 - jax.nn.one_hot(ks, plan.num_maps, dtype=hd) * kvalid[:, None]
    ablated = _generic_embed(plan, head, maps[targets].astype(hd), keep)  # [c, t, D]
  else:
    ablated = _fc_ablated(plan, head, embeddings, fc_parts, slots, targets, pair_active)
  u, bad = _unit_vectors(ablated.astype(jnp.float64), plan.similarity)   # [c, t, D], [c, t]
  # Per-image rows: only target i is ablated; the others keep their baseline embeddings.
  s_rows = rsa.poison(jnp.einsum("kid,jd->kij", u, u0, precision=_HI), bad,
                   jnp.broadcast_to(bad0, (c, n)))
  # Cohort: every image ablated.
  u_all = _gather_images(u, 1, plan)[:, :n]
  bad_all = _gather_images(bad, 1, plan)[:, :n]
  z = rsa.poison(jnp.einsum("kid,kjd->kij", u_all, u_all, precision=_HI), bad_all, bad_all)
  return _agreements(plan, s_rows, z, human, targets)


def _fc_ablated(plan, head, embeddings, fc_parts, ks, targets, pair_active):
  """fc7 outputs of the active pairs (compacted into fixed-size sub-batches); inactive pairs keep
  the baseline embedding. Returns ``[c, t, D2]`` in the head dtype."""
  pooled, a = fc_parts
  hd, hp = plan.head_dtype, plan.head_precision
  c, t = ks.shape[0], targets.shape[0]
  d = _fc_chunk_contributions(plan, head, pooled[targets], ks)                        # [c, t, D1]
  pre = (a[targets][None, :, :] - d).reshape(c * t, -1)                                # [c*t, D1]
  out = jnp.broadcast_to(embeddings[targets][None], (c, t, embeddings.shape[-1]))
  out = _over_active_pairs(pair_active.reshape(-1), plan.sub_batch, out.reshape(c * t, -1),
                           lambda idx: ablation.fc_embed(head, pre[idx], dtype=hd, precision=hp))
  return out.reshape(c, t, -1)


def _over_active_pairs(flat_active, b, out, rows_fn):
  """``out[p] = rows_fn(p)`` for the active pairs ``p`` only: compacted (active pairs first) into
  fixed-size sub-batches of ``b`` rows, a data-dependent trip count (shapes stay static)."""
  num_active = jnp.sum(flat_active)
  order = jnp.argsort(~flat_active, stable=True)                      # active pairs first
  order = jnp.concatenate([order, jnp.zeros((b,), order.dtype)])
  size = out.shape[0]

  def body(j, out):
    start = j * b
    idx = jax.lax.dynamic_slice(order, (start,), (b,))
    valid = start + jnp.arange(b) < num_active
    return out.at[jnp.where(valid, idx, size)].set(rows_fn(idx), mode="drop")

  return jax.lax.fori_loop(0, (num_active + b - 1) // b, body, out)


def _fc_chunk_contributions(plan, head, pooled, ks):
  """``d [c, t, D1]`` for the contiguous map slots ``ks`` (values >= K are padding, any value).

  A contiguous slice of ``w1`` (no gathered copy of the 100 MB-1 GB weight): the slice start is
  clamped to fit, and the result rolled back into slot order.
  """
  hd, hp = plan.head_dtype, plan.head_precision
  k = plan.num_maps
  c = ks.shape[0]
  width = min(c, k)
  start = ks[0]
  first = jnp.clip(start, 0, k - width)
  t, _, s = pooled.shape
  w1 = jnp.asarray(head.w1, hd).reshape(k, s, -1)
  w1 = jax.lax.dynamic_slice_in_dim(w1, first, width, axis=0)
  p = jax.lax.dynamic_slice_in_dim(pooled.astype(hd), first, width, axis=1)
  d = jnp.einsum("ncs,csd->cnd", p, w1, precision=hp)                    # [width, t, D1]
  if width < c:
    d = jnp.concatenate([d, jnp.zeros((c - width,) + d.shape[1:], d.dtype)])
  return jnp.roll(d, first - start, axis=0)


def _chunk_rank_one(plan, head, maps, human, base, ks, kvalid, targets, tvalid):
  """Pooled head, Pearson or cosine similarity: rank-one updates of the Gram matrix (whole
  ``[c, n, n]`` matrices, or blocks of ``plan.row_block`` rows: :func:`_blocked_agreements`)."""
  del head, maps, tvalid
  ks = ks % plan.num_maps
  embeddings, _, active, x, g, nnz, bad0 = base[:7]
  n, dim = embeddings.shape
  c = ks.shape[0]
  vv = 1.0 - 1.0 / dim if plan.similarity == "pearson" else 1.0
  # Removed values [c, n] and their centred (pearson) values; a padding slot removes nothing.
  e_k = jnp.where(kvalid[:, None], embeddings[:, ks].T, 0)
  x_k = jnp.where(kvalid[:, None], x[:, ks].T, 0)
  nrm = jnp.diagonal(g)                          # [n]
  nrm_ab = nrm[None] - 2 * e_k * x_k + e_k * e_k * vv       # [c, n] squared norms after removal
  bad_ab = (nnz[None, :] - (e_k != 0)) == 0                  # ablated vector all zero
  bad_ab = bad_ab | bad0[None]

  def per_image_rows(rows):
    """Rows ``rows [b]`` of the per-image matrices (only image ``rows[i]`` ablated): [c, b, n]."""
    et = e_k[:, rows]                                                        # [c, b]
    dot_rows = g[rows][None] - et[:, :, None] * x_k[:, None, :]
    s_rows = dot_rows / jnp.sqrt(nrm_ab[:, rows][:, :, None] * nrm[None, None, :])
    return rsa.poison(s_rows, bad_ab[:, rows], jnp.broadcast_to(bad0, (c, n)))

  def cohort_rows(rows):
    """Rows ``rows [b]`` of the cohort matrices (every image ablated): [c, b, n]."""
    dot_z = (g[rows][None] - e_k[:, None, :] * x_k[:, rows, None]
             - e_k[:, rows, None] * x_k[:, None, :]
             + e_k[:, rows, None] * e_k[:, None, :] * vv)
    z = dot_z / jnp.sqrt(nrm_ab[:, rows, None] * nrm_ab[:, None, :])
    return rsa.poison(z, bad_ab[:, rows], bad_ab)

  if plan.row_block:
    return _blocked_agreements(plan, per_image_rows, cohort_rows, human, base[7], targets, c)
  return _agreements(plan, per_image_rows(targets), cohort_rows(jnp.arange(n)), human, targets)


def _upper_mask(rows, human):
  """``[b, n]``: strict upper triangle (``rows[i] < j``, rows past n excluded), human finite."""
  n = human.shape[0]
  return ((rows[:, None] < jnp.arange(n)[None, :]) & (rows[:, None] < n)
          & jnp.isfinite(human[rows % n]))


def _row_blocks(n: int, b: int):
  """``[nb, b]`` row indices covering ``0..n-1`` (the last block padded past n)."""
  return jnp.arange(-(-n // b) * b).reshape(-1, b)


def _blocked_moments(values_of, human, b: int, shape, centre=None, y=None):
  """Masked sums over the strict upper triangle, ``b`` rows at a time (no ``n x n`` array).

  ``values_of(rows) -> [..., b, n]``. Without ``centre``: ``(sum, max |value|)``; with it
  (``[...]``): ``(sum(v - centre), sum((v - centre)^2), sum((v - centre) * y))`` where ``y`` is
  ``(mean, correction)`` of the human values (``y - mean - correction``: twice-centred) or None.
  """
  def block(carry, rows):
    m = _upper_mask(rows, human)
    v = values_of(rows)
    if centre is None:
      add = (jnp.sum(jnp.where(m, v, 0), axis=(-2, -1)),
             jnp.max(jnp.where(m, jnp.abs(v), 0), axis=(-2, -1)))
      return (carry[0] + add[0], jnp.maximum(carry[1], add[1])), None
    d = jnp.where(m, v - centre[..., None, None], 0)
    add = [jnp.sum(d, axis=(-2, -1)), jnp.sum(d * d, axis=(-2, -1))]
    if y is not None:
      dy = jnp.where(m, human[rows % human.shape[0]] - y[0] - y[1], 0)
      add.append(jnp.sum(d * dy, axis=(-2, -1)))
    return tuple(a + v_ for a, v_ in zip(carry, add)), None

  zeros = jnp.zeros(shape, jnp.float64)
  carry = (zeros, zeros) if centre is None else (zeros,) * (2 if y is None else 3)
  out, _ = jax.lax.scan(block, carry, _row_blocks(human.shape[0], b))
  return out


def _blocked_human_stats(human, b: int):
  """Moments of the human matrix's strict upper triangle (finite entries), for
  :func:`_blocked_agreements`: count, twice-centred mean parts, sum of squares, constancy."""
  take = lambda rows: human[rows % human.shape[0]]
  count = _blocked_moments(lambda rows: jnp.ones(rows.shape + human.shape[1:]), human, b, ())[0]
  safe = jnp.maximum(count, 1)
  total, maxabs = _blocked_moments(take, human, b, ())
  mean = total / safe
  d1, _ = _blocked_moments(take, human, b, (), centre=mean)
  correction = d1 / safe
  # The twice-centred values (human - mean) - correction, as the cohort pass forms them.
  sum_dy, syy = _blocked_moments(lambda rows: take(rows) - mean, human, b, (), centre=correction)
  undefined = (jnp.sqrt(syy / safe) <= rsa.CONSTANT_RTOL * maxabs) | (count < 2)
  return {"count": safe, "mean": mean, "correction": correction, "sum": sum_dy, "ss": syy,
          "undefined": undefined}


def _blocked_agreements(plan, per_image_rows, cohort_rows, human, hstats, targets, c):
  """:func:`_agreements` ``b = plan.row_block`` rows at a time: per-image rows block by block
  (each row's correlation as before), the cohort Pearson agreement from two passes of masked
  sums over row blocks (mean, then centred moments; the same twice-centred estimate as
  :func:`ais_jax.rsa.correlation`, equal within rounding). Returns ``([c, t], [c])``."""
  b = plan.row_block
  n = human.shape[0]

  def rows_block(tb):
    mask = jnp.isfinite(human[tb]) & (tb[:, None] != jnp.arange(n)[None, :])
    return rsa.correlation.kernel(per_image_rows(tb), human[tb], mask,
                                  kind=plan.comparison, dtype=jnp.float64)        # [c, b]

  rows = jax.lax.map(rows_block, targets.reshape(-1, b))                         # [t/b, c, b]
  rows = jnp.moveaxis(rows, 1, 0).reshape(c, -1)
  count = hstats["count"]
  total, maxabs = _blocked_moments(cohort_rows, human, b, (c,))
  mean = total / count
  d1, d2, dxy = _blocked_moments(cohort_rows, human, b, (c,), centre=mean,
                                 y=(hstats["mean"], hstats["correction"]))
  cz = d1 / count
  sxx = d2 - count * cz * cz        # sum of squares of the twice-centred values
  sxy = dxy - cz * hstats["sum"]
  r = sxy / jnp.sqrt(sxx * hstats["ss"])
  undefined = (jnp.sqrt(jnp.maximum(sxx, 0) / count) <= rsa.CONSTANT_RTOL * maxabs) | hstats[
      "undefined"]
  return rows, jnp.where(undefined, jnp.nan, r)


def _spearman_base(e):
  """Baseline rank statistics of pooled embeddings ``e [n, D]`` (float64, or float32 on the
  float64-free path: the ranks are exact in both) for
  :func:`spearman_removal_terms`: centred average-tie ranks ``rho``, their Gram matrix (exact:
  products of half-integers), tie-group bounds, and per-row counts of negative / zero values."""
  d = e.shape[-1]
  first, last = rsa.tie_bounds(e)
  rho = (first + last).astype(e.dtype) / 2 + 1 - (d + 1) / 2            # [n, D] half-integers
  return {
      "e": e, "rho": rho, "gram": (jnp.matmul(rho, rho.T, precision=_HI) if e.dtype == jnp.float64
                                   else _dot32("id,jd->ij", rho, rho)),
      "below": first.astype(e.dtype),                                   # entries < e_ik
      "ties": (last - first + 1).astype(e.dtype),                       # entries == e_ik
      "neg": jnp.sum(e < 0, axis=-1).astype(e.dtype),                   # [n]
      "zeros": jnp.sum(e == 0, axis=-1).astype(e.dtype),                # [n]
      "nnz": jnp.sum(e != 0, axis=-1),
      "bad": rsa.is_constant.kernel(e, axis=-1, dtype=e.dtype),
  }


def spearman_removal_terms(base, ks, kvalid):
  """Exact Spearman-similarity updates when coordinate ``k`` of pooled embeddings is set to 0.

  With ``rho_i`` the centred average-tie ranks of row i and ``rho_i^(k)`` those after zeroing
  ``e_ik = v``, the rank change of every other coordinate follows from the baseline order without
  any sort: ``delta_ic = H(e_ic; 0) - H(e_ic; v)`` with ``H(x; a) = [x > a] + [x == a] / 2``
  (the entries between 0 and v shift by one; the tie groups of 0 and v gain / lose a member:
  half a rank each), and coordinate k itself moves to the (new) average rank of the zeros.

  Args:
    base: dict from ``_spearman_base`` (``e [n, D]`` float64 and its rank statistics).
    ks: ``[c]`` map indices (< D).
    kvalid: ``[c]`` bool; a False slot removes nothing.

  Returns:
    ``(p, q, norm, bad)``: ``p [c, n, n]`` with ``p[c, i, j] = (rho_i^(k) - rho_i) . rho_j``,
    ``q [c, n, n] = (rho_i^(k) - rho_i) . (rho_j^(k) - rho_j)``, ``norm [c, n] = |rho_i^(k)|^2``
    and ``bad [c, n]``: the ablated row is constant in value (all zero) or the baseline row is.
    So ``rho_i^(k) . rho_j = gram_ij + p_ij`` (row i ablated) and ``rho_i^(k) . rho_j^(k) =
    gram_ij + p_ij + p_ji + q_ij`` (both ablated). All exact: ranks are half-integers and the
    matrix products run on small integers (float32 is exact for them while ``2 D^2 < 2^24``).
  """
  e, rho = base["e"], base["rho"]
  n, d = e.shape
  dt = rho.dtype
  on = kvalid[:, None]
  v = e[:, ks].T                                                            # [c, n] removed values
  # 2 * delta from the formula (also evaluated at c = k, corrected below): integers in [-2, 2].
  mm = jnp.float32 if 2 * d * d < 2**24 else dt
  two_h0 = (2 * (e > 0) + (e == 0)).astype(mm)                               # [n, D]
  two_hv = (2 * (e[None] > v[..., None]) + (e[None] == v[..., None])).astype(mm)  # [c, n, D]
  d2 = jnp.where(on[..., None], two_h0[None] - two_hv, 0)
  # Coordinate k: formula value vs the actual change of its rank.
  df_k = jnp.where(on, (v > 0).astype(dt) + ((v == 0).astype(dt) - 1) / 2, 0.0)
  new_rank = base["neg"][None] - (v < 0) + (base["zeros"][None] - (v == 0)) / 2 + 1
  old_rank = base["below"][:, ks].T + (base["ties"][:, ks].T + 1) / 2
  dk = jnp.where(on, new_rank - old_rank, 0.0)
  rho_k = rho[:, ks].T                                                       # [c, n]
  p = jnp.einsum("cid,jd->cij", d2, (2 * rho).astype(mm), precision=_HI).astype(dt) / 4
  p = p + (dk - df_k)[:, :, None] * rho_k[:, None, :]
  q = jnp.einsum("cid,cjd->cij", d2, d2, precision=_HI).astype(dt) / 4
  q = q - df_k[:, :, None] * df_k[:, None, :] + dk[:, :, None] * dk[:, None, :]
  norm = (jnp.diagonal(base["gram"])[None] + 2 * jnp.diagonal(p, axis1=1, axis2=2)
          + jnp.diagonal(q, axis1=1, axis2=2))
  bad = ((base["nnz"][None] - (on & (v != 0))) == 0) | base["bad"][None]
  return p, q, norm, bad


def _chunk_spearman(plan, head, maps, human, base, ks, kvalid, targets, tvalid):
  """Pooled head, Spearman similarity: rank updates from the baseline order (no sort)."""
  del head, maps, tvalid
  ks = ks % plan.num_maps
  _, _, _, stats = base
  g = stats["gram"]
  n = g.shape[0]
  nrm = jnp.diagonal(g)
  p, q, nrm_ab, bad_ab = spearman_removal_terms(stats, ks, kvalid)
  c = ks.shape[0]
  s_rows = (g[targets][None] + p[:, targets]) / jnp.sqrt(
      nrm_ab[:, targets][:, :, None] * nrm[None, None, :])
  s_rows = rsa.poison(s_rows, bad_ab[:, targets], jnp.broadcast_to(stats["bad"], (c, n)))
  z = (g[None] + p + jnp.swapaxes(p, 1, 2) + q) / jnp.sqrt(nrm_ab[:, :, None] * nrm_ab[:, None, :])
  z = rsa.poison(z, bad_ab, bad_ab)
  return _agreements(plan, s_rows, z, human, targets)


# ----------------------------------------------------------------------------------------------
# Float64-free path (TPU, or AIS_JAX_FLOAT64=0): every ablation's effect is computed from the terms
# it removes - changes of dot products and norms -> changes of similarities
# (rsa.similarity_change) -> changes of agreements (rsa.correlation_change) - never as the
# difference of two rounded values, so float32 rounding stays relative to the (small) effect.


def _dot32(subscripts, a, b, precision=_HI):
  """float32 einsum with compensated accumulation over its contracted index (precision.py)."""
  if precision != _HI:  # 'fast': TF32/bf16 products, no point compensating the sums
    return jnp.einsum(subscripts, a, b, precision=precision)
  return compensated_einsum(subscripts, a, b, block=32, precision=precision)


def _f32_base(plan: _Plan, head, maps):
  """Baseline pieces in float32: ``e [n, D]`` embeddings, similarity vectors ``x [n, D]`` (None
  for Spearman on pooled heads, whose rank statistics are in ``stats``), ``gram [n, n]``,
  ``nrm [n]`` (= diag gram), ``s [n, n]`` similarities (NaN rows/columns where undefined),
  ``bad [n]``, ``nnz [n]`` and for fc heads ``fc = (pooled [n, K, S], a [n, D1], y [n, D2])``
  (fc6 and fc7 pre-activations)."""
  f32, hp = jnp.float32, plan.head_precision
  base = {}
  if plan.path.startswith("pooled"):
    e = ablation.pooled_embeddings(maps.astype(f32))
  elif plan.path == "fc":
    pooled = ablation.fc_pooled_maps(head, maps, dtype=f32)
    n, k, s = pooled.shape
    a = _dot32("nk,kd->nd", pooled.reshape(n, k * s), head.w1, hp) + head.b1
    y = _dot32("nk,kd->nd", jax.nn.relu(a), head.w2, hp) + head.b2
    e = jax.nn.relu(y)
    base["fc"] = (pooled, a, y)
  else:
    e = _generic_embed(plan, head, maps.astype(f32), None).astype(f32)
  if plan.path == "pooled_spearman":
    base["stats"] = stats = _spearman_base(e)
    x, g, bad = None, stats["gram"], stats["bad"]
  else:
    bad = rsa.undefined_rows(e, plan.similarity)
    x = rsa.similarity_vectors(e, plan.similarity)
    g = _dot32("id,jd->ij", x, x)
  nrm = jnp.diagonal(g)
  s = rsa.poison(g / jnp.sqrt(nrm[:, None] * nrm[None, :]), bad)
  base.update(e=e, x=x, gram=g, nrm=nrm, s=s, bad=bad, nnz=jnp.sum(e != 0, axis=-1))
  return base


def _f32_agreement_changes(plan: _Plan, s, ds_rows, dz, human, targets):
  """Agreements of the baseline and their changes: rows ``s[targets] [t, n]`` + ``ds_rows
  [c, t, n]``, cohort ``upper(s)`` + ``upper(dz [c, n, n])`` -> ``((rows [t], d_rows [c, t]),
  (cohort [], d_cohort [c]))``."""
  n = human.shape[0]
  row_mask = jnp.isfinite(human) & ~jnp.eye(n, dtype=bool)
  rows = rsa.correlation_change(s[targets], ds_rows, human[targets], row_mask[targets],
                                kind=plan.comparison)
  iu, ju = rsa.upper_triangle_indices(n)
  hu = human[iu, ju]
  cohort = rsa.correlation_change(s[iu, ju], dz[..., iu, ju], hu, jnp.isfinite(hu),
                                  kind=plan.comparison)
  return rows, cohort


def _f32_changes(plan: _Plan, base, ddot_rows, ddot_z, dnrm, bad_ab, human, targets):
  """Changes of the row and cohort agreements from the changes of the dot products
  (``ddot_rows [c, t, n]``: row i = ``targets[i]`` ablated; ``ddot_z [c, n, n]``: all ablated)
  and squared norms ``dnrm [c, n]``; ``bad_ab [c, n]``: ablated vector undefined."""
  g, nrm, bad0 = base["gram"], base["nrm"], base["bad"]
  c, n = dnrm.shape
  ds_rows = rsa.similarity_change(g[targets][None], ddot_rows, nrm[targets][None, :, None],
                                  dnrm[:, targets][:, :, None], nrm[None, None, :], 0.0)
  ds_rows = rsa.poison(ds_rows, bad_ab[:, targets], jnp.broadcast_to(bad0, (c, n)))
  dz = rsa.similarity_change(g[None], ddot_z, nrm[None, :, None], dnrm[:, :, None],
                             nrm[None, None, :], dnrm[:, None, :])
  dz = rsa.poison(dz, bad_ab)
  (_, d_rows), (_, d_cohort) = _f32_agreement_changes(plan, base["s"], ds_rows, dz, human,
                                                      targets)
  return d_rows, d_cohort


def _chunk_rank_one_f32(plan, head, maps, human, base, ks, kvalid, targets, tvalid):
  """Pooled head, Pearson or cosine similarity: rank-one changes of the Gram matrix."""
  del head, maps, tvalid
  ks = ks % plan.num_maps
  e, x = base["e"], base["x"]
  vv = 1.0 - 1.0 / e.shape[-1] if plan.similarity == "pearson" else 1.0
  e_k = jnp.where(kvalid[:, None], e[:, ks].T, 0)                          # [c, n]
  x_k = jnp.where(kvalid[:, None], x[:, ks].T, 0)
  dnrm = e_k * (e_k * vv - 2 * x_k)
  bad_ab = ((base["nnz"][None, :] - (e_k != 0)) == 0) | base["bad"][None]
  ddot_rows = -e_k[:, targets][:, :, None] * x_k[:, None, :]                 # [c, t, n]
  ddot_z = (e_k[:, :, None] * (e_k[:, None, :] * vv - x_k[:, None, :])
            - x_k[:, :, None] * e_k[:, None, :])                              # [c, n, n]
  return _f32_changes(plan, base, ddot_rows, ddot_z, dnrm, bad_ab, human, targets)


def _chunk_spearman_f32(plan, head, maps, human, base, ks, kvalid, targets, tvalid):
  """Pooled head, Spearman similarity: the exact rank changes of :func:`spearman_removal_terms`."""
  del head, maps, tvalid
  p, q, _, bad_ab = spearman_removal_terms(base["stats"], ks % plan.num_maps, kvalid)
  dnrm = 2 * jnp.diagonal(p, axis1=1, axis2=2) + jnp.diagonal(q, axis1=1, axis2=2)
  return _f32_changes(plan, base, p[:, targets], p + jnp.swapaxes(p, 1, 2) + q, dnrm, bad_ab,
                      human, targets)


def _chunk_dense_f32(plan, head, maps, human, base, ks, kvalid, targets, tvalid):
  """Changes of the embeddings of the pairs (ks x targets) -> dot products -> agreements."""
  e, x = base["e"], base["x"]
  n = human.shape[0]
  slots, ks = ks, ks % plan.num_maps
  pair_active = (base["active"][targets][:, ks] & kvalid[None, :] & tvalid[:, None]).T  # [c, t]
  keep_out = jax.nn.one_hot(ks, plan.num_maps, dtype=e.dtype) * kvalid[:, None]       # [c, K]
  et = e[targets][None]
  if plan.path == "pooled_dense":
    de = -et * keep_out[:, None, :]
  elif plan.path == "generic":
    de = _generic_embed(plan, head, maps[targets].astype(e.dtype), 1 - keep_out) - et
  else:
    de = _fc_ablated_change(plan, head, base, slots, targets, pair_active)
  e1 = et + de                                                                # [c, t, D]
  bad_t = rsa.undefined_rows(e1, plan.similarity) | base["bad"][targets][None]
  xt = x[targets][None]
  if plan.similarity == "spearman":
    dx = rsa.similarity_vectors(e1, plan.similarity) - xt    # exact: centred half-integer ranks
  else:
    dx = rsa.centre(de) if plan.similarity == "pearson" else de
  dnrm_t = rsa.pairwise_sum(dx * (2 * xt + dx))                                # [c, t]
  ddot_rows = _dot32("cid,jd->cij", dx, x)                                     # [c, t, n]
  dx_all = _gather_images(dx, 1, plan)[:, :n]
  dnrm = _gather_images(dnrm_t, 1, plan)[:, :n]
  bad_ab = _gather_images(bad_t, 1, plan)[:, :n]
  cross = _dot32("cid,jd->cij", dx_all, x)
  ddot_z = cross + jnp.swapaxes(cross, 1, 2) + _dot32("cid,cjd->cij", dx_all, dx_all)
  return _f32_changes(plan, base, ddot_rows, ddot_z, dnrm, bad_ab, human, targets)


def _relu_change(before, change):
  """``relu(before + change) - relu(before)``, exact where both sides have one sign."""
  after = before + change
  return jnp.where(before > 0, jnp.where(after > 0, change, -before),
                   jnp.where(after > 0, after, 0))


def _fc_ablated_change(plan, head, base, ks, targets, pair_active):
  """fc head: change of the embedding of each active pair, ``[c, t, D2]`` float32, from the
  change of fc6 (``-d_k``) through the ReLUs and fc7 (inactive pairs: 0); the same compacted
  sub-batches as :func:`_fc_ablated`."""
  pooled, a, y = base["fc"]
  hp = plan.head_precision
  c, t = ks.shape[0], targets.shape[0]
  d = _fc_chunk_contributions(plan, head, pooled[targets], ks)                # [c, t, D1]
  dh = _relu_change(a[targets][None], -d).reshape(c * t, -1)
  y_pairs = jnp.broadcast_to(y[targets][None], (c, t, y.shape[-1])).reshape(c * t, -1)
  out = _over_active_pairs(
      pair_active.reshape(-1), plan.sub_batch, jnp.zeros((c * t, y.shape[-1]), y.dtype),
      lambda idx: _relu_change(y_pairs[idx], _dot32("pk,kd->pd", dh[idx], head.w2, hp)))
  return out.reshape(c, t, -1)


# ----------------------------------------------------------------------------------------------
# The kernel


def _setup_float64(plan: _Plan, head, maps):
  embeddings, fc_parts = _baseline_embeddings(plan, head, maps)
  active = _active_pairs(plan, maps, embeddings, fc_parts)
  e64 = embeddings.astype(jnp.float64)
  if plan.path == "pooled_rank_one":
    x = rsa.centre(e64) if plan.similarity == "pearson" else e64
    g = jnp.matmul(x, x.T, precision=_HI)
    nnz = jnp.sum(e64 != 0, axis=-1)
    _, bad0 = _unit_vectors(e64, plan.similarity)
    return (e64, None, active, x, g, nnz, bad0), _chunk_rank_one, embeddings, active
  if plan.path == "pooled_spearman":
    return (e64, None, active, _spearman_base(e64)), _chunk_spearman, embeddings, active
  u0, bad0 = _unit_vectors(e64, plan.similarity)
  return (embeddings, fc_parts, active, u0, bad0), _chunk_dense, embeddings, active


_F32_CHUNKS = {"pooled_rank_one": _chunk_rank_one_f32, "pooled_spearman": _chunk_spearman_f32}


def _kernel(plan: _Plan, head, maps, human):
  """The whole computation (traced once per plan and input shapes).

  Returns ``(rows [K_pad, n_pad], cohort [K_pad], active [n, K], embeddings [n, D],
  base_rows [n], base_cohort [])``. float64 path: ``rows``/``cohort`` are the ablated agreements
  and slot K (a padding slot, nothing removed) holds the baselines; float64-free path: they are
  the changes of the agreements (ablated - baseline), computed directly.
  """
  TRACE_COUNTS[plan.path] = TRACE_COUNTS.get(plan.path, 0) + 1
  n = human.shape[0]
  if head is not None:  # cast the weights once, outside the chunk loop
    head = jax.tree.map(lambda x: jnp.asarray(x, plan.head_dtype), head)
  if plan.float64:
    base, chunk_fn, embeddings, active = _setup_float64(plan, head, maps)
    if plan.row_block:
      base = base + (_blocked_human_stats(human, plan.row_block),)
  else:
    base = _f32_base(plan, head, maps)
    embeddings = base["e"]
    active = _active_pairs(plan, maps, embeddings, base.get("fc"))
    base["active"] = active
    chunk_fn = _F32_CHUNKS.get(plan.path, _chunk_dense_f32)
    targets = jnp.arange(n)
    zeros = jnp.zeros((1, n, n), base["s"].dtype)
    (base_rows, _), (base_cohort, _) = _f32_agreement_changes(plan, base["s"], zeros, zeros, human, targets)

  ks_all = jnp.arange(plan.map_pad)     # map slots; >= K: padding (the first one: baseline)
  kvalid_all = jnp.arange(plan.map_pad) < plan.num_maps
  targets_all = jnp.arange(plan.image_pad) % n
  tvalid_all = jnp.arange(plan.image_pad) < n

  def local(ks, kvalid, targets, tvalid, head, maps, human, base):
    chunks = (ks.reshape(-1, plan.chunk), kvalid.reshape(-1, plan.chunk))
    step = lambda kc: chunk_fn(plan, head, maps, human, base, kc[0], kc[1], targets, tvalid)
    rows, cohort = jax.lax.map(step, chunks)
    return rows.reshape(-1, targets.shape[0]), cohort.reshape(-1)

  args = (ks_all, kvalid_all, targets_all, tvalid_all, head, maps, human, base)
  if plan.mesh is None:
    rows, cohort = local(*args)
  else:
    # A mesh may have only one of the two axes: the other one is then not split.
    map_axis = MAP_AXIS if MAP_AXIS in plan.mesh.shape else None
    image_axis = IMAGE_AXIS if IMAGE_AXIS in plan.mesh.shape else None
    spec_k, spec_t, rep = PartitionSpec(map_axis), PartitionSpec(image_axis), PartitionSpec()
    in_specs = (spec_k, spec_k, spec_t, spec_t, rep, rep, rep, rep)
    # Place the inputs as the specs say (needed for meshes with explicit axes).
    explicit = all(t == jax.sharding.AxisType.Explicit for t in plan.mesh.axis_types)
    place = jax.reshard if explicit else jax.lax.with_sharding_constraint
    args = tuple(jax.tree.map(
        lambda x, spec=spec: place(x, jax.sharding.NamedSharding(plan.mesh, spec)), a)
        for a, spec in zip(args, in_specs))
    rows, cohort = jax.shard_map(
        local, mesh=plan.mesh, in_specs=in_specs,
        out_specs=(PartitionSpec(map_axis, image_axis), spec_k),
        check_vma=False)(*args)
    # Replicated on every device (and process): slicing needs it with explicit axes, and every
    # process of a multi-process run then holds the whole result.
    replicated = jax.sharding.NamedSharding(plan.mesh, PartitionSpec())
    rows, cohort = place(rows, replicated), place(cohort, replicated)
  if plan.float64:
    base_rows, base_cohort = rows[plan.num_maps, :n], cohort[plan.num_maps]
  else:
    base_rows, base_cohort = base_rows[0], base_cohort[0]
  return rows, cohort, active, embeddings, base_rows, base_cohort


@functools.lru_cache(maxsize=None)
def _jitted(plan: _Plan):
  return jax.jit(functools.partial(_kernel, plan))


# ----------------------------------------------------------------------------------------------
# Planning


def _head_path(head, similarity: str) -> str:
  if isinstance(head, PooledHead):
    return "pooled_rank_one" if similarity in ("pearson", "cosine") else "pooled_spearman"
  if isinstance(head, FcHead):
    return "fc"
  if isinstance(head, GenericHead):
    return "generic"
  raise TypeError(f"head must be PooledHead, FcHead or GenericHead (spec.get_ablation_head("
                  f"variables)), got {type(head).__name__}")


def _plan(head, maps_shape, *, similarity, comparison, precision, memory_budget_gb,
          mesh, path=None, float64=True) -> _Plan:
  n, h, w, k = maps_shape
  cfg = resolve(precision, float64)
  generic_kind = "user"
  if path == "generic" and not isinstance(head, GenericHead):
    generic_kind = "pooled" if isinstance(head, PooledHead) else "fc"
  if path in ("pooled_rank_one", "pooled_spearman"):
    path = None  # the update path that fits the similarity
  path = path or _head_path(head, similarity)
  image_devices = mesh.shape[IMAGE_AXIS] if mesh is not None and IMAGE_AXIS in mesh.shape else 1
  map_devices = mesh.shape[MAP_AXIS] if mesh is not None and MAP_AXIS in mesh.shape else 1
  image_pad = -(-n // image_devices) * image_devices
  t = image_pad // image_devices
  hb = np.dtype(cfg.head_dtype).itemsize
  budget = memory_budget_gb * 2**30
  sub_batch = 1
  # Bytes per map in one chunk (the dominating intermediates, with a 2x safety factor).
  if path == "pooled_rank_one":
    per_map = 8 * n * n * 8
  elif path == "pooled_spearman":
    per_map = n * k * 24 + 12 * n * n * 8
  elif path == "pooled_dense":
    per_map = t * k * 8 * 6 + 4 * n * n * 8
  elif path == "fc":
    d1, d2 = int(head.w1.shape[1]), int(head.w2.shape[1])
    per_map = t * (2 * d1 * hb + d2 * hb) + 2 * n * d2 * 8 + 4 * n * n * 8
    if similarity == "spearman":
      per_map += 2 * n * d2 * 8
  else:
    per_map = t * h * w * k * (hb + 4) + 4 * n * 1024 * 8 + 4 * n * n * 8
  per_map *= 2
  slots = -(-(k + 1) // map_devices)            # map slots per device (K maps + 1 baseline)
  row_block = 0
  if (path == "pooled_rank_one" and float64 and comparison == "pearson"
      and per_map > budget and n > ROW_BLOCK_MIN):
    # One map's whole n x n matrices exceed the budget: one map per chunk, its rows in blocks
    # (about 12 [b, n] float64 intermediates per row block, with the 2x safety factor).
    row_block = int(min(n, max(ROW_BLOCK_MIN, budget // (2 * 12 * n * 8))))
    row_block = -(-t // -(-t // row_block))     # same number of blocks, least padding
    per_map = 2 * 12 * row_block * n * 8
    t = -(-t // row_block) * row_block
    image_pad = t * image_devices
  chunk = int(max(1, min(slots, budget // max(per_map, 1))))
  chunk = -(-slots // -(-slots // chunk))         # same number of chunks, least padding
  if path == "fc":
    # fc7 sub-batches: big enough for an efficient matmul, bounded by the chunk's pair count.
    d1, d2 = int(head.w1.shape[1]), int(head.w2.shape[1])
    sub_batch = int(max(1, min(chunk * t, SUB_BATCH, budget // (4 * (d1 + d2) * hb))))
  # One padding slot at index K at least: it ablates nothing, so it yields the baseline through
  # the same code (and rounding) as the ablations.
  k_local = -(-(k + 1) // map_devices)
  k_local = -(-k_local // chunk) * chunk
  return _Plan(path=path, similarity=similarity, comparison=comparison,
               head_dtype=cfg.head_dtype, head_precision=cfg.head_precision, chunk=chunk,
               sub_batch=sub_batch, num_maps=k, map_pad=k_local * map_devices,
               image_pad=image_pad,
               generic_embed=head.embed if isinstance(head, GenericHead) else None,
               generic_kind=generic_kind, mesh=mesh, image_devices=image_devices,
               float64=float64, row_block=row_block)


def _check_options(similarity, comparison, cohort_score, precision):
  if similarity not in SIMILARITIES:
    raise ValueError(f"similarity={similarity!r} is not one of {SIMILARITIES}")
  if comparison not in COMPARISONS:
    raise ValueError(f"comparison={comparison!r} is not one of {COMPARISONS}")
  if cohort_score not in COHORT_SCORES:
    raise ValueError(f"cohort_score={cohort_score!r} is not one of {COHORT_SCORES}")
  if cohort_score == "r2" and comparison != "pearson":
    raise ValueError("cohort_score='r2' needs comparison='pearson': the r^2 variant is the squared "
                     "Pearson agreement and Spearman has no r^2 variant; use cohort_score='r' "
                     "with comparison='spearman'")
  resolve(precision)


def _check_maps(maps):
  if isinstance(maps, jax.Array):
    dtype = maps.dtype
  else:
    maps = np.asarray(maps)
    dtype = maps.dtype
  if len(maps.shape) != 4:
    raise ValueError(f"maps must be [n, h, w, K] feature maps, got shape {tuple(maps.shape)}")
  if not np.issubdtype(dtype, np.floating):
    raise ValueError(f"maps must be floating point, got dtype {dtype}")
  _check_finite(maps)
  return maps


def _check_finite(maps, block: int = 64, limit: int = 10):
  """UserInputError naming the (image, map) pairs whose maps hold NaN or inf (checked a block of
  images at a time: no full-size temporary)."""
  bad = []
  for i0 in range(0, maps.shape[0], block):
    finite = np.isfinite(np.asarray(maps[i0:i0 + block])).all(axis=(1, 2))  # [b, K]
    bad.extend((i0 + int(i), int(k)) for i, k in np.argwhere(~finite))
    if len(bad) > limit:
      break
  if bad:
    shown = ", ".join(f"(image {i}, map {k})" for i, k in bad[:limit])
    more = " and more" if len(bad) > limit else ""
    raise UserInputError("maps", f"NaN or inf values at {shown}{more}; feature maps must be "
                         "finite (check the images and the trunk's precision)")


# ----------------------------------------------------------------------------------------------
# Public entry points


def compute_ais(head, maps, human, *, similarity: str = "pearson", comparison: str = "pearson",
                cohort_score: str = "r", precision: str = "exact",
                memory_budget_gb: float = 2.0, mesh: Optional[jax.sharding.Mesh] = None,
                path: Optional[str] = None) -> AisResult:
  """Per-image and cohort AIS of every map, in one compiled call.

  Args:
    head: ``spec.get_ablation_head(variables)``: PooledHead | FcHead | GenericHead.
    maps: ``[n, h, w, K]`` feature maps of the ablated layer (float32; float64 is kept in the
      'exact' mode).
    human: ``[n, n]`` human similarity (NaN = missing pair; diagonal ignored).
    similarity: 'pearson' | 'spearman' | 'cosine' (first-order, between embeddings).
    comparison: 'pearson' | 'spearman' (agreement with the human matrix).
    cohort_score: 'r' (difference of agreements) | 'r2' (difference of squared Pearson
      agreements; needs comparison='pearson').
    precision: 'exact' | 'float32' | 'fast' (ais_jax.precision).
    memory_budget_gb: bounds the intermediates of one chunk of maps (chunk size). Below one
      map's whole n x n matrices, the pooled rank-one path (float64, Pearson agreement) splits
      their rows into blocks (``options['row_block']``; the same AIS within rounding); the other
      paths cannot go below one map per chunk.
    mesh: optional ``jax.sharding.Mesh`` with axes 'images' and/or 'maps' (explicit or Auto) to
      split the targets and the maps over devices; an axis the mesh lacks is not split.
    path: force a computation path, one of :data:`PATHS` ('generic' is the reference for every
      head type; 'pooled_dense' builds every ablated embedding instead of the pooled update
      paths; 'pooled_rank_one' / 'pooled_spearman' both pick the update path of the similarity);
      None picks the fastest.

  Returns:
    :class:`AisResult`.
  """
  t_start = time.perf_counter()
  _check_options(similarity, comparison, cohort_score, precision)
  maps = _check_maps(maps)
  n, _, _, k = maps.shape
  try:
    human = validation.validate_human_similarity(human, n_images=n)
  except ValueError as e:
    raise UserInputError(None, str(e)) from None
  if path is not None and path not in PATHS:
    raise ValueError(f"path={path!r} is not one of {', '.join(PATHS)}")
  if path in ("pooled_dense", "pooled_rank_one", "pooled_spearman") and not isinstance(
      head, PooledHead):
    raise ValueError(f"path={path!r} needs a PooledHead, got {type(head).__name__}")
  if path == "fc" and not isinstance(head, FcHead):
    raise ValueError(f"path='fc' needs an FcHead, got {type(head).__name__}")
  if mesh is not None and not set(mesh.axis_names) <= {IMAGE_AXIS, MAP_AXIS}:
    raise ValueError(f"mesh axes {tuple(mesh.axis_names)} are not {IMAGE_AXIS!r} and/or "
                     f"{MAP_AXIS!r}: name the axis that splits the images {IMAGE_AXIS!r} and "
                     f"the one that splits the maps {MAP_AXIS!r} (ais_jax.distributed.global_mesh "
                     "builds such a mesh)")
  use64 = float64_enabled()
  plan = _plan(head, maps.shape, similarity=similarity, comparison=comparison,
               precision=precision, memory_budget_gb=memory_budget_gb, mesh=mesh, path=path,
               float64=use64)
  fn = _jitted(plan)
  traces_before = sum(TRACE_COUNTS.values())
  t_prep = time.perf_counter()
  real = np.float64 if use64 else np.float32
  if not use64 and maps.dtype != np.float32:
    maps = maps.astype(np.float32)
  with float64_scope() if use64 else jax.enable_x64(False):
    args = (head if not isinstance(head, GenericHead) else None, jnp.asarray(maps),
            jnp.asarray(np.asarray(human, real)))
    out = fn(*args)
    out = jax.block_until_ready(out)
    t_kernel = time.perf_counter()
    rows, cohort, active, embeddings, base_rows, base_cohort = jax.device_get(out)
  rows = np.asarray(rows[:k, :n], np.float64).T
  cohort = np.asarray(cohort[:k], np.float64)
  base_rows = np.asarray(base_rows, np.float64)
  base_cohort = float(base_cohort)
  if use64:  # ablated agreements
    per_image = base_rows[:, None] - rows
    cohort_ais = (base_cohort ** 2 - cohort ** 2 if cohort_score == "r2"
                  else base_cohort - cohort)
  else:  # changes of the agreements (ablated - baseline)
    per_image = -rows
    cohort_ais = -cohort * (2 * base_cohort + cohort) if cohort_score == "r2" else -cohort
  per_image, cohort_ais, undefined_rows = _finalize(per_image, cohort_ais, base_rows, base_cohort,
                                                    active)
  t_end = time.perf_counter()
  undefined = {
      "per_image": validation.undefined_summary(per_image, ("image", "map")),
      "cohort": validation.undefined_summary(cohort_ais, ("map",)),
      "undefined_baseline_rows": undefined_rows,
      "baseline_undefined": bool(np.isnan(base_cohort)),
  }
  timings = {"prepare": t_prep - t_start, "kernel": t_kernel - t_prep,
             "finalize": t_end - t_kernel, "total": t_end - t_start,
             "compiled": sum(TRACE_COUNTS.values()) > traces_before}
  options = {"similarity": similarity, "comparison": comparison, "cohort_score": cohort_score,
             "precision": precision, "path": plan.path, "chunk": plan.chunk, "row_block": plan.row_block,
             "sub_batch": plan.sub_batch, "memory_budget_gb": memory_budget_gb,
             "mesh": dict(plan.mesh.shape) if plan.mesh is not None else None,
             "float64": use64}
  return AisResult(per_image=per_image, cohort=cohort_ais,
                   embeddings=np.asarray(embeddings, np.float32),
                   baseline_rows=base_rows, baseline=base_cohort,
                   active=np.asarray(active, bool), undefined=undefined, timings=timings,
                   options=options)


def _finalize(per_image, cohort, base_rows, base_cohort, active):
  """The undefined-value rules on the AIS values (float64 numpy): a row with an undefined
  baseline is NaN, an inactive (image, map) pair is exactly 0, a map inactive everywhere has
  cohort AIS exactly 0 (NaN everywhere when the cohort baseline is undefined)."""
  defined = np.isfinite(base_rows)
  per_image[~active & defined[:, None]] = 0.0
  per_image[~defined] = np.nan
  if np.isfinite(base_cohort):
    cohort[~active.any(axis=0)] = 0.0
  else:
    cohort[:] = np.nan
  return per_image, cohort, np.flatnonzero(~defined).tolist()


def per_image_ais(head, maps, human, *, similarity: str = "pearson", comparison: str = "pearson",
                  precision: str = "exact", memory_budget_gb: float = 2.0,
                  mesh: Optional[jax.sharding.Mesh] = None) -> np.ndarray:
  """Per-image AIS ``[n, K]`` float64 (see :func:`compute_ais`)."""
  return compute_ais(head, maps, human, similarity=similarity, comparison=comparison,
                     precision=precision, memory_budget_gb=memory_budget_gb, mesh=mesh).per_image


def cohort_ais(head, maps, human, *, similarity: str = "pearson", comparison: str = "pearson",
               score: str = "r", precision: str = "exact", memory_budget_gb: float = 2.0,
               mesh: Optional[jax.sharding.Mesh] = None) -> np.ndarray:
  """Cohort AIS ``[K]`` float64, ``score`` 'r' or 'r2' (see :func:`compute_ais`)."""
  return compute_ais(head, maps, human, similarity=similarity, comparison=comparison,
                     cohort_score=score, precision=precision, memory_budget_gb=memory_budget_gb,
                     mesh=mesh).cohort
