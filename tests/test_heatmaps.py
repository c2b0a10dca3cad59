"""Heatmaps: golden values, weight rules (clipping, NaN, zero rows), upsampling against torch."""

import os
import re

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


# ---- details that mutation testing (experiments/mutation.sh heatmaps) showed unchecked ----------


def _heatmaps_loop(maps, weights):
  """sum_k w_k F_k / sum_k w_k per image, as a float64 python loop over maps (0 if sum is 0)."""
  maps = np.asarray(maps, np.float64)
  out = np.zeros(maps.shape[:3])
  for i in range(maps.shape[0]):
    total = float(sum(weights[i]))
    for k in range(maps.shape[-1]):
      if total > 0:
        out[i] += weights[i][k] / total * maps[i, :, :, k]
  return out


def test_weighted_heatmaps_against_loop():
  rng = np.random.default_rng(30)
  maps = rng.random((3, 4, 5, 6)).astype(np.float32)
  per_image = rng.random((3, 6)) * (rng.random((3, 6)) < 0.6)
  per_image[1] = 0.0                                         # all-zero row -> zero map
  got = hm.weighted_heatmaps(maps, per_image)
  assert got.dtype == jnp.float32 and got.shape == (3, 4, 5)
  np.testing.assert_allclose(np.asarray(got), _heatmaps_loop(maps, per_image), rtol=2e-6, atol=1e-7)
  shared = np.array([0.5, 0.0, 2.0, 1.5, 0.0, 1e-3])        # [K]: the same weights for every image
  np.testing.assert_allclose(np.asarray(hm.weighted_heatmaps(maps, shared)),
                             _heatmaps_loop(maps, [shared] * 3), rtol=2e-6, atol=1e-7)
  with float64_scope():
    got64 = hm.weighted_heatmaps(maps.astype(np.float64), per_image, dtype=jnp.float64)
  assert got64.dtype == jnp.float64
  np.testing.assert_allclose(np.asarray(got64), _heatmaps_loop(maps, per_image), rtol=1e-12)


@pytest.mark.parametrize("weights,match", [
    (np.ones(5), r"weights must be \[K\] = \[6\] or \[n, K\] = \(3, 6\); got \(5,\)"),
    (np.ones((2, 6)), r"weights must be .*; got \(2, 6\)"),
    (np.ones((3, 6, 1)), r"got \(3, 6, 1\)"),
    (np.array([1.0, np.nan, 1, 1, 1, 1]), re.escape(
        "weights must be finite and nonnegative (learned weights are; AIS values go through "
        "heatmaps(), which clips them at 0)")),
    (np.array([1.0, np.inf, 1, 1, 1, 1]), "weights must be finite and nonnegative"),
    (np.array([1.0, -1e-300, 1, 1, 1, 1]), "weights must be finite and nonnegative"),
])
def test_weighted_heatmaps_refuses(weights, match):
  with pytest.raises(ValueError, match=match):
    hm.weighted_heatmaps(np.ones((3, 2, 2, 6), np.float32), weights)


def test_map_shape_errors():
  maps = np.ones((2, 3, 3), np.float32)
  for fn, args in ((hm.heatmaps, (np.ones((2, 3)),)), (hm.weighted_heatmaps, (np.ones(3),)),
                   (hm.mean_activation_maps, ())):
    with pytest.raises(ValueError, match=r"maps must be \[n, h, w, K\]; got shape \(2, 3, 3\)"):
      fn(maps, *args)
  with pytest.raises(ValueError, match=r"per_image_ais must be \[n, K\] = \(2, 4\) to match maps "
                                       r"\(2, 3, 3, 4\); got \(4,\)"):
    hm.heatmaps(np.ones((2, 3, 3, 4)), np.ones(4))
  with pytest.raises(ValueError, match=r"size must be \(H, W\) with positive entries; got \(0, 4\)"):
    hm.upsample(maps, (0, 4))
  with pytest.raises(ValueError, match=r"size must be \(H, W\) with positive entries; got \(3, 4, 1\)"):
    hm.upsample(maps, (3, 4, 1))
  with pytest.raises(ValueError, match=r"maps must be \[n, h, w\]; got shape \(3, 3\)"):
    hm.upsample(maps[0], (6, 6))


def test_ais_weights_one_image_integers_and_infinities():
  np.testing.assert_allclose(np.asarray(hm.ais_weights(np.array([0.1, -0.5, 0.3]))), [0.25, 0, 0.75],
                             rtol=1e-6)                        # [K]: one image
  with float64_scope():
    w = hm.ais_weights(np.array([[1, 3, -2], [0, 0, 0]]))     # integers become float32
    assert w.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(w), [[0.25, 0.75, 0], [0, 0, 0]])
  w = np.asarray(hm.ais_weights(np.array([[np.inf, 1.0, 3.0], [-np.inf, 2.0, 2.0]])))
  np.testing.assert_array_equal(w, [[0, 0.25, 0.75], [0, 0.5, 0.5]])   # non-finite weighs 0
  np.testing.assert_allclose(np.asarray(hm.mean_activation_maps(np.arange(8).reshape(1, 2, 1, 4))),
                             [[[1.5], [5.5]]])               # integer maps, mean over K


