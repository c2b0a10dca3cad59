"""Image resizing and model input preparation (numpy + PIL, no JAX).

Resizing follows torchvision's ``Resize`` on PIL images (DESIGN.md section 1): PIL's BILINEAR
filter, which antialiases when shrinking (its support widens with the scale factor), so the
inputs are the ones the published PyTorch pipeline would see.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

RESIZE_RULES = ("square", "shorter_side")


def _check_images(images: Any) -> np.ndarray:
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise ValueError(f"images must be uint8 pixels [n, H, W, 3]; got dtype {images.dtype} "
                     "(convert with np.clip(x, 0, 255).astype(np.uint8) or load them as uint8)")
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images must have shape [n, H, W, 3] (RGB); got {images.shape}")
  return images


def resized_shape(height: int, width: int, size: int, rule: str = "square") -> tuple[int, int]:
  """Output ``(height, width)`` of :func:`resize_images` for one input shape.

  'square': ``(size, size)``. 'shorter_side': the shorter side becomes ``size`` and the longer one
  ``int(size * long / short)``, as torchvision's ``Resize(size)`` (no crop).
  """
  if rule == "square":
    return size, size
  if rule == "shorter_side":
    if height <= width:
      return size, int(size * width / height)
    return int(size * height / width), size
  raise ValueError(f"unknown resize rule {rule!r}; expected one of {RESIZE_RULES}")


def resize_images(images: Any, size: int, rule: str = "square") -> np.ndarray:
  """Resizes a batch of images with PIL BILINEAR, as torchvision's Resize on PIL images.

  Args:
    images: uint8 ``[n, H, W, 3]``.
    size: target side in pixels.
    rule: 'square' (every image to ``size x size``, the default for batched cohorts) or
      'shorter_side' (the shorter side to ``size``, aspect kept; the published preprocessing).

  Returns:
    uint8 ``[n, h, w, 3]`` (``h = w = size`` for 'square'). Images already at the target shape are
    returned unchanged (the input array itself, no copy and no resampling).
  """
  images = _check_images(images)
  if not isinstance(size, (int, np.integer)) or size < 1:
    raise ValueError(f"size must be a positive integer; got {size!r}")
  n, height, width, _ = images.shape
  out_h, out_w = resized_shape(height, width, int(size), rule)
  if (out_h, out_w) == (height, width):
    return images
  out = np.empty((n, out_h, out_w, 3), np.uint8)
  for i in range(n):
    out[i] = np.asarray(Image.fromarray(images[i]).resize((out_w, out_h), Image.BILINEAR))
  return out


def prepare(images: Any, spec, *, rule: str | None = None) -> np.ndarray:
  """uint8 images -> the model's float32 input: resize to ``spec.input_size``, then normalise.

  Args:
    images: uint8 ``[n, H, W, 3]``.
    spec: an ``ais_jax.models.ModelSpec`` (gives input_size, resize rule and normalisation).
    rule: overrides ``spec.resize`` ('square' or 'shorter_side').

  Returns:
    float32 ``[n, S, S, 3]`` (S = spec.input_size; non-square for 'shorter_side' on non-square
    images), normalised by ``spec.preprocess``.
  """
  resized = resize_images(images, spec.input_size, rule=spec.resize if rule is None else rule)
  return np.asarray(spec.preprocess(resized.astype(np.float32)), np.float32)


# --------------------------------------------------------------------------------------------
# Reading images from disk (the user-facing `--images` input).
#
# Conversions to 8-bit RGB, documented here because they change pixel values:
# * grayscale ('L', '1') -> the gray value in all three channels;
# * transparency (RGBA, LA, palette or colour-key transparency) is composited over WHITE:
#   out = alpha * rgb + (1 - alpha) * 255, rounded. Transparent pixels of a PNG carry arbitrary
#   (often black) colour values that nobody saw, and stimuli are usually shown on a white page, so
#   dropping alpha would invent content; compositing shows what a viewer saw on white;
# * palette images -> their palette colours;
# * 16-bit grayscale ('I;16*', and 'I' with values in 0..65535) -> round(v * 255 / 65535), scaled,
#   never clipped; 16-bit RGB PNGs are reduced by Pillow itself to their high byte
#   (floor(v / 256), within one level of the same scaling);
# * CMYK/YCbCr -> Pillow's RGB conversion; floating-point images ('F') are refused;
# * the EXIF orientation tag is applied (the image as a viewer shows it); multi-frame files
#   (GIF, TIFF) use their first frame.
# --------------------------------------------------------------------------------------------

import os
import warnings

from ais_jax import validation
from ais_jax.errors import UserInputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _scale_16bit(values: np.ndarray, name: str) -> np.ndarray:
  values = np.asarray(values)
  if values.size and (values.min() < 0 or values.max() > 65535):
    raise UserInputError(name, f"integer pixels span {values.min()}..{values.max()}, outside the "
                         "16-bit range 0..65535; save the image as 8- or 16-bit")
  gray = np.rint(values.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
  return np.repeat(gray[..., None], 3, axis=-1)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
  alpha = rgba[..., 3:4].astype(np.float64) / 255.0
  rgb = rgba[..., :3].astype(np.float64)
  return np.rint(rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


def read_image_file(path: str) -> np.ndarray:
  """Reads one image file as 8-bit RGB (conversions as documented at the top of this section).

  Args:
    path: an image file Pillow can read (png, jpg, bmp, tif, gif, webp, ...).

  Returns:
    uint8 ``[H, W, 3]``.

  Raises:
    UserInputError naming the file when it cannot be read or has an unsupported pixel type.
  """
  from PIL import ImageOps
  try:
    with Image.open(path) as im:
      im.seek(0)
      im.load()
      try:
        im = ImageOps.exif_transpose(im)
      except Exception:  # A broken EXIF block should not make a readable image unreadable.
        pass
      mode = im.mode
      if mode in _16BIT_MODES or mode == "I":
        return _scale_16bit(np.asarray(im), path)
      if mode == "F":
        raise UserInputError(path, "floating-point pixels (Pillow mode 'F') are not supported; "
                             "save the image as 8- or 16-bit integers")
      has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in im.info
      if has_alpha:
        return _composite_on_white(np.asarray(im.convert("RGBA")))
      return np.asarray(im.convert("RGB"), dtype=np.uint8)
  except UserInputError:
    raise
  except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError.
    raise UserInputError(path, f"cannot read it as an image ({type(e).__name__}: {e}); "
                         "replace or remove the file") from None


def _read_image_list(list_path: str) -> list[str]:
  try:
    with open(list_path, encoding="utf-8-sig") as f:
      lines = f.read().splitlines()
  except OSError as e:
    raise UserInputError(list_path, f"cannot read the image list ({e.strerror or e})") from None
  names = [line.strip() for line in lines if line.strip()]
  if not names:
    raise UserInputError(list_path, "the image list is empty; write one file name per line")
  dups = validation.repeated(names)
  if dups:
    raise UserInputError(list_path, f"file names listed more than once: {dups[:5]}; each image "
                         "must appear once")
  return names


def _load_npy_images(path: str):
  try:
    images = np.load(path, allow_pickle=False)
  except Exception as e:
    raise UserInputError(path, f"cannot read it as a .npy array ({type(e).__name__}: "
                         f"{e})") from None
  if images.dtype != np.uint8:
    raise UserInputError(path, f"images must be uint8 pixels 0..255, got dtype {images.dtype}; "
                         "convert with np.clip(np.rint(x), 0, 255).astype(np.uint8) (multiply "
                         "by 255 first if the pixels are in 0..1)")
  if images.ndim != 4 or images.shape[-1] != 3:
    raise UserInputError(path, f"images must have shape [n, H, W, 3] (RGB, channels last), got "
                         f"{list(images.shape)}")
  if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
    raise UserInputError(path, f"the array holds no pixels (shape {list(images.shape)})")
  stem = os.path.basename(path)
  return images, [f"{stem}[{i}]" for i in range(images.shape[0])]


TFDS_PREFIX = "tfds:"


def parse_tfds_spec(spec: str) -> tuple[str, str, int | None]:
  """``'tfds:NAME[:SPLIT][:COUNT]'`` -> ``(name, split, count or None)`` (split default 'train').

  NAME may carry a config and version as tensorflow-datasets writes them (``mnist``,
  ``cifar10/1.0.0``, ``imagenette/160px``).
  """
  parts = spec[len(TFDS_PREFIX):].split(":")
  if not parts[0] or len(parts) > 3:
    raise UserInputError("--images", f"{spec!r}: expected tfds:NAME[:SPLIT][:COUNT], e.g. "
                         "tfds:cifar10:test:48")
  name, split, count = parts[0], "train", None
  rest = parts[1:]
  if rest and rest[-1].isdigit():
    count = int(rest.pop())
    if count < 1:
      raise UserInputError("--images", f"{spec!r}: COUNT must be at least 1")
  if rest:
    split = rest[0] or "train"
  return name, split, count


def load_tfds_images(spec: str, *, data_dir: str | None = None):
  """Images of a prepared tensorflow-datasets dataset (nothing is downloaded).

  Args:
    spec: ``tfds:NAME[:SPLIT][:COUNT]`` (:func:`parse_tfds_spec`): the first COUNT examples of
      SPLIT (default: train, all examples) in the dataset's order.
    data_dir: tfds' ``data_dir`` holding the prepared dataset (None: tfds' default,
      ``~/tensorflow_datasets``).

  Returns:
    ``(images, names)`` as :func:`load_images`: uint8 ``[n, H, W, 3]`` (or a list when sizes
    differ; grey images are repeated to RGB) and names ``NAME/SPLIT/i`` (or the examples'
    ``file_name``/``id`` feature when the dataset has one).
  """
  name, split, count = parse_tfds_spec(spec)
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserInputError("--images", f"{spec!r} needs tensorflow-datasets (and TensorFlow, "
                         "about 600 MB): pip install -e '.[tfds]'") from None
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
    if not builder.is_prepared():
      raise UserInputError("--images", f"{spec!r}: the dataset is not prepared in "
                           f"{builder.data_dir}; prepare it once with internet (`tfds build "
                           f"{name}` or builder.download_and_prepare()) and pass its folder "
                           "with --tfds_data_dir")
    split_arg = split if count is None else f"{split}[:{count}]"
    examples = tfds.as_numpy(builder.as_dataset(split=split_arg, shuffle_files=False))
  except UserInputError:
    raise
  except Exception as e:  # tfds raises many types (DatasetNotFoundError, ValueError, ...).
    raise UserInputError("--images", f"{spec!r}: {type(e).__name__}: {e}") from None
  images, names = [], []
  for i, example in enumerate(examples):
    image = np.asarray(example["image"] if isinstance(example, dict) else example[0])
    if image.ndim == 2:
      image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3) or image.dtype != np.uint8:
      raise UserInputError("--images", f"{spec!r}: example {i} image is {image.dtype} "
                           f"{list(image.shape)}; expected uint8 [H, W, 1 or 3]")
    images.append(np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image)
    label = None
    if isinstance(example, dict):
      for key in ("file_name", "id", "image/filename"):
        if key in example:
          label = example[key]
          label = label.decode() if isinstance(label, bytes) else str(label)
          break
    names.append(label or f"{name}/{split}/{i}")
  if not images:
    raise UserInputError("--images", f"{spec!r}: the split holds no examples")
  if len({im.shape for im in images}) == 1:
    return np.stack(images), names
  return images, names


def load_images(path: str, *, image_list: str | None = None, tfds_data_dir: str | None = None):
  """Reads a cohort of images: a directory of image files, a ``.npy`` uint8 array, or a prepared
  tensorflow-datasets dataset.

  Args:
    path: a directory of image files (extensions in ``IMAGE_EXTENSIONS``, case-insensitive; other
      files and sub-directories are ignored; order: file names sorted in plain lexicographic
      (code point) order), a ``.npy`` file holding uint8 ``[n, H, W, 3]``, or
      ``tfds:NAME[:SPLIT][:COUNT]`` (:func:`load_tfds_images`, optional ``tfds`` extra).
    image_list: optional text file, one file name per line (blank lines ignored): for a
      directory, the images (relative to ``path``) and their order; for a ``.npy`` array, the
      names of its images in the array's order.
    tfds_data_dir: tfds' ``data_dir`` for a ``tfds:`` path.

  Returns:
    ``(images, names)``: images uint8 ``[n, H, W, 3]`` when every image has the same size, else a
    list of n uint8 ``[H_i, W_i, 3]`` arrays; names: n strings (file names as listed,
    ``'<file>.npy[i]'`` or the names of the ``image_list``). Resize with :func:`fit_to_model`.

  Raises:
    UserInputError naming the path or file that is missing, unreadable, empty or of the wrong
    type/shape.
  """
  path = os.fspath(path)
  if path.startswith(TFDS_PREFIX):
    if image_list:
      raise UserInputError(image_list, "an image list applies to a directory or a .npy array, "
                           "not to tfds: images")
    return load_tfds_images(path, data_dir=tfds_data_dir)
  if not os.path.exists(path):
    raise UserInputError(path, "no such file or directory; give a directory of images, a .npy "
                         "array [n, H, W, 3] or tfds:NAME[:SPLIT][:COUNT]")
  if os.path.isfile(path):
    if not path.lower().endswith(".npy"):
      raise UserInputError(path, "expected a directory of image files or a .npy uint8 array "
                           "[n, H, W, 3]")
    images, names = _load_npy_images(path)
    if image_list:  # The names of the array's images (e.g. to match a labelled --human).
      names = _read_image_list(image_list)
      if len(names) != images.shape[0]:
        raise UserInputError(image_list, f"{len(names)} names for the {images.shape[0]} images "
                             f"of {path}; list one name per image, in the array's order")
    return images, names
  if image_list:
    names = _read_image_list(image_list)
    missing = [n for n in names if not os.path.isfile(os.path.join(path, n))]
    if missing:
      raise UserInputError(image_list, f"{len(missing)} listed file(s) not found in {path}: "
                           f"{missing[:5]}")
  else:
    names = sorted(entry for entry in os.listdir(path)
                   if entry.lower().endswith(IMAGE_EXTENSIONS)
                   and os.path.isfile(os.path.join(path, entry)))
    if not names:
      raise UserInputError(path, "the directory holds no image files (extensions "
                           f"{', '.join(IMAGE_EXTENSIONS)})")
  images = [read_image_file(os.path.join(path, name)) for name in names]
  if len({im.shape for im in images}) == 1:
    return np.stack(images), names
  return images, names


def fit_to_model(images, spec, *, names=None, rule: str | None = None) -> np.ndarray:
  """Resizes a cohort to the model's input size by the model's rule (see :func:`resize_images`).

  Images already at the target size are not resampled. With the 'square' rule, non-square images
  are squashed (aspect ratio not kept): a ``UserWarning`` says how many and which.

  Args:
    images: uint8 ``[n, H, W, 3]`` or a list of uint8 ``[H_i, W_i, 3]`` (from :func:`load_images`).
    spec: an ``ais_jax.models.ModelSpec`` (input_size, resize).
    names: optional image names for the warning.
    rule: overrides ``spec.resize``.

  Returns:
    uint8 ``[n, S, S, 3]`` (S = spec.input_size) for 'square'.
  """
  rule = spec.resize if rule is None else rule
  size = int(spec.input_size)
  if isinstance(images, np.ndarray):
    shapes = [images.shape[1:3]] * images.shape[0]
  else:
    shapes = [im.shape[:2] for im in images]
  if rule == "square":
    skewed = [i for i, (h, w) in enumerate(shapes) if h != w]
    if skewed:
      label = (lambda i: f"{names[i]} ({shapes[i][1]}x{shapes[i][0]})") if names is not None else (
          lambda i: f"#{i} ({shapes[i][1]}x{shapes[i][0]})")
      warnings.warn(
          f"{len(skewed)} of {len(shapes)} images are not square (e.g. "
          f"{', '.join(label(i) for i in skewed[:3])}); resizing to {size}x{size} squashes them "
          "(aspect ratio not kept); crop or pad them to squares first to avoid this",
          UserWarning, stacklevel=2)
  if isinstance(images, np.ndarray):
    return resize_images(images, size, rule)
  out = [resize_images(im[None], size, rule)[0] for im in images]
  if len({im.shape for im in out}) != 1:
    raise UserInputError("images", f"with the {rule!r} resize rule images of different aspect "
                         "ratios get different shapes and cannot be batched; use the 'square' rule")
  return np.stack(out)
