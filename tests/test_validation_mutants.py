"""The human-matrix checks and NaN reports that mutation testing (experiments/mutation.sh
validation) showed unchecked: every refusal's exact message and exception type (user-facing), the
tolerances and thresholds at both sides (symmetry, 3 finite entries per row, constant rows, 4
images, the orientation rule's 4 rows and 90% share), the row blocks of the symmetry check (any
block size, the same result), where NaN and infinite entries are located and how they are counted.

Every expected value is worked out by hand from the small matrices written out below, never taken
from the code's output.
"""

import os
import warnings

import numpy as np
import pytest

from ais_jax import validation
from ais_jax.validation import (HumanKindWarning, check_human_kind, diagonal_minimum_rows,
                                repeated, undefined_summary, validate_human_similarity)

NAN, INF = np.nan, np.inf

# A valid 5 x 5 similarity: symmetric, distinct off-diagonal values (largest magnitude 1.0, at
# (0, 4)), the diagonal the largest value of every row.
BASE = np.array([
    [9.0, 0.1, 0.2, 0.3, -1.0],
    [0.1, 9.0, 0.4, 0.5, 0.6],
    [0.2, 0.4, 9.0, 0.7, 0.8],
    [0.3, 0.5, 0.7, 9.0, 0.15],
    [-1.0, 0.6, 0.8, 0.15, 9.0],
])


def _base():
  return BASE.copy()


def _set(h, pairs, value):
  for i, j in pairs:
    h[i, j] = h[j, i] = value
  return h


def _refusal(h, **kwargs) -> str:
  with pytest.raises(ValueError) as info:
    validate_human_similarity(h, **kwargs)
  assert type(info.value) is ValueError
  return str(info.value)


def _distances(x):
  """|x_i - x_j|: a dissimilarity matrix, 0 on the diagonal (the minimum of every row)."""
  x = np.asarray(x, np.float64)
  return np.abs(x[:, None] - x[None, :])


# ---------------------------------------------------------------------------- shape and size --
def test_accepts_a_valid_matrix_as_float64_and_four_images():
  out = validate_human_similarity(BASE.tolist())  # nested lists
  assert out.dtype == np.float64
  np.testing.assert_array_equal(out, BASE)
  ints = np.array([[5, 1, 2, 3], [1, 5, 4, -2], [2, 4, 5, 0], [3, -2, 0, 5]], np.int32)
  out = validate_human_similarity(ints, 4)  # 4 images: the smallest accepted
  assert out.dtype == np.float64
  assert out.tolist() == [[5.0, 1.0, 2.0, 3.0], [1.0, 5.0, 4.0, -2.0], [2.0, 4.0, 5.0, 0.0],
                          [3.0, -2.0, 0.0, 5.0]]


def test_shape_dtype_and_size_refusals():
  assert _refusal(np.array([["a", "b"], ["c", "d"]])) == (
      "human: expected a numeric matrix, got dtype <U1")
  assert _refusal(BASE.astype(complex)) == "human: expected a numeric matrix, got dtype complex128"
  assert _refusal(BASE[:4]) == "human: expected a square [n, n] matrix, got shape (4, 5)"
  assert _refusal(BASE[None]) == "human: expected a square [n, n] matrix, got shape (1, 5, 5)"
  assert _refusal(BASE, n_images=6) == (
      "human: matrix is 5x5 but the cohort has 6 images; the matrix must list the images in the "
      "same order as the images")
  assert _refusal(BASE, n_images=4, name="h.csv") == (
      "h.csv: matrix is 5x5 but the cohort has 4 images; the matrix must list the images in the "
      "same order as the images")
  assert _refusal(BASE[:3, :3]) == "human: at least 4 images are needed, got 3"
  assert _refusal(BASE[:3, :3], name="s") == "s: at least 4 images are needed, got 3"


