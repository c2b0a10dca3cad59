"""Aim 3 details that mutation testing (experiments/mutation.sh saliency) showed unchecked: the
table formats (against hand-written text), means over hand-built results, input checks, map
loading edge cases, and the spectral residual's options against the scipy reference of
test_saliency.py. Every expected value is worked out by hand or by scipy/torch, never by the
function under test."""

import csv
import math
import re
import warnings

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage
import torch
from PIL import Image

from ais_jax import saliency as sal


def _rows():
  nan = float("nan")
  return [
      {"dataset": "a", "top": 5.0, "mean": 1.23456, "sd": 0.5, "n": 3, "n_undefined": 0,
       "undefined_reasons": ""},
      {"dataset": "a", "top": 10.0, "mean": 2.0, "sd": nan, "n": 1, "n_undefined": 2,
       "undefined_reasons": "empty_salient_set=2"},
      {"dataset": "b", "top": 5.0, "mean": nan, "sd": nan, "n": 0, "n_undefined": 4,
       "undefined_reasons": "empty_salient_set=1; zero_risk_outside_salient=3"},
      {"dataset": "b", "top": 10.0, "mean": 0.25, "sd": 0.125, "n": 2, "n_undefined": 2,
       "undefined_reasons": "zero_risk_outside_salient=2"},
  ]


MARKDOWN = (
    "| dataset | RR top 5% | RR top 10% | images (undefined) |\n"
    "| --- | --- | --- | --- |\n"
    "| a | 1.235 (0.500) | 2.000 [2 undef.] | 3 (0, 2) |\n"
    "| b | n/a [4 undef.] | 0.250 (0.125) [2 undef.] | 4 (4, 2) |\n"
    "\n"
    "Mean (sample sd) over images whose RR is defined; undefined RR (empty salient set or zero risk "
    "outside it) is counted per level in the last column, not averaged.\n")


def test_rr_table_markdown_hand_written():
  assert sal.rr_table_markdown(_rows()) == MARKDOWN


def test_write_rr_table_csv_and_markdown(tmp_path):
  stem = tmp_path / "deep" / "dir" / "rr"          # folders are created
  for _ in range(2):                                # and may already exist
    paths = sal.write_rr_table(_rows(), str(stem))
  assert paths == (str(stem) + ".csv", str(stem) + ".md")
  with open(paths[0], newline="") as f:
    raw = f.read()
  assert raw.splitlines()[0] == "dataset,top,mean,sd,n,n_undefined,undefined_reasons"
  assert raw.splitlines()[1] == "a,5.0,1.23456,0.5,3,0,"
  assert raw.splitlines()[3] == "b,5.0,nan,nan,0,4,empty_salient_set=1; zero_risk_outside_salient=3"
  assert "\r\n" in raw and "\r\r" not in raw                    # csv module's own line ends
  read = list(csv.DictReader(raw.splitlines()))
  assert [r["dataset"] for r in read] == ["a", "a", "b", "b"] and read[3]["sd"] == "0.125"
  assert open(paths[1]).read() == MARKDOWN


def _result(rr, reason, top=(5.0, 10.0)):
  rr, reason = np.asarray(rr, float), np.asarray(reason, np.int64)
  return sal.RelativeRisk(rr, reason, np.asarray(top, float), np.full_like(rr, np.nan),
                          np.full_like(rr, np.nan))


