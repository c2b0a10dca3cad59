"""A planted-truth cohort: synthetic images whose "human" similarity is known by construction.

Each image holds two objects on a cluttered, colourful background:

* a **target**: a star whose number of points ``k`` (3..10, the *target factor*) alone defines the
  "human" similarity ``S_ij = -|k_i - k_j| / (k_max - k_min) + noise_ij`` (symmetric Gaussian
  noise, sd ``noise_sd``; diagonal 0 and ignored). Its size, rotation, colour and position vary
  at random and do **not** enter the similarity;
* a **distractor**: an ellipse, rotated rectangle, cross or irregular blob of about the same area,
  with its own colour, rotation and position drawn independently; it has nothing to do with the
  similarity.

Both objects' pixel masks are returned, so an analysis can measure how much heatmap mass falls on
the object that matters (target) versus the one that merely draws the eye (distractor), against
the area each covers (:func:`mass_fractions`, :func:`area_fractions`).

Everything is generated with ``numpy.random.default_rng`` streams spawned from one seed
(``numpy.random.SeedSequence(seed).spawn``): the factor order, the target geometry, the
distractors, the background and the human noise each have their own stream, so changing the
distractors (``distractor_seed``, ``distractor_permutation``) leaves the targets and the human
matrix unchanged. Shapes are rasterised with PIL (no antialiasing), which is deterministic. No data
files are read.

What the cohort can and cannot show: it tests whether a method's heatmaps follow the object that
defines the comparison rather than an equally large, equally colourful one that does not. It is
not a model of human vision: the "human" matrix is a formula, the objects are flat shapes, and a
network trained on photographs may represent the number of star points only weakly, which limits
how well any of its maps can agree with the matrix.
"""

from __future__ import annotations

import dataclasses
import colorsys
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

# Target factor: number of star points.
MIN_POINTS = 3
MAX_POINTS = 10
STAR_INNER_RATIO = 0.45
DISTRACTOR_KINDS = ("ellipse", "rectangle", "cross", "blob")
# Target radius range, as a fraction of the image side (outer radius of the star).
RADIUS_RANGE = (0.15, 0.21)
# The distractor families are fuller than a star of the same radius; this range gives both objects
# about the same mean area (about 5% of the image each at the defaults).
DISTRACTOR_RADIUS_RANGE = (0.12, 0.17)
# Streams spawned from the seed, in this order.
_STREAMS = ("factor", "target", "distractor", "background", "noise")


@dataclasses.dataclass(frozen=True)
class PlantedCohort:
  """A generated cohort.

  Attributes:
    images: uint8 ``[n, H, W, 3]``.
    human_similarity: float64 ``[n, n]``, symmetric, diagonal 0 (ignored by every analysis).
    target_masks: bool ``[n, H, W]``, the target star's pixels.
    distractor_masks: bool ``[n, H, W]``, the distractor's pixels (disjoint from the target's).
    target_factor: int ``[n]``, number of star points (defines ``human_similarity``).
    factors: name -> ``[n]`` (or ``[n, 3]`` colours, ``[n, 2]`` centres) per-image parameters:
      target_points, target_radius, target_rotation, target_center, target_colour,
      distractor_kind (index into DISTRACTOR_KINDS), distractor_radius, distractor_aspect,
      distractor_rotation, distractor_center, distractor_colour.
    image_names: ``'planted_000_k5'`` ...
    seed: the seed; distractor_seed: the distractor stream's seed (None: spawned from ``seed``).
    noise_sd: sd of the human noise.
    description: one paragraph saying how the cohort was made.
  """
  images: np.ndarray
  human_similarity: np.ndarray
  target_masks: np.ndarray
  distractor_masks: np.ndarray
  target_factor: np.ndarray
  factors: dict
  image_names: tuple
  seed: int
  distractor_seed: Optional[int]
  noise_sd: float
  description: str

  @property
  def n(self) -> int:
    return int(self.images.shape[0])

  def metadata(self) -> dict:
    """JSON-ready parameters (for summary.json)."""
    return {"generator": "ais_jax.data.planted.generate", "n_images": self.n,
            "size": int(self.images.shape[1]), "seed": self.seed,
            "distractor_seed": self.distractor_seed, "noise_sd": self.noise_sd,
            "target_factor": "number of star points", "points_range": [MIN_POINTS, MAX_POINTS],
            "distractor_kinds": list(DISTRACTOR_KINDS), "description": self.description}


