"""Selection details that mutation testing (experiments/mutation.sh selection) showed unchecked:
fold planning and split bookkeeping (exact messages, both sides of every boundary), the pair-split
variant's defaults, map orders of batches and long tied rows, the summary's random-order control
(against scipy.stats and the textbook formulas), select_maps' settings, undefined counts and
random orders, and the fc head's float64 prefix scan over several chunks. Every expected value is
worked out by hand, by scipy or by a float64 loop, never by the function under test."""

import math
import os
import statistics
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from ais_jax import ablation, selection
from ais_jax import precision as precision_lib
from ais_jax.errors import UserInputError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_selection as loop  # pylint: disable=g-import-not-at-top,wrong-import-position

# ----------------------------------------------------------------------------------------------
# plan_folds


def _largest_folds(n, folds, minimum):
  """The most folds (2..folds) whose smaller test set, by numpy.array_split, holds >= minimum."""
  ok = [f for f in range(2, max(folds, n) + 1)
        if min(len(p) for p in np.array_split(np.arange(n), f)) >= minimum]
  return folds if folds in ok else max(ok)


def test_plan_folds_against_array_split_search():
  for minimum in (2, 3, 4, 6):
    for n in range(2 * minimum, 40):
      for folds in range(2, 9):
        used, message = selection.plan_folds(n, folds, min_test_images=minimum)
        assert used == _largest_folds(n, folds, minimum), (n, folds, minimum)
        assert (message is None) == (used == folds)


@pytest.mark.parametrize("n,folds,want", [
    (20, 5, (5, None)),   # exactly 4 test images per fold: kept
    (19, 5, (4, "selection: 5 folds of 19 images would leave 3 test images in a split "
                "(< --min_test_images=4); using 4 folds (test sets of 4-5 images)")),
    (8, 3, (2, "selection: 3 folds of 8 images would leave 2 test images in a split "
               "(< --min_test_images=4); using 2 folds (test sets of 4 images)")),
    (12, 5, (3, "selection: 5 folds of 12 images would leave 2 test images in a split "
                "(< --min_test_images=4); using 3 folds (test sets of 4 images)")),
])
def test_plan_folds_messages(n, folds, want):
  assert selection.plan_folds(n, folds) == want   # default min_test_images = 4


def test_plan_folds_refusals_at_each_boundary():
  assert selection.plan_folds(4, 2, min_test_images=2) == (2, None)   # smallest allowed minimum
  with pytest.raises(UserInputError) as e:
    selection.plan_folds(50, 5, min_test_images=1)
  assert str(e.value) == ("--min_test_images: 1: a test set needs at least 2 images (1 pair); "
                          "use 4 or more for a usable test score")
  assert selection.plan_folds(50, 2) == (2, None)                        # smallest fold count
  with pytest.raises(UserInputError) as e:
    selection.plan_folds(50, 1)
  assert str(e.value) == "--folds: 1: cross-validation needs at least 2 folds"
  assert selection.plan_folds(8, 2) == (2, None)                         # n = 2 * minimum
  with pytest.raises(UserInputError) as e:
    selection.plan_folds(7, 2)
  assert str(e.value) == (
      "--images: 7 images are too few for cross-validated selection: 2 folds with at least "
      "--min_test_images=4 test images each need 8; add images or lower --min_test_images (test "
      "scores over fewer images are unreliable)")


# ----------------------------------------------------------------------------------------------
# split_usage


def test_split_usage_counts_and_exact_warning():
  masks = np.zeros((4, 20), bool)
  for s, pairs in enumerate([6, 3, 20, 10]):
    masks[s, :pairs] = True
  u = selection.split_usage([0.5, math.nan, 0.2, 0.1], [0.6, 0.3, math.nan, 0.2], masks)
  # used: splits 0 and 3 (both scores defined); their fewest pairs: 6
  assert u == {"used": 2, "dropped": 2, "min_test_pairs": 6, "warning": (
      "2 of 4 splits have an undefined test score and are dropped from the means; test scores "
      "rest on as few as 6 pairs per split (< 15): treat them as rough")}


def test_split_usage_few_pairs_boundary_and_all_dropped():
  def usage(pairs, full=(0.1, 0.2), **kw):
    masks = np.zeros((2, 30), bool)
    for s, p in enumerate(pairs):
      masks[s, :p] = True
    return selection.split_usage(np.array(full), np.array([0.3, 0.4]), masks, **kw)
  assert usage([15, 20]) == {"used": 2, "dropped": 0, "min_test_pairs": 15, "warning": None}
  assert usage([14, 20]) == {"used": 2, "dropped": 0, "min_test_pairs": 14, "warning": (
      "test scores rest on as few as 14 pairs per split (< 15): treat them as rough")}
  assert usage([14, 20], few_pairs=14)["warning"] is None
  assert usage([5, 20], full=(math.nan, math.nan)) == {
      "used": 0, "dropped": 2, "min_test_pairs": None,
      "warning": "2 of 2 splits have an undefined test score and are dropped from the means"}


# ----------------------------------------------------------------------------------------------
# pair_split_masks


def _pair_split_reference(h, seeds, seed, fraction):
  """(train, test) lists of upper-triangle pair positions, split by split, by the documented
  recipe: default_rng(s).permutation of the finite pairs, the first round(fraction * count) test."""
  n = h.shape[0]
  pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
  finite = [p for p, (i, j) in enumerate(pairs) if not np.isnan(h[i, j])]
  n_test = round(fraction * len(finite))
  out = []
  for s in range(seed, seed + seeds):
    shuffled = [finite[i] for i in np.random.default_rng(s).permutation(len(finite))]
    out.append((sorted(shuffled[n_test:]), sorted(shuffled[:n_test])))
  return out


