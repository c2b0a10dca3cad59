"""Architecture sweep (experiments.architectures): categories files, cohorts, cells, resume."""

import os

import pytest

from ais_jax.errors import UserInputError
from ais_jax.io import categories as categories_io


def _write(tmp_path, text, name="cats.csv"):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  return str(path)


def test_categories_in_image_order_extra_rows_and_columns_allowed(tmp_path):
  path = _write(tmp_path, "category,name,note\n face , b.png ,x\nbody,a.png,\n"
                "\nplace,unused.png,\nface,c.png,y\n")
  assert categories_io.load_categories(path, ["a.png", "b.png", "c.png"]) == [
      "body", "face", "face"]
  assert categories_io.cohorts_by_category(["body", "face", "body", "tool"]) == {
      "body": [0, 2], "face": [1], "tool": [3]}


def test_categories_utf8_bom_header_is_read(tmp_path):
  path = _write(tmp_path, "\ufeffName,Category\n0,x\n1,y\n")
  assert categories_io.load_categories(path, ["0", "1"]) == ["x", "y"]


@pytest.mark.parametrize("text, fragment", [
    ("file,label\na.png,x\n", "lacks the column(s) name, category"),
    ("name,category\na.png,\n", "line 2: image 'a.png' has an empty category"),
    ("name,category\n,x\n", "line 2: empty image name"),
    ("name,category\na.png,x\na.png,y\n", "line 3: image 'a.png' is listed again (first on "
     "line 2)"),
    ("name,category\na.png\n", "line 2: row ['a.png'] has 1 column(s)"),
    ("", "categories file is empty"),
    ("name,category\n", "header but no rows"),
])
def test_categories_malformed_files_say_what_and_where(tmp_path, text, fragment):
  path = _write(tmp_path, text)
  with pytest.raises(UserInputError) as e:
    categories_io.load_categories(path, ["a.png"])
  assert fragment in str(e.value)
  assert str(e.value).startswith(path)


def test_categories_missing_images_listed_with_unmatched_names(tmp_path):
  path = _write(tmp_path, "name,category\na.jpg,x\nb.png,y\n")
  with pytest.raises(UserInputError) as e:
    categories_io.load_categories(path, ["a.png", "b.png"])
  message = str(e.value)
  assert "no category for 1 of 2 images: 'a.png'" in message
  assert "match no image: 'a.jpg'" in message


def test_categories_missing_file(tmp_path):
  with pytest.raises(UserInputError, match="categories file not found"):
    categories_io.load_categories(str(tmp_path / "nope.csv"), ["a"])


# ----------------------------------------------------------------------------------------------
# The sweep on a tiny cohort: two small pooled-head models stand in for the real networks (the
# registered ones take minutes on this CPU); everything from the trunk on is the real code.

import dataclasses
import json

import numpy as np

from ais_jax import pipeline, selection, sweep
from ais_jax.report import figure6

N_IMAGES = 20
# 8 images: 5 folds would leave 1 test image, reduced to 2 folds; c: below 2 x 4 images, skipped.
CATEGORY_SIZES = {"cat a": 8, "cat/b": 8, "c": 4}


def _tiny_models():
  import flax.linen as nn
  import jax
  from ais_jax import models

  class TinyTrunk(nn.Module):
    def setup(self):
      self.conv = nn.Conv(6, (3, 3), strides=2)

    def trunk(self, x):
      return nn.relu(self.conv(x))

  spec = dataclasses.replace(models.get("efficientnet_lite0"), name="tiny", input_size=8,
                             map_size=4, num_maps=6, num_classes=None)
  module = TinyTrunk()
  out = {}
  for seed, name in enumerate(("tiny_a", "tiny_b")):
    variables = module.init(jax.random.PRNGKey(seed), np.zeros((1, 8, 8, 3), np.float32),
                            method="trunk")
    out[name] = (spec, jax.tree_util.tree_map(np.asarray, variables), {}, module)
  return out


@pytest.fixture(scope="module")
def tiny_models():
  return _tiny_models()