# -------------------------------------------------------------- infinite entries and _locate --
def test_infinite_entries_are_located():
  h = _set(_set(_base(), [(0, 2)], INF), [(1, 4)], -INF)
  assert _refusal(h) == (
      "human: infinite entries at (0, 2), (1, 4), (2, 0), (4, 1); use NaN for missing pairs")
  # Exactly ten: all listed, nothing "more".
  h = _set(_base(), [(0, 1), (0, 2), (0, 3), (1, 2), (3, 4)], INF)
  assert _refusal(h, name="x") == (
      "x: infinite entries at (0, 1), (0, 2), (0, 3), (1, 0), (1, 2), (2, 0), (2, 1), (3, 0), "
      "(3, 4), (4, 3); use NaN for missing pairs")
  # Eleven: the first ten (row-major order) and " and 1 more".
  h = _set(_base(), [(0, 1), (0, 2), (0, 3), (1, 2), (3, 4)], INF)
  h6 = np.full((6, 6), 0.5)
  h6[:5, :5] = h
  h6[5, 5] = 9.0
  h6[5, 0] = h6[0, 5] = INF
  assert _refusal(h6) == (
      "human: infinite entries at (0, 1), (0, 2), (0, 3), (0, 5), (1, 0), (1, 2), (2, 0), "
      "(2, 1), (3, 0), (3, 4) and 2 more; use NaN for missing pairs")


def test_infinite_entries_beyond_ten_in_a_larger_matrix():
  h = np.full((12, 12), INF)
  np.fill_diagonal(h, 1.0)
  # 132 infinite entries; row 0 holds (0, 1) ... (0, 11): the first ten are (0, 1) ... (0, 10).
  listed = ", ".join(f"(0, {j})" for j in range(1, 11))
  assert _refusal(h) == (
      f"human: infinite entries at {listed} and 122 more; use NaN for missing pairs")


def test_locate_directly():
  mask = np.zeros((2, 3, 4), bool)
  mask[0, 1, 2] = mask[1, 0, 0] = mask[1, 2, 3] = True
  assert validation._locate(mask) == "(0, 1, 2), (1, 0, 0), (1, 2, 3)"
  assert validation._locate(mask, limit=2) == "(0, 1, 2), (1, 0, 0) and 1 more"
  assert validation._locate(mask, limit=3) == "(0, 1, 2), (1, 0, 0), (1, 2, 3)"
  assert validation._locate(np.zeros((3, 3), bool)) == ""
  assert validation._locate(np.ones((1, 12), bool)) == (
      "(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (0, 6), (0, 7), (0, 8), (0, 9) and 2 more")


def test_an_infinite_diagonal_is_ignored_without_warnings():
  h = _base()
  np.fill_diagonal(h, INF)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # inf - inf on the diagonal must not warn (invalid value)
    out = validate_human_similarity(h)
    np.testing.assert_array_equal(out, h)
    h[1, 3] = 0.25
    h[3, 1] = -0.25
    assert _refusal(h) == (
        "human: matrix is not symmetric: 1 pairs differ, e.g. (1, 3) = 0.25 vs (3, 1) = -0.25; "
        "average it with its transpose if the asymmetry is noise")


# ----------------------------------------------------------------------- NaN pattern --
def test_asymmetric_missing_pattern_is_located_in_the_upper_triangle():
  h = _base()
  h[0, 3] = NAN   # (3, 0) is present
  h[4, 1] = NAN   # (1, 4) is present
  assert _refusal(h) == (
      "human: missing (NaN) pattern is not symmetric at (0, 3), (1, 4); a missing pair must be "
      "missing in both (i, j) and (j, i)")
  h = _base()
  h[2, 2] = NAN   # the diagonal is not part of the pattern
  validate_human_similarity(h)


# -------------------------------------------------------------------------- symmetry --
SYMMETRY_MESSAGE = (
    "human: matrix is not symmetric: 2 pairs differ, e.g. (1, 3) = 0.25 vs (3, 1) = -0.25; "
    "average it with its transpose if the asymmetry is noise")