def test_pair_split_defaults_against_a_loop():
  rng = np.random.default_rng(2)
  n = 9
  h = rng.normal(size=(n, n))
  h = h + h.T
  h[0, 5] = h[5, 0] = h[3, 7] = h[7, 3] = np.nan
  train, test = selection.pair_split_masks(h)          # defaults: seeds 8 from seed 0, 20%
  assert train.shape == test.shape == (8, 36)
  assert test.sum(1).tolist() == [7] * 8                # round(0.2 * 34 finite pairs)
  for s, (want_train, want_test) in enumerate(_pair_split_reference(h, 8, 0, 0.2)):
    assert np.flatnonzero(test[s]).tolist() == want_test
    assert np.flatnonzero(train[s]).tolist() == want_train
  train1, test1 = selection.pair_split_masks(h, seeds=1, seed=1)
  np.testing.assert_array_equal(test1[0], test[1])
  np.testing.assert_array_equal(train1[0], train[1])


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.2])
def test_pair_split_fraction_outside_open_interval_is_refused(fraction):
  with pytest.raises(ValueError) as e:
    selection.pair_split_masks(np.ones((6, 6)), test_fraction=fraction)
  assert str(e.value) == f"test_fraction={fraction} must lie in (0, 1)"


def test_pair_split_fraction_just_inside_is_accepted():
  for fraction, n_test in [(1e-9, 0), (0.999, 15)]:   # 15 pairs of 6 images
    train, test = selection.pair_split_masks(np.ones((6, 6)), seeds=1, test_fraction=fraction)
    assert test.sum() == n_test and train.sum() == 15 - n_test


# ----------------------------------------------------------------------------------------------
# map_order


def _order_reference(ais):
  return sorted(range(len(ais)), key=lambda j: (math.isnan(ais[j]),
                                                0.0 if math.isnan(ais[j]) else -ais[j], j))


def test_map_order_batches_and_long_tied_rows():
  rng = np.random.default_rng(0)
  rows = rng.integers(0, 4, size=(3, 200)).astype(float) / 10   # many ties (> 16: not insertion)
  rows[rows == 0.3] = np.nan
  rows[0, :5] = [-0.0, 0.0, -0.0, 0.0, 0.2]
  got = selection.map_order(rows)
  assert got.shape == (3, 200)
  for row, order in zip(rows, got):
    assert order.tolist() == _order_reference(row.tolist())
  assert selection.map_order([[0.1, 0.3, np.nan], [np.nan, -1, 2]]).tolist() == [[1, 0, 2],
                                                                                   [2, 1, 0]]


# ----------------------------------------------------------------------------------------------
# summarize: the random-order control and the error paths


def _result(full, retained, m_star, random_retained, random_m_star, n_train=30, n_test=8):
  j, r = np.shape(random_retained)
  zeros = np.zeros((j, 3))
  return selection.SelectionResult(
      splits=None, train_masks=np.ones((j, 6), bool), test_masks=np.ones((j, 20), bool),
      train_ais=zeros, orders=np.zeros((j, 3), int), train_curves=zeros, test_curves=zeros,
      m_star=np.array(m_star), test_retained=np.array(retained, float),
      test_full=np.array(full, float), random_orders=np.zeros((j, r, 3), int),
      random_train_curves=np.zeros((j, r, 3)), random_test_curves=np.zeros((j, r, 3)),
      random_m_star=np.array(random_m_star).reshape(j, r),
      random_test_retained=np.array(random_retained, float).reshape(j, r),
      n_train=np.full(j, n_train), n_test=np.full(j, n_test), settings={}, undefined={},
      timings={})


def _within_se(a, b):
  """Loftus-Masson for two conditions by hand: the interaction mean square is var(a - b) / 2."""
  d = [x - y for x, y in zip(a, b)]
  j = len(d)
  se = math.sqrt(statistics.variance(d) / 2 / j)
  return se, scipy.stats.t.ppf(0.975, j - 1) * se