@pytest.fixture
def env(tmp_path, monkeypatch, tiny_models):
  """A custom cohort on disk (images .npy, human .npy, categories CSV), the tiny models behind
  pipeline.load_model and an activation cache of its own."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (N_IMAGES, 8, 8, 3), dtype=np.uint8)
  features = rng.normal(size=(N_IMAGES, 5))
  human = np.corrcoef(features)
  np.save(tmp_path / "images.npy", images)
  np.save(tmp_path / "human.npy", human)
  labels = [c for c, k in CATEGORY_SIZES.items() for _ in range(k)]
  order = rng.permutation(N_IMAGES)
  rows = "".join(f"images.npy[{i}],{labels[order[i]]}\n" for i in range(N_IMAGES))
  (tmp_path / "cats.csv").write_text("name,category\n" + rows)
  monkeypatch.setenv("AIS_JAX_ACTIVATIONS", str(tmp_path / "activations"))

  def load_model(weights, arch=None):
    return tiny_models[weights]

  monkeypatch.setattr(pipeline, "load_model", load_model)
  config = sweep.SweepConfig(
      weights=["tiny_a", "tiny_b"], out=str(tmp_path / "sweep"),
      images=str(tmp_path / "images.npy"),
      human=str(tmp_path / "human.npy"), categories=str(tmp_path / "cats.csv"), by_category=True,
      seeds=2, random_orders=1)
  return {"config": config, "images": images, "human": human,
          "categories": [labels[order[i]] for i in range(N_IMAGES)], "tmp": tmp_path}


def _full_mean_reference(maps, human, folds, seeds, seed=0, score="r2"):
  """Mean held-out score with all maps, by explicit loops over splits and test pairs."""
  n = maps.shape[0]
  emb = maps.astype(np.float64).mean(axis=(1, 2))
  scores = []
  for s in range(seed, seed + seeds):
    for test in np.array_split(np.random.default_rng(s).permutation(n), folds):
      test = sorted(test)
      model, people = [], []
      for a in range(len(test)):
        for b in range(a + 1, len(test)):
          i, j = test[a], test[b]
          model.append(np.corrcoef(emb[i], emb[j])[0, 1])
          people.append(human[i, j])
      r = np.corrcoef(model, people)[0, 1]
      scores.append(r * r if score == "r2" else r)
  return float(np.mean(scores))


def test_sweep_cells_rows_figure_and_report(env, tiny_models, capsys):
  config = env["config"]
  lines = []
  result = sweep.run_sweep(config, progress=lines.append)
  # Categories in order of first appearance in the image order; 'c' is skipped.
  cohorts = ["all images"] + [c for c in dict.fromkeys(env["categories"]) if c != "c"]
  assert [(r["cohort"], r["weights"]) for r in result.rows] == [
      (c, w) for c in cohorts for w in ("tiny_a", "tiny_b")]
  assert result.computed == 6 and result.skipped == 0
  by_cell = {(r["cohort"], r["weights"]): r for r in result.rows}
  assert [by_cell[(c, "tiny_a")]["folds"] for c in cohorts] == [5, 2, 2]
  assert any("cohort 'c' (4 images) skipped" in line for line in lines)
  assert any("cohort 'cat a'" in line and "using 2 folds" in line for line in lines)

  # Full-model score against an explicit loop over the same splits, on each cohort's slice.
  spec, variables, _, module = tiny_models["tiny_b"]
  maps = pipeline.trunk_maps(spec, module, variables, env["images"])
  for cohort, folds in (("all images", 5), ("cat/b", 2)):
    idx = (np.arange(N_IMAGES) if cohort == "all images" else
           np.flatnonzero(np.array(env["categories"]) == cohort))
    expected = _full_mean_reference(maps[idx], env["human"][np.ix_(idx, idx)], folds, 2)
    assert by_cell[(cohort, "tiny_b")]["full_mean"] == pytest.approx(expected, rel=1e-9)

  out = config.out
  import csv
  with open(os.path.join(out, sweep.CSV_FILE)) as f:
    table = list(csv.DictReader(f))
  assert len(table) == 6
  for column in ("cohort", "weights", "arch", "num_maps", "n_images", "full_mean",
                 "pruned_mean", "m_star_mean", "t", "p", "p_corrected"):
    assert column in table[0]
  rows = {(r["cohort"], r["weights"]): r for r in table}
  assert rows[("cat/b", "tiny_a")]["fold_note"].startswith(
      "cohort 'cat/b': selection: 5 folds of 8 images")
  assert rows[("all images", "tiny_b")]["fold_note"] == ""
  # 2 folds of 8 images: 4 test images = 6 pairs per split, flagged as rough.
  assert rows[("cat/b", "tiny_a")]["min_test_pairs"] == "6"
  assert "as few as 6 pairs" in rows[("cat/b", "tiny_a")]["split_warning"]
  assert rows[("all images", "tiny_a")]["min_test_pairs"] == "6"   # 20 images, 5 folds of 4
  assert rows[("cat/b", "tiny_b")]["folds_requested"] == "5"
  for cohort in cohorts:  # exactly one '1' and one '2' per cohort and condition
    members = [r for r in table if r["cohort"] == cohort]
    for condition in ("full", "pruned"):
      ranks = sorted(r[f"rank_{condition}"] for r in members)
      assert ranks == ["1", "2"]
      best = max(members, key=lambda r: float(r[f"{condition}_mean"]))
      assert best[f"rank_{condition}"] == "1"
  for name in ("figure6.png", "figure6.csv", "index.html", "sweep.json"):
    assert os.path.isfile(os.path.join(out, name))
  html = open(os.path.join(out, "index.html")).read()
  assert "Architectures (Figure 6)" in html and "cohort &#x27;c&#x27; (4 images) skipped" in html
  assert "cohort &#x27;cat/b&#x27;: test scores rest on as few as 6 pairs" in html
  cell = os.path.join(out, "cells", "cat-b", "tiny_a")
  assert set(os.listdir(cell)) == {"cell.json", "cv.json"}
  cv = json.load(open(os.path.join(cell, "cv.json")))
  assert len(cv["splits"]) == 2 * 2 and cv["cohort"] == "cat/b"
  assert sweep.format_table(result.rows).count("\n") == 6 + 1


def test_rerun_resumes_other_settings_refused_overwrite_recomputes(env, monkeypatch):
  config = env["config"]
  first = sweep.run_sweep(config)
  lines = []
  calls = []
  real_trunk = pipeline.trunk_maps
  monkeypatch.setattr(pipeline, "trunk_maps",
                      lambda *a, **k: calls.append(1) or real_trunk(*a, **k))
  again = sweep.run_sweep(config, progress=lines.append)
  assert again.computed == 0 and again.skipped == 6
  assert sum("finished earlier" in line and "skipped" in line for line in lines) == 6
  assert [r["full_mean"] for r in again.rows] == [r["full_mean"] for r in first.rows]
  assert not calls  # nothing to compute: no trunk

  changed = dataclasses.replace(config, alternative="greater")
  with pytest.raises(UserInputError, match=r"different settings \(options.alternative: folder "
                     "'two-sided', now 'greater'"):
    sweep.run_sweep(changed)
  redone = sweep.run_sweep(dataclasses.replace(changed, overwrite=True))
  assert redone.computed == 6
  assert not calls  # same images and weights: the trunk maps came from the activation cache
  assert json.load(open(os.path.join(config.out, "sweep.json")))["settings"]["options"][
      "alternative"] == "greater"
  # One-sided p of the paired test: half the two-sided p when t > 0.
  for old, new in zip(first.rows, redone.rows):
    assert new["full_mean"] == old["full_mean"]
    if old["t"] and old["t"] > 0:
      assert new["p"] == pytest.approx(old["p"] / 2, rel=1e-12)


def test_killed_sweep_loses_only_the_cell_in_progress(env, monkeypatch):
  config = env["config"]
  real = selection.select_maps
  count = []

  def interrupted(*args, **kwargs):
    count.append(1)
    if len(count) == 3:
      raise KeyboardInterrupt
    return real(*args, **kwargs)

  monkeypatch.setattr(selection, "select_maps", interrupted)
  with pytest.raises(KeyboardInterrupt):
    sweep.run_sweep(config)
  cells = os.path.join(config.out, "cells")
  finished = sorted(os.path.join(c, w) for c in os.listdir(cells)
                    for w in os.listdir(os.path.join(cells, c)))
  first_category = next(iter(dict.fromkeys(env["categories"])))
  assert finished == sorted(["all-images/tiny_a", f"{sweep.folder_name(first_category)}/tiny_a"])
  leftovers = [f for c in os.listdir(cells) for f in os.listdir(os.path.join(cells, c))
               if f.startswith(".")]
  assert leftovers == []
  monkeypatch.setattr(selection, "select_maps", real)
  resumed = sweep.run_sweep(config)
  assert resumed.skipped == 2 and resumed.computed == 4


def test_non_sweep_folder_refused_and_weights_checked(env):
  config = env["config"]
  os.makedirs(config.out)
  open(os.path.join(config.out, "notes.txt"), "w").close()
  with pytest.raises(UserInputError, match="holds no sweep"):
    sweep.run_sweep(config)
  with pytest.raises(UserInputError, match="listed more than once: tiny_a"):
    sweep.run_sweep(dataclasses.replace(config, weights=["tiny_a", "tiny_a"]))
  with pytest.raises(UserInputError, match="--by_category: needs categories"):
    sweep.run_sweep(dataclasses.replace(config, categories=""))


def test_top_two_ranks():
  assert figure6.top_two_ranks([0.2, float("nan"), 0.5, 0.3]) == [None, None, 1, 2]
  assert figure6.top_two_ranks([0.4, 0.4, 0.1]) == [1, 2, None]
  assert figure6.top_two_ranks([None, 0.1]) == [None, 1]
  rows = figure6.add_ranks([{"cohort": "x", "full_mean": 1.0, "pruned_mean": 0.1},
                            {"cohort": "y", "full_mean": 0.5, "pruned_mean": 0.3},
                            {"cohort": "x", "full_mean": 2.0, "pruned_mean": 0.2}])
  assert [(r["rank_full"], r["rank_pruned"]) for r in rows] == [(2, 2), (1, 1), (1, 1)]


def test_command_line_user_errors_are_one_line(tmp_path):
  import subprocess
  import sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu", AIS_JAX_HOME=str(tmp_path))
  for args, message in (
      ([f"--out={tmp_path / 'x'}"], "error: --weights: required: a comma-separated list"),
      (["--weights=a", "--arch=vgg16", f"--out={tmp_path / 'x'}"], "error: --arch: not used")):
    done = subprocess.run([sys.executable, "-m", "experiments.architectures", *args], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(message)


def test_kriegeskorte92_cohorts_and_folds():
  from conftest import K92_DIR
  image_set = sweep.load_image_set(sweep.SweepConfig(dataset="kriegeskorte92", data_dir=K92_DIR))
  lines = []
  cohorts, notes = sweep.plan_cohorts(image_set, sweep.SweepConfig(by_category=True),
                                      lines.append)
  # The six categories of the stimulus file (README: 12, 12, 12, 12, 23, 21 images); 12 images
  # with 5 requested folds would test on 2 images, so they get 12 // 4 = 3 folds.
  assert [(c.name, c.indices.size, c.folds) for c in cohorts] == [
      ("all images", 92, 5), ("human bodypart", 12, 3), ("human face", 12, 3),
      ("nonhuman bodypart", 12, 3), ("nonhuman face", 12, 3), ("natural inanimate", 23, 5),
      ("artificial inanimate", 21, 5)]
  assert len(notes) == 4 and notes == lines
  assert sorted(np.concatenate([c.indices for c in cohorts[1:]]).tolist()) == list(range(92))
  assert [c.folder for c in cohorts[:2]] == ["all-images", "human-bodypart"]


def test_weights_folders(tmp_path):
  checkpoint = tmp_path / "a b" / "ckpt"
  checkpoint.mkdir(parents=True)
  other = tmp_path / "c" / "ckpt"
  other.mkdir(parents=True)
  assert sweep.weights_folder("efficientnet_lite0_imagenet") == "efficientnet_lite0_imagenet"
  named = sweep.weights_folder(str(checkpoint))
  assert named.startswith("ckpt-") and len(named) == len("ckpt-") + 8
  assert named != sweep.weights_folder(str(other))   # same base name, different folders
  assert [sweep.folder_name(n) for n in ("human face", "a/b", "..", "/")] == [
      "human-face", "a-b", "x", "x"]
