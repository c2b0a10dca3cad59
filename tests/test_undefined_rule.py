"""DESIGN.md's undefined-value rule, for BOTH arguments of every two-vector statistic, and at the
boundary of its tolerance on both sides.

The rule: a vector is constant (its correlation undefined, NaN) when the RMS deviation from its mean
is <= 1e-12 x its max |value|. The references here are written from that sentence, not from the
library's helpers.
"""

import numpy as np
import pytest

from ais_jax import aim2, rsa

RULE_RTOL = 1e-12  # DESIGN.md section 1, restated on purpose (not imported)


def _constant_by_the_rule(x):
  x = np.asarray(x, np.float64)
  return np.sqrt(np.mean((x - x.mean()) ** 2)) <= RULE_RTOL * np.max(np.abs(x))


def _near_constant(n, relative_rms, seed=0):
  """1 + relative_rms * v, v zero-mean with unit RMS: RMS deviation / max |value| ~ relative_rms."""
  v = np.random.default_rng(seed).standard_normal(n)
  v = (v - v.mean()) / np.sqrt(np.mean((v - v.mean()) ** 2))
  return 1.0 + relative_rms * v


def _pair_functions():
  """name -> f(x, y) returning one correlation-like number for two vectors [n]."""
  def sim_matrix(v):  # a symmetric matrix whose upper triangle is v (n = 6 -> 15 entries)
    m = np.eye(6)
    iu = np.triu_indices(6, 1)
    m[iu] = v
    return m + np.triu(m, 1).T
  return {
      "correlation_pearson": lambda x, y: rsa.correlation(x, y, kind="pearson"),
      "correlation_spearman": lambda x, y: rsa.correlation(x, y, kind="spearman"),
      "agreement_pearson": lambda x, y: rsa.agreement(sim_matrix(x), sim_matrix(y),
                                                      kind="pearson"),
      "agreement_spearman": lambda x, y: rsa.agreement(sim_matrix(x), sim_matrix(y),
                                                       kind="spearman"),
      "match_score": lambda x, y: aim2.match_scores(x.reshape(1, 3, 5), y.reshape(1, 3, 5))[0],
      "aim2_correlate": lambda x, y: aim2.correlate(x, y)["pearson_r"],
  }


PAIRS = _pair_functions()


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("side", ["first", "second"])
@pytest.mark.parametrize("constant", [0.0, 0.7, -3.0])
def test_constant_argument_gives_nan_on_either_side(name, side, constant):
  varied = np.random.default_rng(1).standard_normal(15)
  flat = np.full(15, constant)
  x, y = (flat, varied) if side == "first" else (varied, flat)
  assert np.isnan(float(PAIRS[name](x, y))), f"{name}: constant {side} argument gave a number"


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_both_arguments_varied_is_defined(name):
  rng = np.random.default_rng(2)
  assert np.isfinite(float(PAIRS[name](rng.standard_normal(15), rng.standard_normal(15))))


@pytest.mark.parametrize("side", ["first", "second"])
def test_tolerance_boundary_on_both_sides(side):
  """Just inside the tolerance is constant (NaN), just outside is a number: a loosened or
  tightened constant in the library fails one of the two."""
  y = np.random.default_rng(3).standard_normal(200)
  inside = _near_constant(200, 0.5 * RULE_RTOL)
  outside = _near_constant(200, 4.0 * RULE_RTOL)
  assert _constant_by_the_rule(inside) and not _constant_by_the_rule(outside)
  for near, want_nan in ((inside, True), (outside, False)):
    x_arg, y_arg = (near, y) if side == "first" else (y, near)
    got = float(rsa.correlation(x_arg, y_arg))
    assert np.isnan(got) == want_nan, (near.std(), got)
    assert bool(rsa.is_constant(near)) == want_nan
    assert np.isnan(aim2.correlate(x_arg, y_arg)["pearson_r"]) == want_nan
    if not want_nan:  # and the number is the correlation (float64 keeps ~4 digits of it here)
      ref = np.corrcoef((near - 1.0) / RULE_RTOL, y)[0, 1]
      assert got == pytest.approx(ref, abs=1e-3)


def test_boundary_scales_with_the_vector():
  """The rule is relative: the same shape at 1e6 x scale is judged the same way."""
  for scale in (1e-6, 1.0, 1e6):
    assert bool(rsa.is_constant(scale * _near_constant(100, 0.5 * RULE_RTOL)))
    assert not bool(rsa.is_constant(scale * _near_constant(100, 4.0 * RULE_RTOL)))
  assert bool(rsa.is_constant(np.zeros(10)))  # all-zero is constant