def _corrected_t(a, b, ratio):
  d = [x - y for x, y in zip(a, b)]
  return statistics.fmean(d) / math.sqrt(statistics.variance(d) * (1 / len(d) + ratio))


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_summary_random_control_by_hand(alternative):
  full = [0.30, 0.28, 0.35, 0.31, 0.25]
  retained = [0.36, 0.30, 0.40, 0.29, 0.33]
  random = [[0.20, 0.26, 0.24], [0.31, math.nan, 0.27], [0.30, 0.28, 0.33], [0.22, 0.25, 0.19],
            [0.27, 0.21, 0.30]]
  random_m = [[1, 2, 3], [2, 0, 3], [3, 3, 1], [1, 1, 2], [2, 2, 3]]
  res = _result(full, retained, [1, 2, 0, 3, 2], random, random_m)
  out = selection.summarize(res, alternative=alternative)
  rand = [statistics.fmean([x for x in row if not math.isnan(x)]) for row in random]
  assert out["mean_test_full"] == pytest.approx(statistics.fmean(full), rel=1e-14)
  assert out["mean_test_retained"] == pytest.approx(statistics.fmean(retained), rel=1e-14)
  assert out["mean_m_star"] == pytest.approx(2.0)             # (1 + 2 + 3 + 2) / 4, 0 skipped
  assert out["n_splits"] == 5
  assert out["split_usage"] == {"used": 5, "dropped": 0, "min_test_pairs": 20, "warning": None}
  assert out["mean_test_random_retained"] == pytest.approx(statistics.fmean(rand), rel=1e-14)
  assert out["mean_random_m_star"] == pytest.approx(29 / 14, rel=1e-14)   # 14 defined m*
  se, half = _within_se(full, retained)
  assert out["loftus_masson"] == {"se": pytest.approx(se, rel=1e-12),
                                  "ci95_halfwidth": pytest.approx(half, rel=1e-12), "df": 4,
                                  "n_subjects": 5, "n_dropped": 0}
  se, half = _within_se(full, rand)
  assert out["loftus_masson_random"] == {"se": pytest.approx(se, rel=1e-12),
                                         "ci95_halfwidth": pytest.approx(half, rel=1e-12)}
  tests = out["tests"]
  assert sorted(tests) == ["retained_vs_full_corrected", "retained_vs_full_paired",
                           "retained_vs_random_corrected", "retained_vs_random_paired"]
  dist = scipy.stats.t(df=4)
  p_of = {"two-sided": lambda t: 2 * dist.sf(abs(t)), "greater": dist.sf,
          "less": dist.cdf}[alternative]
  for name, b in [("full", full), ("random", rand)]:
    want = scipy.stats.ttest_rel(retained, b, alternative=alternative)
    paired = tests[f"retained_vs_{name}_paired"]
    assert paired["statistic"] == pytest.approx(want.statistic, rel=1e-12)
    assert paired["pvalue"] == pytest.approx(want.pvalue, rel=1e-10)
    assert paired["alternative"] == alternative and paired["n"] == 5
    t = _corrected_t(retained, b, 8 / 30)
    corrected = tests[f"retained_vs_{name}_corrected"]
    assert corrected["statistic"] == pytest.approx(t, rel=1e-12)
    assert corrected["pvalue"] == pytest.approx(p_of(t), rel=1e-10)
    assert corrected["alternative"] == alternative


def test_summary_with_one_defined_split_reports_the_errors():
  nan = math.nan
  res = _result([0.3, nan, nan], [0.4, 0.2, nan], [1, 2, 0], [[0.1], [0.2], [nan]],
                [[1], [1], [0]])
  out = selection.summarize(res)
  assert out["tests"] == {
      "retained_vs_full_error": "need at least 2 subjects without NaN, got 1",
      "retained_vs_random_error": "need at least 2 subjects without NaN, got 1"}
  assert "loftus_masson" not in out and "loftus_masson_random" not in out
  assert out["mean_test_random_retained"] == pytest.approx(0.15, rel=1e-14)


def test_summary_of_all_undefined_splits_is_nan_without_numpy_warnings():
  nan = math.nan
  res = _result([nan, nan], [nan, nan], [0, 0], [[nan, nan], [nan, nan]], [[0, 0], [0, 0]])
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    out = selection.summarize(res)
  for key in ("mean_test_full", "mean_test_retained", "mean_m_star", "mean_test_random_retained",
              "mean_random_m_star"):
    assert math.isnan(out[key]), key
  assert out["split_usage"]["used"] == 0


# ----------------------------------------------------------------------------------------------
# select_maps bookkeeping: splits, random orders, settings, undefined counts, chunk default


def _pooled_case(n=10, k=4, seed=5):
  rng = np.random.default_rng(seed)
  maps = rng.random((n, 2, 2, k))
  return maps, np.corrcoef(rng.standard_normal((n, 5)))


def _undefined_prefixes(order, nonzero):
  """m = 1..K whose kept maps include fewer than 2 maps that are nonzero somewhere: a pooled
  embedding with one nonzero coordinate gives every pair the same similarity (NaN score)."""
  return [m for m in range(1, len(order) + 1) if sum(nonzero[j] for j in order[:m]) < 2]


def _first_maximum_loop(curve):
  best, best_m = -math.inf, 0
  for m, value in enumerate(curve, start=1):
    if not math.isnan(value) and value > best:
      best, best_m = value, m
  return best_m


def test_select_maps_bookkeeping_and_undefined_counts():
  maps, human = _pooled_case()
  maps[..., 1] = 0                                      # a map that is zero everywhere
  n, k, r = 10, 4, 2
  nonzero = [True, False, True, True]
  # split 0 has 2 test images: 1 test pair, so every test score of it is undefined
  tests = [[7, 2], [9, 0, 3, 1]]
  res = selection.select_maps(ablation.PooledHead(), maps, human, test_indices=tests, seed=3,
                              random_orders=r)
  assert [(s.seed, s.fold, s.test_indices.tolist()) for s in res.splits] == [
      (-1, 0, [2, 7]), (-1, 1, [0, 1, 3, 9])]
  assert res.n_test.tolist() == [2, 4] and res.n_train.tolist() == [8, 6]
  rng = np.random.default_rng((3, 1))                  # default random_seed: (seed, 1)
  want = [[rng.permutation(k) for _ in range(r)] for _ in range(2)]
  np.testing.assert_array_equal(res.random_orders, want)
  assert res.settings == dict(
      n=n, K=k, splits=2, folds=5, seeds=8, seed=3, pair_split=False, test_fraction=None,
      score="r2", similarity="pearson", comparison="pearson", precision="exact", random_orders=r,
      chunk=k, head="PooledHead", explicit_folds=True)
  ais_order = [_undefined_prefixes(o, nonzero) for o in res.orders.tolist()]
  random = [_undefined_prefixes(o, nonzero) for o in res.random_orders.reshape(-1, k).tolist()]
  for s in range(2):
    assert np.flatnonzero(np.isnan(res.train_curves[s])).tolist() == [m - 1 for m in ais_order[s]]
  assert res.undefined == {
      "train_ais": 0, "train_curves": sum(map(len, ais_order)),
      "test_curves": k + len(ais_order[1]), "m_star_undefined": 0, "test_full": 1,
      "random_train_curves": sum(map(len, random)),
      "random_test_curves": r * k + sum(map(len, random[r:])),
      "where_curves_undefined_m": [1, 2, 3, 4]}
  assert np.isnan(res.test_full[0]) and np.isnan(res.test_retained[0])
  for s in range(2):
    assert res.m_star[s] == _first_maximum_loop(res.train_curves[s].tolist()) > 1
    for j in range(r):
      m = _first_maximum_loop(res.random_train_curves[s, j].tolist())
      assert res.random_m_star[s, j] == m > 0
      np.testing.assert_array_equal(res.random_test_retained[s, j],
                                    res.random_test_curves[s, j, m - 1])
  t = res.timings
  assert min(t.values()) >= 0
  assert t["total_s"] == pytest.approx(t["prepare_s"] + t["compiled_call_s"], rel=1e-9)
  other = selection.select_maps(ablation.PooledHead(), maps.tolist(), human, test_indices=tests,
                                seed=3, random_orders=r, random_seed=11)   # nested lists too
  rng = np.random.default_rng(11)
  np.testing.assert_array_equal(other.random_orders,
                                [[rng.permutation(k) for _ in range(r)] for _ in range(2)])
  np.testing.assert_array_equal(other.train_curves, res.train_curves)
  with pytest.raises(ValueError) as e:
    selection.select_maps(ablation.PooledHead(), maps, human[:9, :9])
  assert str(e.value) == ("human: matrix is 9x9 but the cohort has 10 images; the matrix must "
                          "list the images in the same order as the images")


