"""Cross-validated map selection (Aim 1): folds, nested prefix curves, m*, random-order controls.

What it computes (DESIGN.md section 1, "Selection with cross-validation" and "Selection details"):
for each split (train/test partition of the human pairs),

1. cohort AIS of every map on the **train** pairs (``score='r2'``: ``r^2(all) - r^2(map k
   removed)``, the published ranking; ``score='r'``: the same with r; Spearman comparison only
   with ``score='r'``, since Spearman has no r^2 variant);
2. the map order: descending AIS, ties to the lower map index, NaN last;
3. for m = 1..K, the model with the first m maps kept (the others zeroed, as ``head(maps, keep)``
   does), scored on the train pairs (train curve) and the test pairs (test curve);
4. ``m*`` = first maximum of the defined train scores (1-based; 0 when every train score is
   undefined), ``test_retained`` = test score at ``m*``, ``test_full`` = test score with all maps.

Controls: the same curves for random map orders (``random_orders`` per split), so the gain of the
AIS order is measured against chance, not only against all maps.

How it is fast (the issue's point): the similarity of pair (i, j) depends only on images i and j,
so every model similarity is computed once on **all** images, and a split is only a mask on the
human pairs (finite, both images in train / both in test). The K ablated similarity matrices are
shared by all splits; each split needs one pass over its K nested prefixes:

* pooled heads (:class:`~ais_jax.ablation.PooledHead`), pearson or cosine similarity: keeping a
  prefix zeroes embedding coordinates, so all K prefix similarities follow from cumulative sums
  (over the ordered coordinates) of the per-coordinate products ``e_ic e_jc``, sums and squares:
  O(K n^2) per split. Removal of one map uses the rank-one update of the two-pass centred Gram
  matrix; with Spearman similarity, the removal of one map updates the ranks exactly from the
  baseline order (:func:`ais_jax.ais.spearman_removal_terms`, no sort), while every prefix is
  re-ranked (one sort per prefix and image): O(K * n * K log K + K * n^2 * K) per order (documented
  cost; the similarity of K-dimensional rank vectors for each of the K prefixes).
* fully connected heads (:class:`~ais_jax.ablation.FcHead`): prefix sums of the per-map fc6
  contributions (DESIGN.md section 2), then fc7 for each prefix, scanned in chunks of prefixes.
* any other head (:class:`~ais_jax.ablation.GenericHead`): ``head.embed(maps, keep=[m, K])`` on
  chunks of prefix masks.

All splits, prefixes and random orders run in one compiled call. The head runs in the precision
mode's dtype (``exact``: float64); similarities and agreements always run in float64.

Precision of the cumulative-sum path: covariances are one-pass sums of products of the raw
(uncentred, zero-padded) pooled embedding, so their relative rounding is about
``eps * (1 + mean^2 / var)`` of the kept row; the m = K prefix is the exact two-pass similarity.
For post-ReLU features (mean/std of order 1) that is ~1e-15; an embedding with a large constant
offset loses digits in proportion.

Undefined values (DESIGN.md section 1): human pairs that are NaN are excluded; a prefix whose
kept maps are all zero in some image gives that image NaN similarities (pearson/cosine), so any
score over pairs including it is NaN; a score whose model vector is constant is NaN (a pooled
model with one kept map: every pair has the same similarity). A map that contributes nothing to
any image of the train pairs (pooled or fc head) has train AIS exactly 0, so such maps tie and
keep their index order. NaN AIS sorts last; ``m*`` skips
NaN train scores. :attr:`SelectionResult.undefined` counts them.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ais_jax import ablation, rsa
from ais_jax import ais as ais_lib
from ais_jax import precision as precision_lib
from ais_jax.validation import validate_human_similarity

SCORES = ("r2", "r")
CONSTANT_RTOL = rsa.CONSTANT_RTOL


# ----------------------------------------------------------------------------------------------
# Splits


@dataclasses.dataclass(frozen=True)
class Split:
  """One image-fold split: ``test_indices`` are the held-out images; train = the rest."""
  seed: int
  fold: int
  test_indices: np.ndarray


def image_folds(n: int, *, folds: int = 5, seeds: int = 8, seed: int = 0) -> list[Split]:
  """Image folds x seeds, as the published code: ``folds * seeds`` splits.

  For each seed ``s`` in ``seed, seed + 1, ..., seed + seeds - 1``:
  ``perm = numpy.random.default_rng(s).permutation(n)``, split into ``folds`` nearly equal parts
  with ``numpy.array_split``; part f is fold f's test set.
  """
  if folds < 2 or folds > n // 2:
    raise ValueError(f"folds={folds}: need 2 <= folds <= n/2 = {n // 2} so that every train and "
                     "test set has at least 2 images")
  if seeds < 1:
    raise ValueError(f"seeds={seeds}: need at least 1 seed")
  out = []
  for s in range(seed, seed + seeds):
    perm = np.random.default_rng(s).permutation(n)
    for f, test in enumerate(np.array_split(perm, folds)):
      out.append(Split(seed=s, fold=f, test_indices=np.sort(test)))
  return out


MIN_TEST_IMAGES = 4     # default --min_test_images: 4 images = 6 pairs per test set
FEW_TEST_PAIRS = 15     # a test score over fewer pairs than this gets a warning


def plan_folds(n_images: int, folds: int,
               min_test_images: int = MIN_TEST_IMAGES) -> tuple[int, Optional[str]]:
  """The image folds to use so that every test set has at least ``min_test_images`` images.

  :func:`image_folds` splits ``n_images`` into ``folds`` parts of ``n // folds`` or
  ``n // folds + 1`` images. When the smaller part would hold fewer than ``min_test_images``,
  the folds are reduced to ``n_images // min_test_images`` (at least 2, since ``n_images >=
  2 * min_test_images``).

  Returns:
    ``(folds_used, message)``: ``message`` says what was reduced and why (None when ``folds``
    is used as requested).

  Raises:
    UserInputError: ``min_test_images < 2`` (a test set of one image has no pair), ``folds < 2``,
      or ``n_images < 2 * min_test_images`` (two folds of that size do not fit).
  """
  from ais_jax.errors import UserInputError
  if min_test_images < 2:
    raise UserInputError("--min_test_images", f"{min_test_images}: a test set needs at least "
                         "2 images (1 pair); use 4 or more for a usable test score")
  if folds < 2:
    raise UserInputError("--folds", f"{folds}: cross-validation needs at least 2 folds")
  if n_images < 2 * min_test_images:
    raise UserInputError(
        "--images", f"{n_images} images are too few for cross-validated selection: 2 folds "
        f"with at least --min_test_images={min_test_images} test images each need "
        f"{2 * min_test_images}; add images or lower --min_test_images (test scores over "
        "fewer images are unreliable)")
  if n_images // folds >= min_test_images:
    return folds, None
  used = n_images // min_test_images
  smallest = n_images // used
  return used, (f"selection: {folds} folds of {n_images} images would leave "
                f"{n_images // folds} test images in a split (< --min_test_images="
                f"{min_test_images}); using {used} folds (test sets of {smallest}"
                f"{'' if n_images % used == 0 else f'-{smallest + 1}'} images)")


def split_usage(test_full, test_retained, test_masks,
                few_pairs: int = FEW_TEST_PAIRS) -> dict:
  """Which splits the means and tests use, and how many test pairs they rest on.

  Args:
    test_full, test_retained: ``[S]`` test scores (NaN = undefined).
    test_masks: ``[S, P]`` bool test pair masks.

  Returns:
    ``{"used", "dropped", "min_test_pairs", "warning"}``: ``used`` splits have both test
    scores defined (the others are dropped from the means and the paired tests);
    ``min_test_pairs`` is the fewest test pairs of a used split (None when none is used);
    ``warning`` a sentence when that is below ``few_pairs`` or a split was dropped, else None.
  """
  full = np.asarray(test_full, np.float64)
  ok = ~np.isnan(full) & ~np.isnan(np.asarray(test_retained, np.float64))
  pairs = np.asarray(test_masks).sum(axis=-1)
  used, dropped = int(ok.sum()), int((~ok).sum())
  fewest = int(pairs[ok].min()) if used else None
  notes = []
  if dropped:
    notes.append(f"{dropped} of {full.size} splits have an undefined test score and are "
                 "dropped from the means")
  if fewest is not None and fewest < few_pairs:
    notes.append(f"test scores rest on as few as {fewest} pairs per split (< {few_pairs}): "
                 "treat them as rough")
  return {"used": used, "dropped": dropped, "min_test_pairs": fewest,
          "warning": "; ".join(notes) or None}


def image_split_masks(human, test_indices: Sequence[Sequence[int]]):
  """Pair masks over the strict upper triangle for image splits.

  Returns:
    ``(train [S, P], test [S, P])`` bool, P = n(n-1)/2: finite human pair with both images in
    the train set (resp. both in the test set).
  """
  h = np.asarray(human, np.float64)
  n = h.shape[0]
  rows, cols = np.triu_indices(n, k=1)
  finite = np.isfinite(h[rows, cols])
  train, test = [], []
  for idx in test_indices:
    idx = np.asarray(idx, int)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
      raise ValueError(f"test indices {idx.tolist()} out of range for {n} images")
    is_test = np.zeros(n, bool)
    is_test[idx] = True
    test.append(finite & is_test[rows] & is_test[cols])
    train.append(finite & ~is_test[rows] & ~is_test[cols])
  return np.stack(train), np.stack(test)


def pair_split_masks(human, *, seeds: int = 8, seed: int = 0, test_fraction: float = 0.2):
  """The paper's text variant: a random ``test_fraction`` of the finite human pairs is test.

  For seed ``s``: ``numpy.random.default_rng(s).permutation`` of the finite upper-triangle pairs;
  the first ``round(test_fraction * count)`` are test, the rest train.

  Caveat: every image appears in train and test pairs alike, so the test score is not a held-out
  image estimate (image information leaks between train and test); prefer image folds.

  Returns:
    ``(train [S, P], test [S, P])`` bool masks over the strict upper triangle.
  """
  if not 0 < test_fraction < 1:
    raise ValueError(f"test_fraction={test_fraction} must lie in (0, 1)")
  h = np.asarray(human, np.float64)
  rows, cols = np.triu_indices(h.shape[0], k=1)
  finite = np.flatnonzero(np.isfinite(h[rows, cols]))
  n_test = int(round(test_fraction * finite.size))
  train, test = [], []
  for s in range(seed, seed + seeds):
    perm = np.random.default_rng(s).permutation(finite)
    t = np.zeros(rows.size, bool)
    t[perm[:n_test]] = True
    tr = np.zeros(rows.size, bool)
    tr[perm[n_test:]] = True
    train.append(tr)
    test.append(t)
  return np.stack(train), np.stack(test)


def map_order(ais) -> np.ndarray:
  """Descending AIS, ties to the lower map index, NaN last: ``[..., K] -> [..., K]`` indices."""
  # numpy sorts NaN last and compares -0.0 equal to 0.0 (a tie); the traced kernel's jnp.argsort
  # needs both spelled out.
  return np.argsort(-np.asarray(ais, np.float64), kind="stable")


def first_maximum(curve) -> np.ndarray:
  """1-based position of the first maximum over the defined (non-NaN) entries of ``[..., K]``;
  0 where every entry is NaN."""
  c = np.asarray(curve, np.float64)
  valid = ~np.isnan(c)
  pos = np.argmax(np.where(valid, c, -np.inf), axis=-1) + 1
  return np.where(valid.any(axis=-1), pos, 0)


# ----------------------------------------------------------------------------------------------
# Kernels (traced; run inside float64_scope)


@dataclasses.dataclass(frozen=True)
class _Config:
  similarity: str
  comparison: str
  score: str
  head_dtype: Any
  head_precision: Any
  chunk: int          # prefixes / ablations per chunk for head passes
  split_batch: int    # splits vmapped together inside lax.map


def _upper(m):
  return rsa.upper_triangle(m)


def _agreement_rows(x, y, m, comparison):
  """Agreement of each model vector ``x [B, P]`` with ``y [P]`` over mask ``m [P]`` -> ``[B]``.

  Pearson: two-pass centring over the mask and the rsa undefined rule, written for one fixed
  ``y`` so the cross term is a matrix-vector product (tested equal to :func:`rsa.correlation`).
  """
  mf = m.astype(x.dtype)
  n = jnp.sum(mf)
  safe_n = jnp.maximum(n, 1)

  def centre(v):
    mean = jnp.sum(jnp.where(m, v, 0), axis=-1, keepdims=True) / safe_n
    dev = jnp.where(m, v - mean, 0)
    return jnp.where(m, dev - jnp.sum(dev, axis=-1, keepdims=True) / safe_n, 0)

  def constant(v, dev):
    rms = jnp.sqrt(jnp.sum(dev * dev, axis=-1) / safe_n)
    return rms <= CONSTANT_RTOL * jnp.max(jnp.where(m, jnp.abs(v), 0), axis=-1)

  dx = centre(x)
  if comparison == "spearman":
    # The undefined rule applies to the values themselves: model similarities that are equal
    # up to rounding (a pooled model with one kept map) must not be ranked by rounding noise.
    r = rsa.correlation.kernel(x, y[None, :], m[None, :], kind="spearman", dtype=jnp.float64)
    return jnp.where(constant(x, dx), jnp.nan, r)
  dy = centre(y)
  sxy = jnp.einsum("bp,p->b", dx, dy, precision=jax.lax.Precision.HIGHEST)
  sxx = jnp.sum(dx * dx, axis=-1)
  syy = jnp.sum(dy * dy)
  r = sxy / jnp.sqrt(sxx * syy)
  # Fewer than 2 pairs: every deviation is 0, so the constant rule already makes r NaN.
  return jnp.where(constant(x, dx) | constant(y, dy), jnp.nan, r)


def _score(x, y, m, cfg):
  r = _agreement_rows(x, y, m, cfg.comparison)
  return r * r if cfg.score == "r2" else r


def _fc_contributions(head, maps, cfg):
  """(a [n, D1] fc6 pre-activation incl. bias, d [n, K, D1] per-map contributions)."""
  return ablation.fc_contributions(head, maps, dtype=cfg.head_dtype, precision=cfg.head_precision)


def _fc_embed(head, pre, cfg):
  return ablation.fc_embed(head, pre, dtype=cfg.head_dtype, precision=cfg.head_precision)


def _sim_upper(emb, cfg):
  """Embeddings ``[..., n, D]`` -> similarity upper triangles ``[..., P]`` (float64)."""
  e = emb.astype(jnp.float64)
  if cfg.similarity == "spearman":
    # Pearson of the average-tie ranks; the undefined rule applies to the values, as
    # rsa.similarity_matrix does.
    bad = rsa.is_constant.kernel(e, axis=-1, dtype=jnp.float64)
    ranks = rsa.rankdata.kernel(e, axis=-1, dtype=jnp.float64)
    s = rsa.similarity_matrix.kernel(ranks, kind="pearson", dtype=jnp.float64)
    return _upper(jnp.where(bad[..., :, None] | bad[..., None, :], jnp.nan, s))
  return _upper(rsa.similarity_matrix.kernel(e, kind=cfg.similarity, dtype=jnp.float64))


def _cumsum0(x, block: int = 64):
  """Cumulative sum over axis 0 of ``[K, ...]`` as blocked triangular matrix products (XLA's
  cumsum lowering on CPU is several times slower for [K, P] arrays)."""
  k = x.shape[0]
  if k <= block:
    tri = jnp.tril(jnp.ones((k, k), x.dtype))
    return jnp.einsum("ij,j...->i...", tri, x, precision=jax.lax.Precision.HIGHEST)
  nb = -(-k // block)
  xp = jnp.concatenate([x, jnp.zeros((nb * block - k,) + x.shape[1:], x.dtype)])
  xp = xp.reshape((nb, block) + x.shape[1:])
  tri = jnp.tril(jnp.ones((block, block), x.dtype))
  within = jnp.einsum("ij,bj...->bi...", tri, xp, precision=jax.lax.Precision.HIGHEST)
  offsets = jnp.cumsum(within[:, -1], axis=0) - within[:, -1]          # exclusive block sums
  return (within + offsets[:, None]).reshape((nb * block,) + x.shape[1:])[:k]


def _chunked(fn, xs, chunk):
  """``lax.map`` in vmapped chunks over the leading axis of ``xs``."""
  return jax.lax.map(fn, xs, batch_size=max(1, min(chunk, xs.shape[0])))


class _Engine:
  """Similarity upper triangles for the full model, every single-map removal, and every prefix
  of an order. ``kind``: 'pooled' (cumulative sums), 'pooled_rerank' (pooled, spearman),
  'fc' (prefix sums of fc6 contributions), 'generic' (head.embed on keep masks)."""

  def __init__(self, head, maps, cfg: _Config):
    self.cfg = cfg
    self.head = head
    self.maps = maps
    self.k = maps.shape[-1]
    n = maps.shape[0]
    self.rows, self.cols = rsa.upper_triangle_indices(n)
    if isinstance(head, ablation.PooledHead):
      self.kind = "pooled" if cfg.similarity in ("pearson", "cosine") else "pooled_rerank"
      e = jnp.mean(maps.astype(cfg.head_dtype), axis=(1, 2))
      self.e = e.astype(jnp.float64)  # [n, K]
      self.zero = self.e == 0         # [n, K] map k contributes nothing to image i
    elif isinstance(head, ablation.FcHead):
      self.kind = "fc"
      self.a, self.d = _fc_contributions(head, maps, cfg)
      self.zero = jnp.all(self.d == 0, axis=-1)
    else:                             # GenericHead (_check_options refuses other heads)
      self.kind = "generic"
      self.zero = None                # unknown: no exact-zero shortcut

  # -- embeddings for arbitrary keep masks (fallback paths) --
  def _embed_keep(self, keep):
    """``keep [B, K]`` -> embeddings ``[B, n, D]`` (Spearman-pooled and generic heads; the
    pooled Pearson/cosine and fc heads have their own prefix-sum paths)."""
    if self.kind == "pooled_rerank":
      return self.e[None] * keep[:, None, :]
    return self.head.embed(self.maps.astype(self.cfg.head_dtype), keep.astype(self.cfg.head_dtype))

  def full(self):
    """``[P]``."""
    if self.kind in ("pooled", "pooled_rerank"):
      return _sim_upper(self.e, self.cfg)
    if self.kind == "fc":
      return _sim_upper(_fc_embed(self.head, self.a, self.cfg), self.cfg)
    return _sim_upper(self._embed_keep(jnp.ones((1, self.k)))[0], self.cfg)

  def ablated(self):
    """``[K, P]``: similarity with map k zeroed in every image."""
    cfg, k = self.cfg, self.k
    if self.kind == "pooled":
      return self._pooled_ablated()
    if self.kind == "pooled_rerank":
      return self._pooled_spearman_ablated()
    if self.kind == "fc":
      def one(j):
        return _sim_upper(_fc_embed(self.head, self.a - self.d[:, j], cfg), cfg)
      return _chunked(one, jnp.arange(k), cfg.chunk)
    def one_keep(keep):
      return _sim_upper(self._embed_keep(keep[None])[0], cfg)
    return _chunked(one_keep, 1.0 - jnp.eye(k), cfg.chunk)

  def _pooled_ablated(self):
    e, r, c, k = self.e, self.rows, self.cols, self.k
    nonzero = jnp.sum(e != 0, axis=1)                                # [n]
    bad = (nonzero[:, None] - (e != 0)) == 0                         # [n, K] all zero w/o k
    if self.cfg.similarity == "cosine":
      g = jnp.einsum("id,jd->ij", e, e, precision=jax.lax.Precision.HIGHEST)[r, c]
      q = jnp.sum(e * e, axis=1)
      cov = g[None] - (e[r] * e[c]).T                                 # [K, P]
      qa = q[:, None] - e * e                                         # [n, K]
      s = cov / jnp.sqrt(qa[r] * qa[c]).T
    else:
      mean = jnp.mean(e, axis=1, keepdims=True)
      cen = e - mean
      cen = cen - jnp.mean(cen, axis=1, keepdims=True)                # two-pass centring
      g = jnp.einsum("id,jd->ij", cen, cen, precision=jax.lax.Precision.HIGHEST)[r, c]
      v = jnp.sum(cen * cen, axis=1)
      shrink = 1.0 - 1.0 / k
      # Zeroing coordinate k of rows i, j: cov' = C - e_jk c_ik - e_ik c_jk + e_ik e_jk (1 - 1/K).
      cov = g[None] - (e[c] * cen[r] + e[r] * cen[c] - shrink * e[r] * e[c]).T
      va = v[:, None] - 2 * e * cen + shrink * e * e                  # [n, K]
      s = cov / jnp.sqrt(va[r] * va[c]).T
    return jnp.where((bad[r] | bad[c]).T, jnp.nan, s)

  def _pooled_spearman_ablated(self):
    """Spearman similarity with one coordinate zeroed: exact rank updates from the baseline order
    (:func:`ais_jax.ais.spearman_removal_terms`), no re-ranking."""
    k = self.k
    stats = ais_lib._spearman_base(self.e)
    g = stats["gram"]
    chunk = max(1, min(self.cfg.chunk, k))
    n_chunks = -(-k // chunk)
    slots = jnp.arange(n_chunks * chunk).reshape(n_chunks, chunk)

    def one_chunk(ks):
      p, q, norm, bad = ais_lib.spearman_removal_terms(stats, ks % k, ks < k)
      z = (g[None] + p + jnp.swapaxes(p, 1, 2) + q) / jnp.sqrt(norm[:, :, None] * norm[:, None, :])
      z = jnp.where(bad[:, :, None] | bad[:, None, :], jnp.nan, z)
      return z[:, self.rows, self.cols]                               # [chunk, P]

    return jax.lax.map(one_chunk, slots).reshape(n_chunks * chunk, -1)[:k]

  def prefixes(self, order, full_upper):
    """``order [K]`` -> ``[K, P]``: row m-1 keeps the maps ``order[:m]``."""
    cfg, k = self.cfg, self.k
    if self.kind == "pooled":
      return self._pooled_prefixes(order, full_upper)
    if self.kind == "fc":
      return self._fc_prefixes(order)
    position = jnp.argsort(order)                                     # rank of each map

    def one_prefix(m):
      keep = (position < m + 1).astype(jnp.float64)
      return _sim_upper(self._embed_keep(keep[None])[0], cfg)
    return _chunked(one_prefix, jnp.arange(k), cfg.chunk)

  def _pooled_prefixes(self, order, full_upper):
    r, c, k = self.rows, self.cols, self.k
    eo = self.e[:, order].T                                           # [K, n], ordered maps
    g = _cumsum0(eo[:, r] * eo[:, c])                                 # [K, P]
    q = _cumsum0(eo * eo)                                             # [K, n]
    bad = jax.lax.cummax(jnp.abs(eo), axis=0) == 0                    # kept maps all zero
    if self.cfg.similarity == "cosine":
      s = g / jnp.sqrt(q[:, r] * q[:, c])
    else:
      s1 = _cumsum0(eo)
      cov = g - s1[:, r] * s1[:, c] / k
      var = q - s1 * s1 / k
      s = cov / jnp.sqrt(var[:, r] * var[:, c])
    s = jnp.where(bad[:, r] | bad[:, c], jnp.nan, s)                  # [K, P]
    return s.at[k - 1].set(full_upper)                                # all maps: exact two-pass

  def _fc_prefixes(self, order):
    cfg, k = self.cfg, self.k
    chunk = max(1, min(cfg.chunk, k))
    n_chunks = -(-k // chunk)
    pad = n_chunks * chunk - k
    d = jnp.concatenate([self.d, jnp.zeros_like(self.d[:, :1])], axis=1)   # index K = zero
    idx = jnp.concatenate([order, jnp.full((pad,), k, order.dtype)]).reshape(n_chunks, chunk)
    b1 = jnp.asarray(self.head.b1, cfg.head_dtype)

    def step(carry, ids):
      pre = carry[:, None, :] + jnp.cumsum(d[:, ids], axis=1)           # [n, chunk, D1]
      emb = _fc_embed(self.head, jnp.swapaxes(pre, 0, 1), cfg)          # [chunk, n, D2]
      return pre[:, -1], _sim_upper(emb, cfg)

    init = jnp.broadcast_to(b1, (self.d.shape[0], self.d.shape[2]))
    _, sims = jax.lax.scan(step, init, idx)
    return sims.reshape(n_chunks * chunk, -1)[:k]


def _selection_kernel(head, maps, h_upper, train_masks, test_masks, random_orders, *, cfg,
                      generic_head=None):
  """All splits x (AIS order + random orders) x K prefixes in one traced computation.

  Returns a dict of ``ais [S, K]``, ``orders [S, 1+R, K]``, ``train_curves`` / ``test_curves``
  ``[S, 1+R, K]`` (the full model's train score is each train curve's last entry).
  """
  if generic_head is not None:
    head = generic_head
  eng = _Engine(head, maps, cfg)
  full = eng.full()                                                   # [P]
  abl = eng.ablated()                                                 # [K, P]

  def one_split(args):
    train, test, rand = args
    base = _score(full[None], h_upper, train, cfg)[0]
    ais = base - _score(abl, h_upper, train, cfg)                     # [K]
    if eng.zero is not None:
      # A map contributing nothing to any image of the train pairs leaves every train
      # similarity unchanged: its AIS is exactly 0 (not rounding noise), so such maps tie.
      involved = jnp.zeros(maps.shape[0], bool).at[eng.rows].max(train).at[eng.cols].max(train)
      inactive = jnp.all(eng.zero | ~involved[:, None], axis=0)
      ais = jnp.where(inactive & ~jnp.isnan(base), 0.0, ais)
    key = jnp.where(jnp.isnan(ais), jnp.inf, -ais) + 0.0
    order = jnp.argsort(key, stable=True).astype(jnp.int32)
    orders = jnp.concatenate([order[None], rand], axis=0)             # [1+R, K]

    def curves(o):
      pref = eng.prefixes(o, full)                                    # [K, P]
      return _score(pref, h_upper, train, cfg), _score(pref, h_upper, test, cfg)

    tr, te = jax.lax.map(curves, orders)
    return {"ais": ais, "orders": orders, "train_curves": tr, "test_curves": te}

  return jax.lax.map(one_split, (train_masks, test_masks, random_orders),
                     batch_size=max(1, min(cfg.split_batch, train_masks.shape[0])))


@functools.lru_cache(maxsize=32)
def _compiled(cfg: _Config, generic_head):
  return jax.jit(functools.partial(_selection_kernel, cfg=cfg, generic_head=generic_head))


# ----------------------------------------------------------------------------------------------
# Public API


@dataclasses.dataclass
class SelectionResult:
  """Outputs of :func:`select_maps` (numpy; S splits, R random orders per split, K maps).

  Attributes:
    splits: the image splits (``Split``), or None for pair splits.
    train_masks, test_masks: ``[S, P]`` bool pair masks actually used.
    train_ais: ``[S, K]`` cohort AIS on each split's train pairs (``score``).
    orders: ``[S, K]`` AIS map order per split.
    train_curves, test_curves: ``[S, K]`` score keeping the first m = 1..K maps (NaN where
      undefined).
    m_star: ``[S]`` 1-based first maximum of the defined train scores (0: all undefined).
    test_retained: ``[S]`` test score at m* (NaN where m* = 0).
    test_full: ``[S]`` test score with all maps.
    random_orders, random_train_curves, random_test_curves: ``[S, R, K]``.
    random_m_star: ``[S, R]``; random_test_retained: ``[S, R]``.
    n_train, n_test: ``[S]`` images (image folds) or pairs (pair splits) in train / test.
    settings: the options used; undefined: counts of NaN values; timings: seconds.
  """
  splits: Optional[list]
  train_masks: np.ndarray
  test_masks: np.ndarray
  train_ais: np.ndarray
  orders: np.ndarray
  train_curves: np.ndarray
  test_curves: np.ndarray
  m_star: np.ndarray
  test_retained: np.ndarray
  test_full: np.ndarray
  random_orders: np.ndarray
  random_train_curves: np.ndarray
  random_test_curves: np.ndarray
  random_m_star: np.ndarray
  random_test_retained: np.ndarray
  n_train: np.ndarray
  n_test: np.ndarray
  settings: dict
  undefined: dict
  timings: dict


def _retained(test_curves, m_star):
  idx = np.maximum(m_star - 1, 0)
  val = np.take_along_axis(test_curves, idx[..., None], axis=-1)[..., 0]
  return np.where(m_star > 0, val, np.nan)


def _check_options(score, comparison, similarity, maps, head):
  if score not in SCORES:
    raise ValueError(f"score={score!r} is not one of {SCORES}")
  if comparison not in rsa.COMPARISONS:
    raise ValueError(f"comparison={comparison!r} is not one of {rsa.COMPARISONS}")
  if similarity not in rsa.SIMILARITIES:
    raise ValueError(f"similarity={similarity!r} is not one of {rsa.SIMILARITIES}")
  if comparison == "spearman" and score == "r2":
    raise ValueError("Spearman agreement has no r^2 variant; use score='r' with "
                     "comparison='spearman' (or comparison='pearson' for r^2)")
  if maps.ndim != 4:
    raise ValueError(f"maps: expected [n, h, w, K], got shape {maps.shape}")
  if not isinstance(head, (ablation.PooledHead, ablation.FcHead, ablation.GenericHead)):
    raise TypeError(f"head: expected PooledHead, FcHead or GenericHead, got {type(head)}")


def select_maps(head, maps, human, *, test_indices: Optional[Sequence[Sequence[int]]] = None,
                folds: int = 5, seeds: int = 8, seed: int = 0, pair_split: bool = False,
                test_fraction: float = 0.2, score: str = "r2", similarity: str = "pearson",
                comparison: str = "pearson", precision: str = "exact", random_orders: int = 1,
                random_seed: Optional[int] = None, chunk: Optional[int] = None,
                memory_budget_gb: float = 2.0) -> SelectionResult:
  """Cross-validated map selection for one model and one human matrix.

  Args:
    head: ``spec.get_ablation_head(variables)`` (PooledHead | FcHead | GenericHead).
    maps: ``[n, h, w, K]`` feature maps (float32 from the trunk, or float64).
    human: ``[n, n]`` human similarity (NaN = missing pair; diagonal ignored).
    test_indices: explicit image test sets (one per split); default: :func:`image_folds`
      with ``folds``, ``seeds``, ``seed``.
    pair_split: use :func:`pair_split_masks` (``test_fraction`` of pairs; leaks images, see there)
      instead of image folds.
    score: 'r2' (published) or 'r': used for the cohort AIS ranking and both curves.
    similarity: 'pearson' | 'spearman' | 'cosine' first-order similarity of embeddings.
    comparison: 'pearson' | 'spearman' agreement with the human matrix.
    precision: 'exact' | 'float32' | 'fast' (head dtype; similarity/agreement float64).
    random_orders: random map orders per split for the chance control (0: none). Orders are
      ``numpy.random.default_rng(random_seed).permutation(K)`` drawn split by split;
      ``random_seed`` defaults to ``(seed, 1)``.
    chunk: prefixes (or ablations) per head pass; default: as many as ``memory_budget_gb``
      holds (between 1 and K) at an estimated ``32 n (D1 + D2) + 32 P`` bytes per prefix for
      fc heads (fc6 and fc7 widths) and ``32 n max(K, 64) + 32 P`` for the others.

  Returns:
    :class:`SelectionResult`.
  """
  if not isinstance(maps, jax.Array):
    maps = np.asarray(maps)  # converted inside the float64 scope (keeps float64 inputs float64)
  _check_options(score, comparison, similarity, maps, head)
  pcfg = precision_lib.resolve(precision)
  n, k = maps.shape[0], maps.shape[-1]
  h = validate_human_similarity(human, n_images=n)
  t0 = time.perf_counter()
  splits = None
  if pair_split:
    train_m, test_m = pair_split_masks(h, seeds=seeds, seed=seed, test_fraction=test_fraction)
    n_train, n_test = train_m.sum(1), test_m.sum(1)
  else:
    if test_indices is None:
      splits = image_folds(n, folds=folds, seeds=seeds, seed=seed)
    else:
      splits = [Split(seed=-1, fold=i, test_indices=np.sort(np.asarray(t, int)))
                for i, t in enumerate(test_indices)]
    train_m, test_m = image_split_masks(h, [s.test_indices for s in splits])
    n_test = np.array([len(s.test_indices) for s in splits])
    n_train = n - n_test
  s_count = train_m.shape[0]
  rng = np.random.default_rng((seed, 1) if random_seed is None else random_seed)
  rand = np.stack([[rng.permutation(k) for _ in range(random_orders)] for _ in range(s_count)])
  rand = rand.reshape(s_count, random_orders, k).astype(np.int32)

  p = n * (n - 1) // 2
  if chunk is None:
    if isinstance(head, ablation.FcHead):
      width = int(np.shape(head.w1)[1]) + int(np.shape(head.w2)[1])
      per_item = n * width * 8 * 4 + p * 8 * 4
    else:
      per_item = n * max(k, 64) * 8 * 4 + p * 8 * 4
    chunk = int(max(1, min(k, memory_budget_gb * 2**30 // max(per_item, 1))))
  split_batch = 1
  cfg = _Config(similarity=similarity, comparison=comparison, score=score,
                head_dtype=pcfg.head_dtype, head_precision=pcfg.head_precision, chunk=chunk,
                split_batch=split_batch)
  generic = head if isinstance(head, ablation.GenericHead) else None
  fn = _compiled(cfg, generic)
  h_upper = h[np.triu_indices(n, k=1)]
  t_prep = time.perf_counter()
  with precision_lib.float64_scope():
    out = fn(None if generic is not None else head, maps, jnp.asarray(h_upper),
             jnp.asarray(train_m), jnp.asarray(test_m), jnp.asarray(rand))
    out = jax.tree_util.tree_map(np.asarray, jax.block_until_ready(out))
  t_run = time.perf_counter()

  train_c, test_c = out["train_curves"], out["test_curves"]
  m_star = first_maximum(train_c)                                      # [S, 1+R]
  retained = _retained(test_c, m_star)
  undefined = {
      "train_ais": int(np.isnan(out["ais"]).sum()),
      "train_curves": int(np.isnan(train_c[:, 0]).sum()),
      "test_curves": int(np.isnan(test_c[:, 0]).sum()),
      "m_star_undefined": int((m_star[:, 0] == 0).sum()),
      "test_full": int(np.isnan(test_c[:, 0, -1]).sum()),
      "random_train_curves": int(np.isnan(train_c[:, 1:]).sum()),
      "random_test_curves": int(np.isnan(test_c[:, 1:]).sum()),
      "where_curves_undefined_m": sorted(set(
          (np.argwhere(np.isnan(test_c[:, 0]) | np.isnan(train_c[:, 0]))[:, 1] + 1).tolist())),
  }
  settings = dict(n=n, K=k, splits=s_count, folds=None if pair_split else folds,
                  seeds=seeds, seed=seed, pair_split=pair_split,
                  test_fraction=test_fraction if pair_split else None, score=score,
                  similarity=similarity, comparison=comparison, precision=precision,
                  random_orders=random_orders, chunk=chunk,
                  head=type(head).__name__, explicit_folds=test_indices is not None)
  return SelectionResult(
      splits=splits, train_masks=train_m, test_masks=test_m, train_ais=out["ais"],
      orders=out["orders"][:, 0], train_curves=train_c[:, 0], test_curves=test_c[:, 0],
      m_star=m_star[:, 0], test_retained=retained[:, 0], test_full=test_c[:, 0, -1],
      random_orders=out["orders"][:, 1:], random_train_curves=train_c[:, 1:],
      random_test_curves=test_c[:, 1:], random_m_star=m_star[:, 1:],
      random_test_retained=retained[:, 1:], n_train=np.asarray(n_train),
      n_test=np.asarray(n_test), settings=settings, undefined=undefined,
      timings={"prepare_s": t_prep - t0, "compiled_call_s": t_run - t_prep,
               "total_s": t_run - t0})


def summarize(result: SelectionResult, *, alternative: str = "two-sided") -> dict:
  """Means and tests of a :class:`SelectionResult` (JSON-ready).

  Tests compare retained against full test scores (``a = retained``, ``b = full``; a one-tailed
  ``alternative='greater'`` asks whether retained is better): the paper's paired t-test, the
  corrected resampled t-test (train/test sizes from the splits), and the same two for the AIS
  order against the random-order control (retained vs random retained, random averaged over the
  random orders of a split). Loftus-Masson errors use the splits as subjects.
  """
  import warnings
  from ais_jax import stats
  with warnings.catch_warnings():  # all-NaN means are NaN, without numpy's "Mean of empty slice"
    warnings.simplefilter("ignore", RuntimeWarning)
    out = {
        "mean_test_full": float(np.nanmean(result.test_full)),
        "mean_test_retained": float(np.nanmean(result.test_retained)),
        "mean_m_star": stats.mean_retained_size(result.m_star),
        "n_splits": int(result.m_star.size),
        "split_usage": split_usage(result.test_full, result.test_retained, result.test_masks),
    }
  tests = {}
  pair = np.stack([result.test_full, result.test_retained], axis=1)
  try:
    lm = stats.loftus_masson_se(pair)
    out["loftus_masson"] = {"se": lm.se, "ci95_halfwidth": lm.ci_halfwidth, "df": lm.df,
                            "n_subjects": lm.n_subjects, "n_dropped": lm.n_dropped}
    tests["retained_vs_full_paired"] = stats.paired_ttest(
        result.test_retained, result.test_full, alternative=alternative).as_dict()
    tests["retained_vs_full_corrected"] = stats.corrected_resampled_ttest(
        result.test_retained, result.test_full, n_train=result.n_train, n_test=result.n_test,
        alternative=alternative).as_dict()
  except ValueError as e:  # fewer than 2 defined splits
    tests["retained_vs_full_error"] = str(e)
  if result.random_test_retained.size:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)
      rand = np.nanmean(result.random_test_retained, axis=1)
      out["mean_test_random_retained"] = float(np.nanmean(rand))
    out["mean_random_m_star"] = stats.mean_retained_size(result.random_m_star)
    try:
      lm = stats.loftus_masson_se(np.stack([result.test_full, rand], axis=1))
      out["loftus_masson_random"] = {"se": lm.se, "ci95_halfwidth": lm.ci_halfwidth}
      tests["retained_vs_random_paired"] = stats.paired_ttest(
          result.test_retained, rand, alternative=alternative).as_dict()
      tests["retained_vs_random_corrected"] = stats.corrected_resampled_ttest(
          result.test_retained, rand, n_train=result.n_train, n_test=result.n_test,
          alternative=alternative).as_dict()
    except ValueError as e:
      tests["retained_vs_random_error"] = str(e)
  out["tests"] = tests
  return out
