"""AIS heatmaps (DESIGN.md section 1, Aim 2): per-image AIS weights -> maps -> upsampled heatmaps.

For image i with deepest feature maps ``F_i [h, w, K]`` and per-image AIS ``AIS_i [K]``::

    w_ik = max(AIS_ik, 0) / sum_k' max(AIS_ik', 0)      (NaN AIS weighs 0)
    heatmap_i = sum_k w_ik F_ik                          [h, w]

Maps with negative AIS (removing them *improves* agreement with the humans) and maps whose AIS is
undefined (NaN) get weight 0. An image whose weights are all zero (no map helps, or its row is
undefined) gets an all-zero heatmap, never NaN. Heatmaps are upsampled to the image bilinearly with
half-pixel centres, as PyTorch's ``F.interpolate(mode='bilinear', align_corners=False)``.

Everything here except :func:`overlay` is pure ``jax.numpy`` and jit-able; :func:`overlay` is a
numpy helper for figures (colormap lookup through matplotlib, imported lazily).

Shapes: ``n`` images, ``h x w`` map resolution, ``K`` maps, ``H x W`` image resolution.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def ais_weights(per_image_ais: Any) -> jax.Array:
  """Heatmap weights from per-image AIS.

  Args:
    per_image_ais: ``[n, K]`` (or ``[K]``) per-image AIS; NaN where undefined.

  Returns:
    ``[n, K]`` weights ``max(AIS, 0)`` normalised to sum 1 per image, in the input's float dtype.
    NaN (and any other non-finite value, which AIS - a difference of correlations - cannot
    produce) weighs 0; a row with no positive AIS gives all-zero weights (not NaN).
  """
  ais = jnp.asarray(per_image_ais)
  if not jnp.issubdtype(ais.dtype, jnp.floating):
    ais = ais.astype(jnp.float32)
  # jnp.maximum(NaN, 0) is NaN, so the NaN rule needs its own where.
  positive = jnp.where(jnp.isfinite(ais) & (ais > 0), ais, jnp.zeros_like(ais))
  total = positive.sum(axis=-1, keepdims=True)
  has_weight = total > 0
  return jnp.where(has_weight, positive / jnp.where(has_weight, total, 1), 0)


@functools.partial(jax.jit, static_argnames=("dtype",))
def _weighted_sum(maps, weights, dtype):
  return jnp.einsum("nhwk,nk->nhw", maps.astype(dtype), weights.astype(dtype),
                    precision=jax.lax.Precision.HIGHEST)


def heatmaps(maps: Any, per_image_ais: Any, *, dtype=jnp.float32) -> jax.Array:
  """AIS heatmaps at map resolution: ``sum_k w_ik F_ik``.

  Args:
    maps: ``[n, h, w, K]`` feature maps (the ones the AIS was computed on).
    per_image_ais: ``[n, K]`` per-image AIS (NaN allowed, see :func:`ais_weights`).
    dtype: output dtype (float32 by default; pass ``jnp.float64`` inside
      :func:`ais_jax.precision.float64_scope` for a float64 reference).

  Returns:
    ``[n, h, w]`` heatmaps (non-negative when the maps are, e.g. post-ReLU).
  """
  maps = jnp.asarray(maps)
  ais = jnp.asarray(per_image_ais)
  if maps.ndim != 4:
    raise ValueError(f"maps must be [n, h, w, K]; got shape {maps.shape}")
  if ais.shape != (maps.shape[0], maps.shape[-1]):
    raise ValueError(f"per_image_ais must be [n, K] = {(maps.shape[0], maps.shape[-1])} to match "
                     f"maps {maps.shape}; got {ais.shape}")
  return _weighted_sum(maps, ais_weights(ais), jnp.dtype(dtype).type)


def weighted_heatmaps(maps: Any, weights: Any, *, dtype=jnp.float32) -> jax.Array:
  """Heatmaps from given nonnegative map weights (e.g. learned weights, ais_jax.reweight):
  ``sum_k (w_ik / sum_k' w_ik') F_ik``.

  Args:
    maps: ``[n, h, w, K]`` feature maps.
    weights: ``[K]`` (the same weights for every image) or ``[n, K]``; nonnegative and finite.
      A row summing to 0 gives an all-zero heatmap, as :func:`heatmaps`.
    dtype: output dtype.

  Returns:
    ``[n, h, w]``.
  """
  maps = jnp.asarray(maps)
  if maps.ndim != 4:
    raise ValueError(f"maps must be [n, h, w, K]; got shape {maps.shape}")
  w = np.asarray(weights, np.float64)
  if w.ndim == 1:
    w = np.broadcast_to(w, (maps.shape[0], w.shape[0]))
  if w.shape != (maps.shape[0], maps.shape[-1]):
    raise ValueError(f"weights must be [K] = [{maps.shape[-1]}] or [n, K] = "
                     f"{(maps.shape[0], maps.shape[-1])}; got {np.shape(weights)}")
  if not np.all(np.isfinite(w)) or np.any(w < 0):
    raise ValueError("weights must be finite and nonnegative (learned weights are; AIS values "
                     "go through heatmaps(), which clips them at 0)")
  # ais_weights keeps nonnegative values and normalises each row to sum 1.
  return _weighted_sum(maps, ais_weights(jnp.asarray(w, dtype)), jnp.dtype(dtype).type)


def mean_activation_maps(maps: Any, *, dtype=jnp.float32) -> jax.Array:
  """The equal-weights baseline: ``mean_k F_ik`` ``[n, h, w]`` (every map weighs ``1/K``)."""
  maps = jnp.asarray(maps)
  if maps.ndim != 4:
    raise ValueError(f"maps must be [n, h, w, K]; got shape {maps.shape}")
  return jnp.mean(maps.astype(dtype), axis=-1)


@functools.partial(jax.jit, static_argnames=("size",))
def _resize(maps, size):
  return jax.image.resize(maps, (maps.shape[0],) + size, method="linear", antialias=True)


def upsample(maps: Any, size: Sequence[int]) -> jax.Array:
  """Bilinear resize of ``[n, h, w]`` maps to ``size = (H, W)`` with half-pixel centres.

  Upsampling equals PyTorch's ``F.interpolate(mode='bilinear', align_corners=False)`` (edge
  pixels are replicated; tested against torch). Shrinking is antialiased (a widened triangle
  filter, as PIL's BILINEAR), which PyTorch only does with ``antialias=True``.

  Returns:
    ``[n, H, W]`` in the input's float dtype (integers become float32).
  """
  maps = jnp.asarray(maps)
  if maps.ndim != 3:
    raise ValueError(f"maps must be [n, h, w]; got shape {maps.shape} (add a leading axis for one map)")
  size = tuple(int(s) for s in size)
  if len(size) != 2 or min(size) < 1:
    raise ValueError(f"size must be (H, W) with positive entries; got {size}")
  if not jnp.issubdtype(maps.dtype, jnp.floating):
    maps = maps.astype(jnp.float32)
  if size == maps.shape[1:]:
    return maps
  return _resize(maps, size)


def normalise(heatmap: Any) -> np.ndarray:
  """Min-max scaling of one map to [0, 1] (a constant map gives zeros), float64 numpy."""
  x = np.asarray(heatmap, np.float64)
  if np.isnan(x).all():     # nothing defined (np.nanmin would warn)
    return np.zeros_like(x)
  lo, hi = np.nanmin(x), np.nanmax(x)
  if not np.isfinite(hi - lo) or hi - lo <= 0:
    return np.zeros_like(x)
  return np.nan_to_num((x - lo) / (hi - lo), nan=0.0)


def overlay(image: Any, heatmap: Any, *, alpha: float = 0.5, cmap: str = "jet",
            value_alpha: bool = True) -> np.ndarray:
  """Colours a heatmap over an image (for figures).

  Args:
    image: uint8 ``[H, W, 3]``.
    heatmap: ``[h, w]`` map; upsampled bilinearly (:func:`upsample`) to ``[H, W]`` if needed, then
      min-max scaled to [0, 1] (:func:`normalise`).
    alpha: opacity of the colour layer at the hottest pixel.
    cmap: a matplotlib colormap name.
    value_alpha: if True the opacity grows with the heat (``alpha * value``), so cold regions show
      the image unchanged; if False the colour layer has opacity ``alpha`` everywhere.

  Returns:
    uint8 ``[H, W, 3]`` RGB.
  """
  import matplotlib  # lazy: figures only
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"image must be uint8 [H, W, 3]; got {image.dtype} {image.shape}")
  heat = np.asarray(heatmap)
  if heat.ndim != 2:
    raise ValueError(f"heatmap must be [h, w]; got shape {heat.shape}")
  if heat.shape != image.shape[:2]:
    heat = np.asarray(upsample(heat[None].astype(np.float32), image.shape[:2])[0])
  value = normalise(heat)
  colour = matplotlib.colormaps[cmap](value)[..., :3]
  a = alpha * (value if value_alpha else np.ones_like(value))
  out = (1 - a[..., None]) * (image / 255.0) + a[..., None] * colour
  return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)
