"""Statistics helpers against scipy and hand computations."""

import numpy as np
import pytest
import scipy.special
import scipy.stats

from ais_jax import stats


@pytest.fixture(scope="module")
def paired():
  rng = np.random.default_rng(0)
  full = rng.normal(0.3, 0.05, size=40)
  retained = full + rng.normal(0.01, 0.02, size=40)
  return retained, full


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_paired_ttest_equals_scipy(paired, alternative):
  a, b = paired
  got = stats.paired_ttest(a, b, alternative=alternative)
  want = scipy.stats.ttest_rel(a, b, alternative=alternative)
  assert got.statistic == pytest.approx(want.statistic, rel=1e-12)
  assert got.pvalue == pytest.approx(want.pvalue, rel=1e-10)
  assert got.df == 39 and got.n == 40 and got.n_dropped == 0


def test_paired_ttest_drops_nan_pairs(paired):
  a, b = paired
  a = a.copy()
  a[[3, 7]] = np.nan
  got = stats.paired_ttest(a, b)
  keep = ~np.isnan(a)
  want = scipy.stats.ttest_rel(a[keep], b[keep])
  assert got.n_dropped == 2 and got.n == 38
  assert got.statistic == pytest.approx(want.statistic, rel=1e-12)


def test_corrected_resampled_ttest_by_hand(paired):
  a, b = paired
  d = [x - y for x, y in zip(a, b)]
  j = len(d)
  mean = sum(d) / j
  var = sum((v - mean) ** 2 for v in d) / (j - 1)
  n_train, n_test = 73.6, 18.4                     # 92 images, 5 folds
  t = mean / ((1 / j + n_test / n_train) * var) ** 0.5
  p = 2 * scipy.stats.t.sf(abs(t), j - 1)
  got = stats.corrected_resampled_ttest(a, b, n_train=n_train, n_test=n_test)
  assert got.statistic == pytest.approx(t, rel=1e-12)
  assert got.pvalue == pytest.approx(p, rel=1e-10)
  # the correction only shrinks |t| relative to the paired test
  assert abs(got.statistic) < abs(stats.paired_ttest(a, b).statistic)
  one = stats.corrected_resampled_ttest(a, b, n_train=n_train, n_test=n_test,
                                        alternative="greater")
  assert one.pvalue == pytest.approx(scipy.stats.t.sf(t, j - 1), rel=1e-10)


def test_loftus_masson_direct_formula():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(12, 3)) + rng.normal(size=(12, 1)) * 3   # large subject effects
  got = stats.loftus_masson_se(x)
  # Direct: SS_interaction = SS_total - SS_subjects - SS_conditions.
  j, c = x.shape
  grand = x.mean()
  ss_total = ((x - grand) ** 2).sum()
  ss_subj = c * ((x.mean(1) - grand) ** 2).sum()
  ss_cond = j * ((x.mean(0) - grand) ** 2).sum()
  ms = (ss_total - ss_subj - ss_cond) / ((j - 1) * (c - 1))
  assert got.se == pytest.approx(np.sqrt(ms / j), rel=1e-12)
  assert got.ci_halfwidth == pytest.approx(scipy.stats.t.ppf(0.975, (j - 1) * (c - 1))
                                           * np.sqrt(ms / j), rel=1e-12)
  # subject effects do not enter the within-subject error
  shifted = x + rng.normal(size=(12, 1)) * 100
  assert stats.loftus_masson_se(shifted).se == pytest.approx(got.se, rel=1e-9)
  # two conditions: se = sd(difference) / sqrt(2 J)
  two = x[:, :2]
  assert stats.loftus_masson_se(two).se == pytest.approx(
      np.std(two[:, 0] - two[:, 1], ddof=1) / np.sqrt(2 * j), rel=1e-12)


def test_mean_retained_size():
  assert stats.mean_retained_size([3, 5, 0, 4]) == 4.0
  assert np.isnan(stats.mean_retained_size([0, 0]))


def test_bad_alternative_is_refused():
  with pytest.raises(ValueError, match="alternative"):
    stats.paired_ttest([1.0, 2.0, 3.0], [1.0, 2.5, 2.0], alternative="bigger")
  with pytest.raises(ValueError, match="alternative"):
    stats.corrected_resampled_ttest([1.0, 2.0], [0.0, 1.5], n_train=4, n_test=1,
                                    alternative="bigger")


def test_unequal_lengths_are_refused():
  with pytest.raises(ValueError, match="differ in length: 3 vs 2"):
    stats.paired_ttest([0.1, 0.2, 0.3], [0.1, 0.2])


def test_two_pairs_is_the_minimum():
  """Boundary on both sides: 2 pairs give a test (df 1), 1 pair is refused."""
  a, b = [0.4, 0.7], [0.1, 0.5]
  want = scipy.stats.ttest_rel(a, b)
  for got in (stats.paired_ttest(a, b),
              stats.corrected_resampled_ttest(a, b, n_train=1e12, n_test=1)):
    assert got.df == 1.0 and got.n == 2 and got.n_dropped == 0
    assert got.alternative == "two-sided"
  assert stats.paired_ttest(a, b).statistic == pytest.approx(want.statistic, rel=1e-12)
  for fn in (stats.paired_ttest,
             lambda x, y: stats.corrected_resampled_ttest(x, y, n_train=4, n_test=1)):
    with pytest.raises(ValueError, match="at least 2 pairs"):
      fn([0.4, np.nan], [0.1, 0.5])


