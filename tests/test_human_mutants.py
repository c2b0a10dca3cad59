"""The human-matrix reader's details that mutation testing (experiments/mutation.sh io/human)
showed unchecked: every refusal with its exact message (error messages are user-facing), the
detection of a labelled .csv (text labels, numeric labels that are image names, empty fields), the
reordering of rows and columns to the image order, matching labels to image names and stems, the
--human_labels file, the .mat candidate rule (both sides > 1) and v7.3 files, and the arguments
load_human passes on.

Expected matrices are built by hand, entry by entry from a dict of pairs, never by the reader.
"""

import os

import numpy as np
import pytest
import scipy.io

from ais_jax import validation
from ais_jax.errors import UserInputError
from ais_jax.io import human as human_io

NAMES = ["cat.png", "dog.png", "eel.png", "fox.png", "gnu.png"]
STEMS = [os.path.splitext(n)[0] for n in NAMES]


def _similarity(n=5, seed=0):
  """A valid similarity [n, n]: symmetric, distinct off-diagonal values, the diagonal the largest."""
  x = np.random.default_rng(seed).normal(size=(n, n))
  s = np.round(x + x.T, 3)
  np.fill_diagonal(s, 10.0)
  return s


def _error(fn, *args, **kwargs) -> str:
  with pytest.raises(UserInputError) as info:
    fn(*args, **kwargs)
  return str(info.value)


def _write_labelled_csv(path, matrix, row_labels, col_labels, sep=","):
  lines = [sep.join([""] + list(col_labels))]
  for label, row in zip(row_labels, matrix):
    lines.append(sep.join([label] + [repr(float(v)) for v in row]))
  path.write_text("\n".join(lines) + "\n")


# -------------------------------------------------------------------------------------- .npy --
def test_npy_refusals_name_the_file_and_numpy_reason(tmp_path):
  path = str(tmp_path / "obj.npy")
  np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
  with pytest.raises(ValueError) as numpy_error:
    np.load(path, allow_pickle=False)
  assert _error(human_io.load_human, path) == (
      f"{path}: cannot read it as a .npy array (ValueError: {numpy_error.value})")
  garbage = tmp_path / "garbage.npy"
  garbage.write_bytes(b"not a numpy file at all")
  with pytest.raises(Exception) as numpy_error:
    np.load(str(garbage), allow_pickle=False)
  assert _error(human_io.load_human, str(garbage)) == (
      f"{garbage}: cannot read it as a .npy array ({type(numpy_error.value).__name__}: "
      f"{numpy_error.value})")


def test_npy_non_numeric_dtype_is_refused_and_booleans_integers_are_float64(tmp_path):
  np.save(tmp_path / "text.npy", np.array([["a", "b"], ["c", "d"]]))
  path = str(tmp_path / "text.npy")
  assert _error(human_io.load_human, path) == f"{path}: expected a numeric matrix, got dtype <U1"
  ints = np.array([[9, 1, 2, 3], [1, 9, 4, 5], [2, 4, 9, 6], [3, 5, 6, 9]], np.int16)
  np.save(tmp_path / "ints.npy", ints)
  got = human_io.load_human(str(tmp_path / "ints.npy"))
  assert got.dtype == np.float64
  np.testing.assert_array_equal(got, ints.astype(float))


def test_upper_case_extension_and_path_objects(tmp_path):
  s = _similarity()
  np.save(tmp_path / "h.npy", s)
  os.rename(tmp_path / "h.npy", tmp_path / "H.NPY")
  np.testing.assert_array_equal(human_io.load_human(tmp_path / "H.NPY"), s)


