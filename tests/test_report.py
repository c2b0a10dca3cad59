"""Report pieces that choose and compute what the figures show (fast; no model): example choice,
PR AUC, category order and percentiles of the similarity matrices, top maps, page links, overlays."""

import os

import numpy as np
import pytest
from scipy import stats

from ais_jax.report import figures, index
from ais_jax.report.sections import similarity, top_maps


def test_select_examples_spreads_from_highest_to_lowest_per_group():
  groups = ["a", "a", "a", "a", "a", "b", "b", "b"]
  stat = [0.1, 0.9, np.nan, 0.5, 0.3, 2.0, -1.0, 0.0]
  # a: ranked 1 (0.9), 3 (0.5), 4 (0.3), 0 (0.1); NaN last. b: 5, 7, 6.
  assert figures.select_examples(groups, 2, statistic=stat) == [1, 0, 5, 6]
  assert figures.select_examples(groups, 3, statistic=stat) == [1, 4, 0, 5, 7, 6]
  assert figures.select_examples(groups, 2) == [0, 1, 5, 6]   # without a statistic: the first
  with pytest.raises(ValueError, match="one value per image"):
    figures.select_examples(groups, 2, statistic=[1.0])


def test_pr_auc_is_the_trapezoid_area_over_sorted_recall():
  rng = np.random.default_rng(0)
  r, p = rng.random(20), rng.random(20)
  order = np.argsort(r)
  want = sum((r[order][k + 1] - r[order][k]) * (p[order][k + 1] + p[order][k]) / 2
             for k in range(19))
  assert figures.pr_auc(r, p) == pytest.approx(want, rel=1e-12)
  r[3] = np.nan
  assert np.isfinite(figures.pr_auc(r, p))
  assert np.isnan(figures.pr_auc([0.5], [0.5]))


def test_category_order_groups_labels_and_sorts_counts_numerically():
  labels = ["10 points", "3 points", "10 points", "4 points"]
  assert similarity.category_order(labels).tolist() == [1, 3, 0, 2]
  labels = ["face", "body", "face", "tool", "body"]
  assert similarity.category_order(labels).tolist() == [0, 2, 1, 4, 3]


def test_percentile_ranks_match_scipy_off_the_diagonal():
  rng = np.random.default_rng(1)
  m = rng.normal(size=(5, 5))
  m[0, 1] = m[1, 0] = np.nan
  got = similarity.percentile_ranks(m)
  mask = np.isfinite(m) & ~np.eye(5, dtype=bool)
  want = (stats.rankdata(m[mask]) - 1) / (mask.sum() - 1) * 100
  np.testing.assert_allclose(got[mask], want)
  assert np.isnan(np.diag(got)).all() and np.isnan(got[0, 1])


def test_top_maps_and_their_most_active_images():
  ais = np.array([0.1, np.nan, 0.7, 0.3, 0.7])
  assert top_maps.top_maps(ais, 3).tolist() == [2, 4, 3]
  rng = np.random.default_rng(2)
  fmaps = rng.random((6, 3, 3, 5))
  idx, act = top_maps.top_images(fmaps, np.array([4, 0]), 2)
  for r, k in enumerate([4, 0]):
    means = [fmaps[i, :, :, k].mean() for i in range(6)]
    want = sorted(range(6), key=lambda i: -means[i])[:2]
    assert idx[r].tolist() == want
    np.testing.assert_allclose(act[r], [means[i] for i in want])


def test_index_names_repeated_files_by_folder_and_folds_long_tables(tmp_path):
  for rel in ("ais/summary.json", "ais_b/summary.json", "x.csv"):
    os.makedirs(tmp_path / os.path.dirname(rel), exist_ok=True) if os.path.dirname(rel) else None
    (tmp_path / rel).write_text("{}")
  path = index.write_index(str(tmp_path), title="t", sections=[index.Section("S", [
      index.Table("T", ["a"], [[1]] * 30, "read", data=["ais/summary.json", "ais_b/summary.json",
                                                        "x.csv"], collapsed=True)])])
  text = open(path, encoding="utf-8").read()
  assert ">ais/summary.json</a>" in text and ">ais_b/summary.json</a>" in text
  assert ">x.csv</a>" in text and "<details><summary>Show the 30 rows" in text
  with pytest.raises(FileNotFoundError, match="browser.html"):
    index.write_index(str(tmp_path), title="t", sections=[], links=[("browser.html", "b")])


def test_write_overlays_one_png_per_image_with_checked_options(tmp_path):
  from PIL import Image
  rng = np.random.default_rng(3)
  images = [rng.integers(0, 256, (32, 40, 3), dtype=np.uint8) for _ in range(2)]
  heat = [rng.random((4, 5)) for _ in range(2)]
  paths = figures.write_overlays(images, heat, ["dir/a.png", "b"], str(tmp_path),
                                         colormap="magma", alpha=0.5)
  assert [os.path.basename(p) for p in paths] == ["a.png", "b.png"]
  with Image.open(paths[0]) as im:
    assert im.size[0] > 300
  with pytest.raises(ValueError, match="colormap"):
    figures.write_overlays(images, heat, ["a", "b"], str(tmp_path), colormap="nope")
  with pytest.raises(ValueError, match="alpha"):
    figures.write_overlays(images, heat, ["a", "b"], str(tmp_path), alpha=0)