# ----------------------------------------------------------------------------------------------
# Generation


def _colour(rng: np.random.Generator, n: int) -> np.ndarray:
  """``[n, 3]`` uint8 saturated colours (HSV: any hue, s in [0.6, 1], v in [0.75, 1])."""
  hsv = np.stack([rng.uniform(0, 1, n), rng.uniform(0.6, 1.0, n), rng.uniform(0.75, 1.0, n)], 1)
  rgb = np.array([colorsys.hsv_to_rgb(*row) for row in hsv]).reshape(n, 3)
  return np.round(rgb * 255).astype(np.uint8)


def _star(center, radius, rotation, points) -> list[tuple[float, float]]:
  angles = rotation + np.arange(2 * points) * np.pi / points
  radii = np.where(np.arange(2 * points) % 2 == 0, radius, radius * STAR_INNER_RATIO)
  return [(float(center[0] + r * np.cos(a)), float(center[1] + r * np.sin(a)))
          for r, a in zip(radii, angles)]


def _rotate(xy: np.ndarray, center, rotation) -> list[tuple[float, float]]:
  c, s = np.cos(rotation), np.sin(rotation)
  x = center[0] + c * xy[:, 0] - s * xy[:, 1]
  y = center[1] + s * xy[:, 0] + c * xy[:, 1]
  return [(float(a), float(b)) for a, b in zip(x, y)]


def _distractor_polygon(kind: str, center, radius, aspect, rotation, blob_radii) -> list:
  if kind == "ellipse":
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    xy = np.stack([radius * np.cos(t), radius * aspect * np.sin(t)], 1)
  elif kind == "rectangle":
    a, b = radius * 0.85, radius * 0.85 * aspect
    xy = np.array([[-a, -b], [a, -b], [a, b], [-a, b]])
  elif kind == "cross":
    a, b = radius, radius * 0.33
    xy = np.array([[-a, -b], [-b, -b], [-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b],
                   [b, a], [-b, a], [-b, b], [-a, b]])
  elif kind == "blob":
    t = np.linspace(0, 2 * np.pi, blob_radii.size, endpoint=False)
    r = radius * blob_radii
    xy = np.stack([r * np.cos(t), r * np.sin(t)], 1)
  else:
    raise ValueError(f"unknown distractor kind {kind!r}")
  return _rotate(xy, center, rotation)


def _smooth_blob_radii(rng: np.random.Generator, count: int = 48) -> np.ndarray:
  """Radial profile of an irregular, smooth blob: 1 + a few low harmonics, in [0.6, 1]."""
  t = np.linspace(0, 2 * np.pi, count, endpoint=False)
  r = np.ones(count)
  for h in (2, 3):
    r += rng.uniform(0.05, 0.15) * np.cos(h * t + rng.uniform(0, 2 * np.pi))
  return 0.6 + 0.4 * (r - r.min()) / max(r.max() - r.min(), 1e-9)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
  """Colourful clutter: low-frequency colour texture, random strokes and small blobs. uint8."""
  yy, xx = np.mgrid[0:size, 0:size] / size
  field = np.full((size, size, 3), 128.0)
  for _ in range(4):
    freq = rng.uniform(1.0, 5.0, 2) * rng.choice([-1, 1], 2)
    phase = rng.uniform(0, 2 * np.pi)
    amplitude = rng.uniform(15, 35, 3)
    field += amplitude * np.sin(2 * np.pi * (freq[0] * xx + freq[1] * yy) + phase)[..., None]
  field += rng.normal(0, 6, field.shape)  # fine grain
  img = Image.fromarray(np.clip(np.round(field), 0, 255).astype(np.uint8))
  draw = ImageDraw.Draw(img)
  n_strokes = 28
  colours = _colour(rng, n_strokes + 14)
  for j in range(n_strokes):
    p0 = rng.uniform(0, size, 2)
    length = rng.uniform(0.1, 0.35) * size
    angle = rng.uniform(0, 2 * np.pi)
    p1 = p0 + length * np.array([np.cos(angle), np.sin(angle)])
    width = int(max(1, round(rng.uniform(0.004, 0.012) * size)))
    draw.line([tuple(map(float, p0)), tuple(map(float, p1))], fill=tuple(map(int, colours[j])),
              width=width)
  for j in range(14):
    c = rng.uniform(0, size, 2)
    r = rng.uniform(0.015, 0.045, 2) * size
    draw.ellipse([float(c[0] - r[0]), float(c[1] - r[1]), float(c[0] + r[0]), float(c[1] + r[1])],
                 fill=tuple(map(int, colours[n_strokes + j])))
  return np.asarray(img)


