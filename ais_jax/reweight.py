"""Learned map weights: the gradient-based rival of AIS pruning, on the same held-out splits.

AIS pruning keeps a prefix of maps ranked on the training images. The rival (in the spirit of
feature-reweighted RSA, Kaniuth & Hebart 2022) learns one nonnegative weight per map that
maximises the split's score on the training images, and is tested on the same held-out images.

The model (shapes: n images, K maps, P = n(n-1)/2 pairs):

* weights ``w [K]``: ``w = c * softmax_over_kept(theta)`` on a keep mask of c maps (0 elsewhere),
  so ``w >= 0`` and the kept weights have mean 1. Pearson/cosine similarity does not change when
  ``w`` is scaled, so the scale is fixed; ``theta = 0`` is the unweighted model (all maps, or the
  AIS-retained prefix for the retained variant).
* embedding: pooled head (:class:`ais_jax.ablation.PooledHead`): ``w * pooled maps [n, K]``;
  fc head (:class:`ais_jax.ablation.FcHead`): the maps are scaled before the head, i.e. the fc6
  pre-activation is ``b1 + sum_k w_k d_k`` (DESIGN.md section 2), then fc7.
* objective on the train pairs: ``score(w) - lambda * mean_kept((w - 1)^2)`` (score = r^2 or r of
  the Pearson agreement of the upper triangles, as in :mod:`ais_jax.selection`), maximised with
  optax Adam from ``theta = 0``. The best iterate of the penalised objective is returned; it is
  never below its start, so the unpenalised train score is never below the unweighted model's
  (``score(w) >= score(w) - penalty >= score(1)``). This guarantee is re-checked in float64: a fit
  whose float64 penalised objective falls below the float64 baseline (float32 rounding) falls back
  to the unweighted model and is counted (:attr:`ReweightResult.fell_back`).
* lambda from an inner cross-validation on the training images: the split's train images are cut
  into ``inner_folds`` parts (``numpy.random.default_rng((inner_seed, split_index)).permutation``
  of the train images, ``numpy.array_split``); for each lambda of the grid, fit on the other parts
  and score (unpenalised) on the pairs inside the held-out part; the lambda with the best mean
  score wins (ties to the larger lambda, i.e. closer to the unweighted model). Pair splits use a
  permutation of the train pairs instead.

How it runs: every fit of every split, variant, inner fold and lambda is one problem. Problems
go through **one jitted function** in padded chunks of ``problem_batch`` (``jax.vmap`` over the
problems of a chunk, ``jax.lax.scan`` over the optimiser steps, float32): first all inner-stage
problems of all splits, then, with the lambdas chosen, one final fit per split and variant. The
chunk shape is fixed, so a cohort (n, K) compiles it once whatever the number of splits (the
all-images fit for heatmaps reuses it). Reported train and test scores are recomputed from the
weights in float64 with the selection engine's similarity and agreement kernels (one more
jitted function, also of fixed shape). :func:`compile_counts` reports the compilations.

Supported: similarity 'pearson' | 'cosine' and comparison 'pearson' (Spearman ranks have no
useful gradient); PooledHead and FcHead.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import time
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ais_jax import ablation, rsa
from ais_jax import precision as precision_lib
from ais_jax import selection as selection_lib
from ais_jax.validation import validate_human_similarity

LAMBDA_GRID = (0.1, 1.0, 10.0, 100.0)
SIMILARITIES = ("pearson", "cosine")
VARIANTS = ("learned", "learned_retained")
_TINY = 1e-30


@dataclasses.dataclass(frozen=True)
class FitConfig:
  """Static options of the compiled fit (hashable: one compilation per config and shape)."""
  similarity: str = "pearson"
  score: str = "r2"
  steps: int = 100
  learning_rate: float = 0.05
  problem_batch: int = 32   # problems vmapped together (padded chunks: one compiled shape)


# ----------------------------------------------------------------------------------------------
# Model parts and weights (traced)


def model_parts(head, maps, dtype):
  """What the weighted embedding needs: ``{'pooled': [n, K]}`` or ``{'fc_pre': [n, K, D1]}``
  (per-map fc6 contributions) in ``dtype``."""
  if isinstance(head, ablation.PooledHead):
    return {"pooled": jnp.mean(jnp.asarray(maps).astype(dtype), axis=(1, 2))}
  if isinstance(head, ablation.FcHead):
    _, d = ablation.fc_contributions(head, maps, dtype=dtype,
                                     precision=jax.lax.Precision.HIGHEST)
    return {"fc_pre": d}
  raise TypeError(f"learned weights need a PooledHead or FcHead; got {type(head).__name__} "
                  "(a GenericHead's embed does not take real-valued map weights)")


def weighted_embedding(head, parts, weights):
  """Embeddings ``[..., n, D]`` for map weights ``[..., K]`` (see the module docstring)."""
  if "pooled" in parts:
    return parts["pooled"] * weights[..., None, :]
  d = parts["fc_pre"]
  pre = jnp.asarray(head.b1, d.dtype) + jnp.einsum("nkd,...k->...nd", d, weights.astype(d.dtype),
                                                   precision=jax.lax.Precision.HIGHEST)
  return ablation.fc_embed(head, pre, dtype=d.dtype, precision=jax.lax.Precision.HIGHEST)


def weights_from_logits(theta, keep):
  """``w = c * softmax(theta)`` over the kept maps (``keep [..., K]`` bool, c kept), 0 elsewhere:
  ``[..., K]``, nonnegative with mean 1 over the kept maps."""
  keep_f = keep.astype(theta.dtype)
  count = jnp.sum(keep_f, axis=-1, keepdims=True)
  top = jnp.max(jnp.where(keep, theta, -jnp.inf), axis=-1, keepdims=True)
  z = jnp.where(keep, jnp.exp(jnp.where(keep, theta - top, 0)), 0)
  return count * z / jnp.sum(z, axis=-1, keepdims=True)


def _similarity32(emb, rows, cols, similarity):
  """Float32 similarity upper triangle ``[P]`` of ``emb [n, D]``, with safe norms (the fit only;
  undefined values are decided by the float64 scoring)."""
  x = emb
  if similarity == "pearson":
    x = x - jnp.mean(x, axis=-1, keepdims=True)
    x = x - jnp.mean(x, axis=-1, keepdims=True)
  u = x / jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), _TINY))
  return jnp.einsum("id,jd->ij", u, u, precision=jax.lax.Precision.HIGHEST)[rows, cols]


def _agreement32(s, h, mask, score):
  m = mask.astype(s.dtype)
  n = jnp.maximum(jnp.sum(m), 1)

  def centre(v):
    v = jnp.where(mask, v, 0)                   # excluded pairs may be NaN (missing human)
    v = jnp.where(mask, v - jnp.sum(v) / n, 0)
    return jnp.where(mask, v - jnp.sum(v) / n, 0)
  ds, dh = centre(s), centre(h)
  r = jnp.sum(ds * dh) / jnp.sqrt(jnp.maximum(jnp.sum(ds * ds) * jnp.sum(dh * dh), _TINY))
  return r * r if score == "r2" else r


# ----------------------------------------------------------------------------------------------
# The compiled fit


def _fit_one(head, parts, h, rows, cols, train, keep, lam, cfg: FitConfig):
  """One problem: ``train [P]`` pair mask, ``keep [K]``, ``lam`` -> best weights ``[K]``."""

  def objective(theta):
    w = weights_from_logits(theta, keep)
    s = _similarity32(weighted_embedding(head, parts, w), rows, cols, cfg.similarity)
    count = jnp.maximum(jnp.sum(keep), 1)
    penalty = jnp.sum(jnp.where(keep, (w - 1) ** 2, 0)) / count
    return _agreement32(s, h, train, cfg.score) - lam * penalty

  opt = optax.adam(cfg.learning_rate)
  theta0 = jnp.zeros(keep.shape, h.dtype)

  def step(carry, _):
    theta, state, best_theta, best = carry
    value, grad = jax.value_and_grad(objective)(theta)
    better = value > best                       # NaN never wins; the start wins ties
    best_theta = jnp.where(better, theta, best_theta)
    best = jnp.where(better, value, best)
    grad = jnp.where(jnp.isfinite(grad), -grad, 0)        # optax minimises: ascend the objective
    updates, state = opt.update(grad, state, theta)
    return (optax.apply_updates(theta, updates), state, best_theta, best), None

  first = objective(theta0)
  init = (theta0, opt.init(theta0), theta0, jnp.where(jnp.isnan(first), -jnp.inf, first))
  (theta, _, best_theta, best), _ = jax.lax.scan(step, init, None, length=cfg.steps)
  last = objective(theta)
  best_theta = jnp.where(last > best, theta, best_theta)
  return weights_from_logits(best_theta, keep)


def _fit_chunk(head, parts, h, train, keep, lam, val, *, cfg: FitConfig):
  """A fixed-size chunk of problems (float32): ``train [B, P]``, ``keep [B, K]``, ``lam [B]``,
  ``val [B, P]`` -> ``(weights [B, K], val_score [B])``, the unpenalised score of the fitted
  weights on the ``val`` pairs (inner validation; ignored when ``val`` is empty)."""
  n = next(iter(parts.values())).shape[0]
  rows, cols = rsa.upper_triangle_indices(n)

  def one(tr, kp, lm, va):
    w = _fit_one(head, parts, h, rows, cols, tr, kp, lm, cfg)
    sim = _similarity32(weighted_embedding(head, parts, w), rows, cols, cfg.similarity)
    return w, _agreement32(sim, h, va, cfg.score)
  return jax.vmap(one)(train, keep, lam, val)


def _score_split(head, parts, h, train, test, weights, *, sel_cfg):
  """Float64 train/test scores of ``weights [B, K]`` on one split's ``train/test [P]`` masks ->
  ``([B], [B])``, with the selection engine's similarity and agreement (undefined rule
  included)."""
  sims = selection_lib._sim_upper(weighted_embedding(head, parts, weights), sel_cfg)  # [B, P]
  return selection_lib._score(sims, h, train, sel_cfg), selection_lib._score(sims, h, test, sel_cfg)


_JITTED: dict = {}


def _jitted(kernel, **static):
  """One ``jax.jit`` per kernel and static config, built once and reused."""
  key = (kernel.__name__,) + tuple(sorted(static.items()))
  if key not in _JITTED:
    _JITTED[key] = jax.jit(functools.partial(kernel, **static))
  return _JITTED[key]


def compile_counts() -> dict:
  """Compilations so far (jit cache entries: one per static config and input shape) of the
  float32 fit and the float64 scoring functions. Both run on fixed-size padded chunks, so a
  cohort (n, K) compiles each once, whatever the number of splits, variants and lambdas."""
  out = {"fit": 0, "score": 0}
  for key, fn in _JITTED.items():
    out["fit" if key[0] == "_fit_chunk" else "score"] += fn._cache_size()
  return out


def _pad(x, size):
  """Pads axis 0 of ``x`` to ``size`` by repeating its first row (padded problems are valid
  copies whose results are dropped)."""
  extra = size - x.shape[0]
  return x if extra == 0 else np.concatenate([x, np.repeat(x[:1], extra, axis=0)])


def _run_problems(fn, parts, h, train, keep, lam, val, chunk, head):
  """Runs problems ``[B, ...]`` through the jitted chunk function in padded chunks of ``chunk``
  (one compilation for every B) -> ``(weights [B, K], val_score [B])``."""
  b = train.shape[0]
  weights, scores = [], []
  for start in range(0, b, chunk):
    sl = slice(start, start + chunk)
    args = [_pad(x[sl], chunk) for x in (train, keep, lam, val)]
    w, v = fn(head, parts, h, *[jnp.asarray(x) for x in args])
    stop = min(chunk, b - start)
    weights.append(np.asarray(w)[:stop])
    scores.append(np.asarray(v)[:stop])
  return np.concatenate(weights), np.concatenate(scores)


def choose_lambda(val_scores, lambdas) -> np.ndarray:
  """Index of the best lambda per row of mean validation scores ``[..., G]`` (NaN = undefined);
  ties, and rows where every lambda is undefined, go to the largest lambda."""
  v = np.where(np.isnan(val_scores), -np.inf, val_scores)
  order = np.argsort(np.asarray(lambdas))[::-1]                     # largest lambda first
  return order[np.argmax(v[..., order], axis=-1)]


# ----------------------------------------------------------------------------------------------
# Public API


@dataclasses.dataclass
class ReweightResult:
  """Learned weights on S splits for V variants (numpy).

  Attributes:
    variants: V names (e.g. ``('learned', 'learned_retained')``).
    keep: ``[S, V, K]`` bool maps each variant may weight (its unweighted start).
    weights: ``[S, V, K]`` float64 learned weights (>= 0, mean 1 over the kept maps).
    train, test: ``[S, V]`` float64 scores of the learned weights (NaN where undefined).
    baseline_train, baseline_test: ``[S, V]`` the same for the unweighted start (keep mask).
    lam: ``[S, V]`` lambda chosen by the inner cross-validation; val_scores: ``[S, V, G]``.
    lambdas: the grid; fell_back: ``[S, V]`` bool, float64 check failed -> unweighted weights.
    settings, timings: options used; seconds (``fit_s`` includes compilation on first use;
      ``cpu_s``: CPU time of this process, all threads, which on a shared machine says more
      than the wall time).
  """
  variants: tuple
  keep: np.ndarray
  weights: np.ndarray
  train: np.ndarray
  test: np.ndarray
  baseline_train: np.ndarray
  baseline_test: np.ndarray
  lam: np.ndarray
  val_scores: np.ndarray
  lambdas: tuple
  fell_back: np.ndarray
  settings: dict
  timings: dict


def inner_masks(human, train_masks, *, test_indices=None, inner_folds: int = 3,
                inner_seed: int = 0):
  """Inner cross-validation pair masks ``(inner_train [S, F, P], inner_val [S, F, P])``.

  Image splits (``test_indices`` given, one per split): the split's train images are permuted by
  ``numpy.random.default_rng((inner_seed, s))`` and cut into F parts (``numpy.array_split``);
  inner val = finite pairs inside part f, inner train = outer train pairs touching no image of
  part f. Pair splits (``test_indices=None``): the outer train pairs are permuted and cut instead.
  """
  if inner_folds < 2:
    raise ValueError(f"inner_folds={inner_folds}: need at least 2")
  h = np.asarray(human, np.float64)
  n = h.shape[0]
  rows, cols = np.triu_indices(n, k=1)
  finite = np.isfinite(h[rows, cols])
  train_masks = np.asarray(train_masks, bool)
  inner_tr = np.zeros((train_masks.shape[0], inner_folds, rows.size), bool)
  inner_va = np.zeros_like(inner_tr)
  for s, outer in enumerate(train_masks):
    rng = np.random.default_rng((inner_seed, s))
    if test_indices is not None:
      is_test = np.zeros(n, bool)
      is_test[np.asarray(test_indices[s], int)] = True
      train_images = np.flatnonzero(~is_test)
      if train_images.size < 2 * inner_folds:
        raise ValueError(f"split {s}: {train_images.size} train images cannot be cut into "
                         f"{inner_folds} inner folds of at least 2 images; lower inner_folds")
      for f, part in enumerate(np.array_split(rng.permutation(train_images), inner_folds)):
        in_part = np.zeros(n, bool)
        in_part[part] = True
        inner_va[s, f] = finite & in_part[rows] & in_part[cols]
        inner_tr[s, f] = outer & ~in_part[rows] & ~in_part[cols]
    else:
      for f, part in enumerate(np.array_split(rng.permutation(np.flatnonzero(outer)),
                                              inner_folds)):
        inner_va[s, f, part] = True
        inner_tr[s, f] = outer & ~inner_va[s, f]
  return inner_tr, inner_va


def _check(head, similarity, comparison, score):
  if similarity not in SIMILARITIES:
    raise ValueError(f"learned weights need similarity in {SIMILARITIES}, got {similarity!r} "
                     "(ranks have no useful gradient)")
  if comparison != "pearson":
    raise ValueError(f"learned weights need comparison='pearson', got {comparison!r} "
                     "(ranks have no useful gradient)")
  if score not in selection_lib.SCORES:
    raise ValueError(f"score={score!r} is not one of {selection_lib.SCORES}")
  if not isinstance(head, (ablation.PooledHead, ablation.FcHead)):
    raise ValueError(f"learned weights need a PooledHead or FcHead, got {type(head).__name__}")


def fit_weights(head, maps, human, train_masks, test_masks, keep, *, variants: Sequence[str],
                test_indices=None, similarity: str = "pearson", comparison: str = "pearson",
                score: str = "r2", lambdas: Sequence[float] = LAMBDA_GRID,
                inner_folds: int = 3, inner_seed: int = 0, steps: int = 100,
                learning_rate: float = 0.05, problem_batch: int = 32) -> ReweightResult:
  """Learned map weights for every split and variant (module docstring).

  All fits (S splits x V variants x inner folds x lambdas, then S x V final fits) run through
  one jitted function on padded chunks of ``problem_batch`` vmapped problems, so a cohort
  compiles it once whatever S, V and the grid are (:func:`compile_counts`).

  Args:
    head: PooledHead | FcHead (``spec.get_ablation_head(variables)``).
    maps: ``[n, h, w, K]`` feature maps.
    human: ``[n, n]`` human similarity (NaN = missing).
    train_masks, test_masks: ``[S, P]`` bool pair masks (e.g. ``SelectionResult.train_masks``).
    keep: ``[S, V, K]`` bool: the maps variant v may weight on split s (all True: all maps).
    variants: V names for the result.
    test_indices: per split test images (image splits; inner folds over images) or None.
    lambdas: penalty grid for the inner cross-validation; inner_folds, inner_seed: its folds.
    steps, learning_rate: Adam steps and step size on the logits; problem_batch: problems
      vmapped together (memory; part of the compiled shape).

  Returns:
    :class:`ReweightResult`.
  """
  _check(head, similarity, comparison, score)
  maps = np.asarray(maps)
  n, k = maps.shape[0], maps.shape[-1]
  h = validate_human_similarity(human, n_images=n)
  train_masks = np.asarray(train_masks, bool)
  test_masks = np.asarray(test_masks, bool)
  keep = np.asarray(keep, bool)
  s_count, v_count = train_masks.shape[0], len(variants)
  if keep.shape != (s_count, v_count, k):
    raise ValueError(f"keep: expected [S, V, K] = {(s_count, v_count, k)}, got {keep.shape}")
  if not keep.any(axis=-1).all():
    raise ValueError("keep: every split and variant needs at least one kept map")
  grid = np.asarray(lambdas, np.float64)
  if grid.ndim != 1 or grid.size < 1 or not np.all(grid >= 0):
    raise ValueError(f"lambdas={tuple(lambdas)}: need a nonempty grid of values >= 0")
  t0, cpu0 = time.perf_counter(), time.process_time()
  inner_tr, inner_va = inner_masks(h, train_masks, test_indices=test_indices,
                                   inner_folds=inner_folds, inner_seed=inner_seed)
  f_count, g_count = inner_folds, grid.size
  cfg = FitConfig(similarity=similarity, score=score, steps=int(steps),
                  learning_rate=float(learning_rate), problem_batch=int(problem_batch))
  fn = _jitted(_fit_chunk, cfg=cfg)
  chunk = cfg.problem_batch
  with precision_lib.float64_scope():  # float32 fit; the scope only keeps inputs as given
    parts = model_parts(head, jnp.asarray(maps, jnp.float32), jnp.float32)
    h32 = jnp.asarray(h[np.triu_indices(n, k=1)], jnp.float32)
    # Inner stage: problems in (split, variant, fold, lambda) order.
    shape = (s_count, v_count, f_count, g_count)
    tr = np.broadcast_to(inner_tr[:, None, :, None], shape + inner_tr.shape[-1:])
    va = np.broadcast_to(inner_va[:, None, :, None], tr.shape)
    kp = np.broadcast_to(keep[:, :, None, None], shape + (k,))
    lam = np.broadcast_to(grid.astype(np.float32), shape)
    flat = lambda x: np.ascontiguousarray(x).reshape((-1,) + x.shape[len(shape):])
    _, val = _run_problems(fn, parts, h32, flat(tr), flat(kp), flat(lam), flat(va), chunk, head)
    val = val.reshape(shape).astype(np.float64)
    val = np.where(inner_va.any(-1)[:, None, :, None], val, np.nan)   # empty inner val part
    with np.errstate(all="ignore"):
      defined = np.sum(~np.isnan(val), axis=2)
      mean_val = np.where(defined > 0, np.nansum(val, axis=2) / np.maximum(defined, 1), np.nan)
    lam_index = choose_lambda(mean_val, grid)                           # [S, V]
    # Final stage: one fit per split and variant on all its train pairs.
    final_tr = np.repeat(train_masks, v_count, axis=0)
    learned, _ = _run_problems(fn, parts, h32, final_tr, keep.reshape(-1, k),
                               grid[lam_index].reshape(-1).astype(np.float32),
                               np.zeros_like(final_tr), chunk, head)
  learned = learned.reshape(s_count, v_count, k).astype(np.float64)
  t_fit = time.perf_counter()
  # Float64 scores of the learned and of the unweighted (keep-mask) weights.
  start = keep.astype(np.float64)
  train64, test64 = score_weights(head, maps, h, train_masks, test_masks,
                                  np.concatenate([learned, start], axis=1),
                                  similarity=similarity, score=score)
  train_l, test_l = train64[:, :v_count], test64[:, :v_count]
  base_train, base_test = train64[:, v_count:], test64[:, v_count:]
  lam_chosen = grid[lam_index]
  penalty = np.sum(np.where(keep, (learned - 1) ** 2, 0), -1) / keep.sum(-1)
  # The float32 best-iterate guarantee, checked in float64 (NaN baseline: nothing to beat).
  fell_back = ~(train_l - lam_chosen * penalty >= base_train) & ~np.isnan(base_train)
  weights = np.where(fell_back[..., None], start, learned)
  train_l = np.where(fell_back, base_train, train_l)
  test_l = np.where(fell_back, base_test, test_l)
  t_end = time.perf_counter()
  settings = dict(similarity=similarity, comparison=comparison, score=score,
                  lambdas=[float(x) for x in grid], inner_folds=inner_folds,
                  inner_seed=inner_seed, steps=int(steps), learning_rate=float(learning_rate),
                  problem_batch=chunk, optimizer="adam",
                  parametrisation="w = c * softmax(theta) over the c kept maps",
                  penalty="lambda * mean_kept((w - 1)^2)", head=type(head).__name__,
                  problems=int(np.prod(shape) + s_count * v_count))
  return ReweightResult(
      variants=tuple(variants), keep=keep, weights=weights, train=train_l, test=test_l,
      baseline_train=base_train, baseline_test=base_test, lam=lam_chosen, val_scores=mean_val,
      lambdas=tuple(float(x) for x in grid), fell_back=fell_back, settings=settings,
      timings={"fit_s": t_fit - t0, "score_s": t_end - t_fit, "total_s": t_end - t0,
               "cpu_s": time.process_time() - cpu0})


SCORE_WIDTH = 4  # weight vectors per scoring call (padded): one compilation per cohort


def score_weights(head, maps, human, train_masks, test_masks, weights, *,
                  similarity: str = "pearson", score: str = "r2"):
  """Float64 train and test scores ``([S, B], [S, B])`` of map weights ``[S, B, K]`` (the
  selection engine's similarity and agreement, NaN where undefined), split by split through
  one jitted function on ``SCORE_WIDTH`` padded weight vectors."""
  maps = np.asarray(maps)
  n = maps.shape[0]
  h = validate_human_similarity(human, n_images=n)
  weights = np.asarray(weights, np.float64)
  s_count, b = weights.shape[:2]
  sel_cfg = selection_lib._Config(similarity=similarity, comparison="pearson", score=score,
                                  head_dtype=jnp.float64,
                                  head_precision=jax.lax.Precision.HIGHEST, chunk=1,
                                  split_batch=1)
  fn = _jitted(_score_split, sel_cfg=sel_cfg)
  train = np.full((s_count, b), np.nan)
  test = np.full((s_count, b), np.nan)
  with precision_lib.float64_scope():
    parts = model_parts(head, jnp.asarray(maps, jnp.float64), jnp.float64)
    h64 = jnp.asarray(h[np.triu_indices(n, k=1)])
    for s in range(s_count):
      for start in range(0, b, SCORE_WIDTH):
        stop = min(b, start + SCORE_WIDTH)
        tr, te = fn(head, parts, h64, jnp.asarray(train_masks[s]), jnp.asarray(test_masks[s]),
                    jnp.asarray(_pad(weights[s, start:stop], SCORE_WIDTH)))
        train[s, start:stop] = np.asarray(tr)[:stop - start]
        test[s, start:stop] = np.asarray(te)[:stop - start]
  return train, test


def retained_keep(orders, m_star) -> np.ndarray:
  """``[S, K]`` bool: the first ``m*`` maps of each split's AIS order (all maps where m* = 0)."""
  orders = np.asarray(orders)
  m_star = np.asarray(m_star)
  s, k = orders.shape
  position = np.empty_like(orders)
  np.put_along_axis(position, orders, np.arange(k)[None].repeat(s, 0), axis=1)
  m = np.where(m_star > 0, m_star, k)
  return position < m[:, None]


def fit_selection(result, head, maps, human, **kwargs) -> ReweightResult:
  """Learned weights on the splits of a :class:`ais_jax.selection.SelectionResult`: variant
  ``learned`` on all maps, ``learned_retained`` on each split's AIS-retained prefix (keyword
  options as :func:`fit_weights`; similarity, comparison and score default to the selection's)."""
  st = result.settings
  kwargs.setdefault("similarity", st["similarity"])
  kwargs.setdefault("comparison", st["comparison"])
  kwargs.setdefault("score", st["score"])
  s, k = result.orders.shape
  keep = np.stack([np.ones((s, k), bool), retained_keep(result.orders, result.m_star)], axis=1)
  tests = None if result.splits is None else [sp.test_indices for sp in result.splits]
  return fit_weights(head, maps, human, result.train_masks, result.test_masks, keep,
                     variants=VARIANTS, test_indices=tests, **kwargs)


def fit_all_images(head, maps, human, **kwargs) -> ReweightResult:
  """One fit on every image (train = all finite pairs, no test pairs; inner CV over all images):
  the cohort weights for learned heatmaps (``weights[0, 0]``, ``[K]``)."""
  h = validate_human_similarity(human, n_images=np.shape(maps)[0])
  n, k = h.shape[0], np.shape(maps)[-1]
  rows, cols = np.triu_indices(n, k=1)
  train = np.isfinite(h[rows, cols])[None]
  return fit_weights(head, maps, h, train, np.zeros_like(train), np.ones((1, 1, k), bool),
                     variants=("learned",), test_indices=[np.zeros(0, int)], **kwargs)


def method_scores(result, learned: Optional[ReweightResult]) -> dict:
  """``{method: [S] test scores}`` in display order: full, retained, random (mean over the
  random orders of a split), learned, learned_retained."""
  out = {"full": np.asarray(result.test_full, np.float64),
         "retained": np.asarray(result.test_retained, np.float64)}
  if result.random_test_retained.size:
    with np.errstate(all="ignore"):
      out["random"] = np.nanmean(result.random_test_retained, axis=1)
  if learned is not None:
    for i, name in enumerate(learned.variants):
      out[name] = learned.test[:, i]
  return out


def compare_methods(scores: Mapping[str, np.ndarray], *, n_train, n_test,
                    alternative: str = "two-sided") -> dict:
  """Means, one Loftus-Masson SE over all methods, and the paired and corrected resampled
  t-tests of every pair of methods (``a - b`` for ``'a_vs_b'`` in display order). JSON-ready."""
  from ais_jax import stats
  names = list(scores)
  out = {"mean_test": {m: float(np.nanmean(v)) if np.isfinite(v).any() else None
                       for m, v in scores.items()},
         "n_defined": {m: int(np.isfinite(v).sum()) for m, v in scores.items()}, "tests": {}}
  try:
    lm = stats.loftus_masson_se(np.stack([scores[m] for m in names], axis=1))
    out["loftus_masson"] = {"se": lm.se, "ci95_halfwidth": lm.ci_halfwidth, "df": lm.df,
                            "n_subjects": lm.n_subjects, "n_dropped": lm.n_dropped}
  except ValueError as e:
    out["loftus_masson_error"] = str(e)
  for a, b in itertools.combinations(names, 2):
    try:
      out["tests"][f"{a}_vs_{b}"] = {
          "paired": stats.paired_ttest(scores[a], scores[b], alternative=alternative).as_dict(),
          "corrected": stats.corrected_resampled_ttest(
              scores[a], scores[b], n_train=n_train, n_test=n_test,
              alternative=alternative).as_dict()}
    except ValueError as e:
      out["tests"][f"{a}_vs_{b}"] = {"error": str(e)}
  return out


def summarize_methods(result, learned: Optional[ReweightResult], *,
                      alternative: str = "two-sided") -> dict:
  """:func:`compare_methods` of :func:`method_scores` with the selection's train/test sizes."""
  return compare_methods(method_scores(result, learned), n_train=result.n_train,
                         n_test=result.n_test, alternative=alternative)


def heatmap_comparison(head, maps, human, *, similarity: str = "pearson",
                       comparison: str = "pearson", score: str = "r2",
                       precision: str = "exact", **fit_kwargs) -> dict:
  """Learned-weight heatmaps against AIS heatmaps by the Match score.

  The weights are fitted on all images (:func:`fit_all_images`); the learned heatmap of image i
  is ``sum_k w_k F_ik / sum_k w_k`` (:func:`ais_jax.heatmaps.weighted_heatmaps`), the AIS heatmap
  weighs maps by image i's positive per-image AIS (:func:`ais_jax.heatmaps.heatmaps`), and the
  equal-weights heatmap (``mean_k F_ik``) is the reference a learned heatmap must beat to say
  more than the mean activation.

  Returns:
    ``{"weights" [K], "lambda", "train_score", "baseline_train_score", "learned_heatmaps",
    "ais_heatmaps", "mean_heatmaps" [n, h, w], "match_learned_vs_ais", "match_mean_vs_ais" [n],
    "summary": JSON-ready means, undefined counts and the paired t-test learned vs mean}``.
  """
  from ais_jax import aim2, heatmaps, stats
  from ais_jax import ais as ais_lib
  fit = fit_all_images(head, maps, human, similarity=similarity, comparison=comparison,
                       score=score, **fit_kwargs)
  w = fit.weights[0, 0]
  per_image = ais_lib.per_image_ais(head, maps, human, similarity=similarity,
                                    comparison=comparison, precision=precision)
  ais_maps = np.asarray(heatmaps.heatmaps(maps, per_image))
  learned_maps = np.asarray(heatmaps.weighted_heatmaps(maps, w))
  mean_maps = np.asarray(heatmaps.mean_activation_maps(maps))
  match_learned = aim2.match_scores(learned_maps, ais_maps)
  match_mean = aim2.match_scores(mean_maps, ais_maps)
  summary = {"mean_match_learned_vs_ais": float(np.nanmean(match_learned)),
             "mean_match_mean_vs_ais": float(np.nanmean(match_mean)),
             "undefined_learned": aim2.count_undefined(match_learned),
             "undefined_mean": aim2.count_undefined(match_mean),
             "lambda": float(fit.lam[0, 0]), "train_score": float(fit.train[0, 0]),
             "baseline_train_score": float(fit.baseline_train[0, 0]),
             "fell_back": bool(fit.fell_back[0, 0]), "fit_s": fit.timings["total_s"]}
  try:
    summary["learned_vs_mean_paired"] = stats.paired_ttest(match_learned, match_mean).as_dict()
  except ValueError as e:
    summary["learned_vs_mean_error"] = str(e)
  return {"weights": w, "lambda": float(fit.lam[0, 0]), "train_score": float(fit.train[0, 0]),
          "baseline_train_score": float(fit.baseline_train[0, 0]),
          "learned_heatmaps": learned_maps, "ais_heatmaps": ais_maps, "mean_heatmaps": mean_maps,
          "match_learned_vs_ais": match_learned, "match_mean_vs_ais": match_mean,
          "summary": summary}


def learned_methods(result, head, maps, human, summary: dict, *, alternative: str = "two-sided",
                    precision: str = "exact", heatmaps: bool = True, report=None, **fit_kwargs):
  """Everything ``--methods=prefix,learned`` adds to a selection run.

  Fits both learned variants on the selection's splits (:func:`fit_selection`), stores the
  comparison of all methods in ``summary["methods"]`` (:func:`summarize_methods`, with the
  compile counts) and, with ``heatmaps``, the learned-vs-AIS heatmap comparison
  (:func:`heatmap_comparison`).

  Returns:
    ``(ReweightResult, heatmap comparison dict or None)``.
  """
  say = report or (lambda message: None)
  st = result.settings
  learned = fit_selection(result, head, maps, human, **fit_kwargs)
  say(f"learned weights: {learned.weights.shape[0]} splits x {len(learned.variants)} variants in "
      f"{learned.timings['total_s']:.1f} s")
  summary["methods"] = dict(summarize_methods(result, learned, alternative=alternative),
                            compile_counts=compile_counts(), timings=learned.timings)
  match = None
  if heatmaps:
    match = heatmap_comparison(head, maps, human, similarity=st["similarity"],
                               comparison=st["comparison"], score=st["score"],
                               precision=precision, **fit_kwargs)
    say(f"learned heatmaps: mean Match with AIS heatmaps "
        f"{match['summary']['mean_match_learned_vs_ais']:.3f} (equal weights: "
        f"{match['summary']['mean_match_mean_vs_ais']:.3f})")
  return learned, match