def test_inactive_map_ais_is_exactly_zero_only_with_a_defined_baseline():
  """A map that is zero in every image of a split's train pairs has train AIS exactly 0 (it
  changes no train similarity), when the baseline score is defined; a train set of 2 images
  (1 pair) has an undefined baseline, so every AIS is NaN. Removing the only nonzero map of an
  image leaves it all zero (NaN AIS; with K = 5 the rank-one update alone would leave rounding
  noise). AIS against the float64 loop."""
  rng = np.random.default_rng(12)
  n, k = 8, 5
  maps = rng.random((n, 2, 2, k))
  maps[2:, ..., 3] = 0                                  # map 3: only images 0 and 1
  maps[:7, ..., 4] = 0                                  # map 4: only image 7
  maps[6, ..., [0, 2]] = 0                              # image 6: map 1 only
  human = np.corrcoef(rng.standard_normal((n, 6)))
  tests = [[0, 1, 2, 3], [0, 1, 2, 3, 4, 5], [4, 5, 6, 7]]
  res = selection.select_maps(ablation.PooledHead(), maps, human, test_indices=tests,
                              random_orders=0, memory_budget_gb=_budget_gb(3, n, k) - 2**-30)
  assert res.settings["chunk"] == 2                     # 1 byte short of 3 prefixes
  embed = lambda keep: loop._np_embed_pooled(maps, keep)
  for s, t in enumerate(tests):
    ais, order, tr, te, _ = loop._np_selection(embed, k, human, t, [])
    loop._close_nan(res.train_ais[s], ais, 1e-10)
    loop._close_nan(res.train_curves[s], tr, 1e-10)
    loop._close_nan(res.test_curves[s], te, 1e-10)
  assert res.train_ais[0, 3] == 0 and res.train_ais[0, 4] != 0      # image 7 is a train image
  assert np.isnan(res.train_ais[1]).all() and res.m_star[1] == 0
  assert res.train_ais[2, 4] == 0 and res.train_ais[2, 3] != 0
  # removing map 1 leaves image 6 (a train image of split 0) all zero: NaN, not rounding noise
  assert np.isnan(res.train_ais[0, 1])


def test_retained_is_the_test_score_at_m_star():
  nan = math.nan
  curves = np.array([[0.1, 0.5, 0.3], [0.2, 0.1, 0.0], [nan, 0.4, 0.2], [0.3, 0.6, 0.9],
                     [0.7, 0.4, 0.2]])
  got = selection._retained(curves, np.array([2, 1, 0, 3, 0]))
  # m* = 0 (no defined train score) retains nothing, even where the first test score is defined
  np.testing.assert_array_equal(got, [0.5, 0.2, nan, 0.9, nan])


def test_select_maps_defaults_and_image_fold_seeds():
  """Defaults: 5 image folds x 8 seeds from seed 0, one random order per split from
  default_rng((0, 1)); explicit folds/seeds/seed are passed on (same split count: 4 x 10)."""
  maps, human = _pooled_case()
  for kw, (folds, seeds, seed) in [({}, (5, 8, 0)), (dict(folds=4, seeds=10, seed=3), (4, 10, 3))]:
    res = selection.select_maps(ablation.PooledHead(), maps, human, **kw)
    want = [(s, f, np.sort(part).tolist()) for s in range(seed, seed + seeds)
            for f, part in enumerate(np.array_split(np.random.default_rng(s).permutation(10),
                                                    folds))]
    assert [(x.seed, x.fold, x.test_indices.tolist()) for x in res.splits] == want
    rng = np.random.default_rng((seed, 1))
    np.testing.assert_array_equal(res.random_orders[:, 0], [rng.permutation(4) for _ in range(40)])
    assert res.random_orders.shape == (40, 1, 4)
    assert (res.settings["folds"], res.settings["seeds"], res.settings["seed"]) == (folds, seeds,
                                                                                    seed)
    assert res.settings["random_orders"] == 1 and res.settings["chunk"] == 4