def test_corrected_ttest_degrees_of_freedom_and_reported_fields():
  a = np.array([0.31, 0.35, 0.29, 0.40, 0.33, np.nan])
  b = np.array([0.30, 0.30, 0.30, 0.30, 0.30, 0.30])
  got = stats.corrected_resampled_ttest(a, b, n_train=np.full(6, 20), n_test=np.full(6, 5),
                                        alternative="less")
  d = a[:5] - b[:5]
  t = d.mean() / np.sqrt((1 / 5 + 5 / 20) * d.var(ddof=1))
  assert (got.df, got.n, got.n_dropped, got.alternative) == (4.0, 5, 1, "less")
  assert got.mean_difference == pytest.approx(d.mean(), rel=1e-15)
  assert got.statistic == pytest.approx(t, rel=1e-12)
  assert got.pvalue == pytest.approx(scipy.stats.t.cdf(t, 4), rel=1e-10)
  # Ratios that vary by split enter through their mean.
  varied = stats.corrected_resampled_ttest(a, b, n_train=[10, 30, 20, 20, 20, 20],
                                           n_test=[5, 5, 5, 5, 5, 5])
  ratio = np.mean(np.array([5, 5, 5, 5, 5, 5]) / np.array([10, 30, 20, 20, 20, 20]))
  assert varied.statistic == pytest.approx(d.mean() / np.sqrt((1 / 5 + ratio) * d.var(ddof=1)),
                                           rel=1e-12)


@pytest.mark.parametrize("shift, want", [(0.0, "nan"), (0.05, "inf"), (-0.05, "-inf")])
def test_corrected_ttest_without_spread(shift, want):
  """Identical differences: no variance. t is NaN for a zero mean and +-inf otherwise, with no
  division warning (warnings from the library are errors in this suite)."""
  b = np.array([0.2, 0.3, 0.4])
  got = stats.corrected_resampled_ttest(b + shift, b, n_train=8, n_test=2)
  if want == "nan":
    assert np.isnan(got.statistic)
  else:
    assert got.statistic == float(want)
    assert got.pvalue == pytest.approx(0.0, abs=1e-300)


def test_loftus_masson_means_and_dropped_rows():
  data = np.array([[0.30, 0.36], [0.28, 0.30], [np.nan, 0.5], [0.35, 0.40], [0.31, 0.33]])
  got = stats.loftus_masson_se(data)
  used = data[[0, 1, 3, 4]]
  np.testing.assert_allclose(got.means, used.mean(axis=0), rtol=1e-15)
  assert (got.n_subjects, got.n_dropped, got.df) == (4, 1, 3)
  with pytest.raises(ValueError, match="at least 2 subjects"):
    stats.loftus_masson_se(data[[0, 2]])
  two = stats.loftus_masson_se(data[[0, 1]])   # the minimum: 2 subjects, df 1
  assert (two.n_subjects, two.df) == (2, 1) and two.se > 0
  with pytest.raises(ValueError, match="conditions"):
    stats.loftus_masson_se(data[:, :1])


def test_selection_summary_direction_and_values_by_hand():
  """selection.summarize on a hand-made result: retained beats full on every split, so every
  reported t is positive, and each number equals the textbook formula written out here."""
  import math
  import statistics
  from ais_jax import selection
  full = [0.30, 0.28, 0.35, 0.31]
  retained = [0.36, 0.30, 0.40, 0.33]
  j, n_train, n_test = 4, 8, 2
  zeros = np.zeros((j, 3))
  result = selection.SelectionResult(
      splits=None, train_masks=np.ones((j, 6), bool), test_masks=np.ones((j, 6), bool),
      train_ais=zeros, orders=np.zeros((j, 3), int), train_curves=zeros, test_curves=zeros,
      m_star=np.array([1, 2, 2, 3]), test_retained=np.array(retained), test_full=np.array(full),
      random_orders=np.zeros((j, 0, 3), int), random_train_curves=np.zeros((j, 0, 3)),
      random_test_curves=np.zeros((j, 0, 3)), random_m_star=np.zeros((j, 0), int),
      random_test_retained=np.zeros((j, 0)), n_train=np.full(j, n_train),
      n_test=np.full(j, n_test), settings={}, undefined={}, timings={})
  out = selection.summarize(result)
  d = [r - f for r, f in zip(retained, full)]
  mean, sd = statistics.fmean(d), statistics.stdev(d)
  t_paired = mean / (sd / math.sqrt(j))
  t_corrected = mean / math.sqrt(sd ** 2 * (1 / j + n_test / n_train))
  paired = out["tests"]["retained_vs_full_paired"]
  corrected = out["tests"]["retained_vs_full_corrected"]
  assert paired["statistic"] == pytest.approx(t_paired, rel=1e-12) and t_paired > 0
  assert paired["mean_difference"] == pytest.approx(mean, rel=1e-12) and mean > 0
  assert paired["pvalue"] == pytest.approx(2 * scipy.stats.t.sf(t_paired, j - 1), rel=1e-10)
  assert corrected["statistic"] == pytest.approx(t_corrected, rel=1e-12)
  assert corrected["pvalue"] == pytest.approx(2 * scipy.stats.t.sf(t_corrected, j - 1), rel=1e-10)
  assert out["mean_test_full"] == pytest.approx(statistics.fmean(full), rel=1e-15)
  assert out["mean_test_retained"] == pytest.approx(statistics.fmean(retained), rel=1e-15)
  assert out["mean_m_star"] == pytest.approx(2.0)
  one_sided = selection.summarize(result, alternative="greater")["tests"]
  assert one_sided["retained_vs_full_paired"]["pvalue"] == pytest.approx(
      scipy.stats.t.sf(t_paired, j - 1), rel=1e-10)
  less = selection.summarize(result, alternative="less")["tests"]
  assert less["retained_vs_full_paired"]["pvalue"] == pytest.approx(
      scipy.stats.t.cdf(t_paired, j - 1), rel=1e-10)
