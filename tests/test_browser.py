"""The heatmap browser (ais_jax.report.browser): its embedded payload holds the run's arrays
exactly, and the page works in a real headless Chromium (experiments.check_report) where one is
installed."""

import os

import numpy as np
import pytest

from ais_jax.report import browser


def _run_arrays(n=6, k=12, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 40, 48, 3), dtype=np.uint8)
  human = rng.normal(size=(n, n))
  human = (human + human.T) / 2
  per_image = rng.normal(size=(n, k))
  per_image[1, 3] = np.nan            # an undefined value is ranked last, never first
  heat = rng.random((n, 5, 5)).astype(np.float32)
  sim = np.corrcoef(rng.normal(size=(n, 30)))
  return images, human, per_image, heat, sim


def test_payload_holds_the_run_arrays_exactly():
  images, human, per_image, heat, sim = _run_arrays()
  sal = [np.random.default_rng(1).random((40, 48)) for _ in range(6)]
  payload = browser.build_payload(
      names=[f"im{i}" for i in range(6)], groups=["a", "b"] * 3, images=images, human=human,
      models=[{"label": "M", "heatmaps": heat, "similarity": sim, "per_image_ais": per_image,
               "row_agreement": np.arange(6.0), "agreement": 0.25}],
      order=[0, 2, 4, 1, 3, 5], saliency_maps=sal)
  m = payload["models"][0]
  np.testing.assert_array_equal(browser.decode_array(payload["human"]), human)
  np.testing.assert_array_equal(browser.decode_array(m["heatmaps"]), heat)
  np.testing.assert_array_equal(browser.decode_array(m["similarity"]), sim)
  np.testing.assert_array_equal(browser.decode_array(m["row_agreement"]), np.arange(6.0))
  # Top maps per image: a float64 loop written differently (sorted list of finite pairs).
  top, top_ais = browser.decode_array(m["top_maps"]), browser.decode_array(m["top_ais"])
  assert top.shape == (6, browser.TOP_MAPS)
  for i in range(6):
    pairs = sorted(((v, j) for j, v in enumerate(per_image[i]) if np.isfinite(v)),
                   key=lambda p: (-p[0], p[1]))
    assert [j for _, j in pairs[:browser.TOP_MAPS]] == top[i].tolist()
    np.testing.assert_array_equal(top_ais[i], [v for v, _ in pairs[:browser.TOP_MAPS]])
  assert 3 not in top[1]
  assert payload["order"] == [0, 2, 4, 1, 3, 5] and m["agreement"] == 0.25
  assert browser.decode_array(payload["saliency"]).shape == (6, browser.SALIENCY_SIDE,
                                                             browser.SALIENCY_SIDE)
  assert len(payload["colormap"]) == 256 and all(s.startswith("data:image/jpeg;base64,")
                                                 for s in payload["images"])


def test_written_page_round_trips_and_cannot_be_closed_by_its_data(tmp_path):
  images, human, per_image, heat, sim = _run_arrays(n=4)
  payload = browser.build_payload(
      names=["a</script><b>", "b", "c", "d"], groups=["g"] * 4, images=images, human=human,
      models=[{"label": "M", "heatmaps": heat, "similarity": sim, "per_image_ais": per_image,
               "row_agreement": np.zeros(4), "agreement": float("nan")}])
  path = browser.write_page(str(tmp_path), payload, title="t")
  with open(path, encoding="utf-8") as f:
    page = f.read()
  assert page.count("</script>") == 2  # the payload's and the code's, not the name's
  back = browser.read_payload(path)
  assert back == payload and back["models"][0]["agreement"] is None


def test_payload_rejects_mismatched_shapes():
  images, human, per_image, heat, sim = _run_arrays()
  with pytest.raises(ValueError, match="heatmaps"):
    browser.build_payload(names=list("abcdef"), groups=list("aaaaaa"), images=images,
                          human=human, models=[{"label": "M", "heatmaps": heat[:3],
                                                "similarity": sim, "per_image_ais": per_image,
                                                "row_agreement": np.zeros(6), "agreement": 0.0}])


CHROMIUM = None
try:
  from experiments import check_report
  CHROMIUM = check_report.find_chromium()
  import playwright  # noqa: F401
except ImportError:
  CHROMIUM = None


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium and Playwright here (Debian: apt-get "
                    "install chromium; pip install -e '.[test]'): the browser check cannot run")
def test_check_report_drives_the_page_in_chromium(tmp_path):
  from ais_jax.report import index
  images, human, per_image, heat, sim = _run_arrays()
  payload = browser.build_payload(
      names=[f"im{i}" for i in range(6)], groups=["a", "b"] * 3, images=images, human=human,
      models=[{"label": lab, "heatmaps": heat * (j + 1) ** 2, "similarity": sim,
               "per_image_ais": per_image, "row_agreement": np.arange(6.0), "agreement": 0.5}
              for j, lab in enumerate(("M1", "M2"))],
      saliency_maps=[np.random.default_rng(i).random((40, 48)) for i in range(6)])
  out = str(tmp_path)
  browser.write_page(out, payload, title="test")
  index.write_index(out, title="t", sections=[], links=[(browser.BROWSER_FILE, "browser")])
  # One broken link planted in the index: reported, while everything else passes.
  with open(os.path.join(out, "index.html"), "a", encoding="utf-8") as f:
    f.write('<a href="missing.csv">x</a>')
  problems, shots = check_report.check(out)
  assert problems == ["index.html: broken a missing.csv"]
  assert {os.path.basename(s) for s in shots} >= {"index_full.png", "browser_viewer_clicked.png",
                                                   "browser_viewer_opacity.png",
                                                   "browser_viewer_threshold.png",
                                                   "browser_viewer_saliency.png"}


def test_check_report_says_when_it_cannot_drive_a_browser(tmp_path, monkeypatch):
  from experiments import check_report as cr
  monkeypatch.setattr(cr, "find_chromium", lambda explicit="": None)
  with pytest.raises(cr.BrowserUnavailable, match="Chromium|playwright"):
    cr.check(str(tmp_path))


def test_check_report_command_exits_2_without_a_browser(tmp_path):
  import subprocess
  import sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, CHROMIUM=str(tmp_path / "no-such-chromium"))
  proc = subprocess.run([sys.executable, "-m", "experiments.check_report", str(tmp_path)],
                        cwd=repo, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr
  assert "cannot drive a browser" in proc.stderr
