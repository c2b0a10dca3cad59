"""Aim 2 analyses: heatmap agreement between models (Match), maxEntropy, AIS distributions.

* **Match score** (the paper's Figure A.1): per image, the Pearson correlation of two models'
  heatmaps after both are upsampled to the same (image) resolution. A constant heatmap (e.g. the
  all-zero map of an image with no positive AIS) makes the score NaN under the project's rule
  (DESIGN.md section 1, via :func:`ais_jax.rsa.correlation`); NaN scores are counted, not dropped
  silently.
* **maxEntropy**: per image, the larger of the two models' softmax entropies (nats), and its
  Pearson/Spearman correlation with Match (scipy p-values).
* **AIS distributions** (the paper's Figure 3): per-map mean AIS over images and the histogram of
  ``log10`` of its positive values, mean absolute deviation per map and per image, the two-sided
  two-sample KS test between two models, and correlations of cohort AIS vectors between
  categories or datasets.

Inputs are numpy/JAX arrays; results are float64 numpy arrays or plain dicts (JSON-ready).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import scipy.special
import scipy.stats

from ais_jax import heatmaps as heatmaps_lib
from ais_jax import rsa


# ----------------------------------------------------------------------------------------------
# Match score


def match_scores(heatmaps_a: Any, heatmaps_b: Any, *, size: Sequence[int] | None = None) -> np.ndarray:
  """Per-image Pearson correlation of two models' heatmaps (the Match score).

  Args:
    heatmaps_a: ``[n, h_a, w_a]`` heatmaps of model A.
    heatmaps_b: ``[n, h_b, w_b]`` heatmaps of model B (same images, same order).
    size: ``(H, W)`` both are upsampled to (:func:`ais_jax.heatmaps.upsample`) before
      correlating - normally the image size. Required when the two map resolutions differ; when
      None and they agree, the maps are correlated as given.

  Returns:
    float64 ``[n]``; NaN where either map is constant (see :func:`count_undefined`).
  """
  a = np.asarray(heatmaps_a)
  b = np.asarray(heatmaps_b)
  if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0]:
    raise ValueError(f"heatmaps must be [n, h, w] for the same n images; got {a.shape} and {b.shape}")
  if size is None:
    if a.shape != b.shape:
      raise ValueError(f"heatmap resolutions differ ({a.shape[1:]} vs {b.shape[1:]}): pass size=(H, W), "
                       "normally the image size, to upsample both before correlating")
  n = a.shape[0]
  # Whether a map is constant is decided on the maps as given: bilinear interpolation of a
  # constant map is constant in exact arithmetic, but float32 upsampling adds ~1e-8 relative
  # noise that the 1e-12 rule would read as signal (a constant map then got a finite score).
  constant = (np.asarray(rsa.is_constant(a.reshape(n, -1).astype(np.float64)))
              | np.asarray(rsa.is_constant(b.reshape(n, -1).astype(np.float64))))
  if size is not None:
    a = np.asarray(heatmaps_lib.upsample(a.astype(np.float32), size))
    b = np.asarray(heatmaps_lib.upsample(b.astype(np.float32), size))
  scores = np.asarray(rsa.correlation(a.reshape(n, -1).astype(np.float64),
                                      b.reshape(n, -1).astype(np.float64), kind="pearson"))
  return np.where(constant, np.nan, scores)


def count_undefined(values: Any) -> int:
  """Number of NaN entries."""
  return int(np.isnan(np.asarray(values, np.float64)).sum())


def empirical_cdf(values: Any) -> dict:
  """Empirical cumulative distribution of the defined (finite) values.

  Returns:
    ``{'x': sorted finite values [m], 'p': (1..m)/m [m], 'n': m, 'n_undefined': NaN count}``;
    ``p[j]`` is the fraction of defined values ``<= x[j]`` (ties give repeated x with rising p,
    a staircase when plotted as steps).
  """
  v = np.asarray(values, np.float64).ravel()
  finite = v[np.isfinite(v)]
  x = np.sort(finite)
  m = x.size
  return {"x": x, "p": np.arange(1, m + 1, dtype=np.float64) / max(m, 1), "n": int(m),
          "n_undefined": int(v.size - m)}


# ----------------------------------------------------------------------------------------------
# Entropy


def softmax_entropy(logits: Any) -> np.ndarray:
  """Entropy (nats) of ``softmax(logits)`` along the last axis, float64 ``[n]`` (stable form).

  A class of probability 0 (a ``-inf`` logit, or one that underflows) adds ``0 log 0 = 0``.
  """
  z = np.asarray(logits, np.float64)
  log_p = scipy.special.log_softmax(z, axis=-1)
  p = np.exp(log_p)
  return -np.sum(p * np.where(p > 0, log_p, 0.0), axis=-1)


def max_entropy(logits_a: Any, logits_b: Any) -> np.ndarray:
  """Per image, the larger of the two models' softmax entropies (nats): ``[n]``.

  The two models may have different class counts (``[n, C_a]``, ``[n, C_b]``).
  """
  a = np.asarray(logits_a)
  b = np.asarray(logits_b)
  if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
    raise ValueError(f"logits must be [n, C] for the same n images; got {a.shape} and {b.shape}")
  return np.maximum(softmax_entropy(a), softmax_entropy(b))


def correlate(x: Any, y: Any) -> dict:
  """Pearson and Spearman correlation (scipy, two-sided p-values) over pairs where both are finite.

  Returns:
    dict with ``pearson_r, pearson_p, spearman_rho, spearman_p`` (NaN when fewer than 3 pairs or
    either side is constant), ``n`` (pairs used) and ``n_excluded`` (pairs with a NaN/inf).
  """
  x = np.asarray(x, np.float64).ravel()
  y = np.asarray(y, np.float64).ravel()
  if x.shape != y.shape:
    raise ValueError(f"x and y must have the same length; got {x.size} and {y.size}")
  ok = np.isfinite(x) & np.isfinite(y)
  xs, ys = x[ok], y[ok]
  out = {"n": int(ok.sum()), "n_excluded": int((~ok).sum()), "pearson_r": float("nan"),
         "pearson_p": float("nan"), "spearman_rho": float("nan"), "spearman_p": float("nan")}
  if xs.size >= 3 and not (bool(rsa.is_constant(xs)) or bool(rsa.is_constant(ys))):
    r = scipy.stats.pearsonr(xs, ys)
    s = scipy.stats.spearmanr(xs, ys)
    out.update(pearson_r=float(r.statistic), pearson_p=float(r.pvalue),
               spearman_rho=float(s.statistic), spearman_p=float(s.pvalue))
  return out


def match_entropy_correlation(match: Any, max_entropy_values: Any) -> dict:
  """Correlation of the Match score with maxEntropy over images where both are defined."""
  return correlate(match, max_entropy_values)


# ----------------------------------------------------------------------------------------------
# AIS distributions (Figure 3)


def _check_ais(per_image_ais: Any) -> np.ndarray:
  a = np.asarray(per_image_ais, np.float64)
  if a.ndim != 2:
    raise ValueError(f"per_image_ais must be [n, K]; got shape {a.shape}")
  return a


def map_mean_ais(per_image_ais: Any) -> dict:
  """Per-map mean of per-image AIS over the images where it is defined.

  Returns:
    ``{'mean': [K] float64 (NaN if a map is undefined in every image), 'n_defined': [K] int,
    'n_undefined': total NaN count}``.
  """
  a = _check_ais(per_image_ais)
  defined = np.isfinite(a)
  n_defined = defined.sum(axis=0)
  total = np.where(defined, a, 0.0).sum(axis=0)
  mean = np.where(n_defined > 0, total / np.maximum(n_defined, 1), np.nan)
  return {"mean": mean, "n_defined": n_defined, "n_undefined": int((~defined).sum())}


def log10_mean_ais(per_image_ais: Any, *, bins: int | Sequence[float] = 30) -> dict:
  """Histogram data of ``log10`` per-map mean AIS (the paper's Figure 3, left).

  Only positive means have a logarithm: maps whose mean AIS is ``<= 0`` are counted in
  ``n_nonpositive`` and maps undefined everywhere in ``n_undefined_maps``.

  Returns:
    dict with ``log10_mean [m]`` (the positive maps, in map order), ``map_index [m]``,
    ``counts``, ``edges`` (``numpy.histogram`` with ``bins``), ``n_maps``, ``n_positive``,
    ``n_nonpositive``, ``n_undefined_maps``, ``n_undefined_values``.
  """
  stats = map_mean_ais(per_image_ais)
  mean = stats["mean"]
  positive = np.isfinite(mean) & (mean > 0)
  logs = np.log10(mean[positive])
  if logs.size:
    counts, edges = np.histogram(logs, bins=bins)
  else:
    counts, edges = np.zeros(0, np.int64), np.zeros(0)
  return {"log10_mean": logs, "map_index": np.flatnonzero(positive), "counts": counts,
          "edges": edges, "n_maps": int(mean.size), "n_positive": int(positive.sum()),
          "n_nonpositive": int((np.isfinite(mean) & (mean <= 0)).sum()),
          "n_undefined_maps": int((~np.isfinite(mean)).sum()),
          "n_undefined_values": stats["n_undefined"]}


def mean_absolute_deviation(per_image_ais: Any, *, axis: str = "map") -> np.ndarray:
  """Mean absolute deviation ``mean |x - mean(x)|`` of per-image AIS, ignoring NaN.

  Args:
    per_image_ais: ``[n, K]``.
    axis: 'map' - one value per map, over images (``[K]``); 'image' - one value per image, over
      maps (``[n]``). NaN where a map/image has no defined value.
  """
  a = _check_ais(per_image_ais)
  if axis not in ("map", "image"):
    raise ValueError(f"axis must be 'map' or 'image'; got {axis!r}")
  ax = 0 if axis == "map" else 1
  defined = np.isfinite(a)
  count = defined.sum(axis=ax, keepdims=True)
  safe = np.where(defined, a, 0.0)
  mean = safe.sum(axis=ax, keepdims=True) / np.maximum(count, 1)
  mad = np.where(defined, np.abs(a - mean), 0.0).sum(axis=ax, keepdims=True) / np.maximum(count, 1)
  return np.where(count > 0, mad, np.nan).squeeze(ax)


def ks_test(sample_a: Any, sample_b: Any) -> dict:
  """Two-sided two-sample Kolmogorov-Smirnov test (scipy.stats.ks_2samp) on the finite values.

  Returns:
    ``{'statistic', 'pvalue', 'n_a', 'n_b', 'n_excluded_a', 'n_excluded_b'}``.
  """
  a = np.asarray(sample_a, np.float64).ravel()
  b = np.asarray(sample_b, np.float64).ravel()
  fa, fb = a[np.isfinite(a)], b[np.isfinite(b)]
  if fa.size == 0 or fb.size == 0:
    raise ValueError(f"KS test needs finite values in both samples; got {fa.size} and {fb.size}")
  res = scipy.stats.ks_2samp(fa, fb, alternative="two-sided")
  return {"statistic": float(res.statistic), "pvalue": float(res.pvalue), "n_a": int(fa.size),
          "n_b": int(fb.size), "n_excluded_a": int(a.size - fa.size),
          "n_excluded_b": int(b.size - fb.size)}


def compare_models(per_image_ais_a: Any, per_image_ais_b: Any) -> dict:
  """Figure 3 statistics of two models: KS tests on mean AIS per map, MAD per map and per image.

  The models may have different map counts K (e.g. EfficientNet-Lite0 vs Lite2); the samples are
  compared as distributions.
  """
  out = {}
  mean_a = map_mean_ais(per_image_ais_a)["mean"]
  mean_b = map_mean_ais(per_image_ais_b)["mean"]
  out["mean_ais_per_map"] = ks_test(mean_a, mean_b)
  for axis in ("map", "image"):
    out[f"mad_per_{axis}"] = ks_test(mean_absolute_deviation(per_image_ais_a, axis=axis),
                                     mean_absolute_deviation(per_image_ais_b, axis=axis))
  return out


def cohort_correlations(cohort_ais: Any, names: Sequence[str] | None = None, *,
                        kind: str = "pearson") -> dict:
  """Correlations between cohort AIS vectors of categories (or datasets).

  Args:
    cohort_ais: ``[C, K]``: row c is the cohort AIS of the K maps computed on category c alone.
    names: C labels (default ``'0'..'C-1'``).
    kind: 'pearson' or 'spearman' (scipy; pairs of maps with a NaN in either row are excluded).

  Returns:
    ``{'names', 'r' [C, C], 'p' [C, C], 'n' [C, C] maps used, 'kind'}`` (diagonal r = 1, p = 0
    when defined; NaN where a row is constant or fewer than 3 maps are defined in both).
  """
  x = np.asarray(cohort_ais, np.float64)
  if x.ndim != 2:
    raise ValueError(f"cohort_ais must be [C, K]; got shape {x.shape}")
  if kind not in ("pearson", "spearman"):
    raise ValueError(f"kind must be 'pearson' or 'spearman'; got {kind!r}")
  c = x.shape[0]
  names = [str(i) for i in range(c)] if names is None else [str(s) for s in names]
  if len(names) != c:
    raise ValueError(f"names has {len(names)} entries for {c} rows of cohort_ais")
  r = np.full((c, c), np.nan)
  p = np.full((c, c), np.nan)
  n = np.zeros((c, c), np.int64)
  for i in range(c):
    for j in range(c):
      res = correlate(x[i], x[j])
      key = "pearson" if kind == "pearson" else "spearman"
      r[i, j] = res[f"{key}_r" if kind == "pearson" else "spearman_rho"]
      p[i, j] = res[f"{key}_p"]
      n[i, j] = res["n"]
  return {"names": names, "r": r, "p": p, "n": n, "kind": kind}