def test_select_maps_single_map_and_pair_split_settings():
  """K = 1 with a pooled head: every train score is undefined, so m* = 0 and the retained test
  score is NaN; the pair split reports pair counts and its own settings."""
  maps, human = _pooled_case(k=1)
  res = selection.select_maps(ablation.PooledHead(), maps, human, pair_split=True, seeds=2,
                              seed=4, test_fraction=0.3, score="r", random_orders=0)
  assert res.splits is None
  assert res.n_test.tolist() == [14, 14] and res.n_train.tolist() == [31, 31]  # round(13.5)
  for s, (want_train, want_test) in enumerate(_pair_split_reference(human, 2, 4, 0.3)):
    assert np.flatnonzero(res.test_masks[s]).tolist() == want_test
    assert np.flatnonzero(res.train_masks[s]).tolist() == want_train
  assert res.m_star.tolist() == [0, 0] and np.isnan(res.test_retained).all()
  assert res.undefined["m_star_undefined"] == 2 and res.undefined["train_curves"] == 2
  assert res.undefined["where_curves_undefined_m"] == [1]
  assert res.random_orders.shape == (2, 0, 1) and res.random_m_star.shape == (2, 0)
  assert res.settings["folds"] is None and res.settings["test_fraction"] == 0.3
  assert res.settings["pair_split"] and not res.settings["explicit_folds"]
  assert (res.settings["score"], res.settings["seeds"], res.settings["seed"]) == ("r", 2, 4)


def _budget_gb(prefixes, n, k, fc_widths=None):
  """memory_budget_gb holding ``prefixes`` prefixes by select_maps' documented estimate:
  32 n (D1 + D2) + 32 P bytes per prefix for fc heads, 32 n max(K, 64) + 32 P for the others."""
  width = sum(fc_widths) if fc_widths else max(k, 64)
  return prefixes * (32 * n * width + 32 * n * (n - 1) // 2) / 2**30


# ----------------------------------------------------------------------------------------------
# fc head: float32 trunk maps in the exact mode, prefix scan over several chunks


def test_fc_exact_mode_float32_maps_over_chunks_of_three():
  """The exact mode runs the fc head in float64 even on float32 maps (so curves match a float64
  loop to 1e-10, far below float32 rounding), and the prefix scan carries each chunk's last
  pre-activation into the next (K = 7 in chunks of 3 by the memory estimate, the last one
  padded). A dead fc6 unit
  (zero weights) does not make the maps look inactive."""
  f, h = loop._random_case(seed=6, n=9, k=7, hw=4)
  f = f.astype(np.float32)
  k, window = 7, 2
  w1, b1, w2, b2 = loop._random_fc_weights(k, seed=8)
  w1[:, 5] = 0                                          # a dead fc6 unit: no map reaches it
  head = ablation.FcHead(w1=w1, b1=b1, w2=w2, b2=b2, pool_window=window)
  tests = [[0, 2, 5, 8]]
  res = selection.select_maps(head, f, h, test_indices=tests, random_orders=1,
                              memory_budget_gb=_budget_gb(3, 9, k, (16, 12)))
  assert res.settings["chunk"] == 3                     # the default from the memory estimate
  embed = lambda keep: loop._np_embed_fc(f.astype(np.float64), keep, w1, b1, w2, b2, window)
  ais, order, tr, te, rand = loop._np_selection(embed, k, h, tests[0], res.random_orders[0])
  loop._close_nan(res.train_ais[0], ais, 1e-10)
  np.testing.assert_array_equal(res.orders[0], order)
  loop._close_nan(res.train_curves[0], tr, 1e-10)
  loop._close_nan(res.test_curves[0], te, 1e-10)
  loop._close_nan(res.random_train_curves[0, 0], rand[0][0], 1e-10)
  assert np.isfinite(tr[1:]).all()
  # one byte short of 3 prefixes: chunks of 2, the same curves
  res2 = selection.select_maps(head, f, h, test_indices=tests, random_orders=0,
                               memory_budget_gb=_budget_gb(3, 9, k, (16, 12)) - 2**-30)
  assert res2.settings["chunk"] == 2
  loop._close_nan(res2.train_curves[0], tr, 1e-10)


# ----------------------------------------------------------------------------------------------
# Kernels: the blocked cumulative sum (K > 64) and the agreement's undefined rule at its edges


@pytest.mark.parametrize("k,block", [(130, 64), (64, 64), (10, 4), (3, 4)])
def test_cumsum0_blocks_against_a_running_sum(k, block):
  x = np.random.default_rng(k).normal(size=(k, 3, 2))
  want = np.zeros_like(x)
  running = np.zeros((3, 2))
  for i in range(k):
    running = running + x[i]
    want[i] = running
  with precision_lib.float64_scope():
    got = np.asarray(jax.jit(lambda v: selection._cumsum0(v, block))(jnp.asarray(x)))
  assert got.shape == x.shape
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def _agreement(x, y, m, comparison="pearson"):
  with precision_lib.float64_scope():
    fn = jax.jit(lambda x, y, m: selection._agreement_rows(x, y, m, comparison))
    return np.asarray(fn(jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64),
                         jnp.asarray(m)))


@pytest.mark.parametrize("comparison", ["pearson", "spearman"])
def test_agreement_of_one_and_two_pairs(comparison):
  """Two pairs give r = +-1 (a line through two points); one pair or none is undefined."""
  x = np.array([[0.2, 0.9, 0.5, 0.1], [0.7, 0.3, 0.5, 0.1]])
  y = np.array([1.0, 3.0, 2.0, 5.0])
  two = np.array([True, True, False, False])
  np.testing.assert_allclose(_agreement(x, y, two, comparison), [1.0, -1.0], rtol=0, atol=1e-15)
  for mask in ([True, False, False, False], [False] * 4):
    assert np.isnan(_agreement(x, y, np.array(mask), comparison)).all()