# ------------------------------------------------------------------------- argument checks --
def test_argument_refusals_exact_messages(tmp_path):
  s = _similarity()
  np.save(tmp_path / "h.npy", s)
  path = str(tmp_path / "h.npy")
  assert _error(human_io.load_human, path, kind="distance") == (
      "human_kind: 'distance' is not one of ('similarity', 'dissimilarity')")
  missing = str(tmp_path / "none.npy")
  assert _error(human_io.load_human, missing) == (
      f"{missing}: no such file; give a .npy, .csv or .mat matrix [n, n]")
  assert _error(human_io.load_human, str(tmp_path)) == (
      f"{tmp_path}: no such file; give a .npy, .csv or .mat matrix [n, n]")
  assert _error(human_io.load_human, path, key="rdm") == (
      f"{path}: a variable name (key 'rdm') only applies to .mat files")
  (tmp_path / "h.txt").write_text("1,2\n2,1\n")
  assert _error(human_io.load_human, str(tmp_path / "h.txt")) == (
      f"{tmp_path / 'h.txt'}: unknown extension '.txt'; expected one of ('.npy', '.csv', '.mat')")
  # Both stated kinds are accepted; an empty key counts as no key.
  np.testing.assert_array_equal(human_io.load_human(path, kind="similarity", key=""), s)


def test_validation_message_keeps_one_file_name_and_kind_rule_follows_stated_kind(tmp_path):
  s = _similarity()
  s[0, 1] += 1.0
  np.save(tmp_path / "asym.npy", s)
  path = str(tmp_path / "asym.npy")
  message = _error(human_io.load_human, path)
  assert message.startswith(f"{path}: matrix is not symmetric: 1 pairs differ")
  assert message.count(path) == 1
  np.save(tmp_path / "small.npy", _similarity(5))
  small = str(tmp_path / "small.npy")
  assert _error(human_io.load_human, small, n_images=6) == (
      f"{small}: matrix is 5x5 but the cohort has 6 images; the matrix must list the images in "
      "the same order as the images")
  # A distance matrix (zero diagonal): unstated -> refused; stated similarity -> warning.
  d = np.abs(_similarity())
  np.fill_diagonal(d, 0.0)
  np.save(tmp_path / "d.npy", d)
  dpath = str(tmp_path / "d.npy")
  assert "--human_kind=dissimilarity" in _error(human_io.load_human, dpath)
  with pytest.warns(validation.HumanKindWarning):
    np.testing.assert_array_equal(human_io.load_human(dpath, kind="similarity"), d)
  np.testing.assert_array_equal(human_io.load_human(dpath, kind="dissimilarity"), -d)


# -------------------------------------------------------------------------------------- .csv --
def test_csv_bom_spaces_missing_first_column_and_trailing_blank_lines(tmp_path):
  s = _similarity()
  s[1, 0] = s[0, 1] = np.nan  # Missing pair in the first column and the header row.
  lines = [", ".join("" if np.isnan(v) else repr(float(v)) for v in row) for row in s]
  (tmp_path / "h.csv").write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n  \r\n\r\n").encode())
  got = human_io.load_human_labelled(str(tmp_path / "h.csv"), image_names=NAMES)
  assert got.labels is None and got.order is None and not got.reordered
  np.testing.assert_array_equal(np.isnan(got.matrix), np.isnan(s))
  np.testing.assert_array_equal(np.nan_to_num(got.matrix), np.nan_to_num(s))


def test_csv_refusals_exact_messages(tmp_path):
  def check(name, text, expected):
    path = tmp_path / name
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    assert _error(human_io.load_human, str(path)) == f"{path}: {expected}"

  check("empty.csv", "", "the file is empty")
  check("blank.csv", "\n  \n\n", "the file is empty")
  try:
    b"\xff\xfe1,2".decode("utf-8-sig")
  except UnicodeDecodeError as e:
    decode_error = e
  check("latin.csv", b"\xff\xfe1,2", f"cannot read it as a text file ({decode_error})")
  check("rag.csv", "1,2,3\n4,5,6\n7,8\n9,1,2\n",
        "rows have different numbers of fields: line 1 has 3, line 3 has 2")
  check("inner_blank.csv", "1,2\n\n3,4\n",
        "rows have different numbers of fields: line 1 has 2, line 2 has 0")
  long_field = "abcdefghijklmnopqrstuvwxyz0123456789"
  check("long.csv", f"1,2,3\n4,{long_field},6\n",
        "line 2, column 2: 'abcdefghijklmnopqrstuvwxyz0123' is not a number; the file must hold "
        "numbers only ('nan' or empty for missing pairs), optionally with a header row and row "
        "labels as pandas' to_csv writes them")
  # Labelled: columns are counted in the file, the label column being column 1.
  check("lab.csv", ",a,b\na,1,x\nb,2,3\n",
        "line 2, column 3: 'x' is not a number; the file must hold numbers only ('nan' or empty "
        "for missing pairs), optionally with a header row and row labels as pandas' to_csv "
        "writes them")


