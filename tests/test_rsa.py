"""ais_jax.rsa against scipy/numpy, its undefined-value rule, precision and JAX properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from ais_jax import rsa
from ais_jax.validation import undefined_summary, validate_human_similarity

TOL = 1e-12
# Measured maxima (printed with `pytest -s`), reported in BUILD.md.
MEASURED = {}


def _record(name, err):
  MEASURED[name] = max(MEASURED.get(name, 0.0), float(err))
  print(f"max abs error {name}: {MEASURED[name]:.3e}")


def _with_ties(rng, shape, levels=7):
  return rng.integers(0, levels, size=shape).astype(np.float64) + rng.normal(size=shape) * (
      rng.random(shape) < 0.5)


# ---------------------------------------------------------------------------------------------
# Ranks


@pytest.mark.parametrize("n", [3, 10, 57, 300])
def test_rankdata_matches_scipy_with_ties_and_nan(n):
  rng = np.random.default_rng(n)
  x = _with_ties(rng, (4, n))
  x[rng.random(x.shape) < 0.15] = np.nan
  got = np.asarray(rsa.rankdata(x, axis=-1))
  want = scipy.stats.rankdata(x, axis=-1, nan_policy="omit")
  np.testing.assert_array_equal(np.isnan(got), np.isnan(x))
  err = np.nanmax(np.abs(got - want))
  _record("rankdata", err)
  assert err <= TOL
  got0 = np.asarray(rsa.rankdata(x.T, axis=0))
  np.testing.assert_allclose(got0, got.T, atol=0)


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float64, st.integers(3, 40),
                  elements=st.sampled_from([0.0, 1.0, 2.5, -3.0, 7.0, np.nan])),
       st.randoms(use_true_random=False))
def test_rank_properties(x, rnd):
  ranks = np.asarray(rsa.rankdata(x))
  perm = np.arange(len(x))
  rnd.shuffle(perm)
  # Permutation equivariance.
  np.testing.assert_array_equal(np.asarray(rsa.rankdata(x[perm])), ranks[perm])
  finite = ~np.isnan(x)
  # Ties share one rank; ranks of the finite entries sum to m(m+1)/2.
  m = finite.sum()
  assert np.isclose(np.nansum(ranks), m * (m + 1) / 2)
  for v in np.unique(x[finite]):
    assert len(np.unique(ranks[x == v])) == 1
  assert np.all(np.isnan(ranks[~finite]))


# ---------------------------------------------------------------------------------------------
# Correlations


@pytest.mark.parametrize("n", [3, 4, 25, 120, 300])
def test_masked_pearson_and_spearman_match_scipy(n):
  rng = np.random.default_rng(100 + n)
  x = _with_ties(rng, (6, n))
  y = _with_ties(rng, (6, n)) + 0.3 * x
  mask = rng.random((6, n)) < 0.85
  mask[:, :3] = True
  x[~mask] = np.nan  # entries outside the mask may hold NaN
  got_p = np.asarray(rsa.correlation(x, y, mask, kind="pearson"))
  got_s = np.asarray(rsa.correlation(x, y, mask, kind="spearman"))
  for b in range(6):
    xb, yb = x[b, mask[b]], y[b, mask[b]]
    want_p = scipy.stats.pearsonr(xb, yb).statistic
    want_s = scipy.stats.spearmanr(xb, yb).statistic
    _record("pearson", abs(got_p[b] - want_p))
    _record("spearman", abs(got_s[b] - want_s))
    assert abs(got_p[b] - want_p) <= TOL
    assert abs(got_s[b] - want_s) <= TOL


@settings(max_examples=30, deadline=None)
@given(st.integers(3, 60), st.integers(0, 2**31 - 1), st.floats(0.01, 100), st.floats(-50, 50))
def test_correlation_properties(n, seed, scale, shift):
  rng = np.random.default_rng(seed)
  x, y = rng.normal(size=n), rng.normal(size=n)
  for kind in rsa.COMPARISONS:
    r = float(rsa.correlation(x, y, kind=kind))
    assert -1 - 1e-12 <= r <= 1 + 1e-12
    assert abs(r - float(rsa.correlation(y, x, kind=kind))) <= 1e-13
    r_affine = float(rsa.correlation(scale * x + shift, y, kind=kind))
    assert abs(r - r_affine) <= 1e-10


def test_nan_inside_mask_poisons_and_outside_is_ignored():
  x = np.array([1.0, 2.0, np.nan, 4.0, 3.0])
  y = np.array([2.0, 1.0, 5.0, 3.0, 3.5])
  inside = np.ones(5, bool)
  outside = np.array([1, 1, 0, 1, 1], bool)
  for kind in rsa.COMPARISONS:
    assert np.isnan(rsa.correlation(x, y, inside, kind=kind))
    assert np.isfinite(rsa.correlation(x, y, outside, kind=kind))


# ---------------------------------------------------------------------------------------------
# Similarity matrices and agreement


@pytest.mark.parametrize("kind", rsa.SIMILARITIES)
def test_similarity_matrix_matches_reference(kind):
  rng = np.random.default_rng(7)
  e = np.maximum(rng.normal(size=(3, 9, 31)), 0)  # ReLU-like ties at 0, stacked [3, n, D]
  got = np.asarray(rsa.similarity_matrix(e, kind=kind))
  assert got.shape == (3, 9, 9)
  for b in range(3):
    if kind == "pearson":
      want = np.corrcoef(e[b])
    elif kind == "spearman":
      want = scipy.stats.spearmanr(e[b], axis=1).statistic
    else:
      want = np.array([[np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v) for v in e[b]]
                       for u in e[b]])
    err = np.max(np.abs(got[b] - want))
    _record(f"similarity_{kind}", err)
    assert err <= TOL


def test_agreement_and_row_agreement_match_scipy_loops():
  rng = np.random.default_rng(3)
  n = 40
  s = np.corrcoef(rng.normal(size=(n, 20)))
  h = np.corrcoef(rng.normal(size=(n, 20)) + 0.2 * rng.normal(size=(n, 20)))
  h[1, 7] = h[7, 1] = np.nan
  h[5, 30] = h[30, 5] = np.nan
  iu = np.triu_indices(n, 1)
  finite = np.isfinite(h[iu])
  for kind, fn in (("pearson", scipy.stats.pearsonr), ("spearman", scipy.stats.spearmanr)):
    got = float(rsa.agreement(s, h, kind=kind))
    want = fn(s[iu][finite], h[iu][finite]).statistic
    _record(f"agreement_{kind}", abs(got - want))
    assert abs(got - want) <= TOL
    rows = np.asarray(rsa.row_agreement(s, h, kind=kind))
    for i in range(n):
      keep = (np.arange(n) != i) & np.isfinite(h[i])
      want_i = fn(s[i, keep], h[i, keep]).statistic
      assert abs(rows[i] - want_i) <= TOL


def test_triangle_and_row_helpers():
  m = np.arange(25.0).reshape(5, 5)
  np.testing.assert_array_equal(np.asarray(rsa.upper_triangle(jnp.asarray(m))),
                                m[np.triu_indices(5, 1)])
  for i in range(5):
    np.testing.assert_array_equal(np.asarray(rsa.row_without_diagonal(jnp.asarray(m), i)),
                                  np.delete(m[i], i))
  traced = jax.jit(rsa.row_without_diagonal)(jnp.asarray(m), 3)
  np.testing.assert_array_equal(np.asarray(traced), np.delete(m[3], 3))


# ---------------------------------------------------------------------------------------------
# The DESIGN.md precision trap


def _concentrated_embeddings(rng, n=60, d=512):
  """Embeddings whose pairwise correlations are 0.99 +- 0.001 (DESIGN.md section 3)."""
  common = rng.normal(size=d)
  e = common + 0.1 * rng.normal(size=(n, d)) * (1 + 0.01 * rng.normal(size=(n, 1)))
  return e + 5.0  # a large common offset too, as post-ReLU embeddings have


def test_conditioning_trap_float64_exact_float32_not():
  rng = np.random.default_rng(0)
  e = _concentrated_embeddings(rng)
  n = len(e)
  iu = np.triu_indices(n, 1)
  c = np.corrcoef(e)[iu]
  print(f"first-order similarities: {c.mean():.4f} +- {c.std():.4f}")
  assert 0.985 < c.mean() < 0.995 and c.std() < 0.002
  h = np.corrcoef(e + 0.3 * rng.normal(size=e.shape))  # a human matrix related to the model
  want = np.corrcoef(np.corrcoef(e)[iu], h[iu])[0, 1]  # float64 numpy reference
  got = float(rsa.agreement(rsa.similarity_matrix(e, kind="pearson"), h))
  # The same computation in float32: centred unit rows, Gram matrix, then the second-order
  # Pearson r by the one-pass moment formula, as a float32 pipeline on an accelerator does.
  e32 = e.astype(np.float32)
  u = e32 - e32.mean(axis=1, keepdims=True)
  u /= np.linalg.norm(u, axis=1, keepdims=True)
  x, y = (u @ u.T)[iu], h[iu].astype(np.float32)
  one_pass32 = (np.mean(x * y) - x.mean() * y.mean()) / (x.std() * y.std())
  two_pass32 = np.corrcoef(x, y, dtype=np.float32)[0, 1]
  compensated = float(rsa.agreement(-rsa.dissimilarity_matrix(e32, kind="pearson",
                                                              dtype=jnp.float32),
                                    h.astype(np.float32), dtype=jnp.float32))
  print(f"second-order r = {want:.6f}: float64 library error {abs(got - want):.2e}; float32 "
        f"one-pass {abs(one_pass32 - want):.2e}, float32 two-pass {abs(two_pass32 - want):.2e}, "
        f"compensated float32 fallback {abs(compensated - want):.2e}")
  _record("conditioning_float64", abs(got - want))
  _record("conditioning_float32_one_pass", abs(one_pass32 - want))
  _record("conditioning_float32_two_pass", abs(two_pass32 - want))
  _record("conditioning_float32_compensated", abs(compensated - want))
  assert abs(got - want) <= 1e-9
  assert abs(one_pass32 - want) > 1e-4
  assert abs(two_pass32 - want) > 1e-6  # still 1000x the float64 error
  # The fallback for backends without float64 (BUILD.md gives its numbers).
  assert abs(compensated - want) < 1e-6


# ---------------------------------------------------------------------------------------------
# Undefined values


def test_undefined_rule_constant_zero_and_rounding_noise():
  rng = np.random.default_rng(1)
  y = rng.normal(size=50)
  constant = np.full(50, 0.7)
  zeros = np.zeros(50)
  noise = 0.7 + np.float64(1e-16) * rng.normal(size=50)  # rounding noise only
  real = 0.7 + 1e-9 * rng.normal(size=50)  # tiny but real variation
  for kind in rsa.COMPARISONS:
    assert np.isnan(rsa.correlation(constant, y, kind=kind))
    assert np.isnan(rsa.correlation(zeros, y, kind=kind))
    assert np.isnan(rsa.correlation(y, zeros, kind=kind))
  assert np.isnan(rsa.correlation(noise, y))
  assert np.isnan(rsa.correlation(noise, y, kind="spearman"))  # not ranked by rounding noise
  assert np.isfinite(rsa.correlation(real, y))
  assert bool(rsa.is_constant(noise)) and not bool(rsa.is_constant(real))
  e = rng.normal(size=(5, 8))
  e[2] = 0.0
  s = np.asarray(rsa.similarity_matrix(e, kind="pearson"))
  assert np.all(np.isnan(s[2])) and np.all(np.isnan(s[:, 2]))
  assert np.all(np.isfinite(np.delete(np.delete(s, 2, 0), 2, 1)))
  assert np.all(np.isnan(np.asarray(rsa.similarity_matrix(e, kind="cosine"))[2]))
  summary = undefined_summary(s, ("row", "col"))
  assert summary["count"] == 9 and summary["per_row"][2] == 5


# ---------------------------------------------------------------------------------------------
# JAX properties


def test_jit_equals_nojit_and_compiles_once():
  rng = np.random.default_rng(5)
  e = rng.normal(size=(12, 16))
  h = np.corrcoef(rng.normal(size=(12, 5)))
  with jax.disable_jit():
    with rsa.float64_scope():
      eager = np.asarray(rsa.row_agreement.kernel(
          rsa.similarity_matrix.kernel(jnp.asarray(e), kind="spearman"), jnp.asarray(h)))
  jitted = np.asarray(rsa.row_agreement(rsa.similarity_matrix(e, kind="spearman"), h))
  np.testing.assert_allclose(jitted, eager, rtol=0, atol=1e-14)
  fn = rsa.similarity_matrix.jitted
  rsa.similarity_matrix(rng.normal(size=(7, 3)), kind="cosine")
  before = fn._cache_size()
  rsa.similarity_matrix(rng.normal(size=(7, 3)), kind="cosine")
  assert fn._cache_size() == before


def test_float64_scope_leaves_global_flag_alone():
  assert not jax.config.jax_enable_x64
  out = rsa.similarity_matrix(np.random.default_rng(0).normal(size=(4, 6)))
  assert out.dtype == jnp.float64
  assert not jax.config.jax_enable_x64
  assert jnp.ones(2).dtype == jnp.float32


# ---------------------------------------------------------------------------------------------
# Validation of the human matrix


def _good_human(n=6, seed=0):
  h = np.corrcoef(np.random.default_rng(seed).normal(size=(n, 10)))
  return h


@pytest.mark.parametrize("mutate, message", [
    (lambda h: h[:, :5], "square"),
    (lambda h: h[None], "square"),
    (lambda h: np.where(np.eye(6, dtype=bool), 1.0, h + np.triu(np.full((6, 6), 0.1), 1)),
     "not symmetric"),
    (lambda h: _set(h, [(0, 1)], np.nan, symmetric=False), "missing (NaN) pattern"),
    (lambda h: _set(h, [(0, 1)], np.inf), "infinite"),
    (lambda h: _set(h, [(0, j) for j in range(2, 6)], np.nan), "fewer than 3"),
    (lambda h: _set(h, [(0, j) for j in range(1, 6)], 0.25), "constant"),
    (lambda h: h.astype(str), "numeric"),
])
def test_validation_errors_name_the_problem(mutate, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    validate_human_similarity(mutate(_good_human()), name="human")


def test_validation_wrong_cohort_size_and_good_matrix():
  with pytest.raises(ValueError, match="6x6 but the cohort has 7"):
    validate_human_similarity(_good_human(), 7)
  h = _set(_good_human(), [(0, 3)], np.nan)
  out = validate_human_similarity(h, 6)
  assert out.dtype == np.float64 and np.isnan(out[0, 3])


@pytest.mark.parametrize("rows_per_block", [1, 3, 100])
def test_symmetry_check_in_row_blocks(monkeypatch, rows_per_block):
  """The blocked symmetry check (no n x n temporaries) against a plain float64 comparison: the
  same pairs flagged whatever the block size, the tolerance relative to the largest finite
  off-diagonal entry (here in the last block), accepted just inside, refused just outside."""
  from ais_jax import validation
  n = 10
  monkeypatch.setattr(validation, "VALIDATION_BLOCK_VALUES", rows_per_block * n)
  h = _good_human(n)
  h[8, 9] = h[9, 8] = -4.0                       # the scale: 4 (diagonal 1 is not counted)
  h[0, 0] = 50.0
  tol = validation.SYMMETRY_RTOL * 4.0
  h[2, 7] = h[7, 2] + 0.9 * tol                   # inside: accepted
  validate_human_similarity(h, name="human")
  h[3, 8] = h[8, 3] + 1.1 * tol                   # outside: refused, named
  h[6, 1] = h[1, 6] - 1.1 * tol
  plain = (np.abs(h - h.T) > tol) & ~np.eye(n, dtype=bool)
  assert np.argwhere(np.triu(plain)).tolist() == [[1, 6], [3, 8]]
  with pytest.raises(ValueError, match=r"human: matrix is not symmetric: 2 pairs differ, e\.g\. "):
    validate_human_similarity(h, name="human")


def _set(h, pairs, value, symmetric=True):
  h = np.array(h, dtype=np.float64)
  for i, j in pairs:
    h[i, j] = value
    if symmetric:
      h[j, i] = value
  return h
