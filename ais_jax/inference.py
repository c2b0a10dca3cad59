"""Inference for AIS: noise ceiling, per-subject AIS, image bootstrap, permutation tests.

Every analysis here compares one fixed set of model similarity vectors - the baseline upper
triangle ``z0 [P]`` and the K ablated ones ``Z [K, P]`` (map k zeroed in every image), ``P =
n(n-1)/2`` - with many human vectors or many weightings of the pairs. A Pearson agreement over
pairs weighted by ``w >= 0`` is

    r = (Sw xy - Sw x Sw y / Sw) / sqrt((Sw xx - (Sw x)^2 / Sw) (Sw yy - (Sw y)^2 / Sw))

so with the model rows ``X [B, P]`` (``B = K + 1``), human vectors ``Y [R, P]`` and weights
``W [R, P]`` every term is a matrix product (:func:`weighted_pearson`):

* subjects: ``Y`` = each subject's upper triangle, ``W`` = the pairs finite in every subject;
* image bootstrap: a resample draws image ``a`` ``c_a`` times; its pairs of draws ``i < j`` that
  are different images are copies of the original pairs, ``{a, b}`` repeated ``c_a c_b`` times
  (copies of one image never pair: rsatoolbox's pattern bootstrap sets them NaN), so
  ``W = c_a c_b`` on the upper triangle and ``Y`` is the human vector itself;
* permutations: ``Y = upper(H[pi][:, pi])`` (rows and columns permuted jointly), ``W`` its finite
  mask.

So thousands of resamples cost a few ``[B, P] x [P, R]`` products after one pass that builds the
ablated similarities (:func:`model_similarities`), instead of one engine call per resample.
Spearman agreement is Pearson of average-tie ranks taken over a mask that every vector shares
(the mask must not move: no Spearman bootstrap, no Spearman permutations with missing pairs).

Numerics: rows are centred by their mean before the sums (Pearson is shift-invariant), so the
one-pass formula does not cancel; everything runs in float64. Undefined values follow DESIGN.md:
a NaN model similarity inside the weighted pairs, a constant vector (weighted RMS deviation <=
1e-12 x its largest |value|) or fewer than 2 pairs give NaN; a map inactive in every (sampled)
image has cohort AIS exactly 0; an inactive (image, map) pair has per-image AIS exactly 0.

Noise ceiling (:func:`noise_ceiling`): rsatoolbox 0.3.2's ``boot_noise_ceiling`` - subjects'
vectors pooled as the method prescribes ('corr': mean of z-scored vectors; 'spearman': mean of
ranks), lower bound = mean over subjects of the agreement of the subject with the pool of the
others, upper bound = with the pool of all.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ais_jax import ablation
from ais_jax import rsa
from ais_jax.precision import float64_scope, resolve

COMPARISONS = ("pearson", "spearman")
SCORES = ("r", "r2")
CONSTANT_RTOL = rsa.CONSTANT_RTOL
_HI = jax.lax.Precision.HIGHEST
# Public kernels: eager calls run jitted in a float64 scope, traced calls inline (as ais_jax.rsa).
_entry = rsa._entry  # pylint: disable=protected-access


# ----------------------------------------------------------------------------------------------
# Weighted agreement: the one kernel every resample goes through


@_entry()
def weighted_pearson(x, y, w):
  """Pearson correlations of every model row with every human vector under pair weights.

  Args:
    x: ``[B, P]`` model vectors (NaN allowed: NaN inside a row's weighted pairs gives NaN).
    y: ``[R, P]`` human vectors (any value where ``w == 0``; must be finite where ``w > 0``).
    w: ``[R, P]`` non-negative pair weights (counts; 0/1 for a mask).

  Returns:
    ``[B, R]`` float64, NaN where undefined (NaN inside the pairs, a constant vector, < 2 pairs).
  """
  x = jnp.asarray(x, jnp.float64)
  w = jnp.asarray(w, jnp.float64)
  y = jnp.where(w > 0, jnp.asarray(y, jnp.float64), 0.0)
  used = (w > 0).astype(jnp.float64)
  x_nan = jnp.isnan(x)
  x0 = jnp.where(x_nan, 0.0, x)
  x_max = jnp.max(jnp.abs(x0), axis=-1)                                    # [B]
  x0 = x0 - (jnp.sum(x0, axis=-1, keepdims=True)
             / jnp.maximum(jnp.sum(~x_nan, axis=-1, keepdims=True), 1))   # centre (shift-free r)
  sw = jnp.sum(w, axis=-1)                                                 # [R]
  safe_sw = jnp.where(sw > 0, sw, 1.0)
  y_max = jnp.max(jnp.abs(y), axis=-1)
  y = y - jnp.sum(w * y, axis=-1, keepdims=True) / safe_sw[:, None]
  y = jnp.where(w > 0, y, 0.0)
  wy = w * y
  sy = jnp.sum(wy, axis=-1)
  syy = jnp.sum(wy * y, axis=-1)
  sx = jnp.matmul(x0, w.T, precision=_HI)                                  # [B, R]
  sxx = jnp.matmul(x0 * x0, w.T, precision=_HI)
  sxy = jnp.matmul(x0, wy.T, precision=_HI)
  cov = sxy - sx * sy / safe_sw
  vx = sxx - sx * sx / safe_sw
  vy = syy - sy * sy / safe_sw
  r = cov / jnp.sqrt(jnp.maximum(vx, 0) * jnp.maximum(vy, 0))
  nan_inside = jnp.matmul(x_nan.astype(jnp.float64), used.T, precision=_HI) > 0
  x_const = vx <= (CONSTANT_RTOL * x_max[:, None]) ** 2 * safe_sw
  y_const = vy <= (CONSTANT_RTOL * y_max) ** 2 * safe_sw
  few = jnp.sum(used, axis=-1) < 2
  return jnp.where(nan_inside | x_const | y_const[None] | few[None], jnp.nan, r)


def _ranks_over(v, mask):
  """Average-tie ranks of ``v [..., P]`` over ``mask [P]`` (NaN elsewhere and where v is NaN)."""
  return rsa.rankdata.kernel(jnp.where(mask, v, jnp.nan), axis=-1, dtype=jnp.float64)


def _constant_rows(v, mask):
  """[...] True where ``v`` is constant over ``mask`` by the rsa rule (Spearman applies it to
  the values, not to their ranks)."""
  return rsa.is_constant.kernel(jnp.where(mask, v, 0.0), mask, dtype=jnp.float64)


@_entry("kind")
def agreements(x, y, mask, *, kind: str = "pearson"):
  """Agreement of every model row with every human vector over one shared pair mask.

  Args:
    x: ``[B, P]`` model vectors.
    y: ``[R, P]`` human vectors.
    mask: ``[P]`` bool, the pairs compared (finite in every ``y``).
    kind: 'pearson' | 'spearman' (average-tie ranks over the mask).

  Returns:
    ``[B, R]`` float64.
  """
  w = jnp.broadcast_to(mask.astype(jnp.float64), y.shape)
  if kind == "pearson":
    return weighted_pearson(x, y, w)
  bad = _constant_rows(x, mask)[:, None] | _constant_rows(y, mask)[None, :]
  r = weighted_pearson(_ranks_over(x, mask), _ranks_over(y, mask), w)
  return jnp.where(bad, jnp.nan, r)


def _score(r, score: str):
  return r * r if score == "r2" else r


@_entry("score")
def ais_from_agreements(agree, inactive, *, score: str = "r"):
  """Cohort AIS from agreements ``agree [K + 1, ...]`` (slot K = baseline) -> ``[K, ...]``.

  ``inactive`` (broadcastable to ``[K, ...]``): map contributes to no compared image; its AIS
  is exactly 0 where the baseline is defined.
  """
  base = _score(agree[-1], score)
  ais = base[None] - _score(agree[:-1], score)
  return jnp.where(inactive & ~jnp.isnan(base)[None], 0.0, ais)



# ----------------------------------------------------------------------------------------------
# Model similarities: baseline and every single-map removal, once


def _ablated_embeddings(head, maps, ks, kvalid, *, dtype, precision, fc_parts):
  """Embeddings ``[c, n, D]`` with map ``ks[j]`` zeroed in every image (nothing where
  ``kvalid[j]`` is False), from the public ablation algebra."""
  k = maps.shape[-1]
  keep = 1.0 - jax.nn.one_hot(ks, k, dtype=dtype) * kvalid[:, None]        # [c, K]
  if isinstance(head, ablation.PooledHead):
    return ablation.pooled_embeddings(maps.astype(dtype))[None] * keep[:, None, :]
  if isinstance(head, ablation.FcHead):
    pooled, a = fc_parts
    d = ablation.fc_map_contributions(head, pooled, ks, dtype=dtype, precision=precision)
    d = d * kvalid[:, None, None]
    return ablation.fc_embed(head, a[None] - d, dtype=dtype, precision=precision)
  emb = head.embed(maps.astype(dtype), keep)
  return jnp.asarray(emb[0] if isinstance(emb, tuple) else emb, dtype)


def _active(head, maps, fc_parts):
  """``[n, K]`` bool: map k contributes to image i (False: its removal changes nothing)."""
  if isinstance(head, ablation.PooledHead):
    return ablation.pooled_embeddings(maps) != 0
  if isinstance(head, ablation.FcHead):
    return jnp.any(fc_parts[0] != 0, axis=-1)
  return jnp.any(maps != 0, axis=(1, 2))


@functools.partial(jax.jit, static_argnames=("similarity", "precision", "chunk", "rows",
                                             "generic_head"))
def _similarities_kernel(head, maps, *, similarity, precision, chunk, rows, generic_head=None):
  head = generic_head if generic_head is not None else head
  cfg = resolve(precision)
  hd, hp = cfg.head_dtype, cfg.head_precision
  n, _, _, k = maps.shape
  fc_parts = None
  if isinstance(head, ablation.FcHead):
    head = jax.tree.map(lambda v: jnp.asarray(v, hd), head)
    pooled = ablation.fc_pooled_maps(head, maps, dtype=hd)
    fc_parts = (pooled, ablation.fc_pre_activation(head, pooled, dtype=hd, precision=hp))
  slots = -(-(k + 1) // chunk) * chunk          # slot K (and padding) ablates nothing: baseline
  ks = jnp.arange(slots)
  kvalid = ks < k
  iu = rsa.upper_triangle_indices(n)

  e0 = None
  if rows:
    e0 = _ablated_embeddings(head, maps, jnp.zeros((1,), jnp.int32), jnp.zeros((1,), bool),
                             dtype=hd, precision=hp, fc_parts=fc_parts)[0].astype(jnp.float64)

  def one_chunk(args):
    kc, vc = args
    e = _ablated_embeddings(head, maps, kc % k, vc, dtype=hd, precision=hp, fc_parts=fc_parts)
    e = e.astype(jnp.float64)
    if not rows:
      s = rsa.similarity_matrix.kernel(e, kind=similarity, dtype=jnp.float64)
      return s[:, iu[0], iu[1]], jnp.zeros((kc.shape[0], 0, 0))
    # Ablated images stacked over the baseline ones: the off-diagonal block holds the rows of
    # per-image AIS (image i ablated, every other image as it is).
    both = jnp.concatenate([e, jnp.broadcast_to(e0, e.shape)], axis=1)
    s = rsa.similarity_matrix.kernel(both, kind=similarity, dtype=jnp.float64)    # [c, 2n, 2n]
    return s[:, iu[0], iu[1]], s[:, :n, n:]

  z, r = jax.lax.map(one_chunk, (ks.reshape(-1, chunk), kvalid.reshape(-1, chunk)))
  z = z.reshape((slots,) + z.shape[2:])[:k + 1]
  r = r.reshape((slots,) + r.shape[2:])[:k + 1]
  return z, r, _active(head, maps, fc_parts)


@dataclasses.dataclass
class ModelSimilarities:
  """Output of :func:`model_similarities` (numpy float64).

  Attributes:
    upper: ``[K + 1, P]`` similarity upper triangles; row k < K with map k zeroed in every image,
      row K the baseline (nothing removed).
    rows: ``[K + 1, n, n]`` or None; ``rows[k, i, j]`` = similarity of image i with map k zeroed
      (in image i only) and image j as it is (row K: the baseline matrix).
    active: ``[n, K]`` bool, False where map k contributes nothing to image i.
  """
  upper: np.ndarray
  rows: Optional[np.ndarray]
  active: np.ndarray


def model_similarities(head, maps, *, similarity: str = "pearson", precision: str = "exact",
                       rows: bool = False, memory_budget_gb: float = 1.0) -> ModelSimilarities:
  """Baseline and single-map-removal similarity vectors of a cohort, in one compiled call.

  Args:
    head: ``spec.get_ablation_head(variables)`` (PooledHead | FcHead | GenericHead).
    maps: ``[n, h, w, K]`` feature maps.
    similarity: 'pearson' | 'spearman' | 'cosine' (as :func:`ais_jax.rsa.similarity_matrix`).
    precision: the head's precision mode (ais_jax.precision); similarities are float64.
    rows: also return the per-image rows (for per-image AIS against other matrices).
    memory_budget_gb: bounds one chunk of maps.
  """
  n, _, _, k = np.shape(maps)
  d = int(k)  # an upper bound on pooled embedding sizes; fc heads are bounded by their width
  if isinstance(head, ablation.FcHead):
    d = max(int(head.w1.shape[1]), int(head.w2.shape[1]))
  side = 2 * n if rows else n
  per_map = 8 * (side * d * 4 + side * side * 3)
  chunk = int(max(1, min(k + 1, memory_budget_gb * 2**30 // per_map)))
  chunk = -(-(k + 1) // -(-(k + 1) // chunk))   # same number of chunks, least padding
  with float64_scope():
    generic = head if isinstance(head, ablation.GenericHead) else None
    z, r, active = _similarities_kernel(None if generic else head, jnp.asarray(maps),
                                        similarity=similarity, precision=precision, chunk=chunk,
                                        rows=rows, generic_head=generic)
    z, r, active = jax.device_get((z, r, active))
  return ModelSimilarities(upper=np.asarray(z, np.float64),
                           rows=np.asarray(r, np.float64) if rows else None,
                           active=np.asarray(active, bool))


# ----------------------------------------------------------------------------------------------
# Noise ceiling (rsatoolbox 0.3.2 boot_noise_ceiling)

NOISE_CEILING_METHODS = {"pearson": "corr", "spearman": "spearman"}


def _pool_ready(vectors, mask, comparison):
  """Subjects' vectors ``[S, P]`` transformed as rsatoolbox's ``pool_rdm`` does before
  averaging: 'pearson' ('corr') z-scores each over the mask (population sd), 'spearman' ranks."""
  if comparison == "spearman":
    return _ranks_over(vectors, mask)
  m = mask.astype(jnp.float64)
  count = jnp.sum(m)
  v = jnp.where(mask, vectors, 0.0)
  mean = jnp.sum(v, axis=-1, keepdims=True) / count
  dev = jnp.where(mask, v - mean, 0.0)
  sd = jnp.sqrt(jnp.sum(dev * dev, axis=-1, keepdims=True) / count)
  return jnp.where(mask, dev / sd, jnp.nan)


@functools.partial(jax.jit, static_argnames=("comparison",))
def _noise_ceiling_kernel(vectors, mask, *, comparison):
  s = vectors.shape[0]
  ready = _pool_ready(vectors, mask, comparison)                 # [S, P]
  total = jnp.sum(jnp.where(mask, ready, 0.0), axis=0)
  pool_all = jnp.where(mask, total / s, jnp.nan)
  pool_others = jnp.where(mask, (total[None] - jnp.where(mask, ready, 0.0)) / (s - 1), jnp.nan)
  upper = agreements(pool_all[None], vectors, mask, kind=comparison)[0]                 # [S]
  lower = jax.vmap(lambda p, v: agreements(p[None], v[None], mask, kind=comparison)[0, 0])(
      pool_others, vectors)
  return lower, upper


def noise_ceiling(subject_vectors, mask=None, *, comparison: str = "pearson") -> dict:
  """Lower and upper bound of the agreement any model can reach with these subjects.

  As rsatoolbox 0.3.2 ``boot_noise_ceiling(rdms, method)`` with method 'corr' (``comparison=
  'pearson'``) or 'spearman': lower = mean over subjects of the agreement of subject s with the
  pool of the others, upper = with the pool of all subjects (the pool: mean of z-scored vectors
  for 'corr', mean of ranks for 'spearman'). Invariant to ``S = -D`` (similarity or
  dissimilarity give the same bounds).

  Args:
    subject_vectors: ``[S, P]`` per-subject upper triangles (S >= 2).
    mask: ``[P]`` bool, the pairs used (default: finite in every subject; rsatoolbox requires
      the same missing pairs in every subject).
    comparison: 'pearson' | 'spearman'.

  Returns:
    ``{"lower", "upper", "per_subject_lower" [S], "per_subject_upper" [S], "method"}``.
  """
  if comparison not in COMPARISONS:
    raise ValueError(f"comparison={comparison!r} is not one of {COMPARISONS}")
  v = np.asarray(subject_vectors, np.float64)
  if v.ndim != 2 or v.shape[0] < 2:
    raise ValueError(f"subject_vectors must be [S >= 2, P], got shape {list(v.shape)}")
  mask = np.all(np.isfinite(v), axis=0) if mask is None else np.asarray(mask, bool)
  with float64_scope():
    lower, upper = jax.device_get(_noise_ceiling_kernel(
        jnp.asarray(v), jnp.asarray(mask), comparison=comparison))
  return {"lower": float(np.mean(lower)), "upper": float(np.mean(upper)),
          "per_subject_lower": np.asarray(lower), "per_subject_upper": np.asarray(upper),
          "method": NOISE_CEILING_METHODS[comparison]}


# ----------------------------------------------------------------------------------------------
# Per-subject AIS and split-half reliability


@_entry("comparison", "score")
def subject_cohort_ais(upper, subject_vectors, mask, inactive, *, comparison="pearson",
                       score="r"):
  """Cohort AIS against every subject in one call.

  Args:
    upper: ``[K + 1, P]`` model vectors (:class:`ModelSimilarities`.upper).
    subject_vectors: ``[S, P]``.
    mask: ``[P]`` bool, pairs finite in every subject.
    inactive: ``[K]`` bool, maps inactive in every image.

  Returns:
    ``(agreement [K + 1, S], ais [S, K])``.
  """
  agree = agreements(upper, subject_vectors, mask, kind=comparison)
  return agree, ais_from_agreements(agree, inactive[:, None], score=score).T


@_entry("comparison")
def subject_per_image_ais(rows, subject_matrices, pair_mask, active, *, comparison="pearson"):
  """Per-image AIS against every subject, vmapped over images.

  Args:
    rows: ``[K + 1, n, n]`` (:class:`ModelSimilarities`.rows; slot K the baseline).
    subject_matrices: ``[S, n, n]``.
    pair_mask: ``[n, n]`` bool, finite in every subject (diagonal excluded here).
    active: ``[n, K]`` bool.

  Returns:
    ``(baseline_rows [S, n], ais [S, n, K])``; an inactive (image, map) pair has AIS exactly 0
    where the baseline row is defined, an undefined baseline row is NaN for every map.
  """
  n = rows.shape[1]
  mask = pair_mask & ~jnp.eye(n, dtype=bool)

  def one_image(x, y, m):
    return agreements(x, y, m, kind=comparison)                  # [K + 1, S]

  agree = jax.vmap(one_image, in_axes=(1, 1, 0))(rows, subject_matrices, mask)   # [n, K+1, S]
  base = agree[:, -1]                                             # [n, S]
  ais = base[:, None, :] - agree[:, :-1]                          # [n, K, S]
  ais = jnp.where(~active[:, :, None] & ~jnp.isnan(base)[:, None, :], 0.0, ais)
  return base.T, jnp.transpose(ais, (2, 0, 1))


@functools.partial(jax.jit, static_argnames=("comparison", "score"))
def _split_half_kernel(upper, subject_vectors, mask, inactive, halves, *, comparison, score):
  """``halves [H, S]`` bool (True: first half) -> per-split AIS correlation over maps ``[H]``."""
  first = halves.astype(jnp.float64)
  means = jnp.concatenate([
      (first @ subject_vectors) / jnp.sum(first, axis=1, keepdims=True),
      ((1 - first) @ subject_vectors) / jnp.sum(1 - first, axis=1, keepdims=True)])  # [2H, P]
  means = jnp.where(mask, means, 0.0)
  ais = ais_from_agreements(agreements(upper, means, mask, kind=comparison),
                            inactive[:, None], score=score)       # [K, 2H]
  h = halves.shape[0]
  a, b = ais[:, :h].T, ais[:, h:].T                               # [H, K]
  use = jnp.isfinite(a) & jnp.isfinite(b) & ~inactive[None]
  return rsa.correlation.kernel(a, b, use, kind="pearson", dtype=jnp.float64)


def split_half_reliability(upper, subject_vectors, mask, inactive, *, splits: int = 100,
                           seed: int = 0, comparison: str = "pearson", score: str = "r") -> dict:
  """Reliability over subjects of the per-map cohort AIS: ``splits`` random halves of the
  subjects; per split the Pearson correlation over the maps (active ones with defined AIS) of
  the AIS driven by each half's mean matrix, Spearman-Brown corrected ``2r / (1 + r)`` to the
  full number of subjects.

  Returns:
    ``{"r": [splits], "spearman_brown": [splits], "mean_r", "spearman_brown_of_mean_r",
    "mean_spearman_brown", "seed", "splits"}``.
  """
  s = np.shape(subject_vectors)[0]
  rng = np.random.default_rng(seed)
  halves = np.zeros((splits, s), bool)
  for i in range(splits):
    halves[i, rng.permutation(s)[:s // 2]] = True
  with float64_scope():
    r = np.asarray(jax.device_get(_split_half_kernel(
        jnp.asarray(upper), jnp.asarray(subject_vectors, jnp.float64), jnp.asarray(mask),
        jnp.asarray(inactive), jnp.asarray(halves), comparison=comparison, score=score)))
  sb = 2 * r / (1 + r)
  mean_r = float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")
  return {"r": r, "spearman_brown": sb, "mean_r": mean_r,
          "spearman_brown_of_mean_r": 2 * mean_r / (1 + mean_r),
          "mean_spearman_brown": float(np.nanmean(sb)) if np.isfinite(sb).any() else float("nan"),
          "seed": seed, "splits": splits, "half_sizes": [s // 2, s - s // 2]}


# ----------------------------------------------------------------------------------------------
# Image bootstrap and permutations: resamples as matrix products


def bootstrap_counts(n: int, resamples: int, seed: int) -> np.ndarray:
  """``[R, n]`` int: how often each image is drawn in each resample (n draws with replacement,
  ``numpy.random.default_rng(seed)``)."""
  rng = np.random.default_rng(seed)
  draws = rng.integers(0, n, size=(resamples, n))
  counts = np.zeros((resamples, n), np.int64)
  np.add.at(counts, (np.arange(resamples)[:, None], draws), 1)
  return counts


def permutations_with_identity(n: int, count: int, seed: int) -> np.ndarray:
  """``[count + 1, n]``: the identity first (the observed statistic goes through the same
  arithmetic as the null ones), then ``count`` permutations from ``default_rng(seed)``."""
  rng = np.random.default_rng(seed)
  return np.stack([np.arange(n)] + [rng.permutation(n) for _ in range(count)])


def _chunks(fn, xs, batch: int):
  return jax.lax.map(fn, xs, batch_size=max(1, min(batch, xs.shape[0])))


@_entry("batch")
def bootstrap_agreements(upper, human_upper, mask, counts, *, batch: int = 250):
  """Pearson agreement of every model vector on every image resample.

  Args:
    upper: ``[B, P]`` model vectors.
    human_upper: ``[P]`` human vector (finite where ``mask``).
    mask: ``[P]`` bool.
    counts: ``[R, n]`` draws per image (:func:`bootstrap_counts`).
    batch: resamples per product (memory ``batch x P`` float64).

  Returns:
    ``[B, R]``: pairs of draws of two different images, each pair ``{a, b}`` weighted
    ``c_a c_b`` (copies of one image never pair, as rsatoolbox's pattern bootstrap).
  """
  n = counts.shape[1]
  iu = rsa.upper_triangle_indices(n)
  c = counts.astype(jnp.float64)
  m = mask.astype(jnp.float64)
  y = jnp.where(mask, human_upper, 0.0)

  def one(ci):
    w = ci[iu[0]] * ci[iu[1]] * m
    return weighted_pearson(upper, y[None], w[None])[:, 0]

  return _chunks(one, c, batch).T


@_entry("batch")
def permutation_agreements(upper, human, perms, *, batch: int = 250):
  """Pearson agreement of every model vector with jointly row/column-permuted human matrices.

  Args:
    upper: ``[B, P]`` model vectors (for Spearman: ranks over the pairs, see
      :func:`ranked_for_permutation`).
    human: ``[n, n]`` human matrix (NaN = missing; the mask moves with the permutation).
    perms: ``[R, n]`` permutations (:func:`permutations_with_identity`).

  Returns:
    ``[B, R]``.
  """
  n = human.shape[0]
  iu = rsa.upper_triangle_indices(n)

  def one(p):
    y = human[p[iu[0]], p[iu[1]]]
    return weighted_pearson(upper, y[None], jnp.isfinite(y)[None].astype(jnp.float64))[:, 0]

  return _chunks(one, perms, batch).T


def ranked_for_permutation(upper, human):
  """Spearman permutations as Pearson ones: ``(ranked upper [B, P], ranked human [n, n],
  constant [B])``. Needs a human matrix without missing pairs (the ranks of a permuted vector are
  the permuted ranks only when the compared pairs do not move)."""
  n = human.shape[0]
  iu = np.triu_indices(n, 1)
  h = np.asarray(human, np.float64)
  if not np.all(np.isfinite(h[iu])):
    raise ValueError("Spearman permutation tests need a human matrix without missing pairs "
                     "(the compared pairs would move with the permutation); use "
                     "comparison='pearson'")
  mask = jnp.ones(iu[0].shape, bool)
  with float64_scope():
    ranked = np.array(_ranks_over(jnp.asarray(upper), mask))
    constant = np.asarray(_constant_rows(jnp.asarray(upper), mask))
    hr = np.asarray(_ranks_over(jnp.asarray(h[iu])[None], mask))[0]
  matrix = np.zeros((n, n))
  matrix[iu] = hr
  matrix = matrix + matrix.T
  ranked[np.isnan(np.asarray(upper))] = np.nan
  return ranked, matrix, constant


# ----------------------------------------------------------------------------------------------
# p-values and multiplicity (numpy, on the host)


def permutation_pvalues(statistic, *, tested=None) -> dict:
  """One-sided permutation p-values from ``statistic [K, 1 + R]`` (column 0 observed).

  ``p_k = #{j : T_kj >= T_k0} / (1 + R)`` (the observed one counts); family-wise
  (Westfall-Young single-step max-T) ``p_fwer_k = #{j : max_l T_lj >= T_k0} / (1 + R)``, the max
  over the ``tested`` maps (default: all) with defined values; Benjamini-Hochberg q-values over
  the tested maps with defined p. Untested maps get p = p_fwer = q = 1; undefined observed values
  get NaN.
  """
  t = np.asarray(statistic, np.float64)
  k = t.shape[0]
  tested = np.ones(k, bool) if tested is None else np.asarray(tested, bool)
  obs = t[:, :1]
  with np.errstate(invalid="ignore"):
    p = np.mean(t >= obs, axis=1)
    family = np.where(tested[:, None] & np.isfinite(t), t, -np.inf)
    max_t = np.max(family, axis=0)                                   # [1 + R]
    p_fwer = np.mean(max_t[None, :] >= obs, axis=1)
  undefined = ~np.isfinite(obs[:, 0])
  p[undefined] = np.nan
  p_fwer[undefined] = np.nan
  q = np.full(k, np.nan)
  use = tested & ~undefined
  q[use] = benjamini_hochberg(p[use])
  for arr in (p, p_fwer, q):
    arr[~tested] = 1.0
  return {"p": p, "p_fwer": p_fwer, "q": q}


def benjamini_hochberg(p) -> np.ndarray:
  """Benjamini-Hochberg adjusted p-values (q-values) of ``p [m]`` (no NaN), capped at 1."""
  p = np.asarray(p, np.float64)
  m = p.size
  if m == 0:
    return p.copy()
  order = np.argsort(p, kind="stable")
  scaled = p[order] * m / np.arange(1, m + 1)
  q_sorted = np.minimum.accumulate(scaled[::-1])[::-1]
  q = np.empty(m)
  q[order] = np.minimum(q_sorted, 1.0)
  return q


def percentile_interval(samples, level: float = 0.95, axis: int = -1) -> np.ndarray:
  """Percentile bootstrap interval ``[..., 2]`` over ``axis`` (NaN resamples ignored; NaN where
  none is defined)."""
  a = np.moveaxis(np.asarray(samples, np.float64), axis, -1)
  lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
  out = np.full(a.shape[:-1] + (2,), np.nan)
  ok = np.isfinite(a).any(axis=-1)
  if ok.any():
    with np.errstate(invalid="ignore"):
      out[ok] = np.stack([np.nanpercentile(a[ok], lo, axis=-1),
                          np.nanpercentile(a[ok], hi, axis=-1)], axis=-1)
  return out


def top_m_frequency(samples, m: int) -> np.ndarray:
  """``samples [K, R]`` -> ``[K]`` fraction of resamples in which each map is among the m
  largest (ties to the lower map index, NaN last, as the selection's map order)."""
  s = np.asarray(samples, np.float64)
  key = np.where(np.isnan(s), np.inf, -s)
  order = np.argsort(key, axis=0, kind="stable")[:m]                # [m, R]
  freq = np.zeros(s.shape[0])
  np.add.at(freq, order.ravel(), 1.0)
  return freq / s.shape[1]


# ----------------------------------------------------------------------------------------------
# The whole analysis


@dataclasses.dataclass
class InferenceResult:
  """Output of :func:`analyse` (numpy; S subjects, n images, K maps, B resamples, R perms).

  Attributes:
    cohort_ais: ``[K]`` cohort AIS driven by the plain mean of the subjects' matrices.
    baseline_agreement: agreement of the model with the mean matrix.
    noise_ceiling: ``{"pearson": {...}, "spearman": {...}}`` (:func:`noise_ceiling`).
    subject_agreement: ``{"pearson": [S], "spearman": [S]}`` model vs each subject.
    subject_cohort_ais: ``[S, K]``; subject_per_image_ais: ``[S, n, K]`` or None;
    subject_baseline_rows: ``[S, n]`` or None.
    split_half: :func:`split_half_reliability`.
    bootstrap_ais: ``[K, B]``; bootstrap_baseline: ``[B]``; cohort_ais_ci: ``[K, 2]``;
    baseline_ci: ``[2]``; top_m_frequency: ``[K]``.
    null_ais: ``[K, 1 + R]`` (column 0 observed); null_baseline: ``[1 + R]``;
    p, p_fwer, q: ``[K]``; baseline_p: float; inactive_maps: ``[K]`` bool (p = 1 by definition).
    summary: JSON-ready numbers and options; timings: seconds per stage.
  """
  cohort_ais: np.ndarray
  baseline_agreement: float
  noise_ceiling: dict
  subject_agreement: dict
  subject_cohort_ais: np.ndarray
  subject_per_image_ais: Optional[np.ndarray]
  subject_baseline_rows: Optional[np.ndarray]
  split_half: dict
  bootstrap_ais: np.ndarray
  bootstrap_baseline: np.ndarray
  cohort_ais_ci: np.ndarray
  baseline_ci: np.ndarray
  top_m_frequency: np.ndarray
  null_ais: np.ndarray
  null_baseline: np.ndarray
  p: np.ndarray
  p_fwer: np.ndarray
  q: np.ndarray
  baseline_p: float
  inactive_maps: np.ndarray
  summary: dict
  timings: dict


def _check_subjects(subject_matrices, n_images: int) -> np.ndarray:
  s = np.asarray(subject_matrices, np.float64)
  if s.ndim != 3 or s.shape[1] != s.shape[2] or s.shape[0] < 2:
    raise ValueError(f"subject matrices must be [S >= 2, n, n], got shape {list(s.shape)}")
  if s.shape[1] != n_images:
    raise ValueError(f"subject matrices are {s.shape[1]} x {s.shape[2]} but the cohort has "
                     f"{n_images} images")
  return s


def resample_ais(agree, active, sampled, *, score: str):
  """AIS per resample ``[K, R]`` from agreements ``[K + 1, R]``; a map active in none of the
  images a resample holds (``sampled [R, n]`` bool) has AIS exactly 0 there."""
  involved = (active.T.astype(np.float64) @ np.asarray(sampled, np.float64).T) > 0   # [K, R]
  with float64_scope():
    return np.asarray(ais_from_agreements(jnp.asarray(agree), jnp.asarray(~involved),
                                          score=score))


def analyse(head, maps, subject_matrices, *, similarity: str = "pearson",
            comparison: str = "pearson", score: str = "r", precision: str = "exact",
            bootstrap: int = 1000, permutations: int = 1000, bootstrap_seed: int = 0,
            permutation_seed: int = 1, split_halves: int = 100, split_seed: int = 2,
            top_m: int = 10, per_image: bool = True, level: float = 0.95, alpha: float = 0.05,
            memory_budget_gb: float = 1.0, progress=None) -> InferenceResult:
  """Noise ceiling, per-subject AIS, split-half reliability, image bootstrap and permutation
  tests for one cohort (no I/O).

  Args:
    head: ``spec.get_ablation_head(variables)``.
    maps: ``[n, h, w, K]`` feature maps.
    subject_matrices: ``[S, n, n]`` per-subject similarities (NaN = missing pair). AIS and the
      resampling tests are driven by their plain mean, as the engine's runs.
    similarity, comparison, score, precision: as :func:`ais_jax.ais.compute_ais`.
    bootstrap, permutations: numbers of image resamples and of permutations (0: skip).
    bootstrap_seed, permutation_seed, split_seed: seeds of ``numpy.random.default_rng`` for the
      image draws, the permutations and the subject halves.
    split_halves: random half splits of the subjects (0: skip).
    top_m: size of the top set whose stability the bootstrap reports.
    per_image: also per-subject per-image AIS ``[S, n, K]`` (needs the per-image rows: twice the
      similarity work).
    level: percentile interval level; alpha: significance level of the counts.
    progress: optional callable receiving one line per stage.
  """
  import time
  report = progress or (lambda message: None)
  if comparison not in COMPARISONS:
    raise ValueError(f"comparison={comparison!r} is not one of {COMPARISONS}")
  if score not in SCORES or (score == "r2" and comparison != "pearson"):
    raise ValueError(f"score={score!r}: 'r', or 'r2' with comparison='pearson'")
  if bootstrap and comparison == "spearman":
    raise ValueError("the image bootstrap is Pearson only: a resample repeats pairs, and the "
                     "ranks of a vector with repeated entries are not a fixed set of ranks "
                     "(use comparison='pearson', or bootstrap=0)")
  n, _, _, k = np.shape(maps)
  subjects = _check_subjects(subject_matrices, n)
  timings = {}
  iu = np.triu_indices(n, 1)
  human = subjects.mean(axis=0)
  human_upper = human[iu]
  mask = np.isfinite(human_upper)                   # finite in every subject (plain mean)
  subject_upper = subjects[:, iu[0], iu[1]]

  t = time.perf_counter()
  sims = model_similarities(head, maps, similarity=similarity, precision=precision,
                            rows=per_image, memory_budget_gb=memory_budget_gb)
  timings["model_similarities"] = time.perf_counter() - t
  report(f"model similarities: {k} removals x {len(mask)} pairs in "
         f"{timings['model_similarities']:.1f} s")
  active = sims.active
  inactive = ~active.any(axis=0)

  t = time.perf_counter()
  with float64_scope():
    up, msk = jnp.asarray(sims.upper), jnp.asarray(mask)
    agree_mean = np.asarray(agreements(up, jnp.asarray(np.where(mask, human_upper, 0))[None],
                                       msk, kind=comparison))[:, 0]
    cohort = np.asarray(ais_from_agreements(jnp.asarray(agree_mean[:, None]),
                                            jnp.asarray(inactive[:, None]), score=score))[:, 0]
    subj_y = jnp.asarray(np.where(mask, subject_upper, 0))
    agree_subj, subj_ais = subject_cohort_ais(up, subj_y, msk, jnp.asarray(inactive),
                                              comparison=comparison, score=score)
    subject_agreement = {kind: np.asarray(agreements(up[-1:], subj_y, msk, kind=kind))[0]
                         for kind in COMPARISONS}
    subj_ais = np.asarray(subj_ais)
    per_image_ais = base_rows = None
    if per_image:
      pair_mask = np.all(np.isfinite(subjects), axis=0)
      base_rows, per_image_ais = jax.device_get(subject_per_image_ais(
          jnp.asarray(sims.rows), jnp.asarray(np.where(pair_mask, subjects, 0)),
          jnp.asarray(pair_mask), jnp.asarray(active), comparison=comparison))
      base_rows, per_image_ais = np.asarray(base_rows), np.asarray(per_image_ais)
  ceilings = {kind: noise_ceiling(subject_upper, mask, comparison=kind) for kind in COMPARISONS}
  timings["subjects"] = time.perf_counter() - t
  report(f"subjects: noise ceiling and per-subject AIS in {timings['subjects']:.1f} s")

  t = time.perf_counter()
  split = (split_half_reliability(sims.upper, np.where(mask, subject_upper, 0), mask, inactive,
                                  splits=split_halves, seed=split_seed, comparison=comparison,
                                  score=score)
           if split_halves else None)
  timings["split_half"] = time.perf_counter() - t

  t = time.perf_counter()
  boot_ais = np.zeros((k, 0))
  boot_base = np.zeros(0)
  if bootstrap:
    counts = bootstrap_counts(n, bootstrap, bootstrap_seed)
    with float64_scope():
      agree_b = np.asarray(bootstrap_agreements(up, jnp.asarray(np.where(mask, human_upper, 0)),
                                                msk, jnp.asarray(counts)))
    boot_ais = resample_ais(agree_b, active, counts > 0, score=score)
    boot_base = agree_b[-1]
  timings["bootstrap"] = time.perf_counter() - t
  report(f"bootstrap: {bootstrap} image resamples in {timings['bootstrap']:.1f} s")

  t = time.perf_counter()
  perms = permutations_with_identity(n, permutations, permutation_seed)
  x, h_perm = sims.upper, human
  constant = None
  if comparison == "spearman":
    x, h_perm, constant = ranked_for_permutation(sims.upper, human)
  with float64_scope():
    agree_p = np.asarray(permutation_agreements(jnp.asarray(x), jnp.asarray(h_perm),
                                                jnp.asarray(perms)))
  if constant is not None:
    agree_p[constant] = np.nan
  null_ais = resample_ais(agree_p, active, np.ones((len(perms), n), bool),
                          score=score)
  null_base = agree_p[-1]              # the baseline test is on r (a Mantel test), never r^2
  pv = permutation_pvalues(null_ais, tested=~inactive)
  base_p = float(np.mean(null_base >= null_base[0])) if np.isfinite(null_base[0]) else float("nan")
  timings["permutations"] = time.perf_counter() - t
  report(f"permutations: {permutations} in {timings['permutations']:.1f} s")

  ci = percentile_interval(boot_ais, level) if bootstrap else np.full((k, 2), np.nan)
  base_ci = percentile_interval(boot_base, level) if bootstrap else np.full(2, np.nan)
  top_freq = top_m_frequency(boot_ais, min(top_m, k)) if bootstrap else np.full(k, np.nan)
  tested = ~inactive
  summary = {
      "options": {"similarity": similarity, "comparison": comparison, "score": score,
                  "precision": precision, "bootstrap": bootstrap, "permutations": permutations,
                  "bootstrap_seed": bootstrap_seed, "permutation_seed": permutation_seed,
                  "split_halves": split_halves, "split_seed": split_seed, "top_m": top_m,
                  "level": level, "alpha": alpha,
                  "human": "plain mean of the subjects' matrices drives AIS and the resampling "
                           "tests; the noise ceiling and per-subject scores use each subject"},
      "counts": {"images": int(n), "maps": int(k), "subjects": int(subjects.shape[0]),
                 "pairs": int(mask.sum()), "inactive_maps": int(inactive.sum())},
      "baseline_agreement_mean_matrix": float(agree_mean[-1]),
      "baseline_agreement_mean_over_subjects": {
          kind: float(np.nanmean(v)) for kind, v in subject_agreement.items()},
      "noise_ceiling": {kind: {"lower": c["lower"], "upper": c["upper"], "method": c["method"]}
                        for kind, c in ceilings.items()},
      "baseline_ci": [float(v) for v in base_ci],
      "top_m_stability": (float(np.mean(top_freq[np.argsort(
          np.where(np.isnan(cohort), np.inf, -cohort), kind="stable")[:min(top_m, k)]]))
          if bootstrap else None),
      "baseline_p": base_p,
      "significant_maps": {
          "p": int(np.sum(pv["p"][tested] <= alpha)),
          "fwer": int(np.sum(pv["p_fwer"][tested] <= alpha)),
          "fdr": int(np.sum(pv["q"][tested] <= alpha)),
          "tested": int(tested.sum()), "alpha": alpha,
          "smallest_possible_p": 1.0 / (permutations + 1),
          # BH is bounded by the permutation resolution: m ties at 1/(R+1) give q = K/(m(R+1)).
          "smallest_q": (float(np.nanmin(pv["q"][tested])) if tested.any() else None)},
      "split_half": ({key: split[key] for key in ("mean_r", "spearman_brown_of_mean_r",
                                                  "mean_spearman_brown", "half_sizes")}
                     if split else None),
      "undefined": {"cohort_ais": int(np.isnan(cohort).sum()),
                    "subject_cohort_ais": int(np.isnan(subj_ais).sum()),
                    "bootstrap_ais": int(np.isnan(boot_ais).sum()),
                    "null_ais": int(np.isnan(null_ais).sum())},
  }
  return InferenceResult(
      cohort_ais=cohort, baseline_agreement=float(agree_mean[-1]), noise_ceiling=ceilings,
      subject_agreement=subject_agreement, subject_cohort_ais=subj_ais,
      subject_per_image_ais=per_image_ais, subject_baseline_rows=base_rows, split_half=split,
      bootstrap_ais=boot_ais, bootstrap_baseline=boot_base, cohort_ais_ci=ci, baseline_ci=base_ci,
      top_m_frequency=top_freq, null_ais=null_ais, null_baseline=null_base, p=pv["p"],
      p_fwer=pv["p_fwer"], q=pv["q"], baseline_p=base_p, inactive_maps=inactive,
      summary=summary, timings=timings)