def test_labelled_csv_reorders_rows_and_columns_independently(tmp_path):
  rng = np.random.default_rng(3)
  s = _similarity()  # In the image order NAMES.
  pair = {(a, b): s[i, j] for i, a in enumerate(STEMS) for j, b in enumerate(STEMS)}
  row_labels = [STEMS[k] for k in rng.permutation(5)]
  col_labels = [NAMES[k] for k in (3, 0, 4, 2, 1)]  # Full names, another order.
  in_file = np.array([[pair[r, os.path.splitext(c)[0]] for c in col_labels] for r in row_labels])
  _write_labelled_csv(tmp_path / "lab.csv", in_file, row_labels, col_labels, sep=", ")
  got = human_io.load_human_labelled(str(tmp_path / "lab.csv"), image_names=NAMES, n_images=5)
  np.testing.assert_array_equal(got.matrix, s)
  assert got.labels == row_labels
  np.testing.assert_array_equal(got.order, [row_labels.index(t) for t in STEMS])
  assert got.order.dtype.kind == "i" and got.reordered
  # Dissimilarities are negated after reordering.
  d = 10.0 - in_file
  _write_labelled_csv(tmp_path / "dis.csv", d, row_labels, col_labels)
  got = human_io.load_human(str(tmp_path / "dis.csv"), image_names=NAMES, kind="dissimilarity")
  np.testing.assert_array_equal(got, s - 10.0)
  # Labels already in the image order: labelled, but not reordered.
  _write_labelled_csv(tmp_path / "same.csv", s, STEMS, STEMS)
  got = human_io.load_human_labelled(str(tmp_path / "same.csv"), image_names=NAMES)
  assert got.labels == STEMS and not got.reordered
  np.testing.assert_array_equal(got.order, np.arange(5))
  np.testing.assert_array_equal(got.matrix, s)


def test_labelled_csv_needs_image_names_and_refuses_extra_labels(tmp_path):
  s = _similarity()
  _write_labelled_csv(tmp_path / "lab.csv", s, STEMS, STEMS)
  path = str(tmp_path / "lab.csv")
  assert _error(human_io.load_human, path) == (
      f"{path}: a labelled matrix is matched to the image names, but none are known here "
      "(precomputed --maps, or a .npy --images without --image_list)")
  assert _error(human_io.load_human, path, image_names=NAMES, labels=STEMS) == (
      f"{path}: {path} has its own row and column labels; drop the separate labels")
  (tmp_path / "labels.txt").write_text("\n".join(STEMS))
  labels_file = str(tmp_path / "labels.txt")
  assert _error(human_io.load_human, path, image_names=NAMES, labels=labels_file) == (
      f"{labels_file}: {path} has its own row and column labels; drop the separate labels")


