"""TranSalNet_Res in Flax against a PyTorch reference of the authors' network.

How the reference is known to be the authors' network and not a re-reading of our own: its state
dict has exactly the keys and shapes of the authors' module (tests/data/transalnet_res_keys.json,
written by tests/data/make_transalnet_keys.py from github.com/LJOVO/TranSalNet at a2aba83), its
encoder IS torchvision's ResNet-50 (the authors vendor an unchanged copy), and its forward follows
their ``TranSalNet_Res.py`` and ``utils/TransformerEncoder.py`` line by line in torch idiom. Our
converter then maps that state dict, so the same table serves the released file.

The test-time path is checked against the authors' own steps written with torch/torchvision/cv2
here (``ToPILImage``, ``cv2.resize``), not with the library's helpers.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (a test dependency) is missing")

from ais_jax import models, transalnet  # noqa: E402
from ais_jax.io import pth  # noqa: E402
from convert import tables  # noqa: E402

KEYS_FILE = os.path.join(os.path.dirname(__file__), "data", "transalnet_res_keys.json")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------------------------
# The PyTorch reference (the authors' module structure and names)


class _Attention(nn.Module):
  def __init__(self, hidden, heads):
    super().__init__()
    self.heads, self.size = heads, hidden // heads
    self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
    self.out = nn.Linear(hidden, hidden)

  def forward(self, x):
    b, t, _ = x.shape
    split = lambda y: y.view(b, t, self.heads, self.size).permute(0, 2, 1, 3)
    q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.size), dim=-1)
    return self.out((probs @ v).permute(0, 2, 1, 3).reshape(b, t, -1))


class _Mlp(nn.Module):
  def __init__(self, hidden):
    super().__init__()
    self.fc1, self.fc2 = nn.Linear(hidden, 4 * hidden), nn.Linear(4 * hidden, hidden)

  def forward(self, x):
    return self.fc2(nn.functional.gelu(self.fc1(x)))


class _Block(nn.Module):
  def __init__(self, hidden, heads):
    super().__init__()
    self.ffn_norm = nn.LayerNorm(hidden, eps=1e-6)
    self.ffn = _Mlp(hidden)
    self.attn = _Attention(hidden, heads)
    self.attention_norm = nn.LayerNorm(hidden, eps=1e-6)

  def forward(self, x):
    x = x + self.attn(self.attention_norm(x))
    return x + self.ffn(self.ffn_norm(x))


class _Encoder(nn.Module):
  def __init__(self, hidden, heads):
    super().__init__()
    self.layer = nn.ModuleList([_Block(hidden, heads) for _ in range(2)])
    self.encoder_norm = nn.LayerNorm(hidden, eps=1e-6)

  def forward(self, x):
    for block in self.layer:
      x = block(x)
    return self.encoder_norm(x)


class _TransEncoder(nn.Module):
  def __init__(self, in_channels, tokens, hidden, heads):
    super().__init__()
    self.patch_embeddings = nn.Conv2d(in_channels, hidden, kernel_size=1)
    self.position_embeddings = nn.Parameter(torch.zeros(1, tokens, hidden))
    self.transformer_encoder = _Encoder(hidden, heads)

  def forward(self, x):
    a, b = x.shape[2:]
    tokens = self.patch_embeddings(x).flatten(2).transpose(-1, -2) + self.position_embeddings
    y = self.transformer_encoder(tokens)
    return y.permute(0, 2, 1).contiguous().view(y.shape[0], -1, a, b)


class _Decoder(nn.Module):
  def __init__(self):
    super().__init__()
    chans = [768, 768, 512, 256, 128, 64, 32, 1]
    for i in range(7):
      setattr(self, f"conv{i + 1}", nn.Conv2d(chans[i], chans[i + 1], 3, padding=1))
    for i in range(6):
      setattr(self, f"batchnorm{i + 1}", nn.BatchNorm2d(chans[i + 1]))
    self.TransEncoder1 = _TransEncoder(2048, 9 * 12, 768, 12)
    self.TransEncoder2 = _TransEncoder(1024, 18 * 24, 768, 12)
    self.TransEncoder3 = _TransEncoder(512, 36 * 48, 512, 8)

  def forward(self, x3, x4, x5):
    up = lambda y: nn.functional.interpolate(y, scale_factor=2, mode="nearest")
    relu = torch.relu
    x5 = up(relu(self.batchnorm1(self.conv1(self.TransEncoder1(x5)))))
    x4 = up(relu(self.batchnorm2(self.conv2(relu(x5 * self.TransEncoder2(x4))))))
    x3 = up(relu(self.batchnorm3(self.conv3(relu(x4 * self.TransEncoder3(x3))))))
    x2 = up(relu(self.batchnorm4(self.conv4(x3))))
    x2 = relu(self.batchnorm5(self.conv5(x2)))
    x1 = relu(self.batchnorm6(self.conv6(up(x2))))
    return torch.sigmoid(self.conv7(x1))


class _ResEncoder(nn.Module):
  def __init__(self):
    super().__init__()
    self.encoder = nn.ModuleList(list(torchvision.models.resnet50().children())[:8])

  def forward(self, x):
    outputs = []
    for i, layer in enumerate(self.encoder):
      x = layer(x)
      if i in (5, 6, 7):
        outputs.append(x)
    return outputs


class TorchTranSalNetRes(nn.Module):
  def __init__(self):
    super().__init__()
    self.encoder = _ResEncoder()
    self.decoder = _Decoder()

  def forward(self, x):
    return self.decoder(*self.encoder(x))


def _randomised_reference(seed=0):
  torch.manual_seed(seed)
  net = TorchTranSalNetRes().eval()
  with torch.no_grad():  # non-trivial statistics and position embeddings, so the mapping matters
    for name, buf in net.named_buffers():
      if name.endswith("running_mean"):
        buf.normal_(0, 0.1)
      elif name.endswith("running_var"):
        buf.uniform_(0.5, 1.5)
    for name, p in net.named_parameters():
      if name.endswith("position_embeddings"):
        p.normal_(0, 0.5)
      elif "batchnorm" in name or name.endswith("bn3.weight"):
        p.uniform_(0.5, 1.5) if name.endswith("weight") else p.normal_(0, 0.1)
  return net


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  net = _randomised_reference()
  path = str(tmp_path_factory.mktemp("tsn") / "TranSalNet_Res.pth")
  torch.save(net.state_dict(), path)
  state = pth.load_state_dict(path)                 # the torch-free reader, as users' files go
  variables = tables.get("transalnet_res")(state)
  module = models.get("transalnet_res").build()
  return net, module, variables


def test_reference_has_exactly_the_authors_keys_and_shapes():
  authors = {k: tuple(s) for k, s in json.load(open(KEYS_FILE))}
  ours = {k: tuple(v.shape) for k, v in TorchTranSalNetRes().state_dict().items()}
  assert ours == authors


def test_converter_checks_every_key(converted):
  net, _, _ = converted
  state = {k: v.numpy() for k, v in net.state_dict().items()}
  state.pop("decoder.TransEncoder2.position_embeddings")
  state["decoder.conv7.weight"] = np.zeros((1, 32, 5, 5), np.float32)
  with pytest.raises(ValueError) as info:
    tables.get("transalnet_res")(state)
  message = str(info.value)
  assert "position_embeddings" in message and "decoder.conv7.weight" in message


def _images():
  rng = np.random.default_rng(0)
  tall = rng.integers(0, 256, (150, 100, 3), np.uint8)      # portrait: fits the height
  wide = rng.integers(0, 256, (120, 200, 3), np.uint8)      # landscape: fits the width
  return [tall, wide]


def _authors_canvas(rgb):
  """utils/data_process.preprocess_img, on an image as cv2.imread returns it (BGR)."""
  img = np.ascontiguousarray(rgb[..., ::-1])
  padded = np.ones((288, 384, 3), dtype=np.uint8)
  rows_rate, cols_rate = img.shape[0] / 288, img.shape[1] / 384
  if rows_rate > cols_rate:
    new_cols = (img.shape[1] * 288) // img.shape[0]
    img = cv2.resize(img, (new_cols, 288))
    padded[:, ((384 - new_cols) // 2):((384 - new_cols) // 2 + new_cols)] = img
  else:
    new_rows = (img.shape[0] * 384) // img.shape[1]
    img = cv2.resize(img, (384, new_rows))
    padded[((288 - new_rows) // 2):((288 - new_rows) // 2 + new_rows), :] = img
  return padded


def _authors_postprocess(pred_tensor, shape):
  """testing.ipynb: ToPILImage of the squeezed prediction, then postprocess_img."""
  pred = np.array(torchvision.transforms.ToPILImage()(pred_tensor.squeeze()))
  rows, cols = shape
  if rows / pred.shape[0] > cols / pred.shape[1]:
    new_cols = (pred.shape[1] * rows) // pred.shape[0]
    pred = cv2.resize(pred, (new_cols, rows))
    return pred[:, ((pred.shape[1] - cols) // 2):((pred.shape[1] - cols) // 2 + cols)]
  new_rows = (pred.shape[0] * cols) // pred.shape[1]
  pred = cv2.resize(pred, (cols, new_rows))
  return pred[((pred.shape[0] - rows) // 2):((pred.shape[0] - rows) // 2 + rows), :]


def test_raw_output_and_8bit_maps_match_the_authors_path(converted):
  net, module, variables = converted
  images = _images()
  canvases = np.stack([transalnet.letterbox(im) for im in images])
  want_canvases = np.stack([_authors_canvas(im) for im in images])
  np.testing.assert_array_equal(canvases, want_canvases)
  raw = transalnet.predict_raw(module, variables, canvases, batch_size=2)
  x = torch.from_numpy(want_canvases.astype(np.float64) / 255.).permute(0, 3, 1, 2).float()
  with torch.no_grad():
    want = net(x)                                          # [n, 1, 288, 384]
  err = np.max(np.abs(raw - want[:, 0].numpy()))
  assert raw.shape == (2, 288, 384) and raw.dtype == np.float32
  assert err <= 1e-5, f"raw saliency max abs error {err:.2e}"
  assert np.ptp(raw) > 1e-3  # a non-trivial map (not saturated)
  for i, im in enumerate(images):
    ours = transalnet.postprocess(raw[i], im.shape[:2])
    theirs = _authors_postprocess(want[i], im.shape[:2])
    assert ours.shape == theirs.shape == im.shape[:2]
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    # Levels agree except where float rounding flips a quantisation step.
    assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3, (diff.max(), (diff > 0).mean())


def test_padded_batches_compile_once(converted):
  _, module, variables = converted
  canvases = np.stack([transalnet.letterbox(im) for im in _images()] * 2)[:3]
  apply = transalnet._jitted_apply(module)  # pylint: disable=protected-access
  before = apply._cache_size()
  transalnet.predict_raw(module, variables, canvases, batch_size=2)  # 2 + 1 padded
  assert apply._cache_size() - before <= 1


def test_saliency_comparison_end_to_end_with_transalnet(converted, tmp_path):
  """python -m experiments.saliency --saliency=transalnet on converted random weights: RR table,
  PR curves, contours, and saliency_raw.npy equal to the PyTorch reference's output."""
  from ais_jax.io import runs
  from ais_jax.io import weights as weights_io
  net, _, _ = converted
  torch.save(net.state_dict(), tmp_path / "TranSalNet_Res.pth")
  checkpoint = weights_io.convert_file(tmp_path / "TranSalNet_Res.pth", tmp_path / "tsn",
                                       arch="transalnet_res")
  rng = np.random.default_rng(5)
  images = rng.integers(0, 256, (3, 60, 80, 3), dtype=np.uint8)
  np.save(tmp_path / "images.npy", images)
  run = tmp_path / "run"
  runs.write_run(str(run), {"heatmaps": rng.random((3, 4, 4)).astype(np.float32)},
                 {"flags": {"images": str(tmp_path / "images.npy")}},
                 image_names=[f"im{i}.png" for i in range(3)])
  out = tmp_path / "out"
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.saliency", f"--ais_run={run}", "--saliency=transalnet",
       f"--saliency_weights={checkpoint}", f"--out={out}", "--n_examples=2", "--noprogress"],
      cwd=REPO, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-2000:]
  summary = json.load(open(out / "saliency_summary.json"))
  for name in ("rr_table.csv", "rr_per_image.csv", "saliency.npy", "saliency_raw.npy",
               "pr_curves.png", "contours.png", "saliency_summary.json"):
    assert os.path.getsize(out / name) > 0, name
  raw = np.load(out / "saliency_raw.npy")
  x = torch.from_numpy(np.stack([_authors_canvas(im) for im in images]).astype(np.float64)
                       / 255.).permute(0, 3, 1, 2).float()
  with torch.no_grad():
    want = net(x)[:, 0].numpy()
  assert raw.shape == (3, 288, 384) and np.max(np.abs(raw - want)) <= 1e-5
  maps = np.load(out / "saliency.npy")
  assert maps.shape == (3, 60, 80)
  diff = np.abs(maps[1] - _authors_postprocess(torch.from_numpy(want[1]), (60, 80)).astype(float))
  assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3
  assert summary["saliency"] == "transalnet" and summary["saliency_weights"] == checkpoint
  assert len(summary["rr_all_images"]) == 3
  # A checkpoint of another kind of model is refused with one line naming the flag.
  bad = subprocess.run(
      [sys.executable, "-m", "experiments.saliency", f"--ais_run={run}", "--saliency=transalnet",
       "--saliency_weights=efficientnet_lite0_imagenet", f"--out={tmp_path / 'bad'}"],
      cwd=REPO, capture_output=True, text=True, timeout=900)
  assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --saliency_weights")


def test_saliency_weights_are_refused_for_ais(converted, tmp_path):
  """TranSalNet weights given to the AIS pipeline: one clear error, not a failure deep inside."""
  from ais_jax import pipeline
  from ais_jax.errors import UserInputError
  _, module, variables = converted
  spec = models.get("transalnet_res")
  with pytest.raises(UserInputError, match=r"--weights transalnet_res: holds a saliency model "
                                           r".*saliency_weights"):
    pipeline.load_model((spec, variables, {"arch": "transalnet_res"}, module))