def _two_asymmetric_pairs():
  """(0, 2): 0.2 vs 0.35 (difference 0.15, sum 0.55); (1, 3): 0.25 vs -0.25 (difference 0.5, the
  largest, sum 0): the example named is (1, 3), with the upper-triangle index first."""
  h = _base()
  h[2, 0] = 0.35
  h[1, 3] = 0.25
  h[3, 1] = -0.25
  return h


def test_symmetry_refusal_names_the_largest_difference():
  assert _refusal(_two_asymmetric_pairs()) == SYMMETRY_MESSAGE
  # The same pairs seen from the other triangle: still (1, 3) first.
  assert _refusal(_two_asymmetric_pairs().T.copy()) == (
      "human: matrix is not symmetric: 2 pairs differ, e.g. (1, 3) = -0.25 vs (3, 1) = 0.25; "
      "average it with its transpose if the asymmetry is noise")


@pytest.mark.parametrize("block_values", [1, 5, 10, 15, 20, 25, 2**22])
def test_symmetry_check_the_same_for_any_row_block(monkeypatch, block_values):
  """VALIDATION_BLOCK_VALUES // n rows per block (at least one): 1 row, 2, 3 (blocks of 3 and 2),
  4 (4 and 1), all 5 at once."""
  monkeypatch.setattr(validation, "VALIDATION_BLOCK_VALUES", block_values)
  assert _refusal(_two_asymmetric_pairs()) == SYMMETRY_MESSAGE
  # The scale is the largest finite off-diagonal magnitude over all blocks: 4.0, in the last row.
  h = _set(_base(), [(3, 4)], -4.0)
  h[0, 1] = 0.0
  h[1, 0] = 4e-8            # |0 - 4e-8| = 4e-8 = 1e-8 * 4.0: just inside, accepted
  validate_human_similarity(h)
  h[1, 0] = np.nextafter(4e-8, 1.0)
  assert _refusal(h) == (
      "human: matrix is not symmetric: 1 pairs differ, e.g. (0, 1) = 0.0 vs (1, 0) = "
      f"{float(np.nextafter(4e-8, 1.0))!r}; average it with its transpose if the asymmetry is noise")
  # An asymmetric pair in row 0 (the first block) is counted once, as a pair.
  h = _base()
  h[2, 0] = 0.35
  assert _refusal(h) == (
      "human: matrix is not symmetric: 1 pairs differ, e.g. (0, 2) = 0.2 vs (2, 0) = 0.35; "
      "average it with its transpose if the asymmetry is noise")


def test_symmetry_tolerance_both_sides():
  # Default: 1e-8 relative to the largest finite off-diagonal magnitude (1.0 here; the diagonal,
  # 9.0, is not counted). A difference of exactly 1e-8 is accepted; the next float is refused.
  h = _base()
  h[1, 3] = 0.0
  h[3, 1] = 1e-8
  validate_human_similarity(h)
  h[3, 1] = np.nextafter(1e-8, 1.0)
  assert _refusal(h) == (
      "human: matrix is not symmetric: 1 pairs differ, e.g. (1, 3) = 0.0 vs (3, 1) = "
      "1.0000000000000002e-08; average it with its transpose if the asymmetry is noise")
  # Relative: the same matrices scaled by 2**20 (exactly) give the same answers.
  assert _refusal(h * 2.0**20) == (
      "human: matrix is not symmetric: 1 pairs differ, e.g. (1, 3) = 0.0 vs (3, 1) = "
      f"{float(np.nextafter(1e-8, 1.0)) * 2.0**20!r}; average it with its transpose if the "
      "asymmetry is noise")
  h[3, 1] = 1e-8
  validate_human_similarity(h * 2.0**20)
  # A stated tolerance, exactly representable: 0.25 vs 0.5 differ by 0.25 = 0.25 * 1.0.
  h = _base()
  h[1, 3] = 0.5
  h[3, 1] = 0.25
  validate_human_similarity(h, symmetry_rtol=0.25)
  assert _refusal(h, symmetry_rtol=np.nextafter(0.25, 0.0), name="m") == (
      "m: matrix is not symmetric: 1 pairs differ, e.g. (1, 3) = 0.5 vs (3, 1) = 0.25; "
      "average it with its transpose if the asymmetry is noise")
  # NaN pairs never count as asymmetric.
  validate_human_similarity(_set(_base(), [(0, 1)], NAN))