def test_numeric_labels_are_labels_only_when_they_are_the_image_names(tmp_path):
  names = ["001.png", "002.png", "003.png", "004.png", "005.png"]
  s = _similarity()
  order = [2, 0, 4, 1, 3]
  labels = [f"{k + 1:03d}" for k in order]
  _write_labelled_csv(tmp_path / "num.csv", s[np.ix_(order, order)], labels, labels)
  path = str(tmp_path / "num.csv")
  got = human_io.load_human_labelled(path, image_names=names)
  np.testing.assert_array_equal(got.matrix, s)
  assert got.labels == labels
  # Full names with extensions are labels too.
  full = [names[k] for k in order]
  _write_labelled_csv(tmp_path / "full.csv", s[np.ix_(order, order)], full, full)
  np.testing.assert_array_equal(
      human_io.load_human(str(tmp_path / "full.csv"), image_names=names), s)
  # Without image names, or with names they do not match, the same file is numbers only: the
  # header's empty corner is a missing diagonal entry of an (n+1) x (n+1) matrix.
  for image_names in (None, ["a.png", "b.png", "c.png", "d.png", "e.png"]):
    got = human_io.load_human_labelled(path, image_names=image_names)
    assert got.labels is None and got.matrix.shape == (6, 6) and np.isnan(got.matrix[0, 0])
    np.testing.assert_array_equal(got.matrix[0, 1:], [float(l) for l in labels])
    np.testing.assert_array_equal(got.matrix[1:, 0], [float(l) for l in labels])
    np.testing.assert_array_equal(got.matrix[1:, 1:], s[np.ix_(order, order)])
  # Row labels matching but column labels not (or the other way): numbers only too, so the
  # header row and label column are data that differ.
  lines = (tmp_path / "num.csv").read_text().splitlines()
  (tmp_path / "cols.csv").write_text("\n".join([",9,8,7,6,5"] + lines[1:]) + "\n")
  message = _error(human_io.load_human, str(tmp_path / "cols.csv"), image_names=names)
  assert message.startswith(f"{tmp_path / 'cols.csv'}: matrix is not symmetric"), message
  rows = [lines[0]] + [str(9 - k) + line[3:] for k, line in enumerate(lines[1:])]
  (tmp_path / "rows.csv").write_text("\n".join(rows) + "\n")
  message = _error(human_io.load_human, str(tmp_path / "rows.csv"), image_names=names)
  assert message.startswith(f"{tmp_path / 'rows.csv'}: matrix is not symmetric"), message
  # A filled corner makes the header a data row, even when the labels are image names.
  corner = ["0" + lines[0]] + lines[1:]
  (tmp_path / "corner.csv").write_text("\n".join(corner) + "\n")
  got = human_io.load_human(str(tmp_path / "corner.csv"), image_names=names)
  assert got.shape == (6, 6)
  np.testing.assert_array_equal(got[1:, 1:], s[np.ix_(order, order)])
  np.testing.assert_array_equal(got[0, 1:], [float(l) for l in labels])


def test_text_header_alone_or_label_column_alone_makes_a_labelled_csv(tmp_path):
  s = _similarity()
  numbers = [",".join(repr(float(v)) for v in row) for row in s]
  # Header of labels, rows without labels: n + 1 lines of n fields -> not square -> numbers.
  (tmp_path / "head.csv").write_text(",".join(STEMS) + "\n" + "\n".join(numbers) + "\n")
  path = str(tmp_path / "head.csv")
  assert _error(human_io.load_human, path, image_names=NAMES).startswith(
      f"{path}: line 1, column 1: 'cat' is not a number")
  # Text row labels under a numeric header: labelled; the header's numbers then match no image.
  lines = [",1,2,3,4,5"] + [f"{t},{row}" for t, row in zip(STEMS, numbers)]
  (tmp_path / "rowlab.csv").write_text("\n".join(lines) + "\n")
  message = _error(human_io.load_human, str(tmp_path / "rowlab.csv"), image_names=NAMES)
  assert "the labels do not match the images" in message
  assert "labels matching no image ['1', '2', '3', '4', '5']" in message
  # Text column labels over numeric row labels: labelled too.
  lines = ["," + ",".join(STEMS)] + [f"{k},{row}" for k, row in enumerate(numbers)]
  (tmp_path / "collab.csv").write_text("\n".join(lines) + "\n")
  message = _error(human_io.load_human, str(tmp_path / "collab.csv"), image_names=NAMES)
  assert "labels matching no image ['0', '1', '2', '3', '4']" in message


# ---------------------------------------------------------------------------- label lists --
def test_labels_list_or_file_reorder_a_npy(tmp_path):
  s = _similarity()
  order = [4, 2, 0, 3, 1]
  np.save(tmp_path / "h.npy", s[np.ix_(order, order)])
  path = str(tmp_path / "h.npy")
  labels = [STEMS[k] for k in order]
  got = human_io.load_human_labelled(path, image_names=NAMES, labels=tuple(labels))
  np.testing.assert_array_equal(got.matrix, s)
  assert got.labels == labels and isinstance(got.labels, list)
  np.testing.assert_array_equal(got.order, [order.index(i) for i in range(5)])
  # A file: BOM, surrounding spaces and blank lines ignored; a pathlib path works.
  (tmp_path / "labels.txt").write_bytes(
      ("\ufeff" + "\n\n".join(f"  {l} " for l in labels) + "\n\n").encode())
  assert human_io.read_labels(str(tmp_path / "labels.txt")) == labels
  np.testing.assert_array_equal(
      human_io.load_human(path, image_names=NAMES, labels=tmp_path / "labels.txt"), s)


