"""ais_jax.rsa behaviour that the mutation run on rsa.py found untested (BUILD.md "Mutation
testing"): the ``_entry`` wrapper itself, masks of ``is_constant``, ``correlation_change``'s
defaults, broadcasting, error message and undefined rule on each argument, the float32
similarity forms, batched triangle/row helpers and ``human_mask``. References: scipy.stats,
numpy float64 loops and hand-worked cases."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from ais_jax import rsa
from ais_jax.precision import float64_scope

CORRELATE = {"pearson": lambda a, b: scipy.stats.pearsonr(a, b)[0],
             "spearman": lambda a, b: scipy.stats.spearmanr(a, b)[0]}


# ---------------------------------------------------------------------------------------------
# The public-entry wrapper


def test_entry_runs_eager_calls_jitted_in_float64_and_traced_calls_inline():
  traced_with = []

  def scale(x, *, factor="two"):
    traced_with.append(factor)
    return x * (2 if factor == "two" else 3)

  wrapped = rsa._entry("factor")(scale)
  assert wrapped.kernel is scale and wrapped.__name__ == "scale"
  x = np.array([1.0, 2.0, 1.0 + 2.0**-40])  # 2**-40 is lost in float32
  out = wrapped(x, factor="three")
  assert out.dtype == jnp.float64 and not jax.config.jax_enable_x64
  np.testing.assert_array_equal(np.asarray(out), 3 * x)
  wrapped(x + 1, factor="three")  # same shape and static argument: no new trace
  assert traced_with == ["three"] and wrapped.jitted._cache_size() == 1
  # Inside the caller's jit the kernel runs inline, in the caller's (float32) dtype.
  inner = jax.jit(lambda v: wrapped(v, factor="two"))(np.float32([1.5, 2.5]))
  assert traced_with == ["three", "two"] and inner.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(inner), np.float32([3.0, 5.0]))


# ---------------------------------------------------------------------------------------------
# is_constant over a mask


def test_is_constant_restricted_to_the_mask():
  x = np.array([[4.0, 4.0, 4.0, 9.0],
                [1.0, 2.0, 3.0, 3.0]])
  mask = np.array([True, True, True, False])  # broadcast over the rows
  np.testing.assert_array_equal(np.asarray(rsa.is_constant(x, mask)), [True, False])
  np.testing.assert_array_equal(np.asarray(rsa.is_constant(x)), [False, False])
  mask2 = np.array([[False, True, True, True], [False, False, True, True]])
  np.testing.assert_array_equal(np.asarray(rsa.is_constant(x, mask2)), [False, True])
  # Full-rank mask with the vectors along axis 0.
  np.testing.assert_array_equal(np.asarray(rsa.is_constant(x.T, mask2.T, axis=0)),
                                [False, True])


# ---------------------------------------------------------------------------------------------
# correlation_change


def _change_reference(x, dx, y, kind, mask=None):
  """float64 scipy: (r(x, y), r(x + dx, y) - r(x, y)) row by row over the mask."""
  x, dx, y = np.broadcast_arrays(x, dx, y)
  mask = np.ones(x.shape, bool) if mask is None else np.broadcast_to(mask, x.shape)
  r, change = [], []
  for xi, dxi, yi, mi in zip(x.reshape(-1, x.shape[-1]), dx.reshape(-1, x.shape[-1]),
                             y.reshape(-1, x.shape[-1]), mask.reshape(-1, x.shape[-1])):
    before = CORRELATE[kind](xi[mi], yi[mi])
    r.append(before)
    change.append(CORRELATE[kind](xi[mi] + dxi[mi], yi[mi]) - before)
  return np.reshape(r, x.shape[:-1]), np.reshape(change, x.shape[:-1])


def _change(x, dx, y, mask=None, **kind):
  with float64_scope():
    r, change = rsa.correlation_change(jnp.asarray(x), jnp.asarray(dx), jnp.asarray(y),
                                       None if mask is None else jnp.asarray(mask), **kind)
    return np.asarray(r), np.asarray(change)


@pytest.mark.parametrize("kind", ["default", "pearson", "spearman"])
def test_correlation_change_without_mask_and_default_kind(kind):
  rng = np.random.default_rng(11)
  x, y = rng.standard_normal((3, 12)), rng.standard_normal(12)
  dx = 0.3 * rng.standard_normal((3, 12))
  kwargs = {} if kind == "default" else {"kind": kind}
  r, change = _change(x, dx, y, **kwargs)
  want_r, want_change = _change_reference(x, dx, y, kwargs.get("kind", "pearson"))
  np.testing.assert_allclose(r, want_r, rtol=0, atol=1e-12)
  np.testing.assert_allclose(change, want_change, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["pearson", "spearman"])
def test_correlation_change_broadcasts_every_argument(kind):
  rng = np.random.default_rng(12)
  # The batch axis comes from x alone, then from y alone.
  for x_shape, y_shape in (((3, 9), (9,)), ((9,), (2, 9))):
    x, y = rng.standard_normal(x_shape), rng.standard_normal(y_shape)
    dx = 0.5 * rng.standard_normal(9)
    mask = rng.random(9) < 0.8
    mask[:3] = True
    r, change = _change(x, dx, y, mask, kind=kind)
    want_r, want_change = _change_reference(x, dx, y, kind, mask)
    assert r.shape == change.shape == np.broadcast_shapes(x_shape, y_shape)[:-1]
    np.testing.assert_allclose(r, want_r, rtol=0, atol=1e-12)
    np.testing.assert_allclose(change, want_change, rtol=0, atol=1e-12)


def test_correlation_change_kind_error_message():
  with pytest.raises(ValueError, match=re.escape(
      "kind='kendall' is not one of ('pearson', 'spearman')")):
    rsa.correlation_change(jnp.ones(3), jnp.ones(3), jnp.ones(3), kind="kendall")


@pytest.mark.parametrize("kind", ["pearson", "spearman"])
def test_correlation_change_two_entries_is_defined(kind):
  """Hand-worked: two selected entries correlate +-1; swapping their order changes r by -2."""
  x = np.array([1.0, 2.0, 50.0, -7.0])
  y = np.array([3.0, 5.0, np.nan, 0.0])
  dx = np.array([1.0, -1.0, 0.0, 0.0])  # x + dx = [2, 1, ...]
  mask = np.array([True, True, False, False])
  r, change = _change(x, dx, y, mask, kind=kind)
  assert float(r) == pytest.approx(1.0, abs=1e-15)
  assert float(change) == pytest.approx(-2.0, abs=1e-15)
  r1, change1 = _change(x, dx, y, np.array([True, False, False, False]), kind=kind)
  assert np.isnan(r1) and np.isnan(change1)  # fewer than 2 entries


@pytest.mark.parametrize("kind", ["pearson", "spearman"])
@pytest.mark.parametrize("which", ["x", "x + dx", "y"])
def test_correlation_change_constant_within_rounding_is_undefined(kind, which):
  """Each of x, x + dx and y constant within float64 rounding (DESIGN.md section 1) alone makes
  both results NaN; their tiny deviations (1e-14 relative) would otherwise give numbers."""
  rng = np.random.default_rng(13)
  flat = 1.0 + 1e-14 * rng.standard_normal(10)
  varied, other = rng.standard_normal(10), rng.standard_normal(10)
  assert bool(rsa.is_constant(flat)) and not bool(rsa.is_constant(varied))
  if which == "x":
    x, dx, y = flat, varied, other
  elif which == "x + dx":
    x, dx, y = varied, flat - varied, other
  else:
    x, dx, y = varied, 0.2 * other, flat
  assert bool(rsa.is_constant(x + dx)) == (which == "x + dx")
  r, change = _change(x, dx, y, kind=kind)
  assert np.isnan(r) and np.isnan(change), (which, r, change)
  # The same inputs with nothing constant give numbers (the rule, not the arithmetic, decides).
  r_ok, change_ok = _change(varied, 0.2 * other, other, kind=kind)
  assert np.isfinite(r_ok) and np.isfinite(change_ok)


def test_similarity_change_against_float64_difference():
  """Moderate changes, where the plain float64 difference of the two similarities is exact to
  ~1e-15; broadcasting a scalar change over arrays."""
  dot = np.array([0.5, -1.2, 2.0])
  a, b = np.array([2.0, 3.0, 5.0]), np.array([3.0, 1.5, 4.0])
  ddot, da, db = 0.1, np.array([-0.2, 0.4, 1.0]), np.array([0.3, -0.1, 0.0])
  with float64_scope():
    got = np.asarray(rsa.similarity_change(*(jnp.asarray(v) for v in (dot, ddot, a, da, b, db))))
  want = (dot + ddot) / np.sqrt((a + da) * (b + db)) - dot / np.sqrt(a * b)
  np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)


# ---------------------------------------------------------------------------------------------
# Similarity matrices in float32 (compensated form)


def _reference_similarity(e, kind):
  if kind == "pearson":
    return np.corrcoef(e)
  if kind == "spearman":
    return scipy.stats.spearmanr(e, axis=1)[0]
  u = e / np.linalg.norm(e, axis=1, keepdims=True)
  return u @ u.T


@pytest.mark.parametrize("kind", ["pearson", "spearman", "cosine"])
def test_float32_similarity_and_dissimilarity_against_float64(kind):
  rng = np.random.default_rng(14)
  e = rng.standard_normal((5, 20)) + 2.0
  e[1] = e[0] + 0.01 * rng.standard_normal(20)  # a near-1 similarity
  want = _reference_similarity(e, kind)
  sim = np.asarray(rsa.similarity_matrix(e.astype(np.float32), kind=kind, dtype=jnp.float32))
  dis = np.asarray(rsa.dissimilarity_matrix(e.astype(np.float32), kind=kind, dtype=jnp.float32))
  assert sim.dtype == dis.dtype == np.float32
  np.testing.assert_allclose(sim, want, rtol=0, atol=1e-6)
  np.testing.assert_allclose(dis, 1 - want, rtol=0, atol=1e-6)
  # An undefined row (constant, or all zero for cosine) poisons its row and column only.
  e[3] = 0.0
  dis = np.asarray(rsa.dissimilarity_matrix(e.astype(np.float32), kind=kind, dtype=jnp.float32))
  bad = np.zeros((5, 5), bool)
  bad[3], bad[:, 3] = True, True
  np.testing.assert_array_equal(np.isnan(dis), bad)


# ---------------------------------------------------------------------------------------------
# Triangles, rows and the human mask on batched input


def test_upper_triangle_and_row_without_diagonal_on_two_batch_axes():
  m = np.random.default_rng(15).standard_normal((2, 3, 5, 5)).astype(np.float32)
  got = np.asarray(rsa.upper_triangle(jnp.asarray(m)))
  want = np.array([[[m[a, b, i, j] for i in range(5) for j in range(i + 1, 5)]
                    for b in range(3)] for a in range(2)])
  np.testing.assert_array_equal(got, want)
  for i in (0, 2, 4):
    got = np.asarray(rsa.row_without_diagonal(jnp.asarray(m), i))
    np.testing.assert_array_equal(got, np.delete(m[:, :, i, :], i, axis=-1))


def test_human_mask_marks_finite_off_diagonal_pairs():
  h = np.corrcoef(np.random.default_rng(16).standard_normal((4, 7)))
  h[0, 2] = h[2, 0] = np.nan
  h[1, 3] = h[3, 1] = np.nan
  np.fill_diagonal(h, np.nan)  # the diagonal is never a pair, finite or not
  upper = np.asarray(rsa.human_mask(h))
  # Pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3), row-major.
  np.testing.assert_array_equal(upper, [True, False, True, True, False, True])
  np.fill_diagonal(h, 1.0)
  full = np.asarray(rsa.human_mask(h, upper=False))
  want = np.ones((4, 4), bool)
  want[0, 2] = want[2, 0] = want[1, 3] = want[3, 1] = False
  np.fill_diagonal(want, False)
  np.testing.assert_array_equal(full, want)
  np.testing.assert_array_equal(np.asarray(rsa.human_mask(h)), upper)


# ---------------------------------------------------------------------------------------------
# Ranks: tie bounds by hand


def test_tie_bounds_hand_worked_int32_with_ties_at_both_ends():
  # Sorted: 1 1 | 2 2 | 3 | 5 5 5 ; ties at the minimum and at the maximum.
  x = np.array([5.0, 1.0, 2.0, 5.0, 3.0, 1.0, 2.0, 5.0])
  first_want = np.array([5, 0, 2, 5, 4, 0, 2, 5])  # entries strictly below
  last_want = np.array([7, 1, 3, 7, 4, 1, 3, 7])   # entries <= it, minus 1
  with float64_scope():
    first, last = rsa.tie_bounds(jnp.asarray(x))
  assert first.dtype == last.dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(first), first_want)
  np.testing.assert_array_equal(np.asarray(last), last_want)
  # Two batch axes [2, 3, 8]: every vector its own tie groups.
  rng = np.random.default_rng(21)
  xb = rng.integers(0, 4, size=(2, 3, 8)).astype(np.float64)
  xb[1, 2] = x
  with float64_scope():
    fb, lb = rsa.tie_bounds(jnp.asarray(xb))
  assert fb.shape == lb.shape == (2, 3, 8)
  for idx in np.ndindex(2, 3):
    v = xb[idx]
    np.testing.assert_array_equal(np.asarray(fb[idx]), [(v < t).sum() for t in v])
    np.testing.assert_array_equal(np.asarray(lb[idx]), [(v <= t).sum() - 1 for t in v])
  np.testing.assert_array_equal(np.asarray(rsa.rankdata(xb)),
                                scipy.stats.rankdata(xb, axis=-1))


# ---------------------------------------------------------------------------------------------
# Masks that are not bool, the mask's part in the constant test, two-entry correlations


def test_is_constant_counts_a_nonbool_mask_as_its_bool_cast():
  """A broadcast integer or float mask selects its nonzero entries (numpy's bool cast): the
  count n is the number selected, not the sum of the weights."""
  x = np.array([[4.0, 4.0, 4.0, 9.0],
                [1.0, 2.0, 3.0, 3.0]])
  for mask in (np.array([2, 2, 2, 0]), np.array([0.5, 0.5, 0.5, 0.0])):
    np.testing.assert_array_equal(np.asarray(rsa.is_constant(x, mask)), [True, False])


def test_is_constant_tolerance_uses_the_selected_entries_only():
  """The scale of the tolerance is max |x| over the mask: an unselected entry (here 0, far
  below 1) must not raise it. Values ~1e-3 with 1e-10 relative spread are not constant
  (rms ~1e-13 > 1e-12 * 1e-3)."""
  rng = np.random.default_rng(22)
  x = 1e-3 * (1 + 1e-10 * rng.standard_normal(12))
  x[0] = 0.0
  mask = np.arange(12) > 0
  assert not bool(rsa.is_constant(x, mask))
  x[1:] = 1e-3
  assert bool(rsa.is_constant(x, mask))


@pytest.mark.parametrize("kind", ["pearson", "spearman"])
def test_correlation_of_exactly_two_entries_is_plus_or_minus_one(kind):
  x = np.array([[1.0, 3.0, 8.0], [1.0, 3.0, 8.0]])
  y = np.array([[2.0, 7.0, 0.0], [7.0, 2.0, 0.0]])
  two = np.array([True, True, False])
  got = np.asarray(rsa.correlation(x, y, two, kind=kind))
  np.testing.assert_allclose(got, [1.0, -1.0], rtol=0, atol=1e-15)
  one = np.array([True, False, False])
  assert np.all(np.isnan(np.asarray(rsa.correlation(x, y, one, kind=kind))))


def test_public_calls_compute_in_float64_whatever_the_input_dtype():
  """float32 and integer inputs are converted to float64 first: the result matches the float64
  reference to 1e-14, beyond float32 rounding."""
  rng = np.random.default_rng(23)
  x = (1000 + rng.standard_normal(50)).astype(np.float32)  # exactly representable values
  y = (x + 0.001 * rng.standard_normal(50)).astype(np.float32)
  got = rsa.correlation(x, y)
  assert got.dtype == jnp.float64
  want = scipy.stats.pearsonr(x.astype(np.float64), y.astype(np.float64))[0]
  assert abs(float(got) - want) <= 1e-14
  e = rng.integers(0, 9, size=(4, 11))
  s = rsa.similarity_matrix(e)
  assert s.dtype == jnp.float64
  np.testing.assert_allclose(np.asarray(s), np.corrcoef(e.astype(np.float64)), rtol=0, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Sums, centring and poison


@pytest.mark.parametrize("shape", [(33,), (100,), (64,), (2, 3, 70), (5, 1000)])
def test_pairwise_sum_against_exact_sums(shape):
  rng = np.random.default_rng(24)
  x = rng.standard_normal(shape)
  want = np.array([np.float64(__import__("math").fsum(v)) for v in x.reshape(-1, shape[-1])])
  got = np.asarray(rsa.pairwise_sum(jnp.asarray(x.astype(np.float32))))
  assert got.shape == shape[:-1] and got.dtype == np.float32
  # float32 inputs exact, so only the partial sums round: a few float32 ulps of sum(|x|).
  bound = 8 * 2.0**-24 * np.abs(x).sum(-1).reshape(-1)
  assert np.all(np.abs(got.reshape(-1) - want) <= bound)
  with float64_scope():
    got64 = np.asarray(rsa.pairwise_sum(jnp.asarray(x)))
  np.testing.assert_allclose(got64.reshape(-1), want, rtol=0, atol=1e-12)


def test_float32_centring_corrects_the_first_pass_mean():
  """Values ~1000 in float32: a one-pass mean is off by ~1e-4, far more than float32 rounding
  of the deviations (~1e-7); the two-pass form leaves the rounding only."""
  rng = np.random.default_rng(25)
  x = (1000 + rng.standard_normal((2, 300))).astype(np.float32)
  ref = x.astype(np.float64) - x.astype(np.float64).mean(-1, keepdims=True)
  got = np.asarray(rsa.centre(jnp.asarray(x)))
  assert got.dtype == np.float32
  assert np.max(np.abs(got - ref)) <= 4 * 2.0**-24 * np.max(np.abs(ref))


def test_poison_rows_and_columns_separately():
  s = np.arange(12.0).reshape(3, 4)
  bad = np.array([False, True, False])
  bad_cols = np.array([False, False, False, True])
  got = np.asarray(rsa.poison(jnp.asarray(s), jnp.asarray(bad), jnp.asarray(bad_cols)))
  want = s.copy()
  want[1, :] = np.nan
  want[:, 3] = np.nan
  np.testing.assert_array_equal(got, want)
  sq = np.arange(9.0).reshape(3, 3)
  got = np.asarray(rsa.poison(jnp.asarray(sq), jnp.asarray(bad)))
  want = sq.copy()
  want[1, :] = want[:, 1] = np.nan
  np.testing.assert_array_equal(got, want)


def test_cosine_defined_for_a_constant_nonzero_row():
  """Only an all-zero row is undefined for cosine; a constant row is not (as for pearson)."""
  e = np.array([[2.0, 2.0, 2.0, 2.0],
                [1.0, 2.0, 3.0, 4.0],
                [0.0, 0.0, 0.0, 0.0]])
  got = np.asarray(rsa.similarity_matrix(e, kind="cosine"))
  c = 10.0 / (2.0 * np.sqrt(30.0))  # (2+4+6+8) / (|e0| |e1|)
  want = np.array([[1.0, c, np.nan], [c, 1.0, np.nan], [np.nan] * 3])
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
  pearson = np.asarray(rsa.similarity_matrix(e, kind="pearson"))
  assert np.isnan(pearson[0]).all() and pearson[1, 1] == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("kind", ["pearson", "spearman"])
def test_float32_masked_correlation_few_selected_of_many(kind):
  """20 selected entries of 4000 in float32: the unselected entries (arbitrary values) must not
  enter the centring, which would shift the selected ones by ~200 and cost float32 digits."""
  rng = np.random.default_rng(26)
  x = rng.standard_normal(4000).astype(np.float32)
  y = (x + rng.standard_normal(4000)).astype(np.float32)
  mask = np.zeros(4000, bool)
  mask[rng.choice(4000, 20, replace=False)] = True
  got = rsa.correlation(x, y, mask, kind=kind, dtype=jnp.float32)
  assert got.dtype == jnp.float32
  want = CORRELATE[kind](x[mask].astype(np.float64), y[mask].astype(np.float64))
  assert abs(float(got) - want) <= 1e-6
  with float64_scope():
    r, change = rsa.correlation_change(jnp.asarray(x), jnp.asarray(0.5 * y), jnp.asarray(y),
                                       jnp.asarray(mask), kind=kind)
  x64, y64 = x[mask].astype(np.float64), y[mask].astype(np.float64)
  want_change = CORRELATE[kind](x64 + 0.5 * y64, y64) - want
  assert r.dtype == change.dtype == jnp.float32
  assert abs(float(r) - want) <= 1e-6 and abs(float(change) - want_change) <= 1e-6


@pytest.mark.parametrize("kind", ["pearson", "spearman"])
def test_correlation_change_nan_in_dx_inside_the_mask_only(kind):
  """A NaN in x + dx inside the mask makes both r and the change NaN (the undefined rule covers
  x, x + dx and y; Pearson returned a finite r before), in that row only; the same NaN outside
  the mask is ignored."""
  rng = np.random.default_rng(27)
  x, y = rng.standard_normal((2, 10)), rng.standard_normal(10)
  dx = 0.3 * rng.standard_normal((2, 10))
  dx[0, 4] = np.nan
  mask = np.ones(10, bool)
  r, change = _change(x, dx, y, mask, kind=kind)
  assert np.isnan(r[0]) and np.isnan(change[0])
  want_r, want_change = _change_reference(x[1:], dx[1:], y, kind)
  np.testing.assert_allclose([r[1], change[1]], [want_r[0], want_change[0]], rtol=0, atol=1e-12)
  mask[4] = False
  r, change = _change(x, dx, y, mask, kind=kind)
  want_r, want_change = _change_reference(x, dx, y, kind, mask)
  np.testing.assert_allclose(r, want_r, rtol=0, atol=1e-12)
  np.testing.assert_allclose(change, want_change, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["pearson", "spearman"])
def test_correlation_change_nonbool_mask_selects_its_nonzero_entries(kind):
  rng = np.random.default_rng(28)
  x, y = rng.standard_normal(9), rng.standard_normal(9)
  dx = 0.4 * rng.standard_normal(9)
  weights = np.array([3, 3, 0, 3, 3, 3, 0, 3, 3])
  r, change = _change(x, dx, y, weights, kind=kind)
  want_r, want_change = _change_reference(x, dx, y, kind, weights != 0)
  np.testing.assert_allclose([r, change], [want_r, want_change], rtol=0, atol=1e-12)


def test_a_tiny_nonzero_row_is_not_undefined_for_cosine():
  """Only an all-zero row is undefined for cosine: a row of size 1e-170, whose squared norm
  underflows to 0 in float64, still gives numbers, never NaN or inf. (Its values are not checked:
  the underflow makes them ~0 instead of cosines, a range limit reported in BUILD.md.) A shape
  no other test uses: mutmut links a test to the functions it traces, not to a cached trace."""
  e = np.random.default_rng(31).standard_normal((5, 7))
  e[4] = 1e-170 * np.array([1.0, 3.0, 2.0, 5.0, 4.0, 1.0, 2.0])
  s = np.asarray(rsa.similarity_matrix(e, kind="cosine"))
  assert np.isfinite(s).all()
  np.testing.assert_allclose(s[:4, :4], _reference_similarity(e[:4], "cosine"), rtol=0, atol=1e-15)


@pytest.mark.parametrize("kind", ["pearson", "spearman"])
def test_correlation_change_batch_axis_from_dx_alone(kind):
  rng = np.random.default_rng(29)
  x, y = rng.standard_normal(9), rng.standard_normal(9)
  dx = 0.5 * rng.standard_normal((3, 9))
  r, change = _change(x, dx, y, kind=kind)
  want_r, want_change = _change_reference(x, dx, y, kind)
  assert r.shape == change.shape == (3,)
  np.testing.assert_allclose(r, want_r, rtol=0, atol=1e-12)
  np.testing.assert_allclose(change, want_change, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["pearson", "spearman"])
def test_batched_similarity_constant_rows_are_undefined(kind):
  """[2, 3, 5] embeddings (batch, rows, length all different): a constant nonzero row poisons its
  own row and column in its own batch element only."""
  rng = np.random.default_rng(30)
  e = rng.standard_normal((2, 3, 5))
  e[1, 2] = 7.5
  got = np.asarray(rsa.similarity_matrix(e, kind=kind))
  want0 = _reference_similarity(e[0], kind)
  np.testing.assert_allclose(got[0], want0, rtol=0, atol=1e-12)
  bad = np.zeros((3, 3), bool)
  bad[2], bad[:, 2] = True, True
  np.testing.assert_array_equal(np.isnan(got[1]), bad)
  rows = e[1, :2] if kind == "pearson" else scipy.stats.rankdata(e[1, :2], axis=1)
  np.testing.assert_allclose(got[1, :2, :2], np.corrcoef(rows), rtol=0, atol=1e-12)


def test_is_constant_tolerance_is_per_vector():
  """Each vector's tolerance scales with its own max |value|, not the batch's: a vector ~1 with
  1e-11 spread is varied (rms ~8e-12 > 1e-12) beside a vector ~1000 (whose tolerance ~3e-9
  would call it constant). [3, 11]: a shape no other test traces."""
  x = np.ones((3, 11))
  x[0] = np.linspace(1000.0, 3000.0, 11)
  x[1] = 1.0 + 1e-11 * np.linspace(-1.0, 1.0, 11)
  x[2] = 5.0
  np.testing.assert_array_equal(np.asarray(rsa.is_constant(x)), [False, False, True])
  assert np.isnan(np.asarray(rsa.correlation(x, x[:, ::-1]))).tolist() == [False, False, True]