# ------------------------------------------------------------------- finite entries per row --
def test_three_finite_entries_per_row_accepted_two_refused():
  h = _set(_base(), [(0, 1)], NAN)   # rows 0 and 1: 3 finite off-diagonal entries
  out = validate_human_similarity(h)
  assert np.isnan(out[0, 1]) and np.isnan(out[1, 0])
  h6 = np.array([
      [9.0, 0.1, 0.2, 0.3, 0.4, 0.5],
      [0.1, 9.0, 0.6, 0.7, 0.8, 0.9],
      [0.2, 0.6, 9.0, 1.0, 1.1, 1.2],
      [0.3, 0.7, 1.0, 9.0, 1.3, 1.4],
      [0.4, 0.8, 1.1, 1.3, 9.0, 1.5],
      [0.5, 0.9, 1.2, 1.4, 1.5, 9.0],
  ])
  validate_human_similarity(h6)
  _set(h6, [(0, 1), (0, 2), (0, 3)], NAN)  # row 0: 2 finite entries; rows 1-3: 4
  assert _refusal(h6) == (
      "human: rows [0] have fewer than 3 finite off-diagonal entries ([2]); drop those images or "
      "supply their judgments")
  _set(h6, [(4, 5), (4, 1), (4, 0)], NAN)  # row 0: 1 (0, 5); row 4: 2 (4, 2), (4, 3); others 3-4
  assert _refusal(h6, name="f") == (
      "f: rows [0, 4] have fewer than 3 finite off-diagonal entries ([1, 2]); drop those images "
      "or supply their judgments")


def test_more_than_ten_rows_with_too_few_entries():
  h = np.full((12, 12), NAN)
  np.fill_diagonal(h, 1.0)
  h[10, 11] = h[11, 10] = 0.5   # rows 10 and 11: 1 finite entry; rows 0-9: none
  assert _refusal(h) == (
      "human: rows [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] have fewer than 3 finite off-diagonal entries "
      "([0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); drop those images or supply their judgments")


# --------------------------------------------------------------------------- constant rows --
def test_constant_rows_refused():
  h = _set(_base(), [(2, 0), (2, 1), (2, 3), (2, 4)], 0.0)  # row 2 all zero: constant
  assert _refusal(h) == (
      "human: rows [2] are constant over their finite off-diagonal entries, so no correlation "
      "with them is defined; check the file")
  h = _set(_base(), [(3, 0), (3, 1), (3, 2), (3, 4)], -0.3)
  h[3, 3] = NAN
  assert _refusal(h, name="c") == (
      "c: rows [3] are constant over their finite off-diagonal entries, so no correlation with "
      "them is defined; check the file")
  h = np.full((12, 12), 0.5)
  np.fill_diagonal(h, 1.0)
  assert _refusal(h) == (
      "human: rows [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] are constant over their finite off-diagonal "
      "entries, so no correlation with them is defined; check the file")
  # Not constant: row 2 with one entry different.
  validate_human_similarity(_set(_set(_base(), [(2, 0), (2, 1), (2, 3)], 0.0), [(2, 4)], 1e-3))


