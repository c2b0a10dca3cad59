"""The interactive heatmap browser: ``browser.html`` beside ``index.html``.

A static page (no server, no network, works from ``file://``) with every number it shows embedded
in it as compact JSON (arrays as base64 of little-endian bytes), so the run folder can be zipped
and sent. The page (``browser_template.html``) shows the image grid by category; a click on an
image shows it large with each model's AIS heatmap (opacity slider, a threshold slider keeping the
top p% pixels, the saliency contour at the same p% where the run has saliency maps), the maps with
the largest per-image AIS and their values, and the image's row of the human vs the model
similarity.

    payload = build_payload(names=..., groups=..., images=..., human=..., models=[
        {'label': 'Lite0', 'heatmaps': [n, h, w], 'similarity': [n, n], 'per_image_ais': [n, K],
         'row_agreement': [n], 'agreement': r}])
    write_page(out_dir, payload, title='...')

:func:`decode_array` reads an embedded array back (the tests compare it with the run's arrays).
"""

from __future__ import annotations

import base64
import io
import json
import os
from typing import Any, Optional, Sequence

import numpy as np

BROWSER_FILE = "browser.html"
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "browser_template.html")
IMAGE_SIDE = 256        # longest side of the embedded images (JPEG)
SALIENCY_SIDE = 64      # embedded saliency maps: [n, 64, 64] uint8 (display only)
TOP_MAPS = 5            # maps listed per image and model


def encode_array(array: Any, dtype: str) -> dict:
  """``{'dtype', 'shape', 'data'}``: the array cast to ``dtype`` (float64, float32, int32, uint8),
  C order, little-endian bytes in base64."""
  a = np.ascontiguousarray(np.asarray(array).astype(np.dtype(dtype).newbyteorder("<")))
  return {"dtype": dtype, "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode()}


def decode_array(entry: dict) -> np.ndarray:
  """The inverse of :func:`encode_array`."""
  raw = base64.b64decode(entry["data"])
  return np.frombuffer(raw, np.dtype(entry["dtype"]).newbyteorder("<")).reshape(entry["shape"])


def image_data_uri(image: Any, side: int = IMAGE_SIDE, quality: int = 85) -> str:
  """A uint8 ``[H, W, 3]`` image as a JPEG data URI, its longest side at most ``side``."""
  from PIL import Image
  im = Image.fromarray(np.asarray(image, np.uint8))
  scale = side / max(im.size)
  if scale < 1:
    im = im.resize((max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale))),
                   Image.BILINEAR)
  buf = io.BytesIO()
  im.save(buf, format="JPEG", quality=quality)
  return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def top_maps_per_image(per_image_ais: Any, k: int = TOP_MAPS) -> tuple:
  """The ``k`` maps with the largest per-image AIS of each image (undefined values last).

  per_image_ais: ``[n, K]``. Returns (int32 ``[n, k]`` map indices, float64 ``[n, k]`` their AIS).
  """
  a = np.asarray(per_image_ais, np.float64)
  k = min(k, a.shape[1])
  key = np.where(np.isfinite(a), -a, np.inf)
  idx = np.argsort(key, axis=1, kind="stable")[:, :k]
  return idx.astype(np.int32), np.take_along_axis(a, idx, axis=1)


def saliency_thumbnails(maps: Sequence[Any], side: int = SALIENCY_SIDE) -> np.ndarray:
  """n saliency maps (any sizes) -> uint8 ``[n, side, side]``, each min-max scaled (display only:
  the threshold slider ranks these values)."""
  from PIL import Image
  out = np.zeros((len(maps), side, side), np.uint8)
  for i, m in enumerate(maps):
    m = np.asarray(m, np.float64)
    lo, hi = np.nanmin(m), np.nanmax(m)
    scaled = np.zeros_like(m) if not hi > lo else np.nan_to_num((m - lo) / (hi - lo))
    im = Image.fromarray(scaled.astype(np.float32)).resize((side, side), Image.BILINEAR)
    out[i] = np.clip(np.round(np.asarray(im) * 255), 0, 255).astype(np.uint8)
  return out


def colormap_table(name: str = "inferno") -> list:
  """256 ``[r, g, b]`` (0-255) entries of a matplotlib colormap, for the page's overlays."""
  import matplotlib
  rgb = matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3]
  return np.round(rgb * 255).astype(int).tolist()