def test_agreement_constant_tolerance_both_sides():
  """A model vector whose RMS deviation is just under 1e-12 x its largest |value| is constant
  (NaN); just over, it is an ordinary vector (DESIGN.md's undefined rule)."""
  y = np.array([0.1, 0.4, 0.2, 0.9, 0.3, 0.5])
  m = np.ones(6, bool)
  alternating = np.array([1, -1, 1, -1, 1, -1], float)   # RMS deviation = its amplitude
  for amplitude, undefined in [(0.9e-12, True), (1.1e-12, False)]:
    x = 1.0 + amplitude * alternating
    want = np.corrcoef(alternating, y)[0, 1]
    got = _agreement(x[None], y, m)[0]
    assert np.isnan(got) == undefined
    if not undefined:
      assert abs(got - want) < 1e-3                  # 1e-12 steps on 1.0: ~1e-4 rounding
  # the human side too; negative values; the largest |value| over the masked entries only
  assert np.isnan(_agreement(y[None], 1.0 + 0.9e-12 * alternating, m)[0])
  assert np.isnan(_agreement((-1.0 + 0.9e-12 * alternating)[None], y, m)[0])
  assert np.isfinite(_agreement((-1.0 + 1.1e-12 * alternating)[None], y, m)[0])
  masked = np.append(m, False)
  small = np.append(1e-3 * (1 + 1.1e-12 * alternating), 1e6)[None]   # 1e6 is not a pair
  assert np.isfinite(_agreement(small, np.append(y, 0.0), masked)[0])
  small[0, :6] = 1e-3 * (1 + 0.9e-12 * alternating)
  assert np.isnan(_agreement(small, np.append(y, 0.0), masked)[0])


# ----------------------------------------------------------------------------------------------
# Input checks with their exact messages, and the boundaries they guard


def test_image_folds_limits():
  assert len(selection.image_folds(10, folds=5, seeds=1)) == 5     # folds = n / 2: 2 per test set
  assert len(selection.image_folds(10, folds=2, seeds=1)) == 2
  for folds in (1, 6):
    with pytest.raises(ValueError) as e:
      selection.image_folds(10, folds=folds)
    assert str(e.value) == (f"folds={folds}: need 2 <= folds <= n/2 = 5 so that every train and "
                            "test set has at least 2 images")
  with pytest.raises(ValueError) as e:
    selection.image_folds(10, folds=2, seeds=0)
  assert str(e.value) == "seeds=0: need at least 1 seed"
  default = selection.image_folds(12)                                # 5 folds x 8 seeds from 0
  assert len(default) == 40
  assert [(s.seed, s.fold) for s in default[:6]] == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4),
                                                     (1, 0)]
  np.testing.assert_array_equal(
      default[5].test_indices, np.sort(np.random.default_rng(1).permutation(12)[:3]))


def test_image_split_masks_index_range():
  h = np.ones((5, 5))
  train, test = selection.image_split_masks(h, [[4, 0], []])       # both ends; an empty test set
  assert test[0].sum() == 1 and train[0].sum() == 3                # (0, 4); (1,2), (1,3), (2,3)
  assert test[1].sum() == 0 and train[1].sum() == 10
  for bad in ([1, 5], [-1, 2]):
    with pytest.raises(ValueError) as e:
      selection.image_split_masks(h, [bad])
    assert str(e.value) == f"test indices {bad} out of range for 5 images"


@pytest.mark.parametrize("kw,message", [
    (dict(score="r3"), "score='r3' is not one of ('r2', 'r')"),
    (dict(comparison="kendall"), "comparison='kendall' is not one of ('pearson', 'spearman')"),
    (dict(similarity="dot"), "similarity='dot' is not one of ('pearson', 'spearman', 'cosine')"),
    (dict(comparison="spearman"), "Spearman agreement has no r^2 variant; use score='r' with "
                                  "comparison='spearman' (or comparison='pearson' for r^2)"),
    (dict(precision="half"), "precision='half' is not one of ('exact', 'float32', 'fast')"),
])
def test_select_maps_option_messages(kw, message):
  maps, human = _pooled_case()
  with pytest.raises(ValueError) as e:
    selection.select_maps(ablation.PooledHead(), maps, human, **kw)
  assert str(e.value) == message


def test_select_maps_refuses_maps_of_the_wrong_rank_and_unknown_heads():
  maps, human = _pooled_case()
  with pytest.raises(ValueError) as e:
    selection.select_maps(ablation.PooledHead(), maps[..., 0], human)
  assert str(e.value) == "maps: expected [n, h, w, K], got shape (10, 2, 2)"
  with pytest.raises(TypeError) as e:
    selection.select_maps(object(), maps, human)
  assert str(e.value) == "head: expected PooledHead, FcHead or GenericHead, got <class 'object'>"


# ----------------------------------------------------------------------------------------------
# Pooled heads on signed maps, and Spearman similarity of values that are constant within rounding