# ------------------------------------------------------------------ orientation (kind) rule --
def test_diagonal_minimum_rows_hand_cases():
  # Row 0: diagonal 0 equals its row minimum (a tie counts); row 1: 5 > 0; row 2: -1 < 1;
  # row 3: 2 ties its minimum 2.
  s = np.array([[0.0, 0.0, 1.0, 2.0],
                [0.0, 5.0, 1.0, 3.0],
                [1.0, 1.0, -1.0, 4.0],
                [2.0, 3.0, 4.0, 2.0]])
  assert diagonal_minimum_rows(s) == (3, 4)
  # Row 3's diagonal NaN (not counted); row 4 has no finite off-diagonal entry (not counted);
  # rows 0-2: 0 is below its row (at), 7 above (not), 0.05 below 0.1 (at).
  s = np.array([[0.0, 1.0, 2.0, 0.5, NAN],
                [1.0, 7.0, 3.0, 0.2, NAN],
                [2.0, 3.0, 0.05, 0.1, NAN],
                [0.5, 0.2, 0.1, NAN, NAN],
                [NAN, NAN, NAN, NAN, 4.0]])
  assert diagonal_minimum_rows(s) == (2, 3)
  nan_diagonal = s.copy()
  np.fill_diagonal(nan_diagonal, NAN)
  assert diagonal_minimum_rows(nan_diagonal) == (0, 0)
  no_pairs = np.full((4, 4), NAN)
  np.fill_diagonal(no_pairs, 1.0)
  assert diagonal_minimum_rows(no_pairs) == (0, 0)
  # Any array-like is read as float64: nested lists with None for a missing value, or the object
  # array a table with missing cells gives.
  rows = [[0, 1, 2, 0.5, None], [1, 7, 3, 0.2, None], [2, 3, 0.05, 0.1, None],
          [0.5, 0.2, 0.1, None, None], [None, None, None, None, 4]]
  assert diagonal_minimum_rows(rows) == (2, 3)
  assert diagonal_minimum_rows(np.array(rows, dtype=object)) == (2, 3)


DISTANCE_MESSAGE = (
    "{name}: the diagonal is the smallest value of {at} of {n} rows, as in a dissimilarity "
    "(distance) matrix, but it would be used as similarities; state what the file holds: "
    "--human_kind=dissimilarity (negated, S = -D) or --human_kind=similarity (use it as it is)")
STATED_MESSAGE = (
    "{name}: used as stated (--human_kind), although its diagonal is the smallest value of {at} of "
    "{n} rows as similarities, which is what the other kind looks like; check --human_kind")


def test_check_human_kind_four_rows_and_messages():
  d = _distances([0.0, 1.0, 3.0, 7.0])  # 4 rows, the diagonal 0 the minimum of each
  with pytest.raises(ValueError) as info:
    check_human_kind(d, kind_stated=False)
  assert type(info.value) is ValueError
  assert str(info.value) == DISTANCE_MESSAGE.format(name="human", at=4, n=4)
  assert check_human_kind(d, kind_stated=True) == STATED_MESSAGE.format(name="human", at=4, n=4)
  assert check_human_kind(d, kind_stated=True, name="d.npy") == STATED_MESSAGE.format(
      name="d.npy", at=4, n=4)
  assert check_human_kind(-d, kind_stated=False) is None      # similarities: the diagonal is max
  # Three counted rows (one diagonal NaN): too few for the rule.
  d3 = d.copy()
  d3[2, 2] = NAN
  assert diagonal_minimum_rows(d3) == (3, 3)
  assert check_human_kind(d3, kind_stated=False) is None
  assert check_human_kind(d3, kind_stated=True) is None
  # Through the validation, with kind_stated=False / True / None.
  assert _refusal(d, name="d.csv", kind_stated=False) == DISTANCE_MESSAGE.format(
      name="d.csv", at=4, n=4)
  validate_human_similarity(d)                                # None: no rule
  validate_human_similarity(d3, kind_stated=False)


def test_check_human_kind_share_boundary():
  d = _distances([0.0, 1.0, 3.0, 7.0, 12.0, 20.0, 30.0, 41.0, 55.0, 70.0])
  d[9, 9] = 100.0           # 9 of 10 rows at the minimum: 9 >= 0.9 * 10, refused
  assert diagonal_minimum_rows(d) == (9, 10)
  with pytest.raises(ValueError) as info:
    check_human_kind(d, kind_stated=False, name="ten")
  assert str(info.value) == DISTANCE_MESSAGE.format(name="ten", at=9, n=10)
  d[8, 8] = 100.0           # 8 of 10: below the share, accepted
  assert diagonal_minimum_rows(d) == (8, 10)
  assert check_human_kind(d, kind_stated=False) is None
  assert check_human_kind(d, kind_stated=True) is None