def test_label_refusals_exact_messages(tmp_path):
  s = _similarity()
  np.save(tmp_path / "h.npy", s)
  path = str(tmp_path / "h.npy")
  missing = str(tmp_path / "none.txt")
  try:
    open(missing, encoding="utf-8-sig")
  except OSError as e:
    os_error = e
  assert _error(human_io.read_labels, missing) == (
      f"{missing}: cannot read the labels file ({os_error}); give one image name per line")
  assert _error(human_io.load_human, path, image_names=NAMES, labels=missing) == (
      f"{missing}: cannot read the labels file ({os_error}); give one image name per line")
  (tmp_path / "bad.txt").write_bytes(b"\xff\xfecat\n")
  try:
    b"\xff\xfecat\n".decode("utf-8-sig")
  except UnicodeDecodeError as e:
    decode_error = e
  bad = str(tmp_path / "bad.txt")
  assert _error(human_io.read_labels, bad) == (
      f"{bad}: cannot read the labels file ({decode_error}); give one image name per line")
  assert _error(human_io.load_human, path, labels=STEMS) == (
      f"{path}: a labelled matrix is matched to the image names, but none are known here "
      "(precomputed --maps, or a .npy --images without --image_list)")
  assert _error(human_io.load_human, path, image_names=NAMES, labels=STEMS[:4]) == (
      f"{path}: 4 row / 4 column labels for a matrix of shape [5, 5]")
  (tmp_path / "four.txt").write_text("\n".join(STEMS[:4]))
  four = str(tmp_path / "four.txt")
  assert _error(human_io.load_human, path, image_names=NAMES, labels=four) == (
      f"{four}: 4 row / 4 column labels for a matrix of shape [5, 5]")
  np.save(tmp_path / "vec.npy", np.arange(5.0))
  vec = str(tmp_path / "vec.npy")
  assert _error(human_io.load_human, vec, image_names=NAMES, labels=STEMS) == (
      f"{vec}: 5 row / 5 column labels for a matrix of shape [5]")
  np.save(tmp_path / "rect.npy", np.ones((5, 4)))
  rect = str(tmp_path / "rect.npy")
  assert _error(human_io.load_human, rect, image_names=NAMES, labels=STEMS) == (
      f"{rect}: 5 row / 5 column labels for a matrix of shape [5, 4]")
  wrong = STEMS[:4] + ["yak"]
  assert _error(human_io.load_human, path, image_names=NAMES, labels=wrong) == (
      f"{path}: the labels do not match the images (5 labels, 5 images): images without a label "
      "['gnu.png'], labels matching no image ['yak']; first differences in order: "
      "[\"position 4: image 'gnu.png' vs label 'yak'\"]. Labels must be the image file names or "
      "their stems (with a .npy --images, name the images with --image_list)")


def test_match_labels_order_names_stems_and_numbers():
  np.testing.assert_array_equal(
      human_io.match_labels(["fox", "cat.png", "eel", "gnu.png", "dog"], NAMES, source="s"),
      [1, 4, 2, 0, 3])
  order = human_io.match_labels([3, 1, 2, 4], ["1.png", "2.png", "3.png", "4.png"], source="s")
  np.testing.assert_array_equal(order, [1, 2, 0, 3])
  assert order.dtype.kind == "i"
  # A full-name label wins over a stem: cat.png and cat.jpg share the stem "cat".
  np.testing.assert_array_equal(
      human_io.match_labels(["cat", "cat.png"], ["cat.png", "cat.jpg"], source="s"), [1, 0])


