"""Aim 2 details that mutation testing (experiments/mutation.sh aim2) showed unchecked: every input
check's message, the undefined-value rule per map inside a batch, the smallest defined cases (one
value, three pairs, one finite sample), float32 inputs computed in float64 as documented, shapes
and dtypes of the results, and the keys of the returned dicts. Expected values are worked out by
hand or by scipy/torch, never by the function under test."""

import math
import re
import warnings

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from ais_jax import aim2

nan = float("nan")


def _raises_exactly(message):
  return pytest.raises(ValueError, match="^" + re.escape(message) + "$")


# ----------------------------------------------------------------------------------------------
# Input checks: the whole message, so a check that is skipped (and fails later with numpy's or
# scipy's own error) or loses its explanation is noticed.


def test_match_scores_input_messages():
  rng = np.random.default_rng(0)
  with _raises_exactly("heatmaps must be [n, h, w] for the same n images; got (2, 3, 3) and (3, 3, 3)"):
    aim2.match_scores(rng.random((2, 3, 3)), rng.random((3, 3, 3)))
  with _raises_exactly("heatmaps must be [n, h, w] for the same n images; got (2, 3, 3) and (3, 4, 4)"):
    aim2.match_scores(rng.random((2, 3, 3)), rng.random((3, 4, 4)), size=(6, 6))
  # One side with the wrong rank, same leading length: still refused, whichever side it is.
  with _raises_exactly("heatmaps must be [n, h, w] for the same n images; got (3, 9) and (3, 3, 3)"):
    aim2.match_scores(rng.random((3, 9)), rng.random((3, 3, 3)))
  with _raises_exactly("heatmaps must be [n, h, w] for the same n images; got (3, 3, 3) and (3, 9)"):
    aim2.match_scores(rng.random((3, 3, 3)), rng.random((3, 9)))
  with _raises_exactly("heatmap resolutions differ ((7, 5) vs (9, 4)): pass size=(H, W), normally the "
                       "image size, to upsample both before correlating"):
    aim2.match_scores(rng.random((2, 7, 5)), rng.random((2, 9, 4)))


def test_max_entropy_input_messages():
  with _raises_exactly("logits must be [n, C] for the same n images; got (3, 4) and (2, 4)"):
    aim2.max_entropy(np.zeros((3, 4)), np.zeros((2, 4)))
  with _raises_exactly("logits must be [n, C] for the same n images; got (3,) and (3, 5)"):
    aim2.max_entropy(np.zeros(3), np.zeros((3, 5)))
  with _raises_exactly("logits must be [n, C] for the same n images; got (3, 5) and (3,)"):
    aim2.max_entropy(np.zeros((3, 5)), np.zeros(3))


