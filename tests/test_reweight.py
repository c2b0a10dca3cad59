"""Learned map weights (ais_jax.reweight): honesty checks against independent float64 loops."""

import json

import numpy as np
import pytest

from ais_jax import ablation, heatmaps, reweight, selection
from ais_jax.report import selection_outputs

N, K, STEPS = 16, 10, 30
FIT = dict(steps=STEPS, inner_folds=2, problem_batch=8)


def _cohort(seed=0, noise=0.05):
  """Pooled maps with a planted weighting: human = similarity of the reweighted embedding."""
  rng = np.random.default_rng(seed)
  maps = np.maximum(rng.normal(size=(N, 3, 3, K)), 0).astype(np.float32)
  planted = np.r_[np.full(3, 3.0), np.full(K - 3, 0.2)]
  human = np.corrcoef(maps.mean((1, 2)) * planted) + noise * rng.normal(size=(N, N))
  human = (human + human.T) / 2
  human[2, 7] = human[7, 2] = np.nan
  return maps, human


@pytest.fixture(scope="module")
def run():
  maps, human = _cohort()
  head = ablation.PooledHead()
  res = selection.select_maps(head, maps, human, folds=2, seeds=2, random_orders=1)
  learned = reweight.fit_selection(res, head, maps, human, **FIT)
  return {"maps": maps, "human": human, "head": head, "result": res, "learned": learned}


# ----------------------------------------------------------------------------------------------
# Independent float64 reference: explicit loops over pairs.


def _np_pearson(x, y):
  dx, dy = x - x.mean(), y - y.mean()
  return float(dx @ dy / np.sqrt((dx @ dx) * (dy @ dy)))


def _np_score(maps, human, weights, test_images, *, on="test", score="r2"):
  """Score of the weighted pooled embedding on the pairs inside (test) or outside (train)
  ``test_images``, finite human pairs only, by loops."""
  emb = np.asarray(maps, np.float64).mean(axis=(1, 2)) * np.asarray(weights, np.float64)
  inside = set(int(i) for i in test_images)
  x, y = [], []
  for i in range(len(emb)):
    for j in range(i + 1, len(emb)):
      both = (i in inside) and (j in inside)
      neither = (i not in inside) and (j not in inside)
      if (both if on == "test" else neither) and np.isfinite(human[i, j]):
        x.append(_np_pearson(emb[i], emb[j]))
        y.append(human[i, j])
  r = _np_pearson(np.array(x), np.array(y))
  return r * r if score == "r2" else r


# ----------------------------------------------------------------------------------------------


def test_weights_nonnegative_mean_one_on_kept_maps(run):
  learned = run["learned"]
  w, keep = learned.weights, learned.keep
  assert w.shape == (4, 2, K) and learned.variants == ("learned", "learned_retained")
  assert np.all(w >= 0) and np.all(np.isfinite(w))
  assert np.all(w[~keep] == 0)
  np.testing.assert_allclose(np.sum(w * keep, -1) / keep.sum(-1), 1.0, rtol=1e-5)
  # The retained variant weighs exactly the first m* maps of the split's AIS order.
  res = run["result"]
  for s in range(4):
    assert set(np.flatnonzero(keep[s, 1])) == set(res.orders[s, :res.m_star[s]].tolist())
  assert keep[:, 0].all()


def test_train_score_never_below_unweighted(run):
  res, learned = run["result"], run["learned"]
  assert np.all(learned.train >= learned.baseline_train)
  # The baselines are the selection's own train scores: all maps, and the retained prefix.
  np.testing.assert_allclose(learned.baseline_train[:, 0], res.train_curves[:, -1], rtol=1e-12)
  np.testing.assert_allclose(learned.baseline_test[:, 0], res.test_full, rtol=1e-12)
  at_m = res.train_curves[np.arange(4), res.m_star - 1]
  np.testing.assert_allclose(learned.baseline_train[:, 1], at_m, rtol=1e-10)
  np.testing.assert_allclose(learned.baseline_test[:, 1], res.test_retained, rtol=1e-10)
  # On a planted weighting the fit has something to find.
  assert np.mean(learned.train[:, 0] - learned.baseline_train[:, 0]) > 0.05
  assert set(learned.lam.ravel()) <= set(reweight.LAMBDA_GRID)


