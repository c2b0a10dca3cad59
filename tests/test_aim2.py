"""Aim 2 statistics against scipy and direct numpy."""

import json
import os

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from ais_jax import aim2
from ais_jax.report import figures


def _torch_up(x, size):
  return torch.nn.functional.interpolate(torch.from_numpy(np.asarray(x, np.float32))[:, None], size=size,
                                         mode="bilinear", align_corners=False)[:, 0].numpy()


def test_match_scores_against_numpy_corrcoef():
  rng = np.random.default_rng(0)
  a = rng.random((6, 7, 7))
  b = rng.random((6, 9, 9))
  b[2] = 0.0                 # constant map -> NaN
  a[4] = 3.0
  got = aim2.match_scores(a, b, size=(32, 32))
  ua, ub = _torch_up(a, (32, 32)), _torch_up(b, (32, 32))
  for i in range(6):
    if i in (2, 4):
      assert np.isnan(got[i])
    else:
      ref = np.corrcoef(ua[i].ravel().astype(np.float64), ub[i].ravel().astype(np.float64))[0, 1]
      assert abs(got[i] - ref) < 1e-5
  assert aim2.count_undefined(got) == 2
  with pytest.raises(ValueError, match="size"):
    aim2.match_scores(a, b)
  same = aim2.match_scores(a, a)
  np.testing.assert_allclose(same[[0, 1, 2, 3, 5]], 1.0, atol=1e-12)


@pytest.mark.parametrize("constant_side", ["a", "b"])
def test_match_score_of_a_constant_map_is_undefined_at_image_resolution(constant_side):
  # Regression (issue 19): a constant 0.3 map at 7x7 upsampled in float32 to 224x224 picks up
  # ~2e-8 of rounding noise, which correlated to a finite score (0.054) instead of NaN.
  rng = np.random.default_rng(3)
  varied = rng.random((3, 7, 7))
  flat = np.full((3, 7, 7), 0.3)
  a, b = (flat, varied) if constant_side == "a" else (varied, flat)
  got = aim2.match_scores(a, b, size=(224, 224))
  assert np.isnan(got).all(), got


def test_empirical_cdf():
  cdf = aim2.empirical_cdf([0.5, np.nan, -0.2, 0.5, 0.9])
  np.testing.assert_array_equal(cdf["x"], [-0.2, 0.5, 0.5, 0.9])
  np.testing.assert_allclose(cdf["p"], [0.25, 0.5, 0.75, 1.0])
  assert cdf["n"] == 4 and cdf["n_undefined"] == 1


def test_entropy_against_scipy():
  rng = np.random.default_rng(1)
  la = rng.standard_normal((5, 10)) * 5
  lb = rng.standard_normal((5, 4)) * 5
  lb[0] = [1000.0, 0.0, 0.0, 0.0]   # overflow-safe, entropy ~ 0
  ea = scipy.stats.entropy(scipy.special.softmax(la, axis=1), axis=1)
  eb = scipy.stats.entropy(scipy.special.softmax(lb, axis=1), axis=1)
  np.testing.assert_allclose(aim2.softmax_entropy(la), ea, rtol=1e-12)
  np.testing.assert_allclose(aim2.softmax_entropy(lb), eb, rtol=1e-12, atol=1e-300)
  np.testing.assert_allclose(aim2.max_entropy(la, lb), np.maximum(ea, eb), rtol=1e-12)
  np.testing.assert_allclose(aim2.softmax_entropy(np.zeros((1, 8))), [np.log(8)], rtol=1e-14)


def test_correlate_against_scipy_with_nan_excluded():
  rng = np.random.default_rng(2)
  x = rng.standard_normal(40)
  y = x + rng.standard_normal(40)
  x[[3, 7]] = np.nan
  res = aim2.match_entropy_correlation(x, y)
  ok = np.isfinite(x)
  r = scipy.stats.pearsonr(x[ok], y[ok])
  s = scipy.stats.spearmanr(x[ok], y[ok])
  assert res["n"] == 38 and res["n_excluded"] == 2
  assert res["pearson_r"] == pytest.approx(r.statistic, abs=1e-14)
  assert res["pearson_p"] == pytest.approx(r.pvalue, rel=1e-10)
  assert res["spearman_rho"] == pytest.approx(s.statistic, abs=1e-14)
  assert res["spearman_p"] == pytest.approx(s.pvalue, rel=1e-10)
  assert np.isnan(aim2.correlate(np.ones(5), np.arange(5.0))["pearson_r"])


def _ais_sample(seed, n=12, k=9):
  rng = np.random.default_rng(seed)
  a = rng.standard_normal((n, k)) * 1e-3 + 2e-4
  a[:, 0] = -1e-3                      # non-positive mean
  a[2, :] = np.nan                     # undefined row
  a[5, 3] = np.nan
  a[:, 8] = np.nan                     # map undefined everywhere
  return a


