"""Aim 3: precision-recall and relative risk against direct numpy loops; spectral residual against
an independently written numpy/scipy version; map loading; the experiment end to end."""

import csv
import os

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage
import torch
from PIL import Image

from ais_jax import saliency as sal


def _nullcontext():
  import contextlib
  return contextlib.nullcontext()


def _maps(seed, n=4, shape=(18, 23), levels=None):
  rng = np.random.default_rng(seed)
  x = rng.random((n,) + shape)
  return np.floor(x * levels) if levels else x


def _pr_loop(a, s, tps, sps):
  """Direct reference: one image, python loops over thresholds and pixels."""
  prec = np.full((len(tps), len(sps)), np.nan)
  rec = np.full((len(tps), len(sps)), np.nan)
  af, sf = a.ravel().tolist(), s.ravel().tolist()
  for ti, tp in enumerate(tps):
    ta = np.percentile(a, tp)
    target = [v > ta for v in af]
    for qi, sp in enumerate(sps):
      ts = np.percentile(s, sp)
      pred = [v > ts for v in sf]
      both = sum(1 for t, p in zip(target, pred) if t and p)
      if sum(pred):
        prec[ti, qi] = both / sum(pred)
      if sum(target):
        rec[ti, qi] = both / sum(target)
  return prec, rec


@pytest.mark.parametrize("levels", [None, 3, 6])   # continuous and quantised (tied) maps
def test_precision_recall_against_loop(levels):
  a = _maps(0, levels=levels)
  s = _maps(1, levels=levels)
  s[3] = 0.7                      # constant saliency: nothing predicted -> precision undefined
  tps, sps = (60, 70, 80, 90), tuple(range(1, 100, 7))
  res = sal.precision_recall(a, s, target_percentiles=tps, saliency_percentiles=sps)
  for i in range(a.shape[0]):
    p, r = _pr_loop(a[i], s[i], tps, sps)
    np.testing.assert_array_equal(res.precision[i], p)
    np.testing.assert_array_equal(res.recall[i], r)
  assert np.isnan(res.precision[3]).all()
  assert res.n_undefined_precision == int(np.isnan(res.precision).sum()) >= len(tps) * len(sps)
  m = res.mean()
  with np.errstate(all="ignore"), pytest.warns(RuntimeWarning, match="empty") if levels else _nullcontext():
    ref = np.nanmean(res.precision, axis=0)
  np.testing.assert_allclose(m["precision"], ref, rtol=1e-12)
  np.testing.assert_array_equal(m["n_precision"], np.isfinite(res.precision).sum(0))


def test_precision_recall_unsorted_percentiles():
  a, s = _maps(14, n=2, levels=4), _maps(15, n=2)
  tps, sps = (90, 60, 85.5, 70), (51, 3, 99, 1, 50)
  res = sal.precision_recall(a, s, target_percentiles=tps, saliency_percentiles=sps)
  for i in range(2):
    p, r = _pr_loop(a[i], s[i], tps, sps)
    np.testing.assert_array_equal(res.precision[i], p)
    np.testing.assert_array_equal(res.recall[i], r)


