"""Aim 3: AIS heatmaps vs saliency maps (precision-recall, relative risk, contour overlays).

The library behind ``python -m experiments.saliency`` (one AIS run folder in, one report folder
out: :func:`run_saliency`) and the ``saliency/`` folder of ``experiments.run`` (:func:`compare`,
on images and heatmaps already in memory). Both write to ``out``:

* ``rr_table.csv``/``.md`` (the paper's Table 1) and ``rr_per_image.csv`` (one row per image: RR
  at each top-p% level and why it is undefined where it is);
* ``saliency.npy`` (the maps used, float32 at image resolution; ``saliency.npz`` keyed by image
  name when image sizes differ) and ``pr_per_image.npz``; with ``--saliency=transalnet`` also
  ``saliency_raw.npy`` ``[n, 288, 384]`` (the network's sigmoid output before the authors'
  8-bit postprocessing, :mod:`ais_jax.transalnet`);
* ``pr_curves.png``/``.csv`` (Figure 4) and ``contours.png``/``.json`` (Figure 5);
* ``saliency_summary.json`` (inputs, undefined counts, the all-images rows, files, wall time).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Optional, Sequence

import numpy as np

from ais_jax import heatmaps as heatmaps_lib
from ais_jax import saliency as saliency_lib
from ais_jax.report import figures
from ais_jax.report import files as files_lib

SPECTRAL_RESIDUAL = "spectral_residual"
TRANSALNET = "transalnet"
DEFAULT_TRANSALNET_WEIGHTS = "transalnet_res"
NO_SALIENCY = ("", "none")


# ----------------------------------------------------------------------------------------------
# Reading an AIS run


def read_lines(path: str) -> list[str]:
  """The non-empty lines of a text file, stripped."""
  with open(path) as f:
    return [line.strip() for line in f if line.strip()]


def load_ais_run(run_dir: str) -> dict:
  """The parts of an AIS run this analysis needs: heatmaps, image names, summary, datasets.

  Read with :func:`ais_jax.io.runs.load_run` (only the files its summary lists); files it does not
  list (``heatmaps.npy``, ``images.txt``, ``datasets.txt``) are read directly, so hand-made
  folders work too.

  Returns:
    A dict with ``heatmaps`` ``[n, h, w]``, ``image_names`` (n), ``summary`` and, when the run
    has them, ``datasets`` (n labels).
  """
  from ais_jax.io import runs
  run = dict(runs.load_run(run_dir))
  if "heatmaps" not in run:
    path = os.path.join(run_dir, "heatmaps.npy")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} not found: --ais_run must be an AIS run folder that wrote "
                              "heatmaps [n, h, w]")
    run["heatmaps"] = np.load(path)
  names = list(run.get("images") or [])
  images_txt = os.path.join(run_dir, "images.txt")
  if not names and os.path.exists(images_txt):
    names = read_lines(images_txt)
  run["image_names"] = names
  if "summary" not in run:
    summary_path = os.path.join(run_dir, "summary.json")
    run["summary"] = {}
    if os.path.exists(summary_path):
      with open(summary_path) as f:
        run["summary"] = json.load(f)
  datasets_path = os.path.join(run_dir, "datasets.txt")
  if "datasets" not in run and os.path.exists(datasets_path):
    run["datasets"] = read_lines(datasets_path)
  heat = np.asarray(run["heatmaps"])
  if heat.ndim != 3 or heat.shape[0] != len(names):
    raise ValueError(f"{run_dir}: heatmaps.npy has shape {heat.shape} but images.txt lists "
                     f"{len(names)} images; expected [n, h, w] for the listed images")
  return run


def load_images_for_run(run: dict, images: Optional[str]) -> list[np.ndarray]:
  """uint8 images in the run's order, from ``images`` or the images recorded in the run's flags.

  Args:
    run: :func:`load_ais_run`'s record.
    images: a folder, a ``.npy`` uint8 ``[n, H, W, 3]`` or the kriegeskorte92 data folder; empty
      or None: the run's ``flags.images`` (or ``flags.data_dir`` of a kriegeskorte92 run).
  """
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
      raise ValueError(f"{path} must hold uint8 [n, H, W, 3] with n = {len(names)}; got "
                       f"{arr.dtype} {arr.shape}")
    return list(arr)
  from ais_jax.io import images as images_io
  out = []
  for n in names:
    file = os.path.join(path, n)
    if not os.path.isfile(file):
      raise FileNotFoundError(f"image {file} listed in the run's images.txt is missing; pass "
                              "--images")
    out.append(images_io.read_image_file(file))
  return out


def dataset_labels(run: dict, datasets: Optional[str] = None,
                   categories: Optional[str] = None) -> list[str]:
  """One dataset label per image: ``categories`` (a ``name,category`` CSV,
  ``ais_jax.io.categories``), ``datasets`` (a text file), the run's, else one label."""
  names = run["image_names"]
  if categories:
    from ais_jax.io import categories as categories_io
    return categories_io.load_categories(categories, names)
  if datasets:
    labels = read_lines(datasets)
  elif run.get("datasets") is not None:
    labels = [str(d) for d in run["datasets"]]
  else:
    run_flags = run["summary"].get("flags", {})
    label = (run_flags.get("dataset")
             or os.path.basename(str(run_flags.get("images", "images")).rstrip("/")) or "images")
    labels = [str(label)] * len(names)
  if len(labels) != len(names):
    raise ValueError(f"{len(labels)} dataset labels for {len(names)} images")
  return labels