def test_distribution_input_messages():
  with _raises_exactly("x and y must have the same length; got 3 and 4"):
    aim2.correlate([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
  with _raises_exactly("per_image_ais must be [n, K]; got shape (5,)"):
    aim2.map_mean_ais(np.zeros(5))
  with _raises_exactly("per_image_ais must be [n, K]; got shape (1, 2, 3)"):
    aim2.mean_absolute_deviation(np.zeros((1, 2, 3)))
  with _raises_exactly("axis must be 'map' or 'image'; got 'maps'"):
    aim2.mean_absolute_deviation(np.zeros((2, 3)), axis="maps")
  with _raises_exactly("KS test needs finite values in both samples; got 0 and 3"):
    aim2.ks_test([nan, nan], [1.0, 2.0, 3.0])
  with _raises_exactly("KS test needs finite values in both samples; got 2 and 0"):
    aim2.ks_test([1.0, 2.0], [np.inf])
  with _raises_exactly("cohort_ais must be [C, K]; got shape (4,)"):
    aim2.cohort_correlations(np.zeros(4))
  with _raises_exactly("kind must be 'pearson' or 'spearman'; got 'kendall'"):
    aim2.cohort_correlations(np.zeros((2, 4)), kind="kendall")
  with _raises_exactly("names has 2 entries for 3 rows of cohort_ais"):
    aim2.cohort_correlations(np.zeros((3, 4)), ["a", "b"])


# ----------------------------------------------------------------------------------------------
# Match score


def test_match_scores_constant_map_inside_a_varied_batch():
  """The undefined rule is applied per image: one constant map (0.3, which float32 upsampling
  7x7 -> 50x50 turns into ~1e-8 of noise) makes only its own image NaN, on either side."""
  rng = np.random.default_rng(5)
  a, b = rng.random((3, 7, 7)), rng.random((3, 7, 7))
  a[0] = 0.3
  b[1] = 0.3
  got = aim2.match_scores(a, b, size=(50, 50))
  assert got.dtype == np.float64 and got.shape == (3,)
  assert np.isnan(got[0]) and np.isnan(got[1])
  up = [torch.nn.functional.interpolate(torch.from_numpy(m.astype(np.float32))[None, None], size=(50, 50),
                                        mode="bilinear", align_corners=False)[0, 0].numpy()
        for m in (a[2], b[2])]
  assert got[2] == pytest.approx(np.corrcoef(up[0].ravel(), up[1].ravel())[0, 1], abs=1e-5)


# ----------------------------------------------------------------------------------------------
# Empirical CDF and entropies


def test_empirical_cdf_small_cases():
  cdf = aim2.empirical_cdf([3, 1, 2])                        # integers: float64 values
  assert cdf["x"].dtype == np.float64 and cdf["p"].dtype == np.float64
  np.testing.assert_array_equal(cdf["x"], [1.0, 2.0, 3.0])
  np.testing.assert_allclose(cdf["p"], [1 / 3, 2 / 3, 1.0], rtol=1e-15)
  one = aim2.empirical_cdf([nan, 0.25, np.inf])              # one defined value: p = [1]
  np.testing.assert_array_equal(one["x"], [0.25])
  np.testing.assert_array_equal(one["p"], [1.0])
  assert one["n"] == 1 and one["n_undefined"] == 2
  none = aim2.empirical_cdf([nan, nan])
  assert none["x"].size == 0 and none["p"].size == 0 and none["n"] == 0 and none["n_undefined"] == 2


def _entropy_by_hand(logits):
  """Entropy (nats) of softmax(logits) for one row, from the definition in float64."""
  z = [float(v) for v in logits]
  top = max(z)
  w = [math.exp(v - top) for v in z]
  total = sum(w)
  return -sum(wi / total * math.log(wi / total) for wi in w)


def test_softmax_entropy_float32_input_is_computed_in_float64():
  logits = np.array([[0.0, 1.0, 2.0], [0.1, -3.0, 0.7]], np.float32)
  got = aim2.softmax_entropy(logits)
  assert got.dtype == np.float64
  # The reference uses the float32 logits' exact values, in float64 (a float32 computation is
  # off by ~1e-7).
  np.testing.assert_allclose(got, [_entropy_by_hand(r) for r in logits], rtol=1e-13)
  e = math.e
  assert got[0] == pytest.approx(math.log(1 + e + e * e) - (e + 2 * e * e) / (1 + e + e * e), rel=1e-13)


def test_softmax_entropy_along_the_last_axis_of_any_rank():
  assert aim2.softmax_entropy(np.zeros(4)) == pytest.approx(math.log(4), rel=1e-15)   # one vector
  z = np.random.default_rng(6).standard_normal((2, 3, 5)) * 3
  got = aim2.softmax_entropy(z)
  assert got.shape == (2, 3)
  ref = scipy.stats.entropy(scipy.special.softmax(z, axis=-1), axis=-1)
  np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_softmax_entropy_of_impossible_classes():
  """A -inf logit is a class of probability 0: it adds 0 log 0 = 0, without NaN or a warning."""
  logits = np.array([[0.0, -np.inf, -np.inf], [0.0, 0.0, -np.inf], [-np.inf, 1.0, 1.0]])
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    got = aim2.softmax_entropy(logits)
  np.testing.assert_array_equal(got, [0.0, math.log(2), math.log(2)])


# ----------------------------------------------------------------------------------------------
# Correlations


def test_correlate_with_three_pairs_by_hand():
  """n = 3 is the smallest defined case: x = (1, 2, 3), y = (1, 3, 2) give r = rho = 1/2; the
  t statistic r sqrt(1 / (1 - r^2)) = 1/sqrt(3) with 1 degree of freedom (a Cauchy
  distribution) gives the two-sided p = 1 - (2/pi) atan(1/sqrt(3)) = 2/3."""
  res = aim2.correlate([1.0, nan, 2.0, 3.0], [1.0, 5.0, 3.0, 2.0])
  assert res == pytest.approx({"n": 3, "n_excluded": 1, "pearson_r": 0.5, "pearson_p": 2 / 3,
                               "spearman_rho": 0.5, "spearman_p": 2 / 3}, rel=1e-12)


def test_correlate_undefined_result_has_every_key():
  for x, y, n in (([1.0, 2.0], [2.0, 1.0], 2),              # too few pairs
                  ([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 5.0], 4)):   # a constant side
    res = aim2.correlate(x, y)
    assert sorted(res) == ["n", "n_excluded", "pearson_p", "pearson_r", "spearman_p", "spearman_rho"]
    assert res["n"] == n and res["n_excluded"] == 0
    for key in ("pearson_r", "pearson_p", "spearman_rho", "spearman_p"):
      assert isinstance(res[key], float) and math.isnan(res[key]), key


def test_cohort_correlations_defaults_dtypes_and_p_values():
  x = np.array([[1.0, 2.0, 3.0, 4.0, 5.0],
                [1.0, 3.0, 2.0, 5.0, 4.0],
                [5.0, 1.0, 4.0, 2.0, 3.0]])
  res = aim2.cohort_correlations(x)                          # default names and kind
  assert sorted(res) == ["kind", "n", "names", "p", "r"]
  assert res["names"] == ["0", "1", "2"] and res["kind"] == "pearson"
  assert res["r"].dtype == np.float64 and res["p"].dtype == np.float64
  assert res["n"].dtype.kind == "i" and res["n"].shape == (3, 3)
  assert res["r"][0, 1] == pytest.approx(0.8, rel=1e-12)   # centred dot 8 over |x||y| = 10
  for kind, fn in (("pearson", scipy.stats.pearsonr), ("spearman", scipy.stats.spearmanr)):
    res = aim2.cohort_correlations(x, ("a", "b", "c"), kind=kind)
    assert res["kind"] == kind and res["names"] == ["a", "b", "c"]
    for i in range(3):
      for j in range(3):
        ref = fn(x[i], x[j])
        assert res["r"][i, j] == pytest.approx(ref.statistic, abs=1e-12)
        assert res["p"][i, j] == pytest.approx(ref.pvalue, rel=1e-10, abs=1e-300)
    np.testing.assert_array_equal(res["n"], np.full((3, 3), 5))


# ----------------------------------------------------------------------------------------------
# AIS distributions


def test_map_mean_of_a_map_defined_in_one_image():
  a = np.array([[2.0, 1.0, nan],
                [nan, 3.0, nan],
                [nan, nan, nan]])
  res = aim2.map_mean_ais(a)
  np.testing.assert_array_equal(res["mean"], [2.0, 2.0, nan])
  np.testing.assert_array_equal(res["n_defined"], [1, 2, 0])
  assert res["n_undefined"] == 6


def test_float32_ais_is_averaged_in_float64():
  """Float32 per-image AIS (what the kernels return) are summed in float64: 1 + 2^-24 + 2^-24 is
  1 in float32 arithmetic but 1 + 2^-23 in float64."""
  tiny = 2.0 ** -24
  a = np.array([[1.0, 4.0], [tiny, 4.0], [tiny, 4.0]], np.float32)
  mean = aim2.map_mean_ais(a)["mean"]
  assert mean.dtype == np.float64
  assert mean[0] == (1.0 + 2 * tiny) / 3 and mean[1] == 4.0
  m = (1.0 + 2 * tiny) / 3
  mad = aim2.mean_absolute_deviation(a, axis="map")
  assert mad.dtype == np.float64
  assert mad[0] == pytest.approx(((1.0 - m) + 2 * (m - tiny)) / 3, rel=1e-15) and mad[1] == 0.0
  assert aim2.log10_mean_ais(a)["log10_mean"][0] == pytest.approx(math.log10(m), rel=1e-15)


def test_log10_mean_ais_hand_worked():
  # per-map means: 1, 10, 100, 0 (exactly), -2, undefined
  a = np.array([[1.0, 10.0, 100.0, -1.0, -2.0, nan],
                [1.0, 10.0, 100.0, 1.0, -2.0, nan]])
  res = aim2.log10_mean_ais(a, bins=2)
  np.testing.assert_array_equal(res["log10_mean"], [0.0, 1.0, 2.0])
  np.testing.assert_array_equal(res["map_index"], [0, 1, 2])
  np.testing.assert_array_equal(res["edges"], [0.0, 1.0, 2.0])
  np.testing.assert_array_equal(res["counts"], [1, 2])      # the last bin includes its right edge
  assert (res["n_maps"], res["n_positive"], res["n_nonpositive"], res["n_undefined_maps"],
          res["n_undefined_values"]) == (6, 3, 2, 1, 2)
  default = aim2.log10_mean_ais(a)                           # bins=30 by default
  assert default["counts"].shape == (30,) and default["edges"].shape == (31,)
  assert default["counts"].sum() == 3


def test_log10_mean_ais_without_positive_maps():
  res = aim2.log10_mean_ais(np.array([[0.0, -1.0, nan], [0.0, -3.0, nan]]))
  assert res["log10_mean"].size == 0 and res["map_index"].size == 0
  assert res["counts"].shape == (0,) and res["edges"].shape == (0,)
  assert res["counts"].dtype == np.histogram([1.0], bins=3)[0].dtype   # integer counts either way
  assert (res["n_positive"], res["n_nonpositive"], res["n_undefined_maps"]) == (0, 2, 1)


def test_mean_absolute_deviation_single_values_and_shapes():
  a = np.array([[5.0, 1.0], [nan, 3.0]])
  np.testing.assert_array_equal(aim2.mean_absolute_deviation(a), [0.0, 1.0])    # default 'map'
  np.testing.assert_array_equal(aim2.mean_absolute_deviation(a, axis="map"), [0.0, 1.0])
  np.testing.assert_array_equal(aim2.mean_absolute_deviation(a, axis="image"), [2.0, 0.0])
  one_map = np.array([[1.0], [3.0]])                         # K = 1 still gives [K]
  per_map = aim2.mean_absolute_deviation(one_map, axis="map")
  assert per_map.shape == (1,) and per_map[0] == 1.0
  one_image = np.array([[1.0, 4.0]])                         # n = 1 still gives [n]
  per_image = aim2.mean_absolute_deviation(one_image, axis="image")
  assert per_image.shape == (1,) and per_image[0] == 1.5


def test_ks_test_hand_worked():
  """a = {1, 2} below b = {3, 4, 5}: D = 1; two of the C(5, 2) = 10 equally likely arrangements
  are as extreme (a all below or all above), so the exact two-sided p = 0.2."""
  res = aim2.ks_test([1.0, nan, 2.0, np.inf], [3.0, nan, nan, 4.0, 5.0])
  assert res == pytest.approx({"statistic": 1.0, "pvalue": 0.2, "n_a": 2, "n_b": 3,
                               "n_excluded_a": 2, "n_excluded_b": 2}, rel=1e-12)


@pytest.mark.parametrize("single_side", ["a", "b"])
def test_ks_test_with_one_finite_value(single_side):
  """One value among three: D = 2/3 wherever it lies inside; it lies at either end (D = 1) or
  inside (D = 2/3) and D >= 2/3 always, so p = 1."""
  one, three = [nan, 0.5], [0.1, 0.2, 0.9]
  a, b = (one, three) if single_side == "a" else (three, one)
  res = aim2.ks_test(a, b)
  assert res["statistic"] == pytest.approx(2 / 3, rel=1e-15)
  assert res["pvalue"] == pytest.approx(1.0, rel=1e-12)
  assert (res["n_a"], res["n_b"]) == ((1, 3) if single_side == "a" else (3, 1))