def test_rr_table_hand_built_result():
  nan = np.nan
  res = _result([[1.0, nan], [3.0, 2.0], [nan, nan], [4.0, 6.0]],
                [[0, 1], [0, 0], [3, 1], [0, 0]])
  with warnings.catch_warnings():
    warnings.simplefilter("error")          # no sd/mean of too few values is even attempted
    rows = sal.rr_table(res, ["x", "x", "y", "y"])
  by = {(r["dataset"], r["top"]): r for r in rows}
  assert [(r["dataset"], r["top"]) for r in rows] == [
      ("x", 5.0), ("x", 10.0), ("y", 5.0), ("y", 10.0), ("all images", 5.0), ("all images", 10.0)]
  assert isinstance(rows[0]["top"], float)
  assert by[("x", 5.0)]["mean"] == 2.0 and by[("x", 5.0)]["sd"] == pytest.approx(math.sqrt(2))
  assert by[("x", 10.0)]["mean"] == 2.0 and math.isnan(by[("x", 10.0)]["sd"])   # one value: no sd
  assert by[("x", 10.0)] | {"sd": 0} == {"dataset": "x", "top": 10.0, "mean": 2.0, "sd": 0, "n": 1,
                                        "n_undefined": 1, "undefined_reasons": "empty_salient_set=1"}
  assert by[("y", 5.0)]["n"] == 1 and by[("y", 5.0)]["undefined_reasons"] == "zero_risk_outside_salient=1"
  assert by[("y", 10.0)]["n"] == 1 and by[("y", 10.0)]["mean"] == 6.0
  allr = by[("all images", 5.0)]
  assert allr["mean"] == pytest.approx(8 / 3) and allr["sd"] == pytest.approx(math.sqrt(7 / 3))
  assert (allr["n"], allr["n_undefined"]) == (3, 1)
  assert by[("all images", 10.0)]["undefined_reasons"] == "empty_salient_set=2"
  numbered = sal.rr_table(res, [1, 1, 2, 2])                   # labels are written as text
  assert [r["dataset"] for r in numbered[::2]] == ["1", "2", "all images"]
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    mixed = sal.rr_table(_result([[nan], [nan], [nan]], [[3], [1], [1]], top=(15,)))
  assert mixed == [{"dataset": "all", "top": 15.0, "mean": mixed[0]["mean"], "sd": mixed[0]["sd"],
                    "n": 0, "n_undefined": 3,
                    "undefined_reasons": "empty_salient_set=2; zero_risk_outside_salient=1"}]
  assert math.isnan(mixed[0]["mean"]) and math.isnan(mixed[0]["sd"])
  with pytest.raises(ValueError, match="3 labels for 4 images"):
    sal.rr_table(res, ["x", "x", "y"])


def test_relative_risk_undefined_counts_and_levels():
  res = _result([[np.nan, np.nan], [1.0, np.nan], [np.nan, 2.0]], [[1, 3], [0, 3], [3, 0]])
  assert res.undefined_counts() == {"empty_salient_set": [1, 0], "zero_risk_outside_salient": [1, 2]}
  np.testing.assert_array_equal(res.n_undefined, [2, 2])
  a = np.arange(20.0).reshape(4, 5)
  for bad in ((0,), (100,), (5, -1), (101,)):
    with pytest.raises(ValueError, match="percentages in"):
      sal.relative_risk(a, a, top=bad)
  ok = sal.relative_risk(a, a[::-1], top=(0.01, 99.99))   # just inside (0, 100)
  # top 0.01%: only the maximum pixel 19 of each map, at (3, 4) in a and (0, 4) in the flipped map.
  # 99.99%: all but the minimum 0, at (0, 0) in a and (3, 0) in the flipped map; a[3, 0] = 15 is
  # the one non-salient pixel and it is in CR.
  np.testing.assert_array_equal(ok.p_cr_sal[0], [0.0, 18 / 19])
  np.testing.assert_array_equal(ok.p_cr_not_sal[0], [1 / 19, 1.0])
  np.testing.assert_array_equal(ok.rr[0], [0.0, 18 / 19])
  np.testing.assert_array_equal(ok.reason[0], [sal.RR_OK, sal.RR_OK])
  same = sal.relative_risk(a, a, top=(99.99,))
  assert same.reason[0, 0] == sal.RR_ZERO_BASE_RISK and same.p_cr_not_sal[0, 0] == 0.0