def test_log10_mean_and_map_means_against_loop():
  a = _ais_sample(3)
  res = aim2.log10_mean_ais(a, bins=5)
  means = []
  for k in range(a.shape[1]):
    col = [v for v in a[:, k] if not np.isnan(v)]
    means.append(sum(col) / len(col) if col else np.nan)
  means = np.array(means)
  pos = [k for k in range(len(means)) if np.isfinite(means[k]) and means[k] > 0]
  np.testing.assert_array_equal(res["map_index"], pos)
  np.testing.assert_allclose(res["log10_mean"], np.log10(means[pos]), rtol=1e-12)
  assert res["n_nonpositive"] == sum(1 for m in means if np.isfinite(m) and m <= 0)
  assert res["n_nonpositive"] >= 1
  assert res["n_undefined_maps"] == 1 and res["n_undefined_values"] == int(np.isnan(a).sum())
  assert res["counts"].sum() == len(pos)
  np.testing.assert_array_equal(aim2.map_mean_ais(a)["n_defined"][[0, 3, 8]], [11, 10, 0])


def test_mean_absolute_deviation_against_loop():
  a = _ais_sample(4)
  per_map = aim2.mean_absolute_deviation(a, axis="map")
  per_image = aim2.mean_absolute_deviation(a, axis="image")
  for k in range(a.shape[1]):
    col = a[:, k][~np.isnan(a[:, k])]
    ref = np.mean(np.abs(col - col.mean())) if col.size else np.nan
    np.testing.assert_allclose(per_map[k], ref, rtol=1e-12, equal_nan=True)
  for i in range(a.shape[0]):
    row = a[i][~np.isnan(a[i])]
    ref = np.mean(np.abs(row - row.mean())) if row.size else np.nan
    np.testing.assert_allclose(per_image[i], ref, rtol=1e-12, equal_nan=True)
  assert per_map.shape == (9,) and per_image.shape == (12,)


def test_ks_and_compare_models_against_scipy():
  a, b = _ais_sample(5), _ais_sample(6, n=15, k=11) * 2
  res = aim2.compare_models(a, b)
  ma, mb = aim2.map_mean_ais(a)["mean"], aim2.map_mean_ais(b)["mean"]
  ref = scipy.stats.ks_2samp(ma[np.isfinite(ma)], mb[np.isfinite(mb)])
  assert res["mean_ais_per_map"]["statistic"] == pytest.approx(ref.statistic, abs=1e-15)
  assert res["mean_ais_per_map"]["pvalue"] == pytest.approx(ref.pvalue, rel=1e-12)
  assert res["mean_ais_per_map"]["n_excluded_a"] == 1
  ia = aim2.mean_absolute_deviation(a, axis="image")
  ib = aim2.mean_absolute_deviation(b, axis="image")
  ref = scipy.stats.ks_2samp(ia[np.isfinite(ia)], ib[np.isfinite(ib)])
  assert res["mad_per_image"]["pvalue"] == pytest.approx(ref.pvalue, rel=1e-12)


@pytest.mark.parametrize("kind", ["pearson", "spearman"])
def test_cohort_correlations(kind):
  rng = np.random.default_rng(7)
  c = rng.standard_normal((4, 30))
  c[1] += c[0]
  c[3, 5] = np.nan
  res = aim2.cohort_correlations(c, ["a", "b", "c", "d"], kind=kind)
  fn = scipy.stats.pearsonr if kind == "pearson" else scipy.stats.spearmanr
  for i in range(4):
    for j in range(4):
      ok = np.isfinite(c[i]) & np.isfinite(c[j])
      ref = fn(c[i][ok], c[j][ok])
      assert res["r"][i, j] == pytest.approx(ref.statistic, abs=1e-12)
      assert res["n"][i, j] == ok.sum()
  assert res["names"] == ["a", "b", "c", "d"]


def test_figures_match_cdf_and_distributions(tmp_path):
  rng = np.random.default_rng(8)
  scores = {"A vs B": np.append(rng.uniform(-1, 1, 20), np.nan), "A vs C": rng.uniform(0, 1, 15)}
  paths = figures.match_cdf(scores, str(tmp_path / "match.png"))
  assert all(os.path.getsize(p) > 0 for p in paths)
  meta = json.load(open(tmp_path / "match.json"))
  assert meta["pairs"]["A vs B"]["n_undefined"] == 1 and meta["pairs"]["A vs B"]["n"] == 20
  rows = open(tmp_path / "match.csv").read().strip().splitlines()
  assert len(rows) == 1 + 20 + 15
  paths = figures.ais_distributions({"m1": _ais_sample(1), "m2": _ais_sample(2)},
                                    str(tmp_path / "dist.png"), bins=5)
  meta = json.load(open(tmp_path / "dist.json"))
  assert "m1 vs m2" in meta["ks"] and meta["models"]["m1"]["n_undefined_maps"] == 1
  assert all(os.path.getsize(p) > 0 for p in paths)