def test_pooled_signed_maps_and_an_image_zero_in_two_maps():
  """Feature maps need not be post-ReLU: negative values; an image whose maps 0 and 2 are zero
  (prefixes keeping only those give it an all-zero embedding: NaN pairs); an image with one
  nonzero map, which its removal leaves all zero (NaN train score, so that map's AIS is NaN)."""
  rng = np.random.default_rng(21)
  maps = rng.normal(size=(10, 2, 2, 4))
  maps[3, ..., 0] = maps[3, ..., 2] = 0
  maps[5, ..., [0, 1, 3]] = 0                           # image 5: map 2 only (removing it: NaN)
  human = np.corrcoef(rng.standard_normal((10, 5)))
  tests = [[7, 2], [9, 0, 3, 1]]
  res = selection.select_maps(ablation.PooledHead(), maps, human, test_indices=tests,
                              random_orders=2, random_seed=4,
                              memory_budget_gb=_budget_gb(3, 10, 4))
  assert res.settings["chunk"] == 3
  embed = lambda keep: loop._np_embed_pooled(maps, keep)
  for s, t in enumerate(tests):
    ais, order, tr, te, rand = loop._np_selection(embed, 4, human, t, res.random_orders[s])
    loop._close_nan(res.train_ais[s], ais, 1e-10)
    np.testing.assert_array_equal(res.orders[s], order)
    loop._close_nan(res.train_curves[s], tr, 1e-10)
    loop._close_nan(res.test_curves[s], te, 1e-10)
    for j in range(2):
      loop._close_nan(res.random_train_curves[s, j], rand[j][0], 1e-10)
      loop._close_nan(res.random_test_curves[s, j], rand[j][1], 1e-10)
  assert np.isnan(res.train_ais[:, 2]).all() and np.isfinite(res.train_ais[:, [0, 1, 3]]).all()


def test_spearman_similarity_of_an_image_constant_within_rounding():
  """Image 0's pooled values differ only by ~1e-15 (constant under DESIGN.md's rule): with all
  maps kept its pairs are NaN although their ranks would differ, so the baseline of a split that
  trains on it is undefined (every AIS NaN), and so is the test score with all maps. Image 5 has
  one nonzero map: removing it leaves an all-zero embedding (NaN pairs, NaN AIS)."""
  rng = np.random.default_rng(5)
  n, k = 8, 5
  maps = rng.random((n, 2, 2, k)) + 0.1
  maps[0] = 0.5 + 1e-15 * rng.standard_normal((2, 2, k))
  maps[5, ..., [0, 1, 3, 4]] = 0                        # image 5: map 2 only (removing it: NaN)
  human = np.corrcoef(rng.standard_normal((n, 6)))
  tests = [[0, 1, 2, 3], [4, 5, 6, 7]]
  res = selection.select_maps(ablation.PooledHead(), maps, human, test_indices=tests,
                              similarity="spearman", score="r", random_orders=0,
                              memory_budget_gb=_budget_gb(0.5, n, k))
  assert res.settings["chunk"] == 1                     # at least one prefix per pass
  embed = lambda keep: loop._np_embed_pooled(maps, keep)
  for s, t in enumerate(tests):
    ais, order, tr, te, _ = loop._np_selection(embed, k, human, t, [], sim="spearman",
                                               score="r")
    loop._close_nan(res.train_ais[s], ais, 1e-12)
    loop._close_nan(res.train_curves[s], tr, 1e-12)
    loop._close_nan(res.test_curves[s], te, 1e-12)
  # with all maps kept image 0 is constant; zeroing some of its maps makes it vary again
  assert np.isnan(res.test_curves[0, [0, k - 1]]).all()
  assert np.isfinite(res.test_curves[0, 1:k - 1]).all()
  assert np.isfinite(res.test_curves[1, -1])
  assert np.isnan(res.train_ais[1]).all()
  assert np.isnan(res.train_ais[0, 2]) and np.isfinite(res.train_ais[0, [0, 1, 3, 4]]).all()


def test_all_maps_prefix_is_the_exact_two_pass_similarity():
  """Maps with a large constant offset: the cumulative-sum prefixes lose digits (documented), but
  the m = K prefix (the model with all maps, so also test_full) is the exact two-pass similarity:
  equal to the float64 loop to 1e-10. Its own shapes (n = 11): mutmut links a test only to the
  functions it traces, and a jit trace cached by an earlier test of the same shapes hid this one
  from the prefix code."""
  maps, human = _pooled_case(n=11)
  maps = maps + 1e4
  tests = [[7, 2, 4], [9, 0, 3, 1]]
  res = selection.select_maps(ablation.PooledHead(), maps, human, test_indices=tests, seed=3,
                              random_orders=2)
  embed = lambda keep: loop._np_embed_pooled(maps, keep)
  for s, t in enumerate(tests):
    _, _, tr, te, _ = loop._np_selection(embed, 4, human, t, [])
    assert abs(res.train_curves[s, -1] - tr[-1]) < 1e-10
    assert abs(res.test_full[s] - te[-1]) < 1e-10
    assert abs(res.random_test_curves[s, 0, -1] - te[-1]) < 1e-10


# ----------------------------------------------------------------------------------------------
# Survivors of the partial runs at 7b8ddb6 / 638fe42 (see /work/notes/selection.md)


def test_map_order_of_unsigned_and_bool_scores():
  """The order is by value for any real dtype: unsigned AIS must not wrap when negated (a
  negated uint8 0 stays 0 and 1 becomes 255) and bool scores order True first."""
  assert selection.map_order(np.array([0, 3, 1, 3], np.uint8)).tolist() == [1, 3, 2, 0]
  assert selection.map_order(np.array([False, True, True])).tolist() == [1, 2, 0]


def test_fc_head_spearman_similarity_prefixes_match_loop():
  """Spearman similarity on fc embeddings: the prefix scan ranks ``[chunk, n, D2]`` embeddings
  along the feature axis (not the image axis); curves equal scipy ranks in a float64 loop."""
  f, h = loop._random_case(seed=4, n=10, k=5, hw=5)
  k, window = f.shape[-1], 2
  w1, b1, w2, b2 = loop._random_fc_weights(k, seed=2)
  head = ablation.FcHead(w1=w1, b1=b1, w2=w2, b2=b2, pool_window=window)
  tests = [[0, 3, 7, 8]]
  res = selection.select_maps(head, f, h, test_indices=tests, similarity="spearman", score="r",
                              random_orders=0, chunk=2)
  embed = lambda keep: loop._np_embed_fc(f, keep, w1, b1, w2, b2, window)
  ais, order, tr, te, _ = loop._np_selection(embed, k, h, tests[0], [], sim="spearman",
                                             score="r")
  loop._close_nan(res.train_ais[0], ais, 1e-10)
  loop._close_nan(res.train_curves[0], tr, 1e-10)
  loop._close_nan(res.test_curves[0], te, 1e-10)
  assert np.isfinite(tr[1:]).all()