def test_stated_kind_warning_points_at_the_caller():
  d = _distances([0.0, 1.0, 3.0, 7.0])
  with pytest.warns(HumanKindWarning) as record:
    out = validate_human_similarity(d, kind_stated=True, name="d")
  np.testing.assert_array_equal(out, d)
  assert len(record) == 1
  assert str(record[0].message) == STATED_MESSAGE.format(name="d", at=4, n=4)
  filename = os.path.realpath(record[0].filename)
  assert filename != os.path.realpath(validation.__file__)  # the caller's line, not the library's
  # mutmut wraps the function in a trampoline (two frames in mutmut's own file) between the caller
  # and the function: the caller is the test only without it.
  if not hasattr(validate_human_similarity, "__wrapped__"):
    assert filename == os.path.realpath(__file__)


# ------------------------------------------------------------------------ undefined_summary --
def test_undefined_summary_hand_cases():
  v = np.array([[1.0, NAN, 2.0], [NAN, NAN, 3.0]])
  assert undefined_summary(v, ("image", "map")) == {
      "count": 3, "total": 6,
      "locations": [{"image": 0, "map": 1}, {"image": 1, "map": 0}, {"image": 1, "map": 1}],
      "locations_truncated": False, "per_image": {0: 1, 1: 2}}
  assert undefined_summary(np.array([NAN, 1.0, NAN, 4.0]), ("map",)) == {
      "count": 2, "total": 4, "locations": [{"map": 0}, {"map": 2}],
      "locations_truncated": False, "per_map": {0: 1, 2: 1}}
  # No NaN: no per-axis counts at all.
  assert undefined_summary(np.array([[1.0, 2.0], [3.0, 4.0]]), ("image", "map")) == {
      "count": 0, "total": 4, "locations": [], "locations_truncated": False}
  assert undefined_summary(np.array([1, 2, 3]), ("map",)) == {
      "count": 0, "total": 3, "locations": [], "locations_truncated": False}
  # A scalar: one location with no axes, no per-axis counts.
  assert undefined_summary(np.float64(NAN), ()) == {
      "count": 1, "total": 1, "locations": [{}], "locations_truncated": False}
  assert undefined_summary(2.0, ()) == {
      "count": 0, "total": 1, "locations": [], "locations_truncated": False}
  # Three axes: the first axis's counts sum over the other two.
  v = np.zeros((3, 2, 2))
  v[0, 1, 1] = v[2, 0, 0] = v[2, 0, 1] = v[2, 1, 0] = NAN
  out = undefined_summary(v, ("a", "b", "c"), limit=2)
  assert out == {"count": 4, "total": 12,
                 "locations": [{"a": 0, "b": 1, "c": 1}, {"a": 2, "b": 0, "c": 0}],
                 "locations_truncated": True, "per_a": {0: 1, 2: 3}}


def test_undefined_summary_limit_both_sides():
  fifty = undefined_summary(np.full(50, NAN), ("map",))
  assert fifty["count"] == 50 and fifty["total"] == 50
  assert fifty["locations"] == [{"map": i} for i in range(50)]
  assert fifty["locations_truncated"] is False
  assert fifty["per_map"] == {i: 1 for i in range(50)}
  more = undefined_summary(np.concatenate([np.full(51, NAN), [0.0]]), ("map",))
  assert more["count"] == 51 and more["total"] == 52
  assert more["locations"] == [{"map": i} for i in range(50)]
  assert more["locations_truncated"] is True
  assert set(more) == {"count", "total", "locations", "locations_truncated", "per_map"}


# --------------------------------------------------------------------------------- repeated --
def test_repeated_in_the_order_of_repetition():
  assert repeated(["a", "b", "a", "c", "b", "a"]) == ["a", "b", "a"]
  assert repeated(["x", "y", "z"]) == []
  assert repeated([]) == []
  assert repeated(("cat.png", "dog.png", "dog.png")) == ["dog.png"]
