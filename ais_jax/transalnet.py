"""TranSalNet saliency maps the way the authors' public testing notebook makes them.

Published TranSalNet maps (and the paper's Table 1 / Figure 5 numbers) come from the authors'
``testing.ipynb`` + ``utils/data_process.py``; its quirks are kept on purpose (BUILD.md explains
each):

1. **BGR input.** Images are read with OpenCV, so the network sees BGR channel order although it
   was trained on RGB (PIL). ``channel_order='rgb'`` is an option, off by default.
2. **Scaling 0..1, no mean/std:** pixels / 255.
3. **Letterbox:** resized keeping the aspect ratio with ``cv2.resize`` (bilinear, integer target
   sizes from floor division) and centred on a 288 x 384 canvas whose padding is pixel value 1
   (``np.ones``, not 0 or 255).
4. **8-bit output:** the sigmoid output goes through ``ToPILImage``, which multiplies by 255 and
   truncates to uint8 (floor, not rounding).
5. **Back to the image:** ``cv2.resize`` of the 8-bit map so that it covers the image with the
   aspect ratio kept, then a centre crop to the image's size.

:func:`predict_raw` gives the network's sigmoid output after steps 1-3 (``saliency_raw.npy``),
:func:`postprocess` applies steps 4-5, :func:`saliency_maps` does all of it for a cohort, batched
and jitted (one compile per batch size; the last batch is padded).

OpenCV (``opencv-python-headless``) is needed for the exact path (``pip install
'ais_jax[saliency]'``); without it a clear error names the command.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ais_jax.errors import UserInputError

INPUT_HEIGHT, INPUT_WIDTH = 288, 384
CANVAS_FILL = 1  # the authors' np.ones canvas: padding pixels have value 1 (of 255)
CHANNEL_ORDERS = ("bgr", "rgb")
DEFAULT_BATCH_SIZE = 4


def _cv2():
  try:
    import cv2  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserInputError("--saliency=transalnet", "needs OpenCV for the authors' exact resize: "
                         "pip install opencv-python-headless (or pip install -e '.[saliency]')"
                         ) from None
  return cv2


def letterbox(image: np.ndarray, *, channel_order: str = "bgr") -> np.ndarray:
  """uint8 RGB image ``[H, W, 3]`` -> the authors' uint8 canvas ``[288, 384, 3]`` (steps 1 and 3).

  ``channel_order='bgr'`` reverses the channels first, as ``cv2.imread`` would have read them.
  """
  if channel_order not in CHANNEL_ORDERS:
    raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}; got {channel_order!r}")
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f"image must be uint8 [H, W, 3]; got {image.dtype} {image.shape}")
  if channel_order == "bgr":
    image = image[..., ::-1]
  image = np.ascontiguousarray(image)
  cv2 = _cv2()
  rows, cols = image.shape[:2]
  canvas = np.full((INPUT_HEIGHT, INPUT_WIDTH, 3), CANVAS_FILL, np.uint8)
  if rows / INPUT_HEIGHT > cols / INPUT_WIDTH:          # taller than the canvas: fit the height
    new_cols = min((cols * INPUT_HEIGHT) // rows, INPUT_WIDTH)
    start = (INPUT_WIDTH - new_cols) // 2
    canvas[:, start:start + new_cols] = cv2.resize(image, (new_cols, INPUT_HEIGHT))
  else:                                                  # wider (or same shape): fit the width
    new_rows = min((rows * INPUT_WIDTH) // cols, INPUT_HEIGHT)
    start = (INPUT_HEIGHT - new_rows) // 2
    canvas[start:start + new_rows] = cv2.resize(image, (INPUT_WIDTH, new_rows))
  return canvas


def to_8bit(saliency_raw: np.ndarray) -> np.ndarray:
  """Step 4: ``ToPILImage`` of a float map in [0, 1]: ``uint8(floor(255 * p))``."""
  return (np.asarray(saliency_raw, np.float32) * np.float32(255)).astype(np.uint8)


def postprocess(saliency_raw: np.ndarray, image_size: Sequence[int]) -> np.ndarray:
  """Steps 4-5: one raw map ``[288, 384]`` -> uint8 saliency ``[H, W]`` for an image of
  ``image_size = (H, W)``."""
  cv2 = _cv2()
  level = to_8bit(saliency_raw)
  rows, cols = int(image_size[0]), int(image_size[1])
  if rows / INPUT_HEIGHT > cols / INPUT_WIDTH:
    new_cols = (INPUT_WIDTH * rows) // INPUT_HEIGHT
    resized = cv2.resize(level, (new_cols, rows))
    start = (resized.shape[1] - cols) // 2
    return resized[:, start:start + cols]
  new_rows = (INPUT_HEIGHT * cols) // INPUT_WIDTH
  resized = cv2.resize(level, (cols, new_rows))
  start = (resized.shape[0] - rows) // 2
  return resized[start:start + rows, :]


@functools.lru_cache(maxsize=4)
def _jitted_apply(module):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.jit(module.apply)


def predict_raw(module, variables, canvases: np.ndarray, *, batch_size: int = DEFAULT_BATCH_SIZE,
                progress: Optional[Callable[[str], None]] = None) -> np.ndarray:
  """uint8 canvases ``[n, 288, 384, 3]`` -> float32 sigmoid output ``[n, 288, 384]``.

  Batches of ``batch_size`` (the last padded, so one compile serves the cohort), float32 with
  precision HIGHEST.
  """
  canvases = np.asarray(canvases)
  if canvases.ndim != 4 or canvases.shape[1:] != (INPUT_HEIGHT, INPUT_WIDTH, 3):
    raise ValueError(f"canvases must be [n, {INPUT_HEIGHT}, {INPUT_WIDTH}, 3]; got "
                     f"{canvases.shape}")
  apply = _jitted_apply(module)
  n = canvases.shape[0]
  out = np.empty((n, INPUT_HEIGHT, INPUT_WIDTH), np.float32)
  for start in range(0, n, batch_size):
    batch = canvases[start:start + batch_size].astype(np.float32) / np.float32(255)
    real = batch.shape[0]
    if real < batch_size:
      batch = np.concatenate([batch, np.zeros((batch_size - real,) + batch.shape[1:], np.float32)])
    out[start:start + real] = np.asarray(apply(variables, batch))[:real]
    if progress is not None:
      progress(f"TranSalNet: {start + real}/{n} images")
  return out


def load(weights: str):
  """``(module, variables, provenance)`` of converted TranSalNet weights (a registry name such as
  'transalnet_res' or a checkpoint directory), refusing weights of another kind of model."""
  from ais_jax import pipeline  # pylint: disable=g-import-not-at-top
  try:
    spec, variables, provenance, module = pipeline.load_model(weights, kind="saliency")
  except UserInputError as e:
    raise UserInputError(f"--saliency_weights {weights}",
                         f"{e.problem}; convert the authors' "
                         "file with python -m convert.fetch --name=transalnet_res --src=FILE"
                         ) from None
  return module, variables, provenance


def saliency_maps(images: Sequence[Any], weights: str, *, channel_order: str = "bgr",
                  batch_size: int = DEFAULT_BATCH_SIZE,
                  progress: Optional[Callable[[str], None]] = None
                  ) -> tuple[list[np.ndarray], np.ndarray]:
  """TranSalNet maps for a cohort, the authors' test-time path end to end.

  Args:
    images: n uint8 RGB images ``[H_i, W_i, 3]``.
    weights: converted TranSalNet weights (registry name or checkpoint directory).
    channel_order: 'bgr' (the authors' path) or 'rgb'.

  Returns:
    ``(maps, raw)``: n float32 maps ``[H_i, W_i]`` with the 8-bit levels 0..255 of the
    postprocessed output, and ``raw [n, 288, 384]`` float32, the sigmoid output.
  """
  module, variables, _ = load(weights)
  canvases = np.stack([letterbox(np.asarray(im), channel_order=channel_order) for im in images])
  raw = predict_raw(module, variables, canvases, batch_size=batch_size, progress=progress)
  maps = [postprocess(r, np.asarray(im).shape[:2]).astype(np.float32)
          for r, im in zip(raw, images)]
  return maps, raw