def test_precision_recall_ragged_and_errors():
  a = [_maps(2, 1, (10, 12))[0], _maps(3, 1, (7, 9))[0]]
  s = [_maps(4, 1, (10, 12))[0], _maps(5, 1, (7, 9))[0]]
  res = sal.precision_recall(a, s)
  assert res.precision.shape == (2, 4, 50)
  p, r = _pr_loop(a[1], s[1], sal.TARGET_PERCENTILES, sal.SALIENCY_PERCENTILES)
  np.testing.assert_array_equal(res.recall[1], r)
  with pytest.raises(ValueError, match="differ"):
    sal.precision_recall(a, s[::-1])
  bad = [x.copy() for x in s]
  bad[0][0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    sal.precision_recall(a, bad)


def _rr_loop(a, s, top):
  cr = a > np.percentile(a, 100 - top)
  sl = s > np.percentile(s, 100 - top)
  n_s, n_ns = int(sl.sum()), int((~sl).sum())
  if n_s == 0:
    return np.nan, sal.RR_EMPTY_SAL
  if n_ns == 0:
    return np.nan, sal.RR_EMPTY_NOT_SAL
  p1 = (cr & sl).sum() / n_s
  p0 = (cr & ~sl).sum() / n_ns
  if p0 == 0:
    return np.nan, sal.RR_ZERO_BASE_RISK
  return p1 / p0, sal.RR_OK


def test_relative_risk_against_loop_with_undefined_cases():
  a = _maps(6, n=7, levels=5)
  s = _maps(7, n=7)
  s[1] = 2.0                                     # constant saliency -> empty Sal
  a[2] = 2 * s[2] + 1                            # CR = Sal -> P(CR | not Sal) = 0
  a[3] = s[3].max() - s[3]                       # anti-aligned: P(CR|Sal) = 0, RR = 0 (defined)
  a[4] = np.round(s[4] * 3)                      # heavy ties
  res = sal.relative_risk(a, s, top=(5, 10, 15))
  for i in range(7):
    for j, top in enumerate((5, 10, 15)):
      ref, code = _rr_loop(a[i], s[i], top)
      assert res.reason[i, j] == code, (i, top)
      if code == sal.RR_OK:
        assert res.rr[i, j] == pytest.approx(ref, rel=1e-12)
      else:
        assert np.isnan(res.rr[i, j])
  assert not np.isinf(res.rr).any()
  assert (res.reason[1] == sal.RR_EMPTY_SAL).all()
  assert (res.reason[2] == sal.RR_ZERO_BASE_RISK).all()
  np.testing.assert_array_equal(res.rr[3], 0.0)
  assert res.undefined_counts()["empty_salient_set"][0] >= 1
  np.testing.assert_array_equal(res.n_undefined, (res.reason != 0).sum(0))


def test_rr_table_means_sd_and_files(tmp_path):
  a, s = _maps(8, n=9), _maps(9, n=9)
  s[4] = 1.0                                     # undefined in dataset 'b'
  res = sal.relative_risk(a, s)
  labels = ["a"] * 4 + ["b"] * 5
  rows = sal.rr_table(res, labels)
  assert [r["dataset"] for r in rows] == ["a"] * 3 + ["b"] * 3 + ["all images"] * 3
  for r in rows:
    j = list(res.top).index(r["top"])
    sel = np.arange(9) if r["dataset"] == "all images" else np.array([l == r["dataset"] for l in labels])
    v = res.rr[sel, j]
    v = v[~np.isnan(v)]
    assert r["mean"] == pytest.approx(v.mean(), rel=1e-12)
    assert r["sd"] == pytest.approx(np.std(v, ddof=1), rel=1e-12)
    assert r["n"] == v.size
  b_row = rows[3]
  assert b_row["n_undefined"] == 1 and "empty_salient_set=1" in b_row["undefined_reasons"]
  csv_path, md_path = sal.write_rr_table(rows, str(tmp_path / "rr"))
  assert len(list(csv.DictReader(open(csv_path)))) == 9
  md = open(md_path).read()
  assert "| all images |" in md and "undef." in md


def _spectral_residual_reference(image, width=64, sigma=2.0):
  """Written differently: channel-wise gray, scipy.fft, amplitude scaling of the spectrum,
  scipy.ndimage filters."""
  r, g, b = (image[..., c].astype(np.float64) / 255 for c in range(3))
  gray = 0.299 * r + 0.587 * g + 0.114 * b
  h, w = gray.shape
  sh = max(1, int(round(h * width / w)))
  small = np.asarray(Image.fromarray(gray.astype(np.float32)).resize((width, sh), Image.BILINEAR),
                     np.float64)
  f = scipy.fft.fft2(small)
  amp = np.abs(f)
  log_amp = np.log(amp + 1e-12)
  resid = log_amp - scipy.ndimage.uniform_filter(log_amp, size=3, mode="nearest")
  unit = np.where(amp > 0, f / np.where(amp > 0, amp, 1), 1.0)   # e^{i phase}
  smap = np.abs(scipy.fft.ifft2(np.exp(resid) * unit)) ** 2
  smap = scipy.ndimage.gaussian_filter(smap, sigma, mode="reflect", truncate=4.0)
  big = np.asarray(Image.fromarray(smap.astype(np.float32)).resize((w, h), Image.BILINEAR), np.float64)
  return (big - big.min()) / (big.max() - big.min())


def test_spectral_residual_against_reference(k92):
  for i in (0, 50):
    got = sal.spectral_residual(k92.images[i])
    ref = _spectral_residual_reference(k92.images[i])
    assert got.shape == (175, 175)
    np.testing.assert_allclose(got, ref, atol=1e-5)     # float32 PIL resizes in both
  rng = np.random.default_rng(10)
  img = rng.integers(0, 256, (40, 90, 3), dtype=np.uint8)
  np.testing.assert_allclose(sal.spectral_residual(img), _spectral_residual_reference(img), atol=1e-5)
  np.testing.assert_array_equal(sal.spectral_residual(img), sal.spectral_residual(img))  # deterministic
  flat = np.full((20, 20, 3), 128, np.uint8)
  assert np.all(np.isfinite(sal.spectral_residual(flat)))


def test_fit_to_image_resize_and_crop():
  rng = np.random.default_rng(11)
  m = rng.random((10, 20)).astype(np.float32)
  # crop: the map already covers a 10 x 10 image at scale 1 -> the centre columns, unchanged.
  np.testing.assert_allclose(sal.fit_to_image(m, (10, 10), fit="crop"), m[:, 5:15], atol=1e-7)
  # crop at scale 2: resize to 20 x 40 (torch bilinear), then centre 20 x 24.
  up = torch.nn.functional.interpolate(torch.from_numpy(m)[None, None], size=(20, 40), mode="bilinear",
                                       align_corners=False)[0, 0].numpy()
  np.testing.assert_allclose(sal.fit_to_image(m, (20, 24), fit="crop"), up[:, 8:32], atol=2e-6)
  ref = torch.nn.functional.interpolate(torch.from_numpy(m)[None, None], size=(30, 30), mode="bilinear",
                                        align_corners=False)[0, 0].numpy()
  np.testing.assert_allclose(sal.fit_to_image(m, (30, 30)), ref, atol=2e-6)   # default: resize
  with pytest.raises(ValueError, match="fit"):
    sal.fit_to_image(m, (5, 5), fit="pad")


def test_load_saliency_folder_and_npy(tmp_path):
  rng = np.random.default_rng(12)
  maps = (rng.random((3, 12, 12)) * 255).astype(np.uint8)
  folder = tmp_path / "maps"
  folder.mkdir()
  Image.fromarray(maps[0]).save(folder / "img0.png")
  Image.fromarray(maps[1]).save(folder / "img1.jpg", quality=100)
  np.save(folder / "img2.npy", maps[2].astype(np.float32))
  names, sizes = ["img0.jpg", "img1.jpg", "img2"], [(12, 12), (24, 24), (12, 12)]
  got = sal.load_saliency(str(folder), names, sizes)
  np.testing.assert_allclose(got[0], maps[0])
  assert got[1].shape == (24, 24)
  np.testing.assert_allclose(got[2], maps[2])
  np.save(tmp_path / "all.npy", maps.astype(np.float32))
  got = sal.load_saliency(str(tmp_path / "all.npy"), names, sizes)
  np.testing.assert_allclose(got[0], maps[0])
  with pytest.raises(FileNotFoundError, match="img9"):
    sal.load_saliency(str(folder), ["img9.jpg"], [(12, 12)])
  with pytest.raises(ValueError, match="n = 2"):
    sal.load_saliency(str(tmp_path / "all.npy"), names[:2], sizes[:2])


def test_experiment_end_to_end(tmp_path):
  from ais_jax.report import saliency_report
  rng = np.random.default_rng(13)
  n = 5
  images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  np.save(tmp_path / "images.npy", images)
  run = tmp_path / "run"
  from ais_jax.io import runs
  runs.write_run(str(run), {"heatmaps": rng.random((n, 4, 4)).astype(np.float32)},
                 {"flags": {"images": str(tmp_path / "images.npy")}},
                 image_names=[f"im{i}.png" for i in range(n)])
  out = tmp_path / "out"
  summary = saliency_report.run_saliency(str(run), "spectral_residual", str(out), n_examples=3)
  for name in ("rr_table.csv", "rr_table.md", "rr_per_image.csv", "saliency.npy", "pr_curves.png",
               "pr_curves.csv", "contours.png", "contours.json", "saliency_summary.json"):
    assert os.path.getsize(out / name) > 0, name
  saved = np.load(out / "saliency.npy")
  np.testing.assert_allclose(saved[1], sal.spectral_residual(images[1]), atol=1e-6)
  per_image = list(csv.DictReader(open(out / "rr_per_image.csv")))
  assert [r["image"] for r in per_image] == [f"im{i}.png" for i in range(n)]
  assert summary["n_images"] == n and len(summary["rr_all_images"]) == 3
