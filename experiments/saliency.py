r"""Aim 3: AIS heatmaps vs saliency maps (precision-recall, relative risk, contour overlays).

  python -m experiments.saliency --ais_run=runs/k92_lite0 --saliency=spectral_residual \
      --out=runs/k92_lite0/saliency

``--ais_run`` is an output folder of ``experiments.ais``/``experiments.run``: its ``heatmaps.npy``
``[n, h, w]`` (map resolution), ``images.txt`` (one name per line) and ``summary.json`` (whose
``flags`` locate the images) are read. ``--saliency`` is ``spectral_residual`` (the built-in
classical baseline), a ``.npy`` ``[n, H, W]`` or a folder of PNG/JPG/NPY maps named like the
images; ``--saliency_fit=resize`` (default) resizes each map to its image, ``crop`` reproduces the
published code (keep the map's aspect ratio, cover the image, crop the centre).

Writes to ``--out``: ``rr_table.csv``/``.md`` (the paper's Table 1), ``rr_per_image.csv``,
``saliency.npy`` (maps used, image resolution; ``saliency.npz`` keyed by image name when image
sizes differ), ``pr_per_image.npz``, ``pr_curves.png/.csv`` (Figure 4), ``contours.png/.json``
(Figure 5) and ``saliency_summary.json`` (inputs, undefined counts, the all-images row).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from typing import Sequence

import numpy as np
from absl import app
from absl import flags

from ais_jax import heatmaps as heatmaps_lib
from ais_jax import saliency as saliency_lib
from ais_jax.report import figures

FLAGS = flags.FLAGS
flags.DEFINE_string("ais_run", None, "Output folder of experiments.ais / experiments.run.")
flags.DEFINE_string("saliency", "spectral_residual",
                    "'spectral_residual', a .npy [n, H, W], or a folder of maps named like the images.")
flags.DEFINE_string("out", None, "Output folder (default: <ais_run>/saliency).")
flags.DEFINE_enum("saliency_fit", "resize", list(saliency_lib.FITS),
                  "How external maps are fitted to the image: resize (default) or crop (published code).")
flags.DEFINE_string("images", None, "Overrides the images recorded in the run: a folder, a .npy "
                    "uint8 [n, H, W, 3], or the kriegeskorte92 data folder.")
flags.DEFINE_string("datasets", None, "Text file with one dataset label per image (default: the "
                    "run's datasets.txt, else one dataset).")
flags.DEFINE_integer("n_examples", 8, "Images drawn in the contour figure (the first n).")


# ----------------------------------------------------------------------------------------------
# Reading the AIS run


def _read_lines(path: str) -> list[str]:
  with open(path) as f:
    return [line.strip() for line in f if line.strip()]


def load_ais_run(run_dir: str) -> dict:
  """The parts of an AIS run this analysis needs: heatmaps, image names, summary, datasets.

  Read with :func:`ais_jax.io.runs.load_run` (only the files its summary lists); files it does not
  list (``heatmaps.npy``, ``images.txt``) are read directly, so hand-made folders work too.
  """
  try:
    from ais_jax.io import runs  # the I/O helper's reader
  except ImportError:  # pragma: no cover - older checkouts
    runs = None
  run = dict(runs.load_run(run_dir)) if runs is not None else {}
  if "heatmaps" not in run:
    path = os.path.join(run_dir, "heatmaps.npy")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} not found: --ais_run must be an AIS run folder that wrote "
                              "heatmaps [n, h, w]")
    run["heatmaps"] = np.load(path)
  names = list(run.get("images") or [])
  images_txt = os.path.join(run_dir, "images.txt")
  if not names and os.path.exists(images_txt):
    names = _read_lines(images_txt)
  run["image_names"] = names
  if "summary" not in run:
    summary_path = os.path.join(run_dir, "summary.json")
    run["summary"] = json.load(open(summary_path)) if os.path.exists(summary_path) else {}
  datasets_path = os.path.join(run_dir, "datasets.txt")
  if "datasets" not in run and os.path.exists(datasets_path):
    run["datasets"] = _read_lines(datasets_path)
  heat = np.asarray(run["heatmaps"])
  if heat.ndim != 3 or heat.shape[0] != len(names):
    raise ValueError(f"{run_dir}: heatmaps.npy has shape {heat.shape} but images.txt lists "
                     f"{len(names)} images; expected [n, h, w] for the listed images")
  return run


def load_images_for_run(run: dict, images: str | None) -> list[np.ndarray]:
  """uint8 images in the run's order, from --images or the images recorded in the run's flags."""
  run_flags = run["summary"].get("flags", {})
  names = run["image_names"]
  path = images or run_flags.get("images")
  if not path and run_flags.get("dataset") == "kriegeskorte92":
    path = run_flags.get("data_dir")
  if not path:
    raise ValueError("the run's summary.json records no image path (flags.images); pass --images")
  from ais_jax.data import kriegeskorte92
  if os.path.isdir(path) and os.path.exists(os.path.join(path, kriegeskorte92.STIMULI_FILE)):
    data = kriegeskorte92.load(path)
    lookup = dict(zip(data.image_names, data.images))
    if all(n in lookup for n in names):
      return [lookup[n] for n in names]
    raise ValueError(f"images.txt does not list the 92-image names (e.g. {names[:3]} vs "
                     f"{list(data.image_names[:3])})")
  if path.endswith(".npy"):
    arr = np.load(path)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[0] != len(names):
      raise ValueError(f"{path} must hold uint8 [n, H, W, 3] with n = {len(names)}; got {arr.dtype} {arr.shape}")
    return list(arr)
  from PIL import Image
  out = []
  for n in names:
    file = os.path.join(path, n)
    if not os.path.isfile(file):
      raise FileNotFoundError(f"image {file} listed in the run's images.txt is missing; pass --images")
    with Image.open(file) as im:
      out.append(np.asarray(im.convert("RGB"), np.uint8))
  return out


# ----------------------------------------------------------------------------------------------
# The analysis


def _upsample_each(heat: np.ndarray, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
  out: list[np.ndarray | None] = [None] * len(sizes)
  for size in dict.fromkeys(sizes):
    idx = [i for i, s in enumerate(sizes) if s == size]
    up = np.asarray(heatmaps_lib.upsample(heat[idx].astype(np.float32), size), np.float64)
    for j, i in enumerate(idx):
      out[i] = up[j]
  return out


def run_saliency(ais_run: str, saliency: str, out: str, *, saliency_fit: str = "resize",
                 images: str | None = None, datasets: str | None = None,
                 n_examples: int = 8, command: str | None = None) -> dict:
  """Runs the whole Aim 3 comparison for one AIS run; returns the summary (also written as JSON)."""
  t0 = time.time()
  os.makedirs(out, exist_ok=True)
  run = load_ais_run(ais_run)
  names = run["image_names"]
  imgs = load_images_for_run(run, images)
  sizes = [tuple(int(v) for v in im.shape[:2]) for im in imgs]
  ais_maps = _upsample_each(np.asarray(run["heatmaps"]), sizes)
  if saliency == "spectral_residual":
    sal_maps = [saliency_lib.spectral_residual(im) for im in imgs]
  else:
    sal_maps = saliency_lib.load_saliency(saliency, names, sizes, fit=saliency_fit)
  if datasets:
    labels = _read_lines(datasets)
  elif run.get("datasets") is not None:
    labels = [str(d) for d in run["datasets"]]
  else:
    flags_ = run["summary"].get("flags", {})
    labels = [str(flags_.get("dataset") or os.path.basename(str(flags_.get("images", "images")).rstrip("/"))
                  or "images")] * len(names)
  if len(labels) != len(names):
    raise ValueError(f"{len(labels)} dataset labels for {len(names)} images")

  if len(set(sizes)) == 1:
    saliency_path = os.path.join(out, "saliency.npy")
    np.save(saliency_path, np.stack(sal_maps).astype(np.float32))
  else:
    saliency_path = os.path.join(out, "saliency.npz")
    np.savez_compressed(saliency_path, **{n: m.astype(np.float32) for n, m in zip(names, sal_maps)})

  pr = saliency_lib.precision_recall(ais_maps, sal_maps)
  np.savez_compressed(os.path.join(out, "pr_per_image.npz"), precision=pr.precision, recall=pr.recall,
                      target_percentiles=pr.target_percentiles,
                      saliency_percentiles=pr.saliency_percentiles, names=np.array(names))
  groups = list(dict.fromkeys(labels))
  means = {g: pr.mean([i for i, lab in enumerate(labels) if lab == g]) for g in groups}
  if len(groups) > 1:
    means["all images"] = pr.mean()
  paths = [saliency_path, os.path.join(out, "pr_per_image.npz")]
  paths += figures.pr_curves(means, pr.target_percentiles, pr.saliency_percentiles,
                            os.path.join(out, "pr_curves.png"),
                            title=f"saliency ({saliency_label(saliency)}) vs AIS heatmap targets")

  rr = saliency_lib.relative_risk(ais_maps, sal_maps)
  rows = saliency_lib.rr_table(rr, labels)
  paths += list(saliency_lib.write_rr_table(rows, os.path.join(out, "rr_table")))
  per_image = os.path.join(out, "rr_per_image.csv")
  with open(per_image, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["image", "dataset"] + [f"rr_top{p:g}" for p in rr.top]
               + [f"reason_top{p:g}" for p in rr.top])
    for i, n in enumerate(names):
      w.writerow([n, labels[i]] + ["" if not np.isfinite(v) else repr(float(v)) for v in rr.rr[i]]
                 + [saliency_lib.RR_REASONS[int(c)] for c in rr.reason[i]])
  paths.append(per_image)
  index = list(range(min(n_examples, len(names))))
  paths += figures.contour_overlays(imgs, ais_maps, sal_maps, rr.rr, os.path.join(out, "contours.png"),
                                    top=tuple(rr.top), names=names, index=index)
  all_rows = [r for r in rows if r["dataset"] == ("all images" if len(groups) > 1 else groups[0])]
  summary = {
      "command": command, "ais_run": os.path.abspath(ais_run), "saliency": saliency,
      "saliency_fit": saliency_fit if saliency != "spectral_residual" else None,
      "n_images": len(names), "datasets": groups,
      "precision_undefined": pr.n_undefined_precision, "recall_undefined": pr.n_undefined_recall,
      "rr_undefined": rr.undefined_counts(), "rr_all_images": all_rows,
      "files": [os.path.relpath(p, out) for p in paths], "wall_s": round(time.time() - t0, 2),
  }
  with open(os.path.join(out, "saliency_summary.json"), "w") as f:
    json.dump(figures._jsonable(summary), f, indent=1)
  return summary


def saliency_label(saliency: str) -> str:
  return "spectral residual" if saliency == "spectral_residual" else os.path.basename(saliency.rstrip("/"))


def main(argv: Sequence[str]) -> None:
  del argv
  if not FLAGS.ais_run:
    raise app.UsageError("--ais_run is required (an experiments.ais output folder)")
  out = FLAGS.out or os.path.join(FLAGS.ais_run, "saliency")
  summary = run_saliency(FLAGS.ais_run, FLAGS.saliency, out, saliency_fit=FLAGS.saliency_fit,
                         images=FLAGS.images, datasets=FLAGS.datasets, n_examples=FLAGS.n_examples,
                         command=" ".join([os.path.basename(sys.executable), "-m", "experiments.saliency"]
                                          + sys.argv[1:]))
  print(open(os.path.join(out, "rr_table.md")).read())
  print(f"wrote {len(summary['files']) + 1} files to {out} in {summary['wall_s']} s")


if __name__ == "__main__":
  app.run(main)