def human_from_factor(factor: Any, *, noise_sd: float, rng: np.random.Generator) -> np.ndarray:
  """``S_ij = -|f_i - f_j| / (max f - min f) + noise_ij``: symmetric, diagonal 0, float64.

  The noise is drawn for the upper triangle in row-major order and mirrored.
  """
  f = np.asarray(factor, np.float64)
  span = max(float(f.max() - f.min()), 1.0)
  s = -np.abs(f[:, None] - f[None, :]) / span
  n = f.size
  iu = np.triu_indices(n, 1)
  noise = np.zeros((n, n))
  noise[iu] = rng.normal(0.0, noise_sd, iu[0].size)
  s = s + noise + noise.T
  np.fill_diagonal(s, 0.0)
  return s


def generate(n: int = 48, size: int = 224, *, seed: int = 0, noise_sd: float = 0.05,
             distractor_seed: Optional[int] = None,
             distractor_permutation: Optional[Sequence[int]] = None) -> PlantedCohort:
  """Generates the planted-truth cohort (deterministic for the arguments).

  Args:
    n: number of images (>= 4). The target factor cycles through 3..10 points, so every level
      occurs ``n // 8`` or ``n // 8 + 1`` times, in an order shuffled by the seed.
    size: image side in pixels (>= 32).
    seed: seeds every stream.
    noise_sd: sd of the symmetric Gaussian noise added to the human similarity (its noiseless
      values span [-1, 0]).
    distractor_seed: seed of the distractor stream only (None: spawned from ``seed``). Changing
      it changes the distractors and nothing else.
    distractor_permutation: optional permutation of ``range(n)``: image i gets the distractor
      drawn for image ``distractor_permutation[i]`` (its kind, size, shape, colour and position).
      Targets, background and the human matrix are unchanged.

  Returns:
    A :class:`PlantedCohort`.
  """
  if int(n) < 4:
    raise ValueError(f"n must be >= 4 (a similarity matrix needs at least 4 images); got {n}")
  if int(size) < 32:
    raise ValueError(f"size must be >= 32 pixels; got {size}")
  if noise_sd < 0:
    raise ValueError(f"noise_sd must be >= 0; got {noise_sd}")
  n, size = int(n), int(size)
  streams = dict(zip(_STREAMS, np.random.SeedSequence(int(seed)).spawn(len(_STREAMS))))
  rng = {k: np.random.default_rng(v) for k, v in streams.items()}
  if distractor_seed is not None:
    rng["distractor"] = np.random.default_rng(int(distractor_seed))

  levels = np.arange(MIN_POINTS, MAX_POINTS + 1)
  points = rng["factor"].permutation(np.resize(levels, n)).astype(np.int64)

  tr = rng["target"]
  t_radius = tr.uniform(*RADIUS_RANGE, n) * size
  t_rotation = tr.uniform(0, 2 * np.pi, n)
  t_colour = _colour(tr, n)

  dr = rng["distractor"]
  d_kind = dr.integers(0, len(DISTRACTOR_KINDS), n)
  d_radius = dr.uniform(*DISTRACTOR_RADIUS_RANGE, n) * size
  d_aspect = dr.uniform(0.45, 0.9, n)
  d_rotation = dr.uniform(0, 2 * np.pi, n)
  d_colour = _colour(dr, n)
  d_blob = np.stack([_smooth_blob_radii(dr) for _ in range(n)])
  d_unit_pos = dr.uniform(0, 1, (n, 1000, 2))  # positions, scaled per image below
  if distractor_permutation is not None:
    perm = np.asarray(distractor_permutation)
    if sorted(perm.tolist()) != list(range(n)):
      raise ValueError(f"distractor_permutation must be a permutation of range({n})")
    d_kind, d_radius, d_aspect, d_rotation, d_colour, d_blob, d_unit_pos = (
        a[perm] for a in (d_kind, d_radius, d_aspect, d_rotation, d_colour, d_blob, d_unit_pos))

  # Positions: the target's position comes from the target stream, the distractor's from its
  # own pre-drawn candidates (first one that does not overlap the target), so that neither
  # stream's draws depend on the other's.
  t_center = np.stack([tr.uniform(t_radius[i] + 1, size - t_radius[i] - 1, 2) for i in range(n)])
  d_center = np.zeros((n, 2))
  margin = 0.03 * size
  for i in range(n):
    lo, hi = d_radius[i] + 1, size - d_radius[i] - 1
    candidates = lo + d_unit_pos[i] * (hi - lo)
    gap = np.hypot(*(candidates - t_center[i]).T) - (t_radius[i] + d_radius[i] + margin)
    ok = np.flatnonzero(gap > 0)
    # With radii <= 0.21 of the side some candidate always fits; take the farthest otherwise.
    d_center[i] = candidates[ok[0] if ok.size else int(np.argmax(gap))]

  bg = rng["background"]
  images = np.zeros((n, size, size, 3), np.uint8)
  target_masks = np.zeros((n, size, size), bool)
  distractor_masks = np.zeros((n, size, size), bool)
  outline = int(max(1, round(size / 112)))
  for i in range(n):
    img = Image.fromarray(_background(bg, size))
    draw = ImageDraw.Draw(img)
    d_poly = _distractor_polygon(DISTRACTOR_KINDS[d_kind[i]], d_center[i], d_radius[i],
                                 d_aspect[i], d_rotation[i], d_blob[i])
    t_poly = _star(t_center[i], t_radius[i], t_rotation[i], int(points[i]))
    for poly, colour in ((d_poly, d_colour[i]), (t_poly, t_colour[i])):
      draw.polygon(poly, fill=tuple(map(int, colour)), outline=(20, 20, 20), width=outline)
    images[i] = np.asarray(img)
    for poly, masks in ((d_poly, distractor_masks), (t_poly, target_masks)):
      m = Image.new("L", (size, size), 0)
      ImageDraw.Draw(m).polygon(poly, fill=255, outline=255, width=outline)
      masks[i] = np.asarray(m) > 0
  distractor_masks &= ~target_masks  # the target is drawn last (on top)

  human = human_from_factor(points, noise_sd=noise_sd, rng=rng["noise"])
  names = tuple(f"planted_{i:03d}_k{int(points[i])}" for i in range(n))
  description = (
      f"{n} synthetic {size}x{size} images (seed {seed}). Each shows a star (the TARGET) and a "
      "distractor shape (ellipse, rectangle, cross or blob) of about the same area on a "
      "cluttered background of colour "
      "texture, strokes and small blobs. The 'human' similarity is -|k_i - k_j| / "
      f"{max(int(points.max() - points.min()), 1)} + Gaussian noise (sd {noise_sd}), where k is the "
      f"number of star points ({MIN_POINTS}..{MAX_POINTS}); the target's size, rotation, colour and "
      "position and everything about the distractor are drawn independently and do not enter it.")
  factors = {
      "target_points": points, "target_radius": t_radius, "target_rotation": t_rotation,
      "target_center": t_center, "target_colour": t_colour, "distractor_kind": d_kind,
      "distractor_radius": d_radius, "distractor_aspect": d_aspect,
      "distractor_rotation": d_rotation, "distractor_center": d_center,
      "distractor_colour": d_colour,
  }
  return PlantedCohort(images=images, human_similarity=human, target_masks=target_masks,
                       distractor_masks=distractor_masks, target_factor=points, factors=factors,
                       image_names=names, seed=int(seed), distractor_seed=distractor_seed,
                       noise_sd=float(noise_sd), description=description)