def test_relative_risk_conditional_probabilities_by_hand():
  # 2 x 5 maps; top 20%: the 2 highest pixels of each (no ties).
  a = np.array([[9.0, 8, 1, 2, 3], [4, 5, 6, 0, 7]])    # CR = {9, 8} at (0,0), (0,1)
  s = np.array([[10.0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])   # Sal = {10, 9} at (0,0), (1,4)
  res = sal.relative_risk(a, s, top=(20,))
  assert res.p_cr_sal[0, 0] == 0.5                       # (0,0) of {(0,0), (1,4)}
  assert res.p_cr_not_sal[0, 0] == 1 / 8                 # (0,1) of the other 8
  assert res.rr[0, 0] == 4.0 and res.reason[0, 0] == sal.RR_OK
  assert res.reason.dtype.kind == "i"
  assert res.rr.dtype == res.p_cr_sal.dtype == res.p_cr_not_sal.dtype == np.float64
  flat = sal.relative_risk(a, np.full_like(s, 3.0), top=(20,))          # nothing salient
  assert np.isnan(flat.p_cr_sal[0, 0]) and flat.p_cr_not_sal[0, 0] == 0.2


def test_precision_recall_mean_hand_built():
  nan = np.nan
  p = np.array([[[0.5, nan]], [[0.25, nan]], [[1.0, 0.2]]])        # [n=3, T=1, Q=2]
  r = np.array([[[nan, 0.1]], [[0.3, 0.3]], [[nan, nan]]])
  res = sal.PrecisionRecall(p, r, np.array([60.0]), np.array([1.0, 3.0]), 3, 3)
  m = res.mean()
  np.testing.assert_allclose(m["precision"], [[1.75 / 3, 0.2]], rtol=1e-15)
  np.testing.assert_array_equal(m["n_precision"], [[3, 1]])
  np.testing.assert_allclose(m["recall"], [[0.3, 0.2]], rtol=1e-15)
  np.testing.assert_array_equal(m["n_recall"], [[1, 2]])
  m01 = res.mean([0, 1])
  np.testing.assert_allclose(m01["precision"][0, 0], 0.375, rtol=1e-15)
  assert np.isnan(m01["precision"][0, 1]) and m01["n_precision"][0, 1] == 0   # none defined: NaN
  np.testing.assert_allclose(res.mean(np.array([2]))["precision"], [[1.0, 0.2]])


def test_precision_recall_hand_worked_and_inputs():
  import jax.numpy as jnp
  # 1 x 4 maps: target = AIS above its 50th percentile (2.5): pixels 2, 3; predictor = saliency
  # above its 50th percentile (25): pixels 1, 3 -> precision = recall = 1/2. At the 0th
  # percentile (1 and 10) pixels 1, 2, 3 are above in each map.
  a = np.array([[1.0, 2.0, 3.0, 4.0]])
  s = np.array([[10.0, 30.0, 20.0, 40.0]])
  for a_in, s_in in ((a, s), (jnp.asarray(a), jnp.asarray(s)), ([a], [s]), (a[None], s[None])):
    res = sal.precision_recall(a_in, s_in, target_percentiles=(50, 0), saliency_percentiles=(50, 0))
    np.testing.assert_allclose(res.precision[0], [[0.5, 2 / 3], [1.0, 1.0]], rtol=1e-15)
    np.testing.assert_allclose(res.recall[0], [[0.5, 1.0], [2 / 3, 1.0]], rtol=1e-15)
    assert res.n_undefined_precision == 0 and res.n_undefined_recall == 0
  np.testing.assert_array_equal(res.target_percentiles, [50, 0])
  np.testing.assert_array_equal(res.saliency_percentiles, [50, 0])
  res = sal.precision_recall(a, s, target_percentiles=(100,), saliency_percentiles=(100, 50))
  assert np.isnan(res.precision[0, 0, 0]) and np.isnan(res.recall[0]).all()   # nothing above the max
  assert (res.n_undefined_precision, res.n_undefined_recall) == (1, 2)
  one = sal.precision_recall(a, s, target_percentiles=(75,), saliency_percentiles=(75,))
  assert one.precision[0, 0, 0] == 1.0 and one.recall[0, 0, 0] == 1.0     # a single pixel each
  # Thresholds are float64 even for float32 maps: the 75th percentile of [1, 1 + 2^-23] is
  # 1 + 0.75 * 2^-23, which float32 would round up to 1 + 2^-23 (then nothing is above it).
  x32 = np.array([[1.0, 1.0 + 2.0 ** -23]], np.float32)
  res32 = sal.precision_recall([x32], [x32], target_percentiles=(75,), saliency_percentiles=(75,))
  assert res32.precision[0, 0, 0] == 1.0


@pytest.mark.parametrize("bad_a,bad_s,match", [
    (np.zeros((2, 2, 3, 3)), None, r"ais_maps must be \[H, W\], \[n, H, W\] or a list.*\(2, 2, 3, 3\)"),
    ([np.zeros((2, 3, 3))], None, r"ais_maps\[0\] must be a 2-D map \[H, W\]; got shape \(2, 3, 3\)"),
    (None, [np.zeros(3)], r"saliency_maps\[0\] must be a 2-D map"),
    (None, np.zeros((3, 3, 3)), "1 AIS maps but 3 saliency maps: give one saliency map per image"),
    (np.full((3, 3), np.inf), None, "image 0: the AIS or saliency map holds NaN/inf"),
    (np.full((3, 3), np.nan), None, "NaN/inf"),
    (None, np.full((3, 3), -np.inf), "NaN/inf"),
    (None, np.zeros((3, 4)), re.escape(
        "image 0: AIS map (3, 3) and saliency map (3, 4) differ; upsample the heatmap "
        "(ais_jax.heatmaps.upsample) and fit the saliency map to the image first")),
])
def test_bad_map_inputs(bad_a, bad_s, match):
  a = np.arange(9.0).reshape(3, 3) if bad_a is None else bad_a
  s = np.arange(9.0).reshape(3, 3) if bad_s is None else bad_s
  for fn in (sal.precision_recall, sal.relative_risk):
    with pytest.raises(ValueError, match=match):
      fn(a, s)


def _reference_sr(gray, width, sigma):
  """Spectral residual of a float gray image, written with scipy (see test_saliency.py)."""
  h, w = gray.shape
  sh = max(1, int(round(h * width / w)))
  small = np.asarray(Image.fromarray(gray.astype(np.float32)).resize((width, sh), Image.BILINEAR),
                     np.float64)
  f = scipy.fft.fft2(small)
  amp = np.abs(f)
  resid = np.log(amp + 1e-12) - scipy.ndimage.uniform_filter(np.log(amp + 1e-12), 3, mode="nearest")
  unit = np.where(amp > 0, f / np.where(amp > 0, amp, 1), 1.0)
  smap = np.abs(scipy.fft.ifft2(np.exp(resid) * unit)) ** 2
  if sigma:
    smap = scipy.ndimage.gaussian_filter(smap, sigma, mode="reflect", truncate=4.0)
  big = smap if smap.shape == (h, w) else np.asarray(
      Image.fromarray(smap.astype(np.float32)).resize((w, h), Image.BILINEAR), np.float64)
  return (big - big.min()) / (big.max() - big.min())


def test_spectral_residual_options_against_reference():
  rng = np.random.default_rng(20)
  img = rng.integers(0, 256, (30, 40), dtype=np.uint8)                 # gray input
  gray = img / 255.0
  for width, sigma in ((40, 0.0), (40, 1.0), (16, 0.6), (40, 3.0)):
    got = sal.spectral_residual(img, width=width, sigma=sigma)
    np.testing.assert_allclose(got, _reference_sr(gray, width, sigma), atol=1e-5,
                               err_msg=f"width={width} sigma={sigma}")
  rgb = np.repeat(img[..., None], 3, axis=-1)                          # equal channels: same gray
  np.testing.assert_allclose(sal.spectral_residual(rgb, width=40), sal.spectral_residual(img, width=40),
                             atol=1e-9)
  tall = rng.integers(0, 256, (60, 7), dtype=np.uint8)
  wide = rng.integers(0, 256, (3, 200), dtype=np.uint8)                # 3 * 20 / 200 rounds to 0: 1 row
  for x, width in ((wide, 20), (tall, 5)):
    np.testing.assert_allclose(sal.spectral_residual(x, width=width, sigma=0.7),
                               _reference_sr(x / 255.0, width, 0.7), atol=1e-5)
  for bad in (img.astype(np.float32), np.zeros((4, 4, 4), np.uint8), np.zeros((2, 4, 4, 3), np.uint8)):
    with pytest.raises(ValueError, match=r"image must be uint8 \[H, W, 3\]"):
      sal.spectral_residual(bad)


def _torch_resize(m, size):
  return torch.nn.functional.interpolate(torch.from_numpy(np.asarray(m, np.float32))[None, None],
                                         size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def test_fit_to_image_colour_tall_and_errors():
  rng = np.random.default_rng(21)
  gray = rng.random((8, 6)).astype(np.float32)
  colour = np.stack([gray, gray, gray], -1)
  np.testing.assert_allclose(sal.fit_to_image(colour, (8, 6)), gray, atol=1e-6)   # luma of equal RGB
  rgba = np.concatenate([colour, np.full((8, 6, 1), 0.3, np.float32)], -1)
  np.testing.assert_allclose(sal.fit_to_image(rgba, (8, 6)), gray, atol=1e-6)      # alpha ignored
  mixed = rng.random((8, 6, 3)).astype(np.float32)
  luma = 0.299 * mixed[..., 0] + 0.587 * mixed[..., 1] + 0.114 * mixed[..., 2]
  np.testing.assert_allclose(sal.fit_to_image(mixed, (8, 6)), luma, atol=1e-6)
  # crop, map taller than the image: 8 x 6 onto 9 x 9 -> scale 1.5 -> 12 x 9, rows 1..10.
  np.testing.assert_allclose(sal.fit_to_image(gray, (9, 9), fit="crop"),
                             _torch_resize(gray, (12, 9))[1:10], atol=2e-6)
  tall = rng.random((10, 4)).astype(np.float32)     # 10 x 4 onto 6 x 6 -> 15 x 6, rows 4..9
  np.testing.assert_allclose(sal.fit_to_image(tall, (6, 6), fit="crop"),
                             _torch_resize(tall, (15, 6))[4:10], atol=2e-6)
  # crop, map wider: 6 x 8 onto 5 x 3 -> scale 0.833 -> 5 x 7 (antialiased shrink), columns 2..4.
  wide = gray.T.copy()
  got = sal.fit_to_image(wide, (5, 3), fit="crop")
  ref = np.asarray(Image.fromarray(wide).resize((7, 5), Image.BILINEAR), np.float64)[:, 2:5]
  assert got.shape == (5, 3) and got.dtype == np.float64
  np.testing.assert_allclose(got, ref, atol=1e-5)
  same_ratio = sal.fit_to_image(gray, (16, 12), fit="crop")                        # ratios agree
  assert sal.fit_to_image(gray, (16, 12)).dtype == np.float64   # load_saliency promises float64
  np.testing.assert_allclose(same_ratio, _torch_resize(gray, (16, 12)), atol=2e-6)
  with pytest.raises(ValueError, match=r"saliency map must be \[h, w\]; got shape \(8, 6, 2\)"):
    sal.fit_to_image(colour[..., :2], (8, 6))
  with pytest.raises(ValueError, match=r"fit must be one of \('resize', 'crop'\); got 'pad'"):
    sal.fit_to_image(gray, (8, 6), fit="pad")


def test_load_saliency_formats_and_errors(tmp_path):
  rng = np.random.default_rng(22)
  folder = tmp_path / "maps"
  folder.mkdir()
  m16 = rng.integers(0, 65535, (6, 5)).astype(np.uint16)
  Image.fromarray(m16).save(folder / "a.PNG")                        # 16-bit, upper-case suffix
  rgb = rng.integers(0, 256, (6, 5, 3)).astype(np.uint8)
  Image.fromarray(rgb).save(folder / "b.png")
  pal = Image.fromarray(rgb).convert("P")                            # palette image -> gray
  pal.save(folder / "c.png")
  rgba = np.concatenate([rgb, np.full((6, 5, 1), 9, np.uint8)], -1)
  Image.fromarray(rgba).save(folder / "e.png")
  with open(folder / "d.NPY", "wb") as f:                           # np.save(path) would add .npy
    np.save(f, m16.astype(np.float32) / 7)
  (folder / "notes.txt").write_text("not a map")
  got = sal.load_saliency(str(folder), ["a.jpg", "b", "c.jpeg", "d.png", "e"], [(6, 5, 3)] * 5)
  np.testing.assert_array_equal(got[0], m16)
  luma = rgb.astype(np.float64) @ [0.299, 0.587, 0.114]
  np.testing.assert_allclose(got[1], luma, atol=1e-3)
  np.testing.assert_allclose(got[2], np.asarray(pal.convert("L"), np.float64))
  np.testing.assert_allclose(got[3], m16 / np.float32(7), rtol=1e-6)
  np.testing.assert_allclose(got[4], luma, atol=1e-3)                # alpha ignored, no rounding
  with pytest.raises(FileNotFoundError, match=r"no map for 6 image\(s\), e.g. \['m0', 'm1', 'm2', "
                                              r"'m3', 'm4'\]; maps"):
    sal.load_saliency(str(folder), [f"m{i}" for i in range(6)], [(6, 5)] * 6)
  stack = np.stack([m16, m16]).astype(np.float32)
  with open(tmp_path / "ALL.NPY", "wb") as f:
    np.save(f, stack)
  # crop: 6 x 5 onto 6 x 10 -> scale 2 -> 12 x 10, rows 3..8 (resize would stretch instead).
  got = sal.load_saliency(str(tmp_path / "ALL.NPY"), ["x", "y"], [(6, 5), (6, 10)], fit="crop")
  np.testing.assert_allclose(got[1], _torch_resize(m16, (12, 10))[3:9], rtol=1e-5)
  with pytest.raises(FileNotFoundError, match=r"no map for 1 image\(s\), e.g. \['zz'\]"):
    sal.load_saliency(str(tmp_path / "maps"), ["zz.jpg"], [(6, 5)])
  (folder / "a.npy").write_bytes(b"")
  with pytest.raises(ValueError, match="holds two maps for 'a': a.PNG and a.npy; keep one"):
    sal.load_saliency(str(folder), ["a"], [(6, 5)])
  with pytest.raises(ValueError, match="2 image names but 1 image sizes"):
    sal.load_saliency(str(tmp_path / "ALL.NPY"), ["x", "y"], [(6, 5)])
  with pytest.raises(ValueError, match=r"must hold \[n, H, W\] with n = 2 images; got shape \(2, 5\)"):
    np.save(tmp_path / "one.npy", m16[:2])
    sal.load_saliency(str(tmp_path / "one.npy"), ["x", "y"], [(6, 5)] * 2)
  (tmp_path / "maps.txt").write_text("1 2 3")
  for path in ("missing.npy", "maps.txt"):
    with pytest.raises(FileNotFoundError, match="neither a .npy file nor a folder"):
      sal.load_saliency(str(tmp_path / path), ["x"], [(6, 5)])