def test_match_labels_refusals_exact_messages():
  assert _error(human_io.match_labels, ["a", "b", "a", "c", "b", "c", "d", "d", "e", "e", "f",
                                        "f"], list("abcdef"), source="src") == (
      "src: duplicate labels ['a', 'b', 'c', 'd', 'e']; each image must appear once")
  images = [f"im{k}.png" for k in range(8)]
  labels = [f"x{k}" for k in range(7)] + ["im7"]
  assert _error(human_io.match_labels, labels, images, source="src") == (
      "src: the labels do not match the images (8 labels, 8 images): images without a label "
      "['im0.png', 'im1.png', 'im2.png', 'im3.png', 'im4.png'], labels matching no image "
      "['x0', 'x1', 'x2', 'x3', 'x4']; first differences in order: [\"position 0: image "
      "'im0.png' vs label 'x0'\", \"position 1: image 'im1.png' vs label 'x1'\", \"position 2: "
      "image 'im2.png' vs label 'x2'\"]. Labels must be the image file names or their stems "
      "(with a .npy --images, name the images with --image_list)")
  # Same set, one image repeated: no unmatched image and no extra label, but fewer labels.
  assert _error(human_io.match_labels, ["a", "b"], ["a.png", "b", "b.png"], source="src") == (
      "src: the labels do not match the images (2 labels, 3 images): images without a label [], "
      "labels matching no image []; first differences in order: []. Labels must be the image "
      "file names or their stems (with a .npy --images, name the images with --image_list)")
  # Only an image without a label (all labels used by the others).
  message = _error(human_io.match_labels, ["a", "b"], ["a", "b", "c"], source="src")
  assert "images without a label ['c'], labels matching no image []" in message
  # Only an extra label.
  message = _error(human_io.match_labels, ["a", "b", "c"], ["a", "b"], source="src")
  assert "(3 labels, 2 images): images without a label [], labels matching no image ['c']" \
      in message


