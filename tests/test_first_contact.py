"""First contact (issue 11): small cohorts in cross-validation, help listings, path flags,
labelled human matrices."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ais_jax import ablation, selection
from ais_jax.errors import UserInputError


# ----------------------------------------------------------------------------------------------
# Fold planning: the minimum test size rule


def _smallest_test_set(n, folds):
  """Smallest part of numpy.array_split(range(n), folds), computed by splitting."""
  return min(len(p) for p in np.array_split(np.arange(n), folds))


@pytest.mark.parametrize("n,folds,expected", [
    (12, 5, 3),     # 12 // 5 = 2 < 4 -> 12 // 4 = 3 folds of 4
    (92, 5, 5),     # 18-19 test images: unchanged
    (20, 5, 5),     # exactly 4 per fold: unchanged
    (19, 5, 4),     # 3-4 per fold -> 4 folds of 4-5
    (8, 5, 2),      # the smallest cohort allowed
    (9, 2, 2),
])
def test_plan_folds_keeps_test_sets_at_least_min(n, folds, expected):
  used, message = selection.plan_folds(n, folds, min_test_images=4)
  assert used == expected
  assert _smallest_test_set(n, used) >= 4
  assert (message is None) == (used == folds)
  if message:
    assert f"using {used} folds" in message and "--min_test_images=4" in message


def test_plan_folds_refuses_too_few_images_and_bad_minimum():
  with pytest.raises(UserInputError, match="7 images are too few.*need 8"):
    selection.plan_folds(7, 5, min_test_images=4)
  with pytest.raises(UserInputError, match="min_test_images"):
    selection.plan_folds(50, 5, min_test_images=1)
  used, _ = selection.plan_folds(12, 5, min_test_images=6)
  assert used == 2


def test_split_usage_counts_and_warning():
  test_full = np.array([0.5, np.nan, 0.2, 0.1])
  retained = np.array([0.6, 0.3, np.nan, 0.2])
  masks = np.zeros((4, 10), bool)
  masks[0, :6] = True
  masks[1, :3] = True
  masks[2, :10] = True
  masks[3, :10] = True
  u = selection.split_usage(test_full, retained, masks)
  assert (u["used"], u["dropped"], u["min_test_pairs"]) == (2, 2, 6)
  assert "2 of 4 splits" in u["warning"] and "as few as 6 pairs" in u["warning"]
  u = selection.split_usage(np.ones(2), np.ones(2), np.ones((2, 20), bool))
  assert u == {"used": 2, "dropped": 0, "min_test_pairs": 20, "warning": None}


def test_twelve_images_default_folds_average_no_small_test_set():
  """12 images, 5 folds requested: the planned 3 folds give 4 test images (6 pairs) in every
  split, every split is used, and no numpy warning escapes summarize."""
  rng = np.random.default_rng(3)
  n, k = 12, 6
  maps = rng.random((n, 2, 2, k))
  emb = maps.mean(axis=(1, 2))
  human = np.corrcoef(emb + 0.3 * rng.standard_normal(emb.shape))
  folds, message = selection.plan_folds(n, 5)
  assert folds == 3 and message
  res = selection.select_maps(ablation.PooledHead(), maps, human, folds=folds, seeds=2, seed=0)
  assert res.n_test.min() >= 4
  assert res.test_masks.sum(1).min() == 6
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    summary = selection.summarize(res)
  u = summary["split_usage"]
  assert u["used"] + u["dropped"] == 6
  assert u["used"] == int(np.sum(np.isfinite(res.test_full) & np.isfinite(res.test_retained)))
  assert "as few as 6 pairs" in u["warning"]
  # Without the rule, 5 folds leave 2-image test sets (one pair): those splits are undefined.
  bad = selection.select_maps(ablation.PooledHead(), maps, human, folds=5, seeds=2, seed=0)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    u_bad = selection.summarize(bad)["split_usage"]
  assert u_bad["dropped"] == int(np.sum(bad.n_test == 2)) > 0