def test_saved_weights_reproduce_reported_scores(run, tmp_path):
  """cv.json's learned_test / learned_train equal a float64 numpy loop on learned_weights.npy."""
  res, learned = run["result"], run["learned"]
  summary = selection.summarize(res)
  summary["methods"] = reweight.summarize_methods(res, learned)
  selection_outputs.write_outputs(str(tmp_path), res, summary, label="toy", learned=learned)
  cv = json.load(open(tmp_path / "cv.json"))
  for name in ("learned", "learned_retained"):
    saved = np.load(tmp_path / f"{name}_weights.npy")
    assert saved.shape == (4, K)
    for s, split in enumerate(cv["splits"]):
      for on in ("test", "train"):
        want = _np_score(run["maps"], run["human"], saved[s], split["test_indices"], on=on)
        assert abs(split[f"{name}_{on}"] - want) <= 1e-10, (name, s, on)
      assert split[f"{name}_train"] >= split["full_train" if name == "learned" else
                                            "retained_train"]
  methods = cv["methods"]
  assert list(methods["mean_test"]) == ["full", "retained", "random", "learned",
                                        "learned_retained"]
  np.testing.assert_allclose(methods["mean_test"]["learned"],
                             np.mean([s["learned_test"] for s in cv["splits"]]), rtol=1e-12)
  assert len(methods["tests"]) == 10
  t = methods["tests"]["full_vs_learned"]
  d = res.test_full - learned.test[:, 0]
  np.testing.assert_allclose(t["paired"]["mean_difference"], d.mean(), rtol=1e-12)
  ratio = np.mean(res.n_test / res.n_train)
  want_t = d.mean() / np.sqrt((1 / 4 + ratio) * np.var(d, ddof=1))
  np.testing.assert_allclose(t["corrected"]["statistic"], want_t, rtol=1e-10)
  bars = json.load(open(tmp_path / "selection.json"))["toy"]
  np.testing.assert_allclose(bars["learned"], methods["mean_test"]["learned"], rtol=1e-12)
  rows = open(tmp_path / "cv.csv").read().splitlines()
  assert rows[0].endswith("learned_test,learned_retained_test") and len(rows) == 5


def test_compiles_once_per_cohort_shape(run):
  """A second cohort of the same shape, other splits and one variant: no new compilation."""
  before = reweight.compile_counts()
  assert before["fit"] >= 1 and before["score"] >= 1
  maps, human = _cohort(seed=3, noise=0.1)
  train, test = selection.image_split_masks(human, [[0, 1, 2, 3, 4]])
  again = reweight.fit_weights(run["head"], maps, human, train, test,
                               np.ones((1, 1, K), bool), variants=("learned",),
                               test_indices=[[0, 1, 2, 3, 4]], **FIT)
  assert reweight.compile_counts() == before
  want = _np_score(maps, human, again.weights[0, 0], [0, 1, 2, 3, 4], on="test")
  assert abs(again.test[0, 0] - want) <= 1e-10


def test_fc_head_scales_maps_before_the_head():
  """fc head: the float64 score of weights w equals the score of the full head run on the maps
  multiplied by w (max-pool and fc6 commute with a nonnegative per-map scale)."""
  rng = np.random.default_rng(5)
  n, k, d1, d2 = 8, 4, 6, 5
  maps = np.maximum(rng.normal(size=(n, 4, 4, k)), 0)
  head = ablation.FcHead(w1=rng.normal(size=(k * 4, d1)), b1=rng.normal(size=d1) * 0.1,
                         w2=rng.normal(size=(d1, d2)), b2=rng.normal(size=d2) * 0.1,
                         pool_window=2)
  human = rng.normal(size=(n, n))
  human = human + human.T
  w = np.array([0.5, 2.0, 0.0, 1.5])
  train, test = selection.image_split_masks(human, [[0, 1, 2]])
  tr, te = reweight.score_weights(head, maps, human, train, test, w[None, None])
  x = maps * w
  pooled = x.reshape(n, 2, 2, 2, 2, k).max(axis=(2, 4)).transpose(0, 3, 1, 2).reshape(n, -1)
  emb = np.maximum(np.maximum(pooled @ head.w1 + head.b1, 0) @ head.w2 + head.b2, 0)
  rows, cols = np.triu_indices(n, 1)
  sims = np.array([_np_pearson(emb[i], emb[j]) for i, j in zip(rows, cols)])
  h = human[rows, cols]
  np.testing.assert_allclose(te[0, 0], _np_pearson(sims[test[0]], h[test[0]]) ** 2, rtol=1e-10)
  np.testing.assert_allclose(tr[0, 0], _np_pearson(sims[train[0]], h[train[0]]) ** 2,
                             rtol=1e-10)