# -------------------------------------------------------------------------------------- .mat --
def _v73_file(path):
  """The 128-byte header MATLAB writes for -v7.3 (HDF5 user block): version 0x0200."""
  text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Dec  7 00:00:00 2026 HDF5"
  path.write_bytes(text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM" + b"\x00" * 512)


def test_mat_refusals_exact_messages(tmp_path):
  _v73_file(tmp_path / "v73.mat")
  v73 = str(tmp_path / "v73.mat")
  assert _error(human_io.load_human, v73) == (
      f"{v73}: MATLAB v7.3 (HDF5) files are not supported; save with save(..., '-v7') or as "
      ".npy/.csv")
  assert _error(human_io.read_mat_variables, v73, save_hint=".npy") == (
      f"{v73}: MATLAB v7.3 (HDF5) files are not supported; save with save(..., '-v7') or as .npy")
  (tmp_path / "junk.mat").write_bytes(b"\x01\x02\x03 junk" * 40)
  junk = str(tmp_path / "junk.mat")
  with pytest.raises(Exception) as scipy_error:
    scipy.io.loadmat(junk)
  assert _error(human_io.load_human, junk) == (
      f"{junk}: cannot read it as a .mat file ({type(scipy_error.value).__name__}: "
      f"{scipy_error.value})")
  s = _similarity()
  scipy.io.savemat(tmp_path / "two.mat", {"zeta": s, "alpha": s, "name": "x",
                                          "labels": np.arange(5.0)[None]})
  two = str(tmp_path / "two.mat")
  assert _error(human_io.load_human, two) == (
      f"{two}: 2 candidate matrices ['alpha', 'zeta']; choose one with --human_key=NAME")
  assert _error(human_io.load_human, two, key="rdm") == (
      f"{two}: no variable 'rdm'; variables in the file: ['alpha', 'labels', 'name', 'zeta']; "
      "numeric 2-D candidates: ['alpha', 'zeta']")
  assert _error(human_io.load_human, two, key="name") == (
      f"{two}: variable 'name' is not a numeric 2-D matrix (type ndarray, dtype <U1, shape "
      "[1]); candidates: ['alpha', 'zeta']")
  assert _error(human_io.load_human, two, key="labels") == (
      f"{two}: variable 'labels' is not a numeric 2-D matrix (type ndarray, dtype float64, shape "
      "[1, 5]); candidates: ['alpha', 'zeta']")
  scipy.io.savemat(tmp_path / "none.mat", {"labels": np.arange(5.0)[None], "name": "x"})
  none = str(tmp_path / "none.mat")
  assert _error(human_io.load_human, none) == (
      f"{none}: no numeric 2-D matrix in the file (variables: ['labels', 'name'])")


def test_mat_variables_leave_out_matlab_header_entries(tmp_path):
  s = _similarity()
  scipy.io.savemat(tmp_path / "h.mat", {"rdm": s, "n": 5.0})
  variables = human_io.read_mat_variables(str(tmp_path / "h.mat"))
  assert sorted(variables) == ["n", "rdm"]
  np.testing.assert_array_equal(variables["rdm"], s)


def test_mat_candidates_need_both_sides_above_one(tmp_path):
  s = _similarity()
  pair = np.arange(10.0).reshape(2, 5)
  scipy.io.savemat(tmp_path / "h.mat", {"rdm": s, "pair": pair, "row": np.arange(5.0)[None],
                                        "flag": np.ones((5, 5), bool)})
  path = str(tmp_path / "h.mat")
  # A 2 x 5 matrix is a candidate (both sides > 1), so is a logical matrix; a 1 x 5 vector is not.
  assert _error(human_io.load_human, path) == (
      f"{path}: 3 candidate matrices ['flag', 'pair', 'rdm']; choose one with --human_key=NAME")
  assert _error(human_io.load_human, path, key="pair") == (
      f"{path}: expected a square [n, n] matrix, got shape (2, 5)")
  np.testing.assert_array_equal(human_io.load_human(path, key="rdm", n_images=5), s)
  scipy.io.savemat(tmp_path / "int.mat", {"rdm": np.array(
      [[9, 1, 2, 3], [1, 9, 4, 5], [2, 4, 9, 6], [3, 5, 6, 9]], np.int32), "text": "abc"})
  got = human_io.load_human(str(tmp_path / "int.mat"))
  np.testing.assert_array_equal(got, [[9, 1, 2, 3], [1, 9, 4, 5], [2, 4, 9, 6], [3, 5, 6, 9]])
  assert got.dtype == np.float64


# ------------------------------------------------------------------------------ load_human --
def test_load_human_passes_every_argument_on(tmp_path):
  s, g = _similarity(5, 1), _similarity(5, 2)
  order = [1, 0, 3, 4, 2]
  scipy.io.savemat(tmp_path / "two.mat", {"a": s, "b": 10.0 - g[np.ix_(order, order)]})
  path = str(tmp_path / "two.mat")
  labels = [STEMS[k] for k in order]
  got = human_io.load_human(path, key="b", kind="dissimilarity", n_images=5, image_names=NAMES,
                            labels=labels)
  np.testing.assert_array_equal(got, g - 10.0)
  with pytest.raises(UserInputError, match="cohort has 4 images"):
    human_io.load_human(path, key="b", n_images=4)


def test_reordered_property():
  m = np.zeros((3, 3))
  assert not human_io.HumanMatrix(m).reordered
  assert not human_io.HumanMatrix(m, ["a", "b", "c"], np.arange(3)).reordered
  assert human_io.HumanMatrix(m, ["b", "a", "c"], np.array([1, 0, 2])).reordered


def test_one_image_csv_labelled_or_not_reaches_the_size_check(tmp_path):
  # One image: a labelled 2 x 2 file is still labelled (the label is matched, then the size is
  # refused); a single empty field is one missing entry, not an empty labelled matrix.
  (tmp_path / "one.csv").write_text(",cat\ncat,5\n")
  (tmp_path / "empty_field.csv").write_text('""\n')
  for name in ("one.csv", "empty_field.csv"):
    path = str(tmp_path / name)
    assert _error(human_io.load_human, path, image_names=["cat.png"]) == (
        f"{path}: at least 4 images are needed, got 1")


def test_match_labels_refuses_two_images_on_one_label_and_returns_an_integer_index():
  # cat.png and cat.jpg both match the label "cat" by stem: as many labels as images, no image
  # unmatched, but "eel" is left over.
  message = _error(human_io.match_labels, ["cat", "dog", "eel"], ["cat.png", "cat.jpg", "dog.png"],
                   source="src")
  assert message.startswith("src: the labels do not match the images (3 labels, 3 images): "
                            "images without a label [], labels matching no image ['eel']; ")
  empty = human_io.match_labels([], [], source="src")
  assert empty.shape == (0,) and empty.dtype.kind == "i"


def test_labelled_csv_detection_reads_every_label(tmp_path):
  s = _similarity(4)
  numbers = [",".join(repr(float(v)) for v in row) for row in s]
  # Only the first column label is text, the row labels are numbers: labelled (so it needs the
  # image names), not a parse error.
  (tmp_path / "first.csv").write_text(",x,1,2,3\n" + "\n".join(
      f"{k},{row}" for k, row in enumerate(numbers)) + "\n")
  path = str(tmp_path / "first.csv")
  assert _error(human_io.load_human, path) == (
      f"{path}: a labelled matrix is matched to the image names, but none are known here "
      "(precomputed --maps, or a .npy --images without --image_list)")
  # Numeric labels that are the image names exactly (names without an extension) are labels.
  names = ["1", "2", "3", "4"]
  order = [2, 0, 3, 1]
  labels = [names[k] for k in order]
  _write_labelled_csv(tmp_path / "exact.csv", s[np.ix_(order, order)], labels, labels)
  np.testing.assert_array_equal(
      human_io.load_human(str(tmp_path / "exact.csv"), image_names=names), s)
  # One numeric column label that is no image name: the header is data (numbers only), so the
  # label column and the header row differ in one place.
  lines = (tmp_path / "exact.csv").read_text().splitlines()
  (tmp_path / "one_off.csv").write_text("\n".join([",9" + lines[0][2:]] + lines[1:]) + "\n")
  message = _error(human_io.load_human, str(tmp_path / "one_off.csv"), image_names=names)
  assert message.startswith(f"{tmp_path / 'one_off.csv'}: matrix is not symmetric: 1 pairs "
                            "differ"), message


def test_column_labels_that_do_not_match_name_the_file(tmp_path):
  s = _similarity()
  _write_labelled_csv(tmp_path / "cols.csv", s, STEMS, STEMS[:4] + ["yak"])
  path = str(tmp_path / "cols.csv")
  assert _error(human_io.load_human, path, image_names=NAMES) == (
      f"{path}: the labels do not match the images (5 labels, 5 images): images without a label "
      "['gnu.png'], labels matching no image ['yak']; first differences in order: "
      "[\"position 4: image 'gnu.png' vs label 'yak'\"]. Labels must be the image file names or "
      "their stems (with a .npy --images, name the images with --image_list)")


def test_mat_variable_without_dtype_or_shape_is_described_by_its_type(tmp_path, monkeypatch):
  # loadmat's default options return arrays only; the message must still describe any other
  # value read_mat_variables may hand over (a Python scalar or string: no dtype, no shape).
  s = _similarity()
  scipy.io.savemat(tmp_path / "h.mat", {"rdm": s})
  path = str(tmp_path / "h.mat")
  monkeypatch.setattr(human_io, "read_mat_variables",
                      lambda p: {"rdm": s, "count": 3, "scalar": np.float32(2.5)})
  assert _error(human_io.load_human, path, key="count") == (
      f"{path}: variable 'count' is not a numeric 2-D matrix (type int, dtype ?, shape []); "
      "candidates: ['rdm']")
  assert _error(human_io.load_human, path, key="scalar") == (
      f"{path}: variable 'scalar' is not a numeric 2-D matrix (type float32, dtype float32, "
      "shape []); candidates: ['rdm']")
  np.testing.assert_array_equal(human_io.load_human(path), s)


def test_validator_message_without_the_file_name_is_kept_whole(tmp_path, monkeypatch):
  # The validator's messages start with the name it was given, which is cut once; any other
  # ValueError text is passed on unchanged (not cut by the name's length).
  np.save(tmp_path / "h.npy", _similarity())
  path = str(tmp_path / "h.npy")

  def refuse(matrix, n_images, *, name, kind_stated):
    raise ValueError("a message that does not start with the file name, long enough to cut")

  monkeypatch.setattr(human_io.validation, "validate_human_similarity", refuse)
  assert _error(human_io.load_human, path) == (
      f"{path}: a message that does not start with the file name, long enough to cut")