def build_payload(*, names: Sequence[str], groups: Sequence[str], images: Sequence[Any],
                  human: Any, models: Sequence[dict], order: Optional[Sequence[int]] = None,
                  saliency_maps: Optional[Sequence[Any]] = None, note: str = "",
                  colormap: str = "inferno") -> dict:
  """The page's data.

  Args:
    names, groups: n image names and categories; images: n uint8 ``[H_i, W_i, 3]``.
    human: ``[n, n]`` human similarity (float64 as embedded).
    models: per model ``{'label', 'heatmaps': [n, h, w] (float32 as embedded), 'similarity':
      [n, n] (float64), 'per_image_ais': [n, K], 'row_agreement': [n], 'agreement': float}``.
    order: the grid order (default the cohort order).
    saliency_maps: n saliency maps at image resolution, or None (no contour toggle).
  """
  n = len(names)
  if not (len(groups) == len(images) == n and np.shape(human) == (n, n)):
    raise ValueError(f"{n} names, {len(groups)} groups, {len(images)} images and a human matrix "
                     f"of shape {np.shape(human)}: expected n of each and [n, n]")
  entries = []
  for m in models:
    heat = np.asarray(m["heatmaps"])
    if heat.ndim != 3 or heat.shape[0] != n:
      raise ValueError(f"{m['label']}: heatmaps of shape {heat.shape}; expected [{n}, h, w]")
    top, top_ais = top_maps_per_image(m["per_image_ais"])
    entries.append({"label": str(m["label"]), "heatmaps": encode_array(heat, "float32"),
                    "similarity": encode_array(m["similarity"], "float64"),
                    "top_maps": encode_array(top, "int32"),
                    "top_ais": encode_array(top_ais, "float64"),
                    "row_agreement": encode_array(m["row_agreement"], "float64"),
                    "agreement": float(m["agreement"]) if np.isfinite(m["agreement"]) else None})
  return {
      "names": [str(s) for s in names], "groups": [str(g) for g in groups],
      "order": [int(i) for i in (range(n) if order is None else order)],
      "images": [image_data_uri(im) for im in images],
      "human": encode_array(human, "float64"), "models": entries,
      "saliency": (None if saliency_maps is None
                   else encode_array(saliency_thumbnails(saliency_maps), "uint8")),
      "colormap": colormap_table(colormap), "note": note,
  }


def write_page(out_dir: str, payload: dict, *, title: str) -> str:
  """Writes ``out_dir/browser.html`` with ``payload`` embedded; returns its path."""
  import html
  with open(TEMPLATE, encoding="utf-8") as f:
    page = f.read()
  data = json.dumps(payload, separators=(",", ":"), allow_nan=False)
  data = data.replace("</", "<\\/")   # nothing in the data may close the script element
  page = page.replace("__TITLE__", html.escape(title)).replace("__PAYLOAD__", data)
  path = os.path.join(out_dir, BROWSER_FILE)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(page)
  os.replace(tmp, path)
  return path


def read_payload(path: str) -> dict:
  """The payload embedded in a written ``browser.html``."""
  with open(path, encoding="utf-8") as f:
    page = f.read()
  start = page.index('<script id="payload" type="application/json">') + len(
      '<script id="payload" type="application/json">')
  end = page.index("</script>", start)
  return json.loads(page[start:end].replace("<\\/", "</"))


def write_browser(out_dir: str, *, cohort, models, similarity: dict,
                  saliency_maps: Optional[Sequence[Any]] = None) -> str:
  """``browser.html`` for a run of ``ais_jax.main_job`` (its cohort, model runs and
  ``sections.similarity.analyse`` result); returns its path."""
  entries = [{"label": m.label, "heatmaps": m.run.heatmaps,
              "similarity": similarity["similarities"][m.label],
              "per_image_ais": m.run.per_image_ais,
              "row_agreement": similarity["row_agreement"][m.label],
              "agreement": similarity["agreement"][m.label]} for m in models]
  note = ("Heatmap: the AIS heatmap over the image (bright = high), scaled to this image's range; "
          "the threshold keeps the top p% pixels. Per-image AIS: how much removing the map from "
          "this image lowers its agreement with the human similarities. The scatter: this "
          "image's similarity to every other image, model (x) against human (y).")
  payload = build_payload(names=cohort.names, groups=cohort.groups, images=list(cohort.images),
                          human=cohort.human, models=entries, order=similarity["order"],
                          saliency_maps=saliency_maps, note=note)
  return write_page(out_dir, payload, title=f"ais_jax heatmap browser: {cohort.dataset}")