# ----------------------------------------------------------------------------------------------
# Metrics


def _check_masks(masks: Any, shape: tuple, what: str) -> np.ndarray:
  m = np.asarray(masks)
  if m.shape != shape:
    raise ValueError(f"{what} must be [n, H, W] = {shape} like the heatmaps; got {m.shape} "
                     "(upsample the heatmaps to the image size first: ais_jax.heatmaps.upsample)")
  if m.dtype != bool:
    if not np.all((m == 0) | (m == 1)):
      raise ValueError(f"{what} must be boolean or 0/1")
    m = m.astype(bool)
  return m


def mass_fractions(heatmaps_upsampled: Any, masks: Any) -> np.ndarray:
  """Per image, the fraction of the (non-negative part of the) heatmap's mass inside the mask.

  ``sum(max(h, 0) * mask) / sum(max(h, 0))`` in float64.

  Args:
    heatmaps_upsampled: ``[n, H, W]`` heatmaps at image resolution.
    masks: bool or 0/1 ``[n, H, W]``.

  Returns:
    float64 ``[n]`` in [0, 1]; NaN for an image whose heatmap has no positive mass (an all-zero
    heatmap, e.g. when no map has positive AIS) - count them, do not average them as 0.
  """
  h = np.asarray(heatmaps_upsampled, np.float64)
  if h.ndim != 3:
    raise ValueError(f"heatmaps_upsampled must be [n, H, W]; got shape {h.shape}")
  if not np.all(np.isfinite(h)):
    raise ValueError("heatmaps_upsampled holds NaN/inf; heatmaps from ais_jax.heatmaps never do")
  m = _check_masks(masks, h.shape, "masks")
  positive = np.maximum(h, 0.0)
  total = positive.sum(axis=(1, 2))
  inside = np.where(m, positive, 0.0).sum(axis=(1, 2))
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)