def test_pooled_cosine_with_pooled_values_of_exactly_one():
  """Pooled values equal to 1.0 are ordinary values: image 0 (a test image) pools to (1, 1, 1)
  and image 1 (a train image) to (1, 1, 3) (constant maps), so every prefix and every removal
  keeps a nonzero vector and the cosine curves (m >= 2) and AIS are defined, equal to the
  float64 loop."""
  rng = np.random.default_rng(9)
  k = 3
  f = rng.uniform(0.1, 2.0, size=(8, 2, 2, k))
  f[0] = 1.0
  f[1, ..., :2] = 1.0
  f[1, ..., 2] = 3.0
  h = rng.normal(size=(8, 8))
  h = (h + h.T) / 2
  res = selection.select_maps(ablation.PooledHead(), f, h, test_indices=[[0, 2, 5, 6]],
                              similarity="cosine", score="r", random_orders=2)
  ais, order, tr, te, rand = loop._np_selection(lambda keep: loop._np_embed_pooled(f, keep), k,
                                                h, [0, 2, 5, 6], res.random_orders[0],
                                                sim="cosine", score="r")
  # one kept map: every pooled cosine is +-1, a constant model vector, so m = 1 is undefined
  assert np.isfinite(ais).all() and np.isfinite(tr[1:]).all() and np.isfinite(te[1:]).all()
  loop._close_nan(res.train_ais[0], ais, 1e-10)
  loop._close_nan(res.train_curves[0], tr, 1e-10)
  loop._close_nan(res.test_curves[0], te, 1e-10)
  for r in range(2):
    loop._close_nan(res.random_train_curves[0, r], rand[r][0], 1e-10)
    loop._close_nan(res.random_test_curves[0, r], rand[r][1], 1e-10)


def _ints_plus_tiny(rng, size, low, high):
  """Integers in [low, high] (no 0) plus +-2^-26: float32 rounds the offset away (exactly), float64
  keeps it."""
  v = rng.integers(low, high + 1, size=size).astype(np.float64)
  v[v == 0] = 1.0
  return v + rng.choice([-1.0, 1.0], size=size) * 2.0**-26


@pytest.mark.parametrize("head_kind", ["pooled", "fc", "generic"])
def test_float32_mode_runs_the_head_in_float32(head_kind):
  """precision='float32' runs the head (maps, weights and biases) in float32: with integer maps
  and weights plus a 2^-26 offset, float32 drops the offset and every head sum is exact, so the
  curves equal the float64 loop on the rounded inputs to 1e-12, and differ from the loop on the
  unrounded inputs by far more (the case tells the two apart)."""
  rng = np.random.default_rng(21)
  n, k, hw, window = 8, 3, 4, 2
  f = _ints_plus_tiny(rng, (n, hw, hw, k), 1, 8)
  h = rng.normal(size=(n, n))
  h = (h + h.T) / 2
  if head_kind == "fc":
    w1, b1 = _ints_plus_tiny(rng, (k * 4, 6), -3, 3), _ints_plus_tiny(rng, 6, -3, 3)
    w2, b2 = _ints_plus_tiny(rng, (6, 5), -3, 3), _ints_plus_tiny(rng, 5, -3, 3)
    head = ablation.FcHead(w1=w1, b1=b1, w2=w2, b2=b2, pool_window=window)
    embed_of = lambda x, *w: (lambda keep: loop._np_embed_fc(x, keep, *w, window))
    exact = embed_of(np.round(f), *(np.round(a) for a in (w1, b1, w2, b2)))
    rough = embed_of(f, w1, b1, w2, b2)
  else:
    head = ablation.PooledHead() if head_kind == "pooled" else ablation.GenericHead(
        embed=lambda maps, keep: jnp.mean(maps[None] * keep[:, None, None, None, :], axis=(2, 3)))
    exact = lambda keep: loop._np_embed_pooled(np.round(f), keep)
    rough = lambda keep: loop._np_embed_pooled(f, keep)
  tests = [[0, 3, 5, 6]]
  res = selection.select_maps(head, f, h, test_indices=tests, precision="float32",
                              random_orders=0, chunk=2)
  ais, _, tr, te, _ = loop._np_selection(exact, k, h, tests[0], [])
  loop._close_nan(res.train_ais[0], ais, 1e-12)
  loop._close_nan(res.train_curves[0], tr, 1e-12)
  loop._close_nan(res.test_curves[0], te, 1e-12)
  ais64, _, tr64, _, _ = loop._np_selection(rough, k, h, tests[0], [])
  assert np.nanmax(np.abs(ais64 - ais)) > 1e-10 and np.nanmax(np.abs(tr64 - tr)) > 1e-10


def test_select_maps_default_memory_budget_is_two_gb():
  """The documented default budget (2 GB). Its effect on the chunk needs inputs of about that
  size, so the default itself is checked; test_fc_exact_mode_float32_maps_over_chunks_of_three
  checks the estimate on both sides of a budget."""
  import inspect
  assert inspect.signature(selection.select_maps).parameters["memory_budget_gb"].default == 2.0
