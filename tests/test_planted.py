"""The planted-truth cohort generator and its mass metrics."""

import numpy as np
import pytest

from ais_jax.data import planted
from ais_jax.validation import validate_human_similarity

N, SIZE = 16, 64


@pytest.fixture(scope="module")
def cohort():
  return planted.generate(N, SIZE, seed=3)


def test_deterministic_for_a_seed(cohort):
  again = planted.generate(N, SIZE, seed=3)
  for name in ("images", "human_similarity", "target_masks", "distractor_masks", "target_factor"):
    np.testing.assert_array_equal(getattr(cohort, name), getattr(again, name), err_msg=name)
  for key, value in cohort.factors.items():
    np.testing.assert_array_equal(value, again.factors[key], err_msg=key)
  other = planted.generate(N, SIZE, seed=4)
  assert not np.array_equal(cohort.images, other.images)
  assert not np.array_equal(cohort.human_similarity, other.human_similarity)


def test_shapes_and_dtypes(cohort):
  assert cohort.images.shape == (N, SIZE, SIZE, 3) and cohort.images.dtype == np.uint8
  assert cohort.target_masks.shape == (N, SIZE, SIZE) and cohort.target_masks.dtype == bool
  assert cohort.distractor_masks.shape == (N, SIZE, SIZE)
  assert cohort.human_similarity.shape == (N, N) and cohort.human_similarity.dtype == np.float64
  assert len(cohort.image_names) == N
  # Every level of the factor occurs, balanced (16 images, 8 levels -> twice each).
  np.testing.assert_array_equal(np.bincount(cohort.target_factor)[planted.MIN_POINTS:],
                                np.full(planted.MAX_POINTS - planted.MIN_POINTS + 1, 2))


def test_masks_non_empty_disjoint_and_drawn(cohort):
  t, d = cohort.target_masks, cohort.distractor_masks
  assert np.all(t.sum(axis=(1, 2)) > 20) and np.all(d.sum(axis=(1, 2)) > 20)
  assert not np.any(t & d)
  # The masks are where the objects were painted: their pixels carry the objects' fill colours
  # (at least the interior, away from the dark outline).
  for i in range(N):
    for mask, colour in ((t[i], cohort.factors["target_colour"][i]),
                         (d[i], cohort.factors["distractor_colour"][i])):
      pixels = cohort.images[i][mask]
      assert np.mean(np.all(pixels == colour, axis=-1)) > 0.4


def test_human_matrix_valid_and_a_function_of_the_target_factor(cohort):
  h = validate_human_similarity(cohort.human_similarity, N)
  np.testing.assert_array_equal(h, h.T)
  k = cohort.target_factor.astype(float)
  noiseless = -np.abs(k[:, None] - k[None, :]) / (k.max() - k.min())
  off = ~np.eye(N, dtype=bool)
  residual = (h - noiseless)[off]
  assert abs(residual.std() - cohort.noise_sd) < 0.03
  # Rank agreement with the factor distance is high (noise sd 0.05 vs steps of 1/7).
  assert np.corrcoef(h[off], noiseless[off])[0, 1] > 0.9


def test_distractors_do_not_enter_the_human_matrix(cohort):
  perm = np.random.default_rng(0).permutation(N)
  permuted = planted.generate(N, SIZE, seed=3, distractor_permutation=perm)
  reseeded = planted.generate(N, SIZE, seed=3, distractor_seed=123)
  for other in (permuted, reseeded):
    np.testing.assert_array_equal(other.human_similarity, cohort.human_similarity)
    np.testing.assert_array_equal(other.target_masks, cohort.target_masks)
    assert not np.array_equal(other.distractor_masks, cohort.distractor_masks)
  # The permutation moved the distractors' own properties with them.
  np.testing.assert_array_equal(permuted.factors["distractor_kind"],
                                cohort.factors["distractor_kind"][perm])
  np.testing.assert_array_equal(permuted.factors["distractor_colour"],
                                cohort.factors["distractor_colour"][perm])


def test_bad_arguments():
  with pytest.raises(ValueError, match="n must be"):
    planted.generate(3, SIZE)
  with pytest.raises(ValueError, match="permutation"):
    planted.generate(8, SIZE, distractor_permutation=[0] * 8)


def _mass_loop(h, m):
  """Per image, a float64 loop over pixels (an independent formulation)."""
  out = []
  for hi, mi in zip(h, m):
    total = inside = 0.0
    for value, flag in zip(hi.ravel().tolist(), mi.ravel().tolist()):
      if value > 0:
        total += value
        if flag:
          inside += value
    out.append(inside / total if total > 0 else float("nan"))
  return np.array(out)


def test_mass_fractions_against_a_loop():
  rng = np.random.default_rng(0)
  h = rng.normal(size=(5, 9, 11)).astype(np.float32)
  h[2] = -np.abs(h[2])            # no positive mass -> NaN
  h[3] = 0.0                      # all zero -> NaN
  m = rng.random((5, 9, 11)) > 0.6
  got = planted.mass_fractions(h, m)
  want = _mass_loop(h.astype(np.float64), m)
  np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)
  assert np.isnan(got[2]) and np.isnan(got[3]) and np.isfinite(got[[0, 1, 4]]).all()
  # 0/1 integer masks behave as booleans; complementary masks sum to 1.
  np.testing.assert_allclose(planted.mass_fractions(h, m.astype(np.uint8)), got, equal_nan=True)
  np.testing.assert_allclose((got + planted.mass_fractions(h, ~m))[[0, 1, 4]], 1.0, rtol=1e-12)
  np.testing.assert_allclose(planted.area_fractions(m), m.reshape(5, -1).mean(1))
  with pytest.raises(ValueError, match="upsample"):
    planted.mass_fractions(h, m[:, :5])


def test_mass_report_on_planted_masks(cohort):
  # A heatmap equal to the target mask puts all its mass on the target, none on the distractor.
  h = cohort.target_masks.astype(np.float32) * 3.0
  r = planted.mass_report(h, cohort.target_masks, cohort.distractor_masks)
  np.testing.assert_allclose(r["target_mass"], 1.0)
  np.testing.assert_allclose(r["distractor_mass"], 0.0)
  np.testing.assert_allclose(r["target_enrichment"], 1.0 / r["target_area"])
  s = planted.summarise_masses(r)
  assert s["fraction_images_target_gt_distractor"] == 1.0
  # A uniform map gives mass = area.
  u = planted.mass_report(np.ones((N, SIZE, SIZE)), cohort.target_masks, cohort.distractor_masks)
  np.testing.assert_allclose(u["target_mass"], u["target_area"], rtol=1e-12)
  np.testing.assert_allclose(u["distractor_enrichment"], 1.0, rtol=1e-12)