def test_inner_masks_partition_the_train_images():
  _, human = _cohort()
  test_sets = [[0, 1, 2, 3], [4, 5, 6, 7]]
  train, _ = selection.image_split_masks(human, test_sets)
  inner_tr, inner_va = reweight.inner_masks(human, train, test_indices=test_sets, inner_folds=3)
  rows, cols = np.triu_indices(N, 1)
  for s, test in enumerate(test_sets):
    seen = []
    for f in range(3):
      val_images = set(rows[inner_va[s, f]]) | set(cols[inner_va[s, f]])
      assert not val_images & set(test)
      tr_images = set(rows[inner_tr[s, f]]) | set(cols[inner_tr[s, f]])
      assert not tr_images & (val_images | set(test))
      assert np.all(inner_tr[s, f] <= train[s])
      seen += sorted(val_images)
    assert sorted(seen) == sorted(set(range(N)) - set(test))
  with pytest.raises(ValueError, match="inner folds"):
    reweight.inner_masks(human, train, test_indices=[list(range(12))] * 2, inner_folds=3)


def test_choose_lambda_ties_go_to_the_largest():
  grid = (0.1, 1.0, 10.0)
  v = np.array([[0.3, 0.5, 0.5], [0.6, 0.2, np.nan], [np.nan] * 3])
  assert reweight.choose_lambda(v, grid).tolist() == [2, 0, 2]


def test_weighted_heatmaps_and_options():
  rng = np.random.default_rng(2)
  maps = rng.random((3, 4, 4, 5)).astype(np.float32)
  w = np.array([1.0, 0.0, 2.0, 0.0, 1.0])
  want = np.einsum("nhwk,k->nhw", maps.astype(np.float64), w / w.sum())
  np.testing.assert_allclose(heatmaps.weighted_heatmaps(maps, w), want, rtol=1e-5)
  np.testing.assert_array_equal(heatmaps.weighted_heatmaps(maps, np.zeros(5)), 0)
  with pytest.raises(ValueError, match="nonnegative"):
    heatmaps.weighted_heatmaps(maps, -w)
  maps16, human = _cohort()
  head = ablation.PooledHead()
  with pytest.raises(ValueError, match="comparison='pearson'"):
    reweight.fit_all_images(head, maps16, human, comparison="spearman")
  with pytest.raises(ValueError, match="similarity"):
    reweight.fit_all_images(head, maps16, human, similarity="spearman")


def test_float32_agreement_ignores_missing_pairs_outside_the_mask():
  s = np.arange(6.0, dtype=np.float32)
  h = np.array([1.0, np.nan, 3.0, 2.0, 5.0, 4.5], np.float32)
  mask = ~np.isnan(h)
  want = np.corrcoef(s[mask], h[mask])[0, 1]
  np.testing.assert_allclose(reweight._agreement32(s, h, mask, "r"), want, rtol=1e-6)
  np.testing.assert_allclose(reweight._agreement32(s, h, mask, "r2"), want ** 2, rtol=1e-6)


def test_inner_masks_pair_splits_partition_the_train_pairs():
  _, human = _cohort()
  train, _ = selection.pair_split_masks(human, seeds=2)
  inner_tr, inner_va = reweight.inner_masks(human, train, inner_folds=3)
  for s in range(2):
    np.testing.assert_array_equal(inner_va[s].sum(0), train[s])      # each train pair once
    for f in range(3):
      np.testing.assert_array_equal(inner_tr[s, f], train[s] & ~inner_va[s, f])