# ----------------------------------------------------------------------------------------------
# Maps at image resolution


def image_sizes(images: Sequence[Any]) -> list[tuple[int, int]]:
  """``(H_i, W_i)`` of each image."""
  return [tuple(int(v) for v in np.asarray(im).shape[:2]) for im in images]


def upsample_to_images(maps: Any, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
  """``[n, h, w]`` maps -> n float64 ``[H_i, W_i]`` maps (one upsampling call per distinct size)."""
  maps = np.asarray(maps)
  out: list = [None] * len(sizes)
  for size in dict.fromkeys(sizes):
    idx = [i for i, s in enumerate(sizes) if s == size]
    up = np.asarray(heatmaps_lib.upsample(maps[idx].astype(np.float32), size), np.float64)
    for j, i in enumerate(idx):
      out[i] = up[j]
  return out


def compute_saliency(images: Sequence[Any], names: Sequence[str], saliency: str, *,
                     fit: str = "resize", saliency_weights: str = "",
                     progress=None) -> tuple[Optional[list[np.ndarray]], Optional[np.ndarray]]:
  """Saliency maps at image resolution (None when ``saliency`` is '' or 'none'), and the raw
  network output for TranSalNet (else None).

  Args:
    images: n uint8 ``[H_i, W_i, 3]``.
    names: the n image names (external maps are matched by name).
    saliency: 'spectral_residual' (computed), 'transalnet' (the authors' test-time path with
      ``saliency_weights``, default the registry's 'transalnet_res'), a ``.npy`` ``[n, H, W]`` or
      a folder of maps.
    fit: how external maps are fitted to their image ('resize' or 'crop').
    progress: optional callback for progress lines (TranSalNet batches).
  """
  if saliency in NO_SALIENCY:
    return None, None
  if saliency == SPECTRAL_RESIDUAL:
    return [saliency_lib.spectral_residual(np.asarray(im)) for im in images], None
  if saliency == TRANSALNET:
    from ais_jax import transalnet  # pylint: disable=g-import-not-at-top
    return transalnet.saliency_maps(images, saliency_weights or DEFAULT_TRANSALNET_WEIGHTS,
                                    progress=progress)
  return list(saliency_lib.load_saliency(saliency, names, image_sizes(images), fit=fit)), None


def saliency_maps(images: Sequence[Any], names: Sequence[str], saliency: str, *,
                  fit: str = "resize", saliency_weights: str = "",
                  progress=None) -> Optional[list[np.ndarray]]:
  """The maps of :func:`compute_saliency` (without TranSalNet's raw output)."""
  return compute_saliency(images, names, saliency, fit=fit, saliency_weights=saliency_weights,
                          progress=progress)[0]


def saliency_label(saliency: str) -> str:
  """Display name of a ``--saliency`` value."""
  if saliency == SPECTRAL_RESIDUAL:
    return "spectral residual"
  if saliency == TRANSALNET:
    return "TranSalNet"
  return os.path.basename(saliency.rstrip("/"))


# ----------------------------------------------------------------------------------------------
# The comparison


def contour_examples(rr: np.ndarray, top: Sequence[float], labels: Sequence[str],
                     n_examples: int = 8, index: Optional[Sequence[int]] = None) -> tuple:
  """The images of the contour figure and why each was chosen.

  Default (``index`` None): ranked by the relative risk at the middle level (top 10%), the highest
  and the lowest of each dataset label when there are several (``n_examples`` spread from highest
  to lowest when there is one).

  Returns:
    (image indices, ``{index: label}``).
  """
  rr = np.asarray(rr, np.float64)
  level = len(top) // 2
  name = f"RR{top[level]:g}%"
  if index is not None:
    return list(index), {}
  groups = list(dict.fromkeys(labels))
  per_group = 2 if len(groups) > 1 else n_examples
  chosen = figures.select_examples(labels, per_group, statistic=rr[:, level])
  text = {}
  for g in groups:
    in_group = [i for i in chosen if labels[i] == g]
    for k, i in enumerate(in_group):
      where = ("highest" if k == 0 else "lowest" if k == len(in_group) - 1 else "")
      prefix = f"{g}: " if len(groups) > 1 else ""
      text[i] = f"{prefix}{where} {name}".strip() if where else f"{prefix}{name} rank {k + 1}"
  return chosen, text


def compare(images: Sequence[Any], heatmaps: Any, names: Sequence[str], labels: Sequence[str],
            out: str, *, saliency: str = SPECTRAL_RESIDUAL, saliency_fit: str = "resize",
            maps: Optional[Sequence[np.ndarray]] = None, index: Optional[Sequence[int]] = None,
            n_examples: int = 8, ais_run: Optional[str] = None, command: Any = None,
            save_overlays: bool = False, alpha: float = 0.75,
            colormap: str = figures.HEAT_CMAP, saliency_weights: str = "",
            raw: Optional[np.ndarray] = None, progress=None) -> dict:
  """Compares AIS heatmaps with saliency maps and writes the files of the module docstring.

  Args:
    images: n uint8 ``[H_i, W_i, 3]``.
    heatmaps: ``[n, h, w]`` AIS heatmaps at map resolution (upsampled to each image here).
    names: n image names; labels: n dataset labels (one RR/PR row per label, plus 'all images'
      when there are several).
    out: output folder (created if needed).
    saliency: what ``maps`` are ('spectral_residual', a path); recorded and used in titles.
    saliency_fit: how external maps were fitted (recorded).
    maps: the saliency maps at image resolution (default: :func:`saliency_maps`).
    index: images drawn in the contour figure (default :func:`contour_examples`: by relative
      risk, highest and lowest).
    n_examples: images in the contour figure when there is one dataset label.
    ais_run: the AIS run folder the heatmaps come from (recorded).
    command: the command line (recorded).
    save_overlays: also write ``overlays/<image>.png`` per image (image, heatmap overlay with a
      colorbar, AIS and saliency contours), with ``colormap`` and ``alpha``.
    saliency_weights: TranSalNet weights (``saliency='transalnet'``).
    raw: TranSalNet's raw output ``[n, 288, 384]`` when ``maps`` are given (written as
      ``saliency_raw.npy``); computed here with the maps otherwise.

  Returns:
    The summary written to ``saliency_summary.json`` (its ``files`` are the other files written,
    relative to ``out``), plus ``rr_table`` (every row of Table 1).
  """
  t0 = time.time()
  names, labels = list(names), list(labels)
  if not len(images) == len(names) == len(labels) == len(heatmaps):
    raise ValueError(f"{len(images)} images, {len(names)} names, {len(labels)} labels and "
                     f"{len(heatmaps)} heatmaps: expected one of each per image")
  os.makedirs(out, exist_ok=True)
  sizes = image_sizes(images)
  ais_maps = upsample_to_images(heatmaps, sizes)
  if maps is None:
    maps, raw = compute_saliency(images, names, saliency, fit=saliency_fit,
                                 saliency_weights=saliency_weights, progress=progress)
  maps = list(maps)
  paths = []
  if raw is not None:
    paths.append(os.path.join(out, "saliency_raw.npy"))
    np.save(paths[-1], np.asarray(raw, np.float32))

  if len(set(sizes)) == 1:
    saliency_path = os.path.join(out, "saliency.npy")
    np.save(saliency_path, np.stack(maps).astype(np.float32))
  else:
    saliency_path = os.path.join(out, "saliency.npz")
    np.savez_compressed(saliency_path, **{n: m.astype(np.float32) for n, m in zip(names, maps)})

  pr = saliency_lib.precision_recall(ais_maps, maps)
  pr_path = os.path.join(out, "pr_per_image.npz")
  np.savez_compressed(pr_path, precision=pr.precision, recall=pr.recall,
                      target_percentiles=pr.target_percentiles,
                      saliency_percentiles=pr.saliency_percentiles, names=np.array(names))
  groups = list(dict.fromkeys(labels))
  means = {g: pr.mean([i for i, lab in enumerate(labels) if lab == g]) for g in groups}
  if len(groups) > 1:
    means["all images"] = pr.mean()
  paths += [saliency_path, pr_path]
  paths += figures.pr_curves(means, pr.target_percentiles, pr.saliency_percentiles,
                             os.path.join(out, "pr_curves.png"),
                             title=f"saliency ({saliency_label(saliency)}) vs AIS heatmap targets")

  rr = saliency_lib.relative_risk(ais_maps, maps)
  rows = saliency_lib.rr_table(rr, labels)
  paths += list(saliency_lib.write_rr_table(rows, os.path.join(out, "rr_table")))
  paths.append(files_lib.write_csv(
      os.path.join(out, "rr_per_image.csv"),
      ["image", "dataset"] + [f"rr_top{p:g}" for p in rr.top]
      + [f"reason_top{p:g}" for p in rr.top],
      [[n, labels[i]] + list(rr.rr[i]) + [saliency_lib.RR_REASONS[int(c)] for c in rr.reason[i]]
       for i, n in enumerate(names)]))
  index, example_labels = contour_examples(rr.rr, list(rr.top), labels, n_examples, index)
  paths += figures.contour_overlays(list(images), ais_maps, maps, rr.rr,
                                    os.path.join(out, "contours.png"), top=tuple(rr.top),
                                    names=names, index=index, labels=example_labels)
  if save_overlays:
    top = tuple(rr.top)
    paths += figures.write_overlays(images, ais_maps, names, os.path.join(out, "overlays"), alpha=alpha,
                            colormap=colormap, contours=[
                                {"AIS": (a, top, figures.AIS_COLOUR, "solid"),
                                 "saliency": (m, top, figures.SALIENCY_COLOUR, "dashed")}
                                for a, m in zip(ais_maps, maps)])
  all_label = "all images" if len(groups) > 1 else groups[0]
  summary_path = os.path.join(out, "saliency_summary.json")
  summary = {
      "command": command, "ais_run": os.path.abspath(ais_run) if ais_run else None,
      "saliency": saliency,
      "saliency_fit": saliency_fit if saliency not in (SPECTRAL_RESIDUAL, TRANSALNET) else None,
      "saliency_weights": ((saliency_weights or DEFAULT_TRANSALNET_WEIGHTS)
                           if saliency == TRANSALNET else None),
      "n_images": len(names), "datasets": groups,
      "precision_undefined": pr.n_undefined_precision, "recall_undefined": pr.n_undefined_recall,
      "rr_undefined": rr.undefined_counts(),
      "rr_all_images": [r for r in rows if r["dataset"] == all_label],
      "files": [os.path.relpath(p, out) for p in paths],
      "wall_s": round(time.time() - t0, 2),
  }
  files_lib.write_json(summary_path, summary)
  return dict(summary, rr_table=rows)


def run_saliency(ais_run: str, saliency: str, out: str, *, saliency_fit: str = "resize",
                 images: Optional[str] = None, datasets: Optional[str] = None,
                 categories: Optional[str] = None, n_examples: int = 8, command: Any = None,
                 save_overlays: bool = False, alpha: float = 0.75,
                 colormap: str = figures.HEAT_CMAP, saliency_weights: str = "",
                 progress=None) -> dict:
  """:func:`compare` for one AIS run folder (``experiments.ais`` / ``experiments.run``).

  Args:
    ais_run: the run folder (``heatmaps.npy``, ``images.txt``, ``summary.json``).
    saliency: 'spectral_residual', a ``.npy`` ``[n, H, W]`` or a folder of maps.
    out: output folder.
    saliency_fit: 'resize' or 'crop' for external maps.
    images: overrides the images recorded in the run.
    datasets: text file with one dataset label per image (default: the run's datasets.txt).
    categories: a ``name,category`` CSV (replaces ``datasets``).
    n_examples: images drawn in the contour figure (chosen by relative risk).
    command: the command line (recorded).
    save_overlays, alpha, colormap: per-image overlays (:func:`compare`).
    saliency_weights, progress: TranSalNet weights and progress lines (:func:`compare`).

  Returns:
    :func:`compare`'s summary.
  """
  run = load_ais_run(ais_run)
  names = run["image_names"]
  imgs = load_images_for_run(run, images)
  labels = dataset_labels(run, datasets, categories)
  return compare(imgs, np.asarray(run["heatmaps"]), names, labels, out, saliency=saliency,
                 saliency_fit=saliency_fit, n_examples=n_examples, ais_run=ais_run,
                 command=command, save_overlays=save_overlays, alpha=alpha, colormap=colormap,
                 saliency_weights=saliency_weights, progress=progress)