def test_upsample_shrink_antialiased_like_pil_and_one_pixel():
  from PIL import Image
  x = np.random.default_rng(31).random((1, 12, 16)).astype(np.float32)
  got = np.asarray(hm.upsample(x, (5, 7))[0])
  ref = np.asarray(Image.fromarray(x[0]).resize((7, 5), Image.BILINEAR), np.float32)
  np.testing.assert_allclose(got, ref, atol=1e-5)
  one_row = np.asarray(Image.fromarray(x[0]).resize((16, 1), Image.BILINEAR), np.float32)
  np.testing.assert_allclose(np.asarray(hm.upsample(x, (1, 16))[0]), one_row, atol=1e-5)
  ints = hm.upsample(np.arange(4).reshape(1, 2, 2), (2, 2))   # identity, integers -> float32
  assert ints.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(ints), [[[0, 1], [2, 3]]])


def test_normalise_constant_nan_and_scale():
  np.testing.assert_array_equal(hm.normalise(np.full((2, 3), 0.7)), np.zeros((2, 3)), strict=True)
  np.testing.assert_array_equal(hm.normalise(np.full((2, 2), np.nan)), np.zeros((2, 2)), strict=True)
  with np.errstate(over="ignore"):                      # a range that overflows counts as constant
    np.testing.assert_array_equal(hm.normalise(np.array([[-1e308, 1e308]])), [[0.0, 0.0]])
  x = np.array([[2.0, np.nan], [4.0, 3.0]])
  np.testing.assert_array_equal(hm.normalise(x), [[0.0, 0.0], [1.0, 0.5]])   # NaN shows as 0
  np.testing.assert_array_equal(hm.normalise(np.array([[-1.0, np.inf]])), [[0.0, 0.0]])
  y = hm.normalise(np.array([[-3.0, 1.0, -1.0]], np.float32))
  assert y.dtype == np.float64
  np.testing.assert_array_equal(y, [[0.0, 1.0, 0.5]])


def test_overlay_flat_alpha_cmap_and_errors():
  import matplotlib
  image = np.zeros((2, 2, 3), np.uint8)
  image[0, 0] = 255
  heat = np.array([[0.0, 1.0], [0.5, 0.25]])                   # same size: no resampling
  out = hm.overlay(image, heat, alpha=0.4, cmap="gray", value_alpha=False)
  colour = matplotlib.colormaps["gray"](heat)[..., :3]
  want = np.clip(np.round((0.6 * image / 255 + 0.4 * colour) * 255), 0, 255)
  np.testing.assert_array_equal(out, want)
  out = hm.overlay(image, heat, alpha=1.0, cmap="viridis")      # opacity = heat
  a = heat[..., None]
  want = np.round(((1 - a) * image / 255 + a * matplotlib.colormaps["viridis"](heat)[..., :3]) * 255)
  np.testing.assert_array_equal(out, want)
  with pytest.raises(ValueError, match=r"image must be uint8 \[H, W, 3\]; got float64 \(2, 2, 3\)"):
    hm.overlay(image / 255.0, heat)
  with pytest.raises(ValueError, match="image must be uint8"):
    hm.overlay(image[..., :2], heat)
  with pytest.raises(ValueError, match=r"heatmap must be \[h, w\]; got shape \(1, 2, 2\)"):
    hm.overlay(image, heat[None])


def test_overlay_defaults_and_same_size_heat_kept_in_float64():
  import matplotlib
  rng = np.random.default_rng(32)
  image = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
  heat = rng.random((3, 4))
  value = (heat - heat.min()) / (heat.max() - heat.min())
  a = 0.5 * value[..., None]                                    # defaults: alpha 0.5, opacity = heat
  want = np.round(((1 - a) * image / 255 + a * matplotlib.colormaps["jet"](value)[..., :3]) * 255)
  np.testing.assert_array_equal(hm.overlay(image, heat), want)
  # A same-size heatmap is used as given (float64), not resampled in float32: 1/256 - 1e-12 falls
  # in the gray colormap's first bin (0), its float32 rounding 1/256 in the second (1/255).
  edge = np.array([[0.0, 1.0, 0.5, 1 / 256 - 1e-12]] * 3)
  out = hm.overlay(np.zeros((3, 4, 3), np.uint8), edge, alpha=1.0, cmap="gray", value_alpha=False)
  np.testing.assert_array_equal(out[:, 3], 0)


def test_overlay_clips_opacity_above_one():
  image = np.zeros((1, 2, 3), np.uint8)
  image[0, 1] = 255
  heat = np.array([[1.0, 0.0]])
  out = hm.overlay(image, heat, alpha=2.0, cmap="gray", value_alpha=False)
  # 2 * gray(1) - 0 = 2 -> 510 -> 255; 2 * gray(0) - 1 = -1 -> -255 -> 0.
  np.testing.assert_array_equal(out, [[[255, 255, 255], [0, 0, 0]]])


def test_output_dtypes_follow_the_request_not_the_input():
  maps64 = np.random.default_rng(33).random((2, 3, 3, 4))
  with float64_scope():                                         # float64 exists: no silent cast
    assert hm.weighted_heatmaps(maps64, np.ones(4)).dtype == jnp.float32
    assert hm.weighted_heatmaps(maps64, np.ones(4), dtype=jnp.float64).dtype == jnp.float64
    assert hm.mean_activation_maps(maps64).dtype == jnp.float32
    assert hm.heatmaps(maps64, np.ones((2, 4))).dtype == jnp.float32
    assert hm.ais_weights(np.ones(3, np.float16)).dtype == jnp.float16   # the input's float dtype
    assert hm.upsample(maps64[..., 0], (5, 5)).dtype == jnp.float64       # floats keep theirs
    assert hm.upsample(np.ones((1, 2, 2), np.int64), (3, 3)).dtype == jnp.float32
  assert hm.upsample(np.ones((1, 2, 2), np.float16), (3, 3)).dtype == jnp.float16
