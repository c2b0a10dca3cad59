"""File formats of the user-facing inputs (images, human matrices) and run folders."""

import json
import os
import struct
import types
import zlib

import numpy as np
import pytest
import scipy.io
from PIL import Image

import ais_jax.io
from ais_jax.errors import UserInputError
from ais_jax.io import human as human_io
from ais_jax.io import images as images_io
from ais_jax.io import runs

RNG = np.random.default_rng(0)


def _rgb(h=6, w=6, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_rgb16(path, pixels):
  """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
  h, w, _ = pixels.shape
  raw = b"".join(b"\x00" + pixels[i].astype(">u2").tobytes() for i in range(h))

  def chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# ---------------------------------------------------------------------------------- images --

def test_png_rgb_and_sorted_plain_lexicographic_order(tmp_path):
  files = {"b.png": _rgb(seed=1), "a10.png": _rgb(seed=2), "a2.png": _rgb(seed=3),
           "A.PNG": _rgb(seed=4)}
  for name, px in files.items():
    Image.fromarray(px).save(tmp_path / name, format="PNG")
  (tmp_path / "notes.txt").write_text("not an image")
  (tmp_path / "sub.png").mkdir()  # A folder with an image-like name is not an image.
  images, names = images_io.load_images(str(tmp_path))
  assert names == ["A.PNG", "a10.png", "a2.png", "b.png"]  # Code point order, not natural order.
  assert images.dtype == np.uint8 and images.shape == (4, 6, 6, 3)
  for i, name in enumerate(names):
    np.testing.assert_array_equal(images[i], files[name])


def test_grayscale_jpeg_becomes_three_equal_channels(tmp_path):
  gray = RNG.integers(0, 256, (16, 16), dtype=np.uint8)
  Image.fromarray(gray, "L").save(tmp_path / "g.jpg", quality=95)
  decoded = np.asarray(Image.open(tmp_path / "g.jpg"))  # Pillow's own decode, mode L.
  images, _ = images_io.load_images(str(tmp_path))
  assert images.shape == (1, 16, 16, 3)
  for c in range(3):
    np.testing.assert_array_equal(images[0, ..., c], decoded)


def test_rgba_and_la_composite_on_white(tmp_path):
  rgba = np.zeros((2, 3, 4), np.uint8)
  rgba[..., :3] = [[[10, 20, 30]]]
  rgba[..., 3] = [[0, 255, 128], [64, 200, 1]]
  Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
  out = images_io.read_image_file(str(tmp_path / "a.png"))
  alpha = rgba[..., 3:].astype(int)
  # Integer reference: rgb*a/255 + 255*(255-a)/255, rounded half up (no ties occur here).
  want = (rgba[..., :3].astype(int) * alpha + 255 * (255 - alpha) + 127) // 255
  np.testing.assert_array_equal(out, want)
  assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [10, 20, 30]
  la = np.stack([np.full((2, 2), 40, np.uint8), np.array([[0, 255], [255, 0]], np.uint8)], -1)
  Image.fromarray(la, "LA").save(tmp_path / "la.png")
  out = images_io.read_image_file(str(tmp_path / "la.png"))
  assert out[0, 0].tolist() == [255] * 3 and out[0, 1].tolist() == [40] * 3


def test_palette_images_use_palette_colours_and_transparency(tmp_path):
  palette = [255, 0, 0, 0, 128, 255, 7, 8, 9] + [0] * (256 * 3 - 9)
  index = np.array([[0, 1], [2, 1]], np.uint8)
  im = Image.fromarray(index, "P")
  im.putpalette(palette)
  im.save(tmp_path / "p.png")
  out = images_io.read_image_file(str(tmp_path / "p.png"))
  np.testing.assert_array_equal(out, np.array(palette[:9], np.uint8).reshape(3, 3)[index])
  im.save(tmp_path / "pt.gif", transparency=1)  # Index 1 transparent -> white.
  out = images_io.read_image_file(str(tmp_path / "pt.gif"))
  assert out[0, 0].tolist() == [255, 0, 0] and out[0, 1].tolist() == [255, 255, 255]
  assert out[1, 0].tolist() == [7, 8, 9]


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
  values = np.array([[0, 257, 1000, 32768], [40000, 65280, 65534, 65535]], np.uint16)
  Image.fromarray(values).save(tmp_path / "g16.png")
  Image.fromarray(values).save(tmp_path / "g16.tif")
  want = np.floor(values.astype(np.float64) / 65535 * 255 + 0.5).astype(np.uint8)
  assert want.tolist()[1] == [156, 254, 255, 255]  # Clipping would give 255 everywhere > 255.
  for name in ("g16.png", "g16.tif"):
    out = images_io.read_image_file(str(tmp_path / name))
    for c in range(3):
      np.testing.assert_array_equal(out[..., c], want)


def test_16bit_rgb_png_is_scaled(tmp_path):
  pixels = RNG.integers(0, 65536, (3, 4, 3)).astype(np.uint16)
  _png_rgb16(tmp_path / "rgb16.png", pixels)
  out = images_io.read_image_file(str(tmp_path / "rgb16.png"))
  np.testing.assert_array_equal(out, (pixels >> 8).astype(np.uint8))
  exact = np.floor(pixels / 65535 * 255 + 0.5)
  assert np.abs(out - exact).max() <= 1


def test_unreadable_file_is_named(tmp_path):
  Image.fromarray(_rgb()).save(tmp_path / "good.png")
  (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
  with pytest.raises(UserInputError, match="bad.jpg.*cannot read"):
    images_io.load_images(str(tmp_path))
  # A truncated PNG fails too (decoding, not only identification).
  good = (tmp_path / "good.png").read_bytes()
  (tmp_path / "bad.jpg").unlink()
  (tmp_path / "cut.png").write_bytes(good[:len(good) // 2])
  with pytest.raises(UserInputError, match="cut.png"):
    images_io.load_images(str(tmp_path))


def test_image_list_order_and_errors(tmp_path):
  d = tmp_path / "imgs"
  d.mkdir()
  for i, name in enumerate(["x.png", "y.png", "z.png"]):
    Image.fromarray(_rgb(seed=i)).save(d / name)
  listing = tmp_path / "order.txt"
  listing.write_text("z.png\n\n  x.png \n")
  images, names = images_io.load_images(str(d), image_list=str(listing))
  assert names == ["z.png", "x.png"]
  np.testing.assert_array_equal(images[0], _rgb(seed=2))
  np.testing.assert_array_equal(images[1], _rgb(seed=0))
  listing.write_text("z.png\nmissing.png\n")
  with pytest.raises(UserInputError, match=r"order.txt.*missing.png"):
    images_io.load_images(str(d), image_list=str(listing))
  listing.write_text("z.png\nz.png\n")
  with pytest.raises(UserInputError, match="more than once"):
    images_io.load_images(str(d), image_list=str(listing))


def test_npy_images_and_errors(tmp_path):
  arr = RNG.integers(0, 256, (3, 5, 5, 3), dtype=np.uint8)
  np.save(tmp_path / "ok.npy", arr)
  images, names = images_io.load_images(str(tmp_path / "ok.npy"))
  np.testing.assert_array_equal(images, arr)
  assert names == ["ok.npy[0]", "ok.npy[1]", "ok.npy[2]"]
  np.save(tmp_path / "f.npy", arr.astype(np.float32))
  with pytest.raises(UserInputError, match=r"f.npy.*uint8.*float32"):
    images_io.load_images(str(tmp_path / "f.npy"))
  np.save(tmp_path / "s.npy", arr[..., :1])
  with pytest.raises(UserInputError, match=r"s.npy.*\[n, H, W, 3\]"):
    images_io.load_images(str(tmp_path / "s.npy"))
  with pytest.raises(UserInputError, match="image list"):
    images_io.load_images(str(tmp_path / "ok.npy"), image_list=str(tmp_path / "l.txt"))
  with pytest.raises(UserInputError, match="no such file"):
    images_io.load_images(str(tmp_path / "nope"))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(UserInputError, match="no image files"):
    images_io.load_images(str(empty))


def test_mixed_sizes_list_fit_to_model_and_squash_warning(tmp_path):
  Image.fromarray(_rgb(8, 8, seed=1)).save(tmp_path / "a.png")
  Image.fromarray(_rgb(10, 6, seed=2)).save(tmp_path / "b.png")  # 6 wide, 10 high.
  images, names = images_io.load_images(str(tmp_path))
  assert isinstance(images, list) and [im.shape for im in images] == [(8, 8, 3), (10, 6, 3)]
  spec = types.SimpleNamespace(input_size=8, resize="square")
  with pytest.warns(UserWarning, match=r"1 of 2 images are not square.*b.png \(6x10\).*squash"):
    out = images_io.fit_to_model(images, spec, names=names)
  assert out.shape == (2, 8, 8, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[0], images[0])  # Already at size: not resampled.
  want_b = np.asarray(Image.fromarray(images[1]).resize((8, 8), Image.BILINEAR))
  np.testing.assert_array_equal(out[1], want_b)
  same = np.stack([_rgb(8, 8, seed=5)] * 2)
  assert images_io.fit_to_model(same, spec) is same  # No copy, no resampling.


# ----------------------------------------------------------------------------------- human --

def _human(n=5, seed=0):
  x = np.random.default_rng(seed).normal(size=(n, n))
  return x + x.T


def test_human_npy_and_dissimilarity(tmp_path):
  h = _human()
  np.save(tmp_path / "h.npy", h)
  np.testing.assert_array_equal(human_io.load_human(str(tmp_path / "h.npy")), h)
  got = human_io.load_human(str(tmp_path / "h.npy"), kind="dissimilarity")
  np.testing.assert_array_equal(got, -h)
  with pytest.raises(UserInputError, match="human_kind"):
    human_io.load_human(str(tmp_path / "h.npy"), kind="distance")


def test_human_csv_missing_entries(tmp_path):
  h = _human(6)
  h[0, 3] = h[3, 0] = np.nan
  h[1, 4] = h[4, 1] = np.nan
  lines = []
  for i in range(6):
    fields = [repr(float(v)) for v in h[i]]
    if i in (0, 3):
      fields[3 - i if i == 0 else 0] = "NaN" if i == 0 else "nan"
    if i in (1, 4):
      fields[4 if i == 1 else 1] = ""  # Empty field = missing.
    lines.append(", ".join(fields))
  (tmp_path / "h.csv").write_text("\n".join(lines) + "\n\n")
  got = human_io.load_human(str(tmp_path / "h.csv"), n_images=6)
  np.testing.assert_array_equal(np.isnan(got), np.isnan(h))
  np.testing.assert_array_equal(np.nan_to_num(got), np.nan_to_num(h))


def test_human_csv_errors(tmp_path):
  (tmp_path / "head.csv").write_text("a,b,c,d\n1,2,3,4\n")
  with pytest.raises(UserInputError, match=r"head.csv.*line 1, column 1.*'a' is not a number"):
    human_io.load_human(str(tmp_path / "head.csv"))
  (tmp_path / "rag.csv").write_text("1,2,3,4\n1,2,3\n")
  with pytest.raises(UserInputError, match=r"rag.csv.*line 2 has 3"):
    human_io.load_human(str(tmp_path / "rag.csv"))
  (tmp_path / "h.txt").write_text("1")
  with pytest.raises(UserInputError, match="unknown extension"):
    human_io.load_human(str(tmp_path / "h.txt"))


def test_human_mat_with_and_without_key(tmp_path):
  h, g = _human(5, 1), _human(5, 2)
  scipy.io.savemat(tmp_path / "one.mat", {"rdm": h, "labels": np.arange(5.0)[None]})
  np.testing.assert_array_equal(human_io.load_human(str(tmp_path / "one.mat")), h)
  scipy.io.savemat(tmp_path / "two.mat", {"sim_a": h, "sim_b": g, "name": "x"})
  with pytest.raises(UserInputError, match=r"two.mat.*2 candidate.*'sim_a', 'sim_b'.*human_key"):
    human_io.load_human(str(tmp_path / "two.mat"))
  np.testing.assert_array_equal(human_io.load_human(str(tmp_path / "two.mat"), key="sim_b"), g)
  np.testing.assert_array_equal(
      human_io.load_human(str(tmp_path / "two.mat"), key="sim_b", kind="dissimilarity"), -g)
  with pytest.raises(UserInputError, match=r"no variable 'sim_c'"):
    human_io.load_human(str(tmp_path / "two.mat"), key="sim_c")
  with pytest.raises(UserInputError, match=r"'name' is not a numeric 2-D"):
    human_io.load_human(str(tmp_path / "two.mat"), key="name")


@pytest.mark.parametrize("case, pattern", [
    ("not_square", "square"),
    ("wrong_n", "cohort has 6 images"),
    ("inf", "infinite"),
    ("asymmetric", "not symmetric"),
    ("nan_pattern", "missing .NaN. pattern"),
    ("few_finite", "fewer than 3"),
    ("constant_row", "constant"),
])
def test_human_validation_errors_name_the_file(tmp_path, case, pattern):
  h = _human(5)
  if case == "not_square":
    h = h[:, :4]
  elif case == "inf":
    h[0, 1] = h[1, 0] = np.inf
  elif case == "asymmetric":
    h[0, 1] += 1.0
  elif case == "nan_pattern":
    h[0, 1] = np.nan
  elif case == "few_finite":
    h[0, 1:4] = h[1:4, 0] = np.nan
  elif case == "constant_row":
    h[0, 1:] = h[1:, 0] = 2.5
  np.save(tmp_path / "bad.npy", h)
  with pytest.raises(UserInputError, match=f"bad.npy: .*{pattern}"):
    human_io.load_human(str(tmp_path / "bad.npy"), n_images=6 if case == "wrong_n" else None)


# ------------------------------------------------------------------------------------ runs --

def _arrays():
  per_image = RNG.normal(size=(4, 3))
  per_image[1, 2] = np.nan
  return {"per_image_ais": per_image, "cohort_ais": RNG.normal(size=3),
          "embeddings": RNG.normal(size=(4, 5)).astype(np.float32),
          "heatmaps": RNG.random((4, 2, 2)).astype(np.float32)}


def test_write_load_round_trip(tmp_path):
  arrays = _arrays()
  out = str(tmp_path / "run")
  summary = {"value": np.float64(np.nan), "n": np.int64(4), "nested": {"t": (1, 2.5)}}
  written = runs.write_run(out, arrays, summary, image_names=["a.png", "b c.png", "d", "e"])
  run = ais_jax.io.load_run(out)
  for name, value in arrays.items():
    assert run[name].dtype == value.dtype
    np.testing.assert_array_equal(run[name], value)
  assert run["images"] == ["a.png", "b c.png", "d", "e"]
  assert run["summary"] == written
  raw = json.loads((tmp_path / "run" / "summary.json").read_text())  # Strict JSON: NaN -> null.
  assert raw["value"] is None and raw["n"] == 4 and raw["nested"] == {"t": [1, 2.5]}
  assert raw["schema_version"] == runs.SCHEMA_VERSION
  assert raw["files"]["per_image_ais.npy"] == {
      "shape": [4, 3], "dtype": "float64",
      "sha256": runs.sha256_file(os.path.join(out, "per_image_ais.npy"))}
  assert not [f for f in os.listdir(out) if ".tmp-" in f]


def test_existing_run_is_not_touched_without_overwrite(tmp_path):
  out = tmp_path / "run"
  runs.write_run(str(out), _arrays(), {"first": True})
  before = {f: (out / f).read_bytes() for f in os.listdir(out)}
  with pytest.raises(UserInputError,
                     match=r"run: output folder exists and is not empty.*--overwrite"):
    runs.write_run(str(out), {"cohort_ais": np.zeros(3)}, {"first": False})
  assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before
  (tmp_path / "file").write_text("x")
  with pytest.raises(UserInputError, match="not a folder"):
    runs.write_run(str(tmp_path / "file"), {}, {}, overwrite=True)
  # With overwrite: replaced, and an old feature_maps.npy the new run does not write is removed.
  arrays = dict(_arrays(), feature_maps=np.ones((4, 2, 2, 3), np.float32))
  runs.write_run(str(out), arrays, {"second": True}, overwrite=True)
  assert "feature_maps" in ais_jax.io.load_run(str(out))
  runs.write_run(str(out), {"cohort_ais": np.zeros(3)}, {"third": True}, overwrite=True)
  run = ais_jax.io.load_run(str(out))
  assert not (out / "feature_maps.npy").exists() and "feature_maps" not in run
  assert run["summary"]["third"] and run["images"] == []


def test_extra_files_are_swapped_in_with_the_run_and_listed(tmp_path):
  """write_run(extra_files=...): figures written in the staging folder are listed with their
  sha256 (load_run verifies them); a failure there leaves the old run exactly as it was."""
  import hashlib
  out = tmp_path / "run"
  png = b"\x89PNG fake bytes"

  def figures(folder):
    os.makedirs(os.path.join(folder, "overlays"))
    with open(os.path.join(folder, "overlays", "a.png"), "wb") as f:
      f.write(png)
    with open(os.path.join(folder, "datasets.txt"), "w") as f:
      f.write("x\ny\n")
    return [os.path.join("overlays", "a.png"), "datasets.txt"]

  written = runs.write_run(str(out), _arrays(), {"first": True}, extra_files=figures)
  assert written["files"]["overlays/a.png"] == {"bytes": len(png),
                                                "sha256": hashlib.sha256(png).hexdigest()}
  assert written["files"]["datasets.txt"]["sha256"] == hashlib.sha256(b"x\ny\n").hexdigest()
  assert ais_jax.io.load_run(str(out))["summary"]["first"]
  (out / "overlays" / "a.png").write_bytes(b"edited")
  with pytest.raises(UserInputError, match="overlays/a.png does not match the sha256"):
    ais_jax.io.load_run(str(out))
  (out / "overlays" / "a.png").write_bytes(png)
  before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

  def failing(folder):
    figures(folder)
    raise UserInputError("--categories", "no category for 1 of 4 images")

  with pytest.raises(UserInputError, match="no category"):
    runs.write_run(str(out), _arrays(), {"second": True}, overwrite=True, extra_files=failing)
  assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
  assert [p.name for p in tmp_path.iterdir()] == ["run"]  # No staging folder left behind.


def test_interrupted_write_leaves_no_half_file(tmp_path, monkeypatch):
  out = tmp_path / "run"
  first = _arrays()
  runs.write_run(str(out), first, {"first": True})
  real_save = np.save

  def failing_save(f, array, allow_pickle=False):
    if array.shape == (4, 5):  # embeddings: die after writing part of the file.
      f.write(b"\x93NUMPY partial")
      raise KeyboardInterrupt
    return real_save(f, array, allow_pickle=allow_pickle)

  monkeypatch.setattr(runs.np, "save", failing_save)
  second = {k: v + 1 for k, v in first.items()}
  with pytest.raises(KeyboardInterrupt):
    runs.write_run(str(out), second, {"first": False}, overwrite=True)
  monkeypatch.undo()
  assert not [f for f in os.listdir(out) if ".tmp-" in f]
  # The new run was built beside the old one and never swapped in: the old run is intact.
  assert sorted(os.listdir(tmp_path)) == ["run"]
  run = ais_jax.io.load_run(str(out))
  assert run["summary"]["first"]
  for name, value in first.items():
    np.testing.assert_array_equal(run[name], value)