def area_fractions(masks: Any) -> np.ndarray:
  """Per image, the fraction of pixels inside the mask: float64 ``[n]``."""
  m = np.asarray(masks)
  if m.ndim != 3:
    raise ValueError(f"masks must be [n, H, W]; got shape {m.shape}")
  return m.astype(bool).mean(axis=(1, 2), dtype=np.float64)


def mass_report(heatmaps_upsampled: Any, target_masks: Any, distractor_masks: Any) -> dict:
  """Mass on target and distractor, area fractions, and their ratios, per image.

  Returns:
    float64 ``[n]`` arrays: ``target_mass``, ``distractor_mass``, ``target_area``,
    ``distractor_area``, ``target_enrichment`` (= target_mass / target_area; 1 means no better
    than spreading the mass uniformly), ``distractor_enrichment``, ``target_minus_distractor``
    (mass difference). NaN where the heatmap has no positive mass.
  """
  out = {"target_mass": mass_fractions(heatmaps_upsampled, target_masks),
         "distractor_mass": mass_fractions(heatmaps_upsampled, distractor_masks),
         "target_area": area_fractions(target_masks),
         "distractor_area": area_fractions(distractor_masks)}
  with np.errstate(invalid="ignore", divide="ignore"):
    out["target_enrichment"] = out["target_mass"] / out["target_area"]
    out["distractor_enrichment"] = out["distractor_mass"] / out["distractor_area"]
  out["target_minus_distractor"] = out["target_mass"] - out["distractor_mass"]
  return out


def summarise_masses(report: dict) -> dict:
  """Means over the images where defined (``nanmean``), medians, and the undefined count."""
  out = {}
  for key, values in report.items():
    v = np.asarray(values, np.float64)
    ok = np.isfinite(v)
    out[key] = {"mean": float(v[ok].mean()) if ok.any() else float("nan"),
                "median": float(np.median(v[ok])) if ok.any() else float("nan"),
                "n": int(ok.sum()), "n_undefined": int((~ok).sum())}
  t, d = np.asarray(report["target_mass"]), np.asarray(report["distractor_mass"])
  ok = np.isfinite(t) & np.isfinite(d)
  out["fraction_images_target_gt_distractor"] = (
      float((t[ok] > d[ok]).mean()) if ok.any() else float("nan"))
  return out
