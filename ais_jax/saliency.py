"""Aim 3: comparing AIS heatmaps with saliency maps (precision-recall, relative risk).

Both analyses threshold maps by percentiles (DESIGN.md section 1): the top-p% of a map ``x`` is
``x > numpy.percentile(x, 100 - p)`` with linear interpolation. With ties the selected set can be
smaller than p% (or empty, e.g. for a constant map); that is deterministic and such cases are
reported, never patched.

* :func:`precision_recall` - the AIS heatmap above its 60/70/80/90th percentile is the target, the
  saliency map above its percentiles 1, 3, ..., 99 is the predictor (the paper's Figure 4).
* :func:`relative_risk` - ``RR = P(CR | Sal) / P(CR | not Sal)`` at the top 5/10/15% of pixels,
  CR the top AIS pixels and Sal the top saliency pixels (the paper's Table 1). Undefined RR is NaN
  with a reason code, counted; means are over the defined values with the undefined count beside.
* :func:`spectral_residual` - a built-in classical saliency baseline (Hou & Zhang 2007).
* :func:`load_saliency` - saliency maps from a ``.npy`` or a folder of images/arrays, fitted to
  each image.

All maps are ``[H, W]`` at image resolution; a cohort is a sequence of such maps (images may differ
in size) or an ``[n, H, W]`` array.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ais_jax import heatmaps as heatmaps_lib

TARGET_PERCENTILES = (60, 70, 80, 90)
SALIENCY_PERCENTILES = tuple(range(1, 100, 2))
RR_TOP = (5, 10, 15)
FITS = ("resize", "crop")
MAP_SUFFIXES = (".npy", ".png", ".jpg", ".jpeg")

# Reason codes of relative_risk (0 = defined).
RR_OK = 0
RR_EMPTY_SAL = 1        # no pixel above the saliency threshold (e.g. a constant saliency map)
RR_EMPTY_NOT_SAL = 2    # every pixel salient: never happens (the minimum is above no percentile)
RR_ZERO_BASE_RISK = 3   # P(CR | not Sal) = 0: no target pixel outside the salient set
RR_REASONS = {RR_OK: "defined", RR_EMPTY_SAL: "empty_salient_set",
              RR_EMPTY_NOT_SAL: "empty_non_salient_set", RR_ZERO_BASE_RISK: "zero_risk_outside_salient"}


def _as_map_list(maps: Any, what: str) -> list[np.ndarray]:
  if hasattr(maps, "shape"):   # numpy, jax, ... arrays
    arr = np.asarray(maps)
    if arr.ndim == 2:
      return [arr.astype(np.float64)]
    if arr.ndim == 3:
      return [m.astype(np.float64) for m in arr]
    raise ValueError(f"{what} must be [H, W], [n, H, W] or a list of [H, W] maps; got shape {arr.shape}")
  out = [np.asarray(m, np.float64) for m in maps]
  for i, m in enumerate(out):
    if m.ndim != 2:
      raise ValueError(f"{what}[{i}] must be a 2-D map [H, W]; got shape {m.shape}")
  return out


def _paired(ais_maps: Any, saliency_maps: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
  a = _as_map_list(ais_maps, "ais_maps")
  s = _as_map_list(saliency_maps, "saliency_maps")
  if len(a) != len(s):
    raise ValueError(f"{len(a)} AIS maps but {len(s)} saliency maps: give one saliency map per image")
  for i, (x, y) in enumerate(zip(a, s)):
    if x.shape != y.shape:
      raise ValueError(f"image {i}: AIS map {x.shape} and saliency map {y.shape} differ; upsample the "
                       "heatmap (ais_jax.heatmaps.upsample) and fit the saliency map to the image first")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
      raise ValueError(f"image {i}: the AIS or saliency map holds NaN/inf; percentiles are undefined")
  return a, s


def _above(x: np.ndarray, percentiles: Sequence[float]) -> np.ndarray:
  """[P, L] float masks ``x > percentile(x, p)`` for each p (x flattened to L pixels)."""
  flat = x.ravel()
  thresholds = np.percentile(flat, np.asarray(percentiles, np.float64))
  return (flat[None, :] > thresholds[:, None]).astype(np.float64)


# ----------------------------------------------------------------------------------------------
# Precision-recall


@dataclasses.dataclass(frozen=True)
class PrecisionRecall:
  """Per-image precision and recall.

  Attributes:
    precision: ``[n, T, Q]``: ``|target & predicted| / |predicted|``; NaN when nothing is
      predicted (the saliency map has no pixel above that percentile).
    recall: ``[n, T, Q]``: ``|target & predicted| / |target|``; NaN when the target is empty.
    target_percentiles: ``[T]``; saliency_percentiles: ``[Q]``.
    n_undefined_precision, n_undefined_recall: NaN counts.
  """
  precision: np.ndarray
  recall: np.ndarray
  target_percentiles: np.ndarray
  saliency_percentiles: np.ndarray
  n_undefined_precision: int
  n_undefined_recall: int

  def mean(self, index: Sequence[int] | np.ndarray | None = None) -> dict:
    """Means over images (all, or ``index``) of the defined values, with the defined counts.

    Returns ``{'precision' [T, Q], 'recall' [T, Q], 'n_precision' [T, Q], 'n_recall' [T, Q]}``.
    """
    sel = slice(None) if index is None else np.asarray(index)
    out = {}
    for name in ("precision", "recall"):
      v = getattr(self, name)[sel]
      ok = np.isfinite(v)
      count = ok.sum(axis=0)
      out[name] = np.where(count > 0, np.where(ok, v, 0).sum(axis=0) / np.maximum(count, 1), np.nan)
      out[f"n_{name}"] = count
    return out


def precision_recall(ais_maps: Any, saliency_maps: Any, *,
                     target_percentiles: Sequence[float] = TARGET_PERCENTILES,
                     saliency_percentiles: Sequence[float] = SALIENCY_PERCENTILES) -> PrecisionRecall:
  """Precision and recall of saliency (predictor) against the AIS heatmap (target), per image.

  Args:
    ais_maps: ``[n, H, W]`` or a list of ``[H, W]`` AIS heatmaps at image resolution.
    saliency_maps: the saliency maps, same shapes.
    target_percentiles: target = ``ais > percentile(ais, p)``.
    saliency_percentiles: predictor = ``sal > percentile(sal, q)``.
  """
  a_list, s_list = _paired(ais_maps, saliency_maps)
  t = np.asarray(target_percentiles, np.float64)
  q = np.asarray(saliency_percentiles, np.float64)
  n = len(a_list)
  precision = np.full((n, t.size, q.size), np.nan)
  recall = np.full((n, t.size, q.size), np.nan)
  t_order, q_order = np.argsort(t, kind="stable"), np.argsort(q, kind="stable")
  for i, (a, s) in enumerate(zip(a_list, s_list)):
    # Thresholds rise with the percentile, so "x > threshold_j" holds exactly for the j below the
    # number of thresholds < x: a 2-D histogram of these counts and suffix sums give every
    # |target & predicted| at once (exact integers, O(pixels) per image).
    ta = np.searchsorted(np.percentile(a, t[t_order]), a.ravel(), side="left")
    sq = np.searchsorted(np.percentile(s, q[q_order]), s.ravel(), side="left")
    joint = np.bincount(ta * (q.size + 1) + sq, minlength=(t.size + 1) * (q.size + 1))
    joint = joint.reshape(t.size + 1, q.size + 1)
    above = joint[::-1, ::-1].cumsum(0).cumsum(1)[::-1, ::-1]   # [t', q'] = #(ta >= t', sq >= q')
    hits = above[1:, 1:].astype(np.float64)                     # pixel above threshold j <=> count > j
    n_target = above[1:, 0].astype(np.float64)[:, None]
    n_pred = above[0, 1:].astype(np.float64)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
      p_i = np.where(n_pred > 0, hits / n_pred, np.nan)
      r_i = np.where(n_target > 0, hits / n_target, np.nan)
    precision[i][np.ix_(t_order, q_order)] = p_i
    recall[i][np.ix_(t_order, q_order)] = r_i
  return PrecisionRecall(precision, recall, t, q, int(np.isnan(precision).sum()),
                         int(np.isnan(recall).sum()))


# ----------------------------------------------------------------------------------------------
# Relative risk


@dataclasses.dataclass(frozen=True)
class RelativeRisk:
  """Per-image relative risk.

  Attributes:
    rr: ``[n, L]`` float64, NaN where undefined (never inf).
    reason: ``[n, L]`` int codes (``RR_REASONS``; 0 = defined).
    top: ``[L]`` top-percent levels.
    p_cr_sal, p_cr_not_sal: ``[n, L]`` the two conditional probabilities (NaN if the
      conditioning set is empty).
  """
  rr: np.ndarray
  reason: np.ndarray
  top: np.ndarray
  p_cr_sal: np.ndarray
  p_cr_not_sal: np.ndarray

  @property
  def n_undefined(self) -> np.ndarray:
    """``[L]`` number of images whose RR is undefined at each level."""
    return (self.reason != RR_OK).sum(axis=0)

  def undefined_counts(self) -> dict:
    """``{reason name: [L] counts}`` for every reason that occurs."""
    return {RR_REASONS[c]: (self.reason == c).sum(axis=0).tolist()
            for c in sorted(set(self.reason.ravel().tolist()) - {RR_OK})}


def relative_risk(ais_maps: Any, saliency_maps: Any, *, top: Sequence[float] = RR_TOP) -> RelativeRisk:
  """``RR = P(CR | Sal) / P(CR | not Sal)`` per image and level.

  CR = ``ais > percentile(ais, 100 - p)`` (the top p% AIS pixels), Sal = ``sal >
  percentile(sal, 100 - p)``. Undefined (NaN, with a reason code): empty Sal or
  ``P(CR | not Sal) = 0`` (not-Sal is never empty: it holds at least the minimum pixel).
  ``P(CR | Sal) = 0`` with a positive base risk gives RR = 0 (defined).
  """
  a_list, s_list = _paired(ais_maps, saliency_maps)
  levels = np.asarray(top, np.float64)
  if np.any((levels <= 0) | (levels >= 100)):
    raise ValueError(f"top levels must be percentages in (0, 100); got {list(top)}")
  n = len(a_list)
  rr = np.full((n, levels.size), np.nan)
  reason = np.zeros((n, levels.size), np.int64)
  p_sal = np.full((n, levels.size), np.nan)
  p_not = np.full((n, levels.size), np.nan)
  for i, (a, s) in enumerate(zip(a_list, s_list)):
    cr = _above(a, 100 - levels) > 0            # [L, P]
    sal = _above(s, 100 - levels) > 0
    n_sal = sal.sum(axis=1)
    n_not = (~sal).sum(axis=1)
    cr_sal = (cr & sal).sum(axis=1)
    cr_not = (cr & ~sal).sum(axis=1)
    for j in range(levels.size):
      # n_not >= 1: the minimum pixel is never above a percentile of its map.
      p_not[i, j] = cr_not[j] / n_not[j]
      if n_sal[j] > 0:
        p_sal[i, j] = cr_sal[j] / n_sal[j]
      if n_sal[j] == 0:
        reason[i, j] = RR_EMPTY_SAL
      elif cr_not[j] == 0:
        reason[i, j] = RR_ZERO_BASE_RISK
      else:
        rr[i, j] = p_sal[i, j] / p_not[i, j]
  return RelativeRisk(rr, reason, levels, p_sal, p_not)


def rr_table(result: RelativeRisk, datasets: Sequence[str] | None = None) -> list[dict]:
  """The paper's Table 1: mean and sd of RR per dataset and over all images, per level.

  Means and sample standard deviations (ddof=1; NaN with fewer than 2 values) are over the
  defined RR values; ``n_undefined`` says how many images were left out and why.

  Args:
    result: from :func:`relative_risk`.
    datasets: one label per image (None: a single dataset 'all').

  Returns:
    rows ``{'dataset', 'top', 'mean', 'sd', 'n', 'n_undefined', 'undefined_reasons'}``, datasets
    in first-appearance order, then 'all images' when there is more than one dataset.
  """
  n = result.rr.shape[0]
  labels = ["all"] * n if datasets is None else [str(d) for d in datasets]
  if len(labels) != n:
    raise ValueError(f"datasets has {len(labels)} labels for {n} images")
  groups = list(dict.fromkeys(labels))
  selections = [(g, np.array([lab == g for lab in labels])) for g in groups]
  if len(groups) > 1:
    selections.append(("all images", np.ones(n, bool)))
  rows = []
  for name, sel in selections:
    for j, level in enumerate(result.top):
      values = result.rr[sel, j]
      codes = result.reason[sel, j]
      defined = values[np.isfinite(values)]
      reasons = {RR_REASONS[c]: int((codes == c).sum()) for c in sorted(set(codes.tolist()) - {RR_OK})}
      rows.append({
          "dataset": name, "top": float(level),
          "mean": float(defined.mean()) if defined.size else float("nan"),
          "sd": float(defined.std(ddof=1)) if defined.size > 1 else float("nan"),
          "n": int(defined.size), "n_undefined": int(values.size - defined.size),
          "undefined_reasons": "; ".join(f"{k}={v}" for k, v in reasons.items()),
      })
  return rows


def rr_table_markdown(rows: list[dict]) -> str:
  """Markdown rendering of :func:`rr_table` rows: one line per dataset, ``mean (sd)`` per level."""
  levels = list(dict.fromkeys(r["top"] for r in rows))
  datasets = list(dict.fromkeys(r["dataset"] for r in rows))
  by = {(r["dataset"], r["top"]): r for r in rows}
  head = "| dataset | " + " | ".join(f"RR top {lv:g}%" for lv in levels) + " | images (undefined) |"
  lines = [head, "|" + " --- |" * (len(levels) + 2)]
  for d in datasets:
    cells = []
    for lv in levels:
      r = by[(d, lv)]
      cell = "n/a" if r["n"] == 0 else f"{r['mean']:.3f}" + ("" if r["n"] < 2 else f" ({r['sd']:.3f})")
      cells.append(cell + (f" [{r['n_undefined']} undef.]" if r["n_undefined"] else ""))
    total = by[(d, levels[0])]["n"] + by[(d, levels[0])]["n_undefined"]
    undefined = ", ".join(str(by[(d, lv)]["n_undefined"]) for lv in levels)
    lines.append(f"| {d} | " + " | ".join(cells) + f" | {total} ({undefined}) |")
  lines.append("")
  lines.append("Mean (sample sd) over images whose RR is defined; undefined RR (empty salient set or "
               "zero risk outside it) is counted per level in the last column, not averaged.")
  return "\n".join(lines) + "\n"


def write_rr_table(rows: list[dict], stem: str) -> tuple[str, str]:
  """Writes ``stem.csv`` and ``stem.md``; returns both paths."""
  import csv
  os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
  keys = ["dataset", "top", "mean", "sd", "n", "n_undefined", "undefined_reasons"]
  with open(stem + ".csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=keys)
    w.writeheader()
    for r in rows:
      w.writerow({k: r[k] for k in keys})
  with open(stem + ".md", "w") as f:
    f.write(rr_table_markdown(rows))
  return stem + ".csv", stem + ".md"


# ----------------------------------------------------------------------------------------------
# Spectral residual baseline


def _resize_float(x: np.ndarray, height: int, width: int) -> np.ndarray:
  """PIL BILINEAR resize of a float map (half-pixel centres, antialiased when shrinking)."""
  if x.shape == (height, width):
    return x.astype(np.float64)
  img = Image.fromarray(np.ascontiguousarray(x, np.float32))  # mode "F"
  return np.asarray(img.resize((width, height), Image.BILINEAR), np.float64)


def _gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
  radius = int(truncate * sigma + 0.5)
  t = np.arange(-radius, radius + 1, dtype=np.float64)
  k = np.exp(-0.5 * (t / sigma) ** 2)
  return k / k.sum()


def _blur_axis(x: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
  radius = kernel.size // 2
  pad = [(0, 0)] * x.ndim
  pad[axis] = (radius, radius)
  xp = np.pad(x, pad, mode="symmetric")   # mirror with the edge pixel repeated
  length = x.shape[axis]
  out = np.zeros_like(x)
  for offset, weight in enumerate(kernel):
    out += weight * np.take(xp, np.arange(offset, offset + length), axis=axis)
  return out


def spectral_residual(image: Any, *, width: int = 64, sigma: float = 2.0,
                      eps: float = 1e-12) -> np.ndarray:
  """Spectral-residual saliency (Hou & Zhang, CVPR 2007): a classical baseline, not a gaze predictor.

  It marks regions whose log amplitude spectrum departs from a locally smooth one - mostly
  isolated contrasts and edges. It knows nothing of where people look; it exists so that the Aim 3
  analyses run without an external saliency model. Steps (deterministic, numpy float64):

  1. grayscale (ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B``, on 0..1 values);
  2. resize to ``width`` pixels wide (height keeps the aspect ratio, at least 1), PIL BILINEAR;
  3. ``L = log(|FFT| + eps)``, phase ``P``; residual ``R = L - mean3x3(L)`` (3x3 box filter,
     edge values replicated);
  4. ``S = |IFFT(exp(R + iP))|^2``, blurred with a Gaussian of ``sigma`` pixels at the working
     resolution (truncated at 4 sigma, mirrored edges). The paper's text says sigma = 8; widely
     used implementations smooth over a few pixels only (a 5x5 or radius-3 kernel), and sigma = 8
     on a 64-pixel map leaves it nearly flat, so the default is 2 px (about 3% of the width);
  5. resized back to ``[H, W]`` (PIL BILINEAR) and min-max scaled to [0, 1] (a constant result
     gives zeros). Only the order of values matters to the percentile analyses.

  Args:
    image: uint8 ``[H, W, 3]`` RGB (or ``[H, W]`` gray).

  Returns:
    float64 ``[H, W]`` in [0, 1].
  """
  img = np.asarray(image)
  if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] != 3):
    raise ValueError(f"image must be uint8 [H, W, 3] (or [H, W]); got {img.dtype} {img.shape}")
  rgb = img.astype(np.float64) / 255.0
  gray = rgb if rgb.ndim == 2 else rgb @ np.array([0.299, 0.587, 0.114])
  height, width_in = gray.shape
  small_h = max(1, int(round(height * width / width_in)))
  small = _resize_float(gray, small_h, width)
  spectrum = np.fft.fft2(small)
  log_amp = np.log(np.abs(spectrum) + eps)
  phase = np.angle(spectrum)
  box = np.ones(3) / 3.0
  padded = np.pad(log_amp, 1, mode="edge")
  local = sum(box[i] * box[j] * padded[i:i + small_h, j:j + width] for i in range(3) for j in range(3))
  residual = log_amp - local
  sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * phase))) ** 2
  if sigma > 0:
    kernel = _gaussian_kernel(sigma)
    sal = _blur_axis(_blur_axis(sal, kernel, 0), kernel, 1)
  return heatmaps_lib.normalise(_resize_float(sal, height, width_in))


# ----------------------------------------------------------------------------------------------
# Loading external saliency maps


def fit_to_image(saliency_map: Any, size: Sequence[int], *, fit: str = "resize") -> np.ndarray:
  """Fits one saliency map ``[h, w]`` to an image of ``size = (H, W)``.

  fit='resize' (default, DESIGN.md): bilinear resize straight to ``(H, W)`` with half-pixel
    centres (:func:`ais_jax.heatmaps.upsample`); the map's aspect ratio is stretched to the
    image's if they differ.
  fit='crop' (as the published code): resize keeping the prediction's aspect ratio until it
    covers the image, then take the centred ``(H, W)`` window - i.e. crop the prediction to the
    image's aspect ratio. Use it for models that pad/resize every input to a fixed canvas.
  Identical when the aspect ratios agree.
  """
  if fit not in FITS:
    raise ValueError(f"fit must be one of {FITS}; got {fit!r}")
  x = np.asarray(saliency_map, np.float32)
  if x.ndim == 3 and x.shape[-1] in (3, 4):   # colour PNG of a gray map: use its luminance
    x = x[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
  if x.ndim != 2:
    raise ValueError(f"saliency map must be [h, w]; got shape {x.shape}")
  height, width = int(size[0]), int(size[1])
  h, w = x.shape
  if fit == "resize":
    return np.asarray(heatmaps_lib.upsample(x[None], (height, width))[0], np.float64)
  scale = max(height / h, width / w)
  cover_h, cover_w = max(height, int(round(h * scale))), max(width, int(round(w * scale)))
  covered = np.asarray(heatmaps_lib.upsample(x[None], (cover_h, cover_w))[0], np.float64)
  top = (cover_h - height) // 2
  left = (cover_w - width) // 2
  return covered[top:top + height, left:left + width]


def _read_map(path: str) -> np.ndarray:
  if path.lower().endswith(".npy"):
    return np.load(path)
  with Image.open(path) as im:
    if im.mode not in ("L", "F", "I", "I;16", "RGB", "RGBA"):
      im = im.convert("L")
    return np.asarray(im, np.float32)


def load_saliency(path: str, image_names: Sequence[str], image_sizes: Sequence[Sequence[int]], *,
                  fit: str = "resize") -> list[np.ndarray]:
  """Reads saliency maps and fits each to its image (:func:`fit_to_image`).

  Args:
    path: a ``.npy`` holding ``[n, h, w]`` (one map per image, in ``image_names`` order), or a
      folder of ``.png/.jpg/.jpeg/.npy`` maps matched to the images by file stem
      (``img001.png`` for ``img001.jpg`` or ``img001``).
    image_names: the n image names (file names or stems).
    image_sizes: n ``(H, W)`` image sizes.
    fit: 'resize' (default) or 'crop' (the published code's behaviour), see :func:`fit_to_image`.

  Returns:
    n float64 maps ``[H_i, W_i]``.
  """
  names = list(image_names)
  sizes = [tuple(int(v) for v in s[:2]) for s in image_sizes]
  if len(names) != len(sizes):
    raise ValueError(f"{len(names)} image names but {len(sizes)} image sizes")
  if os.path.isdir(path):
    by_stem: dict[str, str] = {}
    for entry in sorted(os.listdir(path)):
      stem, ext = os.path.splitext(entry)
      if ext.lower() in MAP_SUFFIXES:
        if stem in by_stem:
          raise ValueError(f"saliency folder {path} holds two maps for '{stem}': "
                           f"{os.path.basename(by_stem[stem])} and {entry}; keep one")
        by_stem[stem] = os.path.join(path, entry)
    stems = [os.path.splitext(os.path.basename(n))[0] for n in names]
    missing = [s for s in stems if s not in by_stem]
    if missing:
      raise FileNotFoundError(f"saliency folder {path} has no map for {len(missing)} image(s), e.g. "
                              f"{missing[:5]}; maps must be named like the images ({MAP_SUFFIXES})")
    raw = [_read_map(by_stem[s]) for s in stems]
  elif path.lower().endswith(".npy") and os.path.isfile(path):
    arr = np.load(path)
    if arr.ndim != 3 or arr.shape[0] != len(names):
      raise ValueError(f"{path} must hold [n, H, W] with n = {len(names)} images; got shape {arr.shape}")
    raw = list(arr)
  else:
    raise FileNotFoundError(f"saliency path {path!r} is neither a .npy file nor a folder of maps")
  return [fit_to_image(m, size, fit=fit) for m, size in zip(raw, sizes)]
