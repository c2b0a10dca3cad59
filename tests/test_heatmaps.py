"""Heatmaps: golden values, weight rules (clipping, NaN, zero rows), upsampling against torch."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from ais_jax import heatmaps as hm
from ais_jax.precision import float64_scope
from ais_jax.report import figures


def _weights_loop(ais):
  """Reference weights written as a plain loop."""
  ais = np.asarray(ais, np.float64)
  out = np.zeros_like(ais)
  for i in range(ais.shape[0]):
    pos = [a if (a == a and a > 0) else 0.0 for a in ais[i]]
    total = sum(pos)
    if total > 0:
      out[i] = [p / total for p in pos]
  return out


@pytest.mark.parametrize("head", ["fc", "gap"])
def test_golden_heatmaps_float64(golden, head):
  ais = golden[f"per_image_{head}_pearson_pearson"]
  with float64_scope():
    got = np.asarray(hm.heatmaps(golden["F"], ais, dtype=jnp.float64))
  assert got.dtype == np.float64
  np.testing.assert_allclose(got, golden[f"heatmap_{head}"], rtol=0, atol=1e-10)
  # The golden AIS includes negative values, so clipping is exercised.
  assert (ais < 0).any()


def test_golden_heatmaps_float32_default(golden):
  got = hm.heatmaps(golden["F"].astype(np.float32), golden["per_image_fc_pearson_pearson"])
  assert got.dtype == jnp.float32 and got.shape == (15, 4, 4)
  np.testing.assert_allclose(np.asarray(got), golden["heatmap_fc"], rtol=1e-5, atol=1e-6)


def test_weights_clipping_nan_zero_rows():
  ais = np.array([[0.2, -0.1, np.nan, 0.6],     # mixed
                  [-0.1, -0.2, -0.3, -0.4],     # nothing positive -> zeros
                  [np.nan] * 4,                 # undefined row -> zeros
                  [0.0, 0.0, 0.0, 0.0],
                  [1e-30, 0.0, 3e-30, -1.0]])   # tiny but positive still normalises
  with float64_scope():
    w = np.asarray(hm.ais_weights(jnp.asarray(ais)))
  assert not np.isnan(w).any()
  np.testing.assert_allclose(w, _weights_loop(ais), rtol=1e-12, atol=0)
  np.testing.assert_allclose(w[0], [0.25, 0, 0, 0.75], rtol=1e-12)
  np.testing.assert_array_equal(w[1:4], 0)
  np.testing.assert_allclose(w.sum(-1), [1, 0, 0, 0, 1], rtol=1e-12)


def test_weights_random_against_loop_and_jit():
  rng = np.random.default_rng(0)
  ais = rng.standard_normal((20, 7)) * 1e-3
  ais[rng.random(ais.shape) < 0.2] = np.nan
  ais[3] = -1.0
  with float64_scope():
    eager = np.asarray(hm.ais_weights(ais))
    jitted = np.asarray(jax.jit(hm.ais_weights)(ais))
  np.testing.assert_allclose(eager, _weights_loop(ais), rtol=1e-12, atol=1e-15)
  np.testing.assert_array_equal(eager, jitted)


def test_heatmap_nan_and_negative_weigh_zero():
  rng = np.random.default_rng(1)
  maps = np.maximum(rng.standard_normal((3, 5, 6, 4)), 0).astype(np.float32)
  ais = np.array([[0.3, np.nan, -0.2, 0.1], [np.nan] * 4, [-1, -1, -1, -1.0]])
  got = np.asarray(hm.heatmaps(maps, ais))
  expect0 = (0.75 * maps[0, ..., 0] + 0.25 * maps[0, ..., 3])
  np.testing.assert_allclose(got[0], expect0, rtol=1e-6)
  np.testing.assert_array_equal(got[1:], 0)      # zero weights -> zero map, not NaN
  with pytest.raises(ValueError, match="per_image_ais"):
    hm.heatmaps(maps, ais[:, :3])


def test_mean_activation_maps_equal_weights():
  rng = np.random.default_rng(2)
  maps = rng.random((2, 3, 3, 5)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(hm.mean_activation_maps(maps)),
                             np.asarray(hm.heatmaps(maps, np.ones((2, 5)))), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(hm.mean_activation_maps(maps)), maps.mean(-1), rtol=1e-6)


@pytest.mark.parametrize("size", [(14, 21), (13, 17), (224, 224), (7, 30)])
def test_upsample_matches_torch_bilinear(size):
  x = np.random.default_rng(3).standard_normal((2, 7, 10)).astype(np.float32)
  got = np.asarray(hm.upsample(x, size))
  ref = torch.nn.functional.interpolate(torch.from_numpy(x)[:, None], size=size, mode="bilinear",
                                        align_corners=False)[:, 0].numpy()
  assert got.shape == (2,) + size
  np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6)


def test_upsample_identity_and_errors():
  x = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
  np.testing.assert_array_equal(np.asarray(hm.upsample(x, (3, 4))), x)
  with pytest.raises(ValueError, match=r"\[n, h, w\]"):
    hm.upsample(x[0], (6, 8))


def test_overlay_blending():
  image = np.full((8, 8, 3), 100, np.uint8)
  heat = np.zeros((4, 4), np.float32)
  heat[0, 0] = 1.0
  out = hm.overlay(image, heat, alpha=0.5, cmap="jet")
  assert out.dtype == np.uint8 and out.shape == (8, 8, 3)
  up = np.asarray(hm.upsample(heat[None], (8, 8))[0])
  cold = up == up.min()
  np.testing.assert_array_equal(out[cold], 100)   # value_alpha: coldest pixels unchanged
  import matplotlib
  hot = np.unravel_index(np.argmax(up), up.shape)
  colour = np.asarray(matplotlib.colormaps["jet"](1.0)[:3])
  np.testing.assert_allclose(out[hot], np.round((0.5 * 100 / 255 + 0.5 * colour) * 255), atol=1)


def test_heatmap_grid_writes_png_and_numbers(tmp_path):
  rng = np.random.default_rng(4)
  images = rng.integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
  heat = rng.random((5, 4, 4)).astype(np.float32)
  paths = figures.heatmap_grid(images, heat, str(tmp_path / "grid.png"), names=list("abcde"),
                               groups=["d1", "d1", "d2", "d2", "d2"])
  assert all(os.path.getsize(p) > 0 for p in paths)
  import json
  meta = json.load(open(tmp_path / "grid.json"))
  assert [m["name"] for m in meta["images"]] == list("abcde")
  saved = np.load(tmp_path / "grid.npz")
  np.testing.assert_allclose(saved["heatmap_2"], np.asarray(hm.upsample(heat[2:3], (16, 16))[0]))
