r"""Checks a run's report in a real headless browser (Chromium through Playwright).

    python -m experiments.check_report runs/planted
    python -m experiments.check_report runs/kriegeskorte92 --screenshots=/tmp/shots

Opens ``index.html`` and ``browser.html`` from ``file://`` and fails (exit status 1, one line per
problem) on any console error or page error, any link or image that does not resolve to a file
in the run folder or does not load, and when clicking an image, moving the opacity slider and the
threshold slider do not change the heatmap picture (pixel difference of screenshots). Writes
screenshots (default ``RUN_DIR/check_report/``). Exits with status 2 when no browser can be driven
(Playwright missing, no Chromium found): never a silent pass.

Chromium: ``--chromium=PATH``, else ``$CHROMIUM``, else ``chromium``/``chromium-browser``/
``google-chrome`` on PATH (Debian: ``apt-get install chromium``). Playwright comes with
``pip install -e '.[test]'``; no browser download is needed.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Sequence

from absl import flags

from experiments import _common

FLAGS = _common.FLAGS
_define = _common.define_flag
_common.define_path("chromium", "", "Chromium executable (default: $CHROMIUM, then "
        "chromium / chromium-browser / google-chrome on PATH).")
_common.define_path("run_dir", "", "The run folder (also accepted as the one positional "
        "argument).")
_common.define_path("screenshots", "", "Folder for the screenshots (default "
        "RUN_DIR/check_report).")

BROWSER_NOT_AVAILABLE = 2
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium(explicit: str = "") -> str | None:
  """The Chromium executable to drive, or None."""
  for c in (explicit, os.environ.get("CHROMIUM", "")):
    if c:
      return shutil.which(c) or (c if os.path.isfile(c) else None)
  for c in CANDIDATES:
    path = shutil.which(c)
    if path:
      return path
  return None


class BrowserUnavailable(RuntimeError):
  """No browser could be started (the check did not run)."""


def _pixels(png: bytes):
  import io
  import numpy as np
  from PIL import Image
  with Image.open(io.BytesIO(png)) as im:
    return np.asarray(im.convert("RGB"), np.int16)


def changed_fraction(a: bytes, b: bytes) -> float:
  """Share of pixels that differ between two PNG screenshots (1.0 when the sizes differ)."""
  import numpy as np
  x, y = _pixels(a), _pixels(b)
  if x.shape != y.shape:
    return 1.0
  return float(np.mean(np.any(x != y, axis=-1)))


def check(run_dir: str, *, chromium: str = "", screenshots: str = "") -> tuple[list, list]:
  """Drives the pages; returns (problems, screenshots written). Raises BrowserUnavailable."""
  try:
    from playwright.sync_api import sync_playwright
  except ImportError as e:
    raise BrowserUnavailable(f"playwright is not installed ({e}); pip install -e '.[test]'")
  exe = find_chromium(chromium)
  if exe is None:
    raise BrowserUnavailable("no Chromium found (--chromium, $CHROMIUM, or chromium on PATH; "
                             "Debian: apt-get install chromium)")
  run_dir = os.path.abspath(run_dir)
  shots_dir = screenshots or os.path.join(run_dir, "check_report")
  os.makedirs(shots_dir, exist_ok=True)
  problems, written = [], []

  def shot(page_or_el, name, **kw):
    path = os.path.join(shots_dir, name)
    data = page_or_el.screenshot(path=path, **kw)
    written.append(path)
    return data

  with sync_playwright() as p:
    try:
      browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
    except Exception as e:  # noqa: BLE001 - any launch failure means no browser to drive
      raise BrowserUnavailable(f"cannot start {exe}: {str(e).splitlines()[0]}")
    try:
      page = browser.new_page(viewport={"width": 1400, "height": 1000})
      errors: list[str] = []
      page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}")
              if m.type == "error" else None)
      page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
      page.on("requestfailed", lambda r: errors.append(f"failed to load {r.url}"))
      for name in ("index.html", "browser.html"):
        path = os.path.join(run_dir, name)
        if not os.path.isfile(path):
          problems.append(f"{name}: missing in {run_dir}")
          continue
        errors.clear()
        page.goto("file://" + path, wait_until="load")
        page.wait_for_timeout(300)
        # Every link and image: a file in the run folder (or an anchor on the page).
        targets = page.eval_on_selector_all(
            "a[href], img[src]", "els => els.map(e => [e.tagName, e.getAttribute('href') || "
            "e.getAttribute('src'), e.tagName === 'IMG' ? (e.complete && e.naturalWidth > 0) "
            ": true])")
        for tag, target, loaded in targets:
          if target.startswith("#"):
            if page.query_selector(f"[id='{target[1:]}']") is None:
              problems.append(f"{name}: link {target} names no element")
            continue
          if target.startswith("data:"):
            if not loaded:
              problems.append(f"{name}: an embedded image did not decode")
            continue
          if "://" in target:
            problems.append(f"{name}: external {tag.lower()} {target} (the report must work "
                            "offline)")
            continue
          if not os.path.isfile(os.path.join(run_dir, target)):
            problems.append(f"{name}: broken {tag.lower()} {target}")
          elif not loaded:
            problems.append(f"{name}: image {target} did not load")
        shot(page, f"{name[:-5]}_full.png", full_page=True)
        if name == "browser.html" and page.query_selector("#view-0") is not None:
          problems += _interact(page, shot)
        problems += [f"{name}: {e}" for e in errors]
    finally:
      browser.close()
  return problems, written


def _interact(page, shot) -> list[str]:
  """Click an image, move both sliders; each must change the heatmap picture."""
  problems = []
  viewer = page.locator("#viewer")
  before = shot(viewer, "browser_viewer_first.png")
  thumbs = page.locator(".thumb")
  if thumbs.count() < 2:
    return ["browser.html: fewer than two images in the grid"]
  thumbs.nth(thumbs.count() - 1).click()
  page.wait_for_timeout(300)
  after_click = shot(viewer, "browser_viewer_clicked.png")
  caption = page.locator("#caption").inner_text()
  if changed_fraction(before, after_click) < 0.01:
    problems.append("browser.html: clicking an image did not change the picture")
  page.locator("#opacity").fill("15")
  page.wait_for_timeout(200)
  after_opacity = shot(viewer, "browser_viewer_opacity.png")
  if changed_fraction(after_click, after_opacity) < 0.01:
    problems.append("browser.html: the opacity slider did not change the picture")
  page.locator("#opacity").fill("90")
  page.locator("#threshold").fill("10")
  page.wait_for_timeout(200)
  after_threshold = shot(viewer, "browser_viewer_threshold.png")
  if changed_fraction(after_opacity, after_threshold) < 0.01:
    problems.append("browser.html: the threshold slider did not change the picture")
  if page.locator("#saliency-toggle").is_visible():
    page.locator("#saliency").check()
    page.wait_for_timeout(200)
    after_saliency = shot(viewer, "browser_viewer_saliency.png")
    if changed_fraction(after_threshold, after_saliency) == 0:
      problems.append("browser.html: the saliency toggle did not change the picture")
  if not caption:
    problems.append("browser.html: no caption for the clicked image")
  shot(page, "browser_full_after.png", full_page=True)
  return problems


def main(argv: Sequence[str]) -> None:
  del argv
  from ais_jax.errors import UserInputError
  run_dir = FLAGS.run_dir
  if not run_dir:
    raise UserInputError("RUN_DIR", "give one run folder: python -m experiments.check_report "
                         "runs/planted")
  if not os.path.isdir(run_dir):
    raise UserInputError(run_dir, "not a folder; give the --out folder of experiments.run")
  try:
    problems, shots = check(run_dir, chromium=FLAGS.chromium, screenshots=FLAGS.screenshots)
  except BrowserUnavailable as e:
    print(f"check_report: cannot drive a browser: {e}", file=sys.stderr)
    sys.exit(BROWSER_NOT_AVAILABLE)
  for p in problems:
    print(f"FAIL {p}")
  print(f"{run_dir}: {len(problems)} problem(s); {len(shots)} screenshots in "
        f"{os.path.dirname(shots[0]) if shots else '-'}")
  sys.exit(1 if problems else 0)


def positional_to_flag(argv: Sequence[str]) -> list:
  """``check_report RUN_DIR`` -> ``check_report --run_dir=RUN_DIR`` (the shared runner takes
  flags only)."""
  return [argv[0]] + [a if a.startswith("-") else f"--run_dir={a}" for a in argv[1:]]


if __name__ == "__main__":
  sys.argv = positional_to_flag(sys.argv)
  _common.run(main)
