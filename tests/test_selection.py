"""Cross-validated selection: golden values, an independent float64 loop, splits, orders."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from ais_jax import ablation, rsa, selection

# ----------------------------------------------------------------------------------------------
# Independent float64 reference: one head pass per kept set, similarities by explicit loops.


def _np_pearson(x, y):
  dx, dy = x - x.mean(), y - y.mean()
  if (np.sqrt(np.mean(dx ** 2)) <= 1e-12 * np.max(np.abs(x))
      or np.sqrt(np.mean(dy ** 2)) <= 1e-12 * np.max(np.abs(y))):
    return np.nan
  return float(dx @ dy / np.sqrt((dx @ dx) * (dy @ dy)))


def _np_cosine(x, y):
  nx, ny = np.linalg.norm(x), np.linalg.norm(y)
  return np.nan if nx == 0 or ny == 0 else float(x @ y / (nx * ny))


def _np_spearman(x, y):
  """scipy average-tie ranks, then Pearson; the undefined rule on the values."""
  if np.isnan(_np_pearson(x, y)):
    return np.nan
  return _np_pearson(scipy.stats.rankdata(x), scipy.stats.rankdata(y))


def _np_embed_pooled(f, keep):
  return (f * keep).mean(axis=(1, 2))


def _np_embed_fc(f, keep, w1, b1, w2, b2, window):
  n, h, w, k = f.shape
  x = f * keep
  p = x[:, :h // window * window, :w // window * window].reshape(
      n, h // window, window, w // window, window, k).max(axis=(2, 4))
  flat = p.transpose(0, 3, 1, 2).reshape(n, -1)       # PyTorch (K, h', w') flatten
  return np.maximum(np.maximum(flat @ w1 + b1, 0) @ w2 + b2, 0)


def _np_score(emb, human, pairs, sim, score, comparison="pearson"):
  """pairs: list of (i, j) with finite human entries."""
  if not pairs:
    return np.nan
  fn = {"cosine": _np_cosine, "spearman": _np_spearman}.get(sim, _np_pearson)
  x = np.array([fn(emb[i], emb[j]) for i, j in pairs])
  y = np.array([human[i, j] for i, j in pairs])
  if np.isnan(x).any() or len(pairs) < 2:
    return np.nan
  if comparison == "spearman":
    # undefined rule on the similarities themselves, then scipy's Spearman
    if np.isnan(_np_pearson(x, y)):
      return np.nan
    return float(scipy.stats.spearmanr(x, y)[0])
  r = _np_pearson(x, y)
  return r * r if score == "r2" else r


def _np_selection(embed, k, human, test_idx, orders_random, sim="pearson", score="r2",
                  comparison="pearson"):
  n = human.shape[0]
  test = set(int(t) for t in test_idx)
  train_pairs = [(i, j) for i in range(n) for j in range(i + 1, n)
                 if i not in test and j not in test and np.isfinite(human[i, j])]
  test_pairs = [(i, j) for i in range(n) for j in range(i + 1, n)
                if i in test and j in test and np.isfinite(human[i, j])]
  score_of = lambda e, pairs: _np_score(e, human, pairs, sim, score, comparison)
  base = score_of(embed(np.ones(k)), train_pairs)
  ais = np.array([base - score_of(embed(1 - np.eye(k)[j]), train_pairs) for j in range(k)])
  # descending, ties to the lower index, NaN last (sorted() with an explicit key)
  order = sorted(range(k), key=lambda j: (np.isnan(ais[j]), -ais[j] if not np.isnan(ais[j]) else 0, j))

  def curves(o):
    tr, te = [], []
    for m in range(1, k + 1):
      keep = np.zeros(k)
      keep[list(o[:m])] = 1
      e = embed(keep)
      tr.append(score_of(e, train_pairs))
      te.append(score_of(e, test_pairs))
    return np.array(tr), np.array(te)

  tr, te = curves(order)
  rand = [curves(list(o)) for o in orders_random]
  return ais, np.array(order), tr, te, rand


def _close_nan(a, b, tol):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
  if np.isfinite(a).any():
    assert np.nanmax(np.abs(a - b)) <= tol, np.nanmax(np.abs(a - b))


# ----------------------------------------------------------------------------------------------
# Golden values


@pytest.fixture(scope="module")
def golden_heads(golden):
  fc = ablation.FcHead(w1=golden["W1"].T, b1=golden["b1"], w2=golden["W2"].T, b2=golden["b2"],
                       pool_window=2)
  return {"fc": fc, "gap": ablation.PooledHead()}


@pytest.fixture(scope="module")
def golden_results(golden, golden_heads):
  return {name: selection.select_maps(head, golden["F"], golden["H"],
                                      test_indices=golden["sel_folds"], random_orders=1)
          for name, head in golden_heads.items()}


@pytest.mark.parametrize("head", ["fc", "gap"])
def test_golden_selection(golden, golden_results, head):
  res = golden_results[head]
  for f in range(golden["sel_folds"].shape[0]):
    g = lambda key: golden[f"sel_{head}_fold{f}_{key}"]
    _close_nan(res.train_ais[f], g("ais"), 1e-10)
    _close_nan(res.train_curves[f], g("train_curve"), 1e-10)
    _close_nan(res.test_curves[f], g("test_curve"), 1e-10)
    assert res.m_star[f] == int(g("m_star"))
    assert res.test_retained[f] == res.test_curves[f, res.m_star[f] - 1]
    assert res.test_full[f] == res.test_curves[f, -1]
    np.testing.assert_array_equal(res.orders[f], selection.map_order(g("ais")))


def test_golden_gap_single_map_undefined(golden_results):
  # A pooled model with one kept map: every pair has the same similarity -> NaN (DESIGN.md).
  res = golden_results["gap"]
  assert np.isnan(res.train_curves[:, 0]).all() and np.isnan(res.test_curves[:, 0]).all()
  assert res.undefined["where_curves_undefined_m"] == [1]


def test_random_order_curves_match_loop(golden, golden_heads, golden_results):
  f = golden["F"]
  k = f.shape[-1]
  res = golden_results["fc"]
  embed = lambda keep: _np_embed_fc(f, keep, golden["W1"].T, golden["b1"], golden["W2"].T,
                                    golden["b2"], 2)
  _, _, _, _, rand = _np_selection(embed, k, golden["H"], golden["sel_folds"][1],
                                   res.random_orders[1])
  _close_nan(res.random_train_curves[1, 0], rand[0][0], 1e-10)
  _close_nan(res.random_test_curves[1, 0], rand[0][1], 1e-10)
  assert sorted(res.random_orders[1, 0].tolist()) == list(range(k))


# ----------------------------------------------------------------------------------------------
# Random case against the loop


def _random_case(seed=3, n=11, k=7, hw=4, offset=0.0):
  rng = np.random.default_rng(seed)
  f = np.maximum(rng.normal(size=(n, hw, hw, k)) + offset, 0)
  f[2, ..., 4] = 0                        # an inactive map in one image
  f[..., k - 1] = 0                       # a map inactive everywhere: AIS exactly 0
  h = rng.normal(size=(n, n))
  h = (h + h.T) / 2
  h[1, 4] = h[4, 1] = np.nan
  return f, h


@pytest.mark.parametrize("sim,comparison,score", [("pearson", "pearson", "r2"),
                                                   ("cosine", "pearson", "r2"),
                                                   ("pearson", "spearman", "r")])
def test_pooled_matches_loop(sim, comparison, score):
  f, h = _random_case()
  n, k = f.shape[0], f.shape[-1]
  res = selection.select_maps(ablation.PooledHead(), f, h, folds=3, seeds=1, seed=5,
                              similarity=sim, comparison=comparison, score=score,
                              random_orders=1)
  assert len(res.splits) == 3
  for s, split in enumerate(res.splits):
    ais, order, tr, te, rand = _np_selection(lambda keep: _np_embed_pooled(f, keep), k, h,
                                             split.test_indices, res.random_orders[s], sim=sim,
                                             score=score, comparison=comparison)
    _close_nan(res.train_ais[s], ais, 1e-10)
    np.testing.assert_array_equal(res.orders[s], order)
    _close_nan(res.train_curves[s], tr, 1e-10)
    _close_nan(res.test_curves[s], te, 1e-10)
    _close_nan(res.random_test_curves[s, 0], rand[0][1], 1e-10)
  # the last map is zero everywhere: AIS exactly 0 (not rounding noise)
  assert (res.train_ais[:, k - 1] == 0).all()


def test_pooled_spearman_similarity_matches_loop():
  """Spearman similarity: single-map removals by exact rank updates, prefixes re-ranked; ties in
  the embeddings (rounded values, zeros) exercise the average-tie handling."""
  f, h = _random_case(seed=11, n=10, k=9)
  f = np.round(f * 2) / 2                  # ties among the pooled values too
  n, k = f.shape[0], f.shape[-1]
  res = selection.select_maps(ablation.PooledHead(), f, h, folds=2, seeds=1, seed=1,
                              similarity="spearman", score="r", random_orders=1, chunk=4)
  for s, split in enumerate(res.splits):
    ais, order, tr, te, rand = _np_selection(lambda keep: _np_embed_pooled(f, keep), k, h,
                                             split.test_indices, res.random_orders[s],
                                             sim="spearman", score="r")
    _close_nan(res.train_ais[s], ais, 1e-12)
    np.testing.assert_array_equal(res.orders[s], order)
    _close_nan(res.train_curves[s], tr, 1e-12)
    _close_nan(res.test_curves[s], te, 1e-12)
    _close_nan(res.random_test_curves[s, 0], rand[0][1], 1e-12)
    # One kept map of a pooled head: every pair has the same similarity, so the curve starts
    # with NaN, which m* must skip (DESIGN.md: first maximum over the defined train scores).
    assert np.isnan(tr[0])
    assert res.m_star[s] == _first_maximum_reference(tr) > 1
  assert (res.train_ais[:, k - 1] == 0).all()
  assert np.nanmax(np.abs(res.train_ais)) > 1e-3


def _first_maximum_reference(curve):
  """1-based m of the first maximum over the defined entries, written as a plain loop."""
  best, best_m = -np.inf, 0
  for m, value in enumerate(curve, start=1):
    if not np.isnan(value) and value > best:
      best, best_m = value, m
  return best_m


def _random_fc_weights(k, seed):
  """fc6 (4 pooled positions x k maps -> 16) and fc7 (16 -> 12) weights and biases."""
  rng = np.random.default_rng(seed)
  w1 = rng.normal(size=(k * 4, 16)) / 4
  b1 = rng.normal(size=16) * 0.1
  w2 = rng.normal(size=(16, 12)) / 4
  b2 = rng.normal(size=12) * 0.1
  return w1, b1, w2, b2


def test_fc_matches_loop_score_r_and_chunks():
  f, h = _random_case(seed=4, n=10, k=5, hw=5)
  k, window = f.shape[-1], 2
  w1, b1, w2, b2 = _random_fc_weights(k, seed=1)
  head = ablation.FcHead(w1=w1, b1=b1, w2=w2, b2=b2, pool_window=window)
  tests = [[0, 3, 7], [1, 2, 5, 9]]
  # chunk=2 over K=5 prefixes exercises the padded last chunk of the prefix scan
  res = selection.select_maps(head, f, h, test_indices=tests, score="r", random_orders=0,
                              chunk=2)
  embed = lambda keep: _np_embed_fc(f, keep, w1, b1, w2, b2, window)
  for s, t in enumerate(tests):
    ais, order, tr, te, _ = _np_selection(embed, k, h, t, [], score="r")
    _close_nan(res.train_ais[s], ais, 1e-10)
    _close_nan(res.train_curves[s], tr, 1e-10)
    _close_nan(res.test_curves[s], te, 1e-10)
    assert res.m_star[s] == _first_maximum_reference(tr)
  assert (res.train_ais[:, k - 1] == 0).all()


def test_generic_head_equals_pooled():
  f, h = _random_case(seed=7)
  generic = ablation.GenericHead(
      embed=lambda maps, keep: jnp.mean(maps, axis=(1, 2))[None] * keep[:, None, :])
  kw = dict(folds=3, seeds=1, seed=2, random_orders=1)
  a = selection.select_maps(ablation.PooledHead(), f, h, **kw)
  b = selection.select_maps(generic, f, h, **kw)
  for key in ("train_ais", "train_curves", "test_curves", "random_test_curves"):
    _close_nan(getattr(a, key), getattr(b, key), 1e-10)
  np.testing.assert_array_equal(a.m_star, b.m_star)


def test_agreement_rows_equals_rsa():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(6, 40))
  x[1] = 0.7                                   # constant -> NaN
  x[2, 3] = np.nan                             # NaN inside the mask -> NaN
  x[3, 5] = np.nan                             # NaN outside the mask -> ignored
  y = rng.normal(size=40)
  m = rng.random(40) < 0.6
  m[3], m[5] = True, False
  with jax.enable_x64(True):
    fn = jax.jit(lambda x, y, m: selection._agreement_rows(x, y, m, "pearson"))
    got = np.asarray(fn(jnp.asarray(x), jnp.asarray(y), jnp.asarray(m)))
  want = np.asarray(rsa.correlation(x, y[None], m[None]))
  _close_nan(got, want, 1e-14)
  assert np.isnan(got[1]) and np.isnan(got[2]) and np.isfinite(got[3])


# ----------------------------------------------------------------------------------------------
# Splits, orders, options


def test_image_folds_reproducible():
  a = selection.image_folds(17, folds=5, seeds=3, seed=4)
  b = selection.image_folds(17, folds=5, seeds=3, seed=4)
  assert len(a) == 15
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x.test_indices, y.test_indices)
  for s in range(4, 7):
    parts = [x.test_indices for x in a if x.seed == s]
    perm = np.random.default_rng(s).permutation(17)
    for got, want in zip(parts, np.array_split(perm, 5)):
      np.testing.assert_array_equal(got, np.sort(want))
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(17))
  c = selection.image_folds(17, folds=5, seeds=1, seed=5)
  assert not np.array_equal(c[0].test_indices, a[0].test_indices)


def test_split_masks():
  h = np.ones((6, 6))
  h[0, 1] = h[1, 0] = np.nan
  train, test = selection.image_split_masks(h, [[0, 1, 2]])
  rows, cols = np.triu_indices(6, 1)
  assert not (train & test).any()
  assert test[0].sum() == 2          # (0,2), (1,2); (0,1) missing
  assert train[0].sum() == 3         # (3,4), (3,5), (4,5)
  assert (rows[test[0]] < 3).all() and (cols[train[0]] >= 3).all()
  h = np.random.default_rng(0).normal(size=(20, 20))
  h = h + h.T
  tr1, te1 = selection.pair_split_masks(h, seeds=2, seed=3)
  tr2, te2 = selection.pair_split_masks(h, seeds=2, seed=3)
  np.testing.assert_array_equal(te1, te2)
  assert not (tr1 & te1).any() and (tr1 | te1).all()
  assert te1.sum(1).tolist() == [38, 38]  # round(0.2 * 190)


def test_map_order_and_first_maximum():
  ais = np.array([0.1, np.nan, 0.3, 0.1, -0.0, 0.0, 0.3])
  np.testing.assert_array_equal(selection.map_order(ais), [2, 6, 0, 3, 4, 5, 1])
  assert selection.first_maximum([np.nan, 0.2, 0.5, 0.5, np.nan]) == 3
  assert selection.first_maximum([np.nan, np.nan]) == 0


def test_pair_split_runs_and_options():
  f, h = _random_case(seed=9)
  res = selection.select_maps(ablation.PooledHead(), f, h, pair_split=True, seeds=3,
                              random_orders=1)
  assert res.splits is None and res.test_curves.shape == (3, f.shape[-1])
  assert (res.n_test == res.test_masks.sum(1)).all()
  summary = selection.summarize(res)
  assert summary["n_splits"] == 3 and "retained_vs_full_paired" in summary["tests"]
  with pytest.raises(ValueError, match="r\\^2"):
    selection.select_maps(ablation.PooledHead(), f, h, comparison="spearman")
