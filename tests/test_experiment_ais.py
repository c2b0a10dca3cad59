"""End to end: `python -m experiments.ais` on a tiny cohort, checked against a numpy float64 loop.

One subprocess run (EfficientNet-Lite0 with random weights saved as a checkpoint directory, 8
images, batch size 3 so the last batch is padded) is shared by every check; the refusals run the
CLI again but stop before JAX starts.
"""

import csv
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import ais_jax.io

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 8
FLAG_NAMES = {"arch", "weights", "images", "image_list", "tfds_data_dir", "human",
              "human_labels", "human_key", "human_kind",
              "similarity", "comparison", "cohort_score", "precision", "batch_size",
              "memory_budget_gb", "save_feature_maps", "overwrite", "progress", "out",
              "save_overlays", "colormap", "alpha", "categories"}


def _cli(*args, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "experiments.ais", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _random_variables(spec, seed=0):
  """Random variables of the model's tree without compiling its init (slow on CPU)."""
  import jax
  from ais_jax import models
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    shape = leaf.shape
    if name == "kernel":
      return (rng.normal(size=shape) * np.sqrt(2.0 / np.prod(shape[:-1]))).astype(np.float32)
    if name == "scale":
      return (1.0 + 0.1 * rng.normal(size=shape)).astype(np.float32)
    if name == "var":
      return rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
    return (0.1 * rng.normal(size=shape)).astype(np.float32)  # bias, mean

  return jax.tree_util.tree_map_with_path(fill, models.abstract_variables(spec))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
  from ais_jax import models
  from ais_jax.io import checkpoints
  root = tmp_path_factory.mktemp("cli")
  spec = models.get("efficientnet_lite0")
  weights = checkpoints.save_checkpoint(
      root / "weights", _random_variables(spec),
      {"arch": "efficientnet_lite0", "num_classes": spec.num_classes})
  rng = np.random.default_rng(1)
  images = root / "images"
  images.mkdir()
  pixels = {}
  for i in range(N):
    shape = (40, 30, 3) if i == 3 else (32, 32, 3)
    pixels[f"im{i}.png"] = rng.integers(0, 256, shape, dtype=np.uint8)
  pixels["im7.png"] = pixels["im0.png"]  # Same image in the first and the padded last batch.
  for name, px in pixels.items():
    Image.fromarray(px).save(images / name)
  h = rng.normal(size=(N, N))
  h = h + h.T
  h[1, 5] = h[5, 1] = np.nan
  lines = [",".join("" if np.isnan(v) else repr(float(v)) for v in row) for row in h]
  (root / "human.csv").write_text("\n".join(lines) + "\n")
  out = root / "run"
  proc = _cli("--arch=efficientnet_lite0", f"--weights={weights}", f"--images={images}",
              f"--human={root / 'human.csv'}", f"--out={out}", "--batch_size=3",
              "--save_feature_maps")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return dict(root=root, out=out, weights=weights, images=images, human=h, proc=proc,
              run=ais_jax.io.load_run(str(out)))


def test_files_shapes_dtypes(cohort):
  run = cohort["run"]
  k, hw = 1280, 7
  want = {"per_image_ais": ((N, k), np.float64), "cohort_ais": ((k,), np.float64),
          "embeddings": ((N, k), np.float32), "heatmaps": ((N, hw, hw), np.float32),
          "feature_maps": ((N, hw, hw, k), np.float32)}
  assert sorted(os.listdir(cohort["out"])) == sorted(
      [f"{name}.npy" for name in want] + ["images.txt", "summary.json"])
  for name, (shape, dtype) in want.items():
    assert run[name].shape == shape and run[name].dtype == dtype, name
  assert run["images"] == [f"im{i}.png" for i in range(N)]
  stderr = cohort["proc"].stderr
  assert "trunk: 8/8 images (batch 3/3" in stderr  # Progress per stage with counts.
  assert "warning: 1 of 8 images are not square (e.g. im3.png (30x40))" in stderr
  assert "Traceback" not in stderr


def test_numbers_match_a_float64_loop(cohort):
  run = cohort["run"]
  maps = run["feature_maps"].astype(np.float64)
  # Identical images in different batches (the second one in the zero-padded last batch).
  np.testing.assert_allclose(maps[7], maps[0], rtol=0, atol=1e-5)
  emb = maps.mean(axis=(1, 2))
  np.testing.assert_allclose(run["embeddings"], emb, rtol=1e-5, atol=1e-6)
  h = cohort["human"]
  n, k = emb.shape

  def pearson(x, y):
    x, y = x - x.mean(), y - y.mean()
    return (x @ y) / np.sqrt((x @ x) * (y @ y))

  def sim(e):
    return np.corrcoef(e)

  iu = np.triu_indices(n, 1)
  finite = np.isfinite(h[iu])
  base = pearson(sim(emb)[iu][finite], h[iu][finite])
  cohort_ref = np.empty(k)
  for m in range(k):
    e = emb.copy()
    e[:, m] = 0
    cohort_ref[m] = base - pearson(sim(e)[iu][finite], h[iu][finite])
  per_image_ref = np.empty((n, k))
  for i in range(n):
    others = [j for j in range(n) if j != i and np.isfinite(h[i, j])]
    row = pearson(np.array([pearson(emb[i], emb[j]) for j in others]), h[i, others])
    for m in range(k):
      e_i = emb[i].copy()
      e_i[m] = 0
      per_image_ref[i, m] = row - pearson(np.array([pearson(e_i, emb[j]) for j in others]),
                                          h[i, others])
  assert np.abs(per_image_ref).max() > 1e-4  # The random model is not degenerate.
  np.testing.assert_allclose(run["cohort_ais"], cohort_ref, rtol=0, atol=1e-9)
  np.testing.assert_allclose(run["per_image_ais"], per_image_ref, rtol=0, atol=1e-9)
  w = np.maximum(np.nan_to_num(per_image_ref), 0)
  w = w / np.where(w.sum(1, keepdims=True) > 0, w.sum(1, keepdims=True), 1)
  np.testing.assert_allclose(run["heatmaps"], np.einsum("nhwk,nk->nhw", maps, w),
                             rtol=1e-5, atol=1e-6)


def test_summary_records_the_run(cohort):
  import jax
  s = cohort["run"]["summary"]
  assert s["schema_version"] == 1
  assert set(s["flags"]) == FLAG_NAMES
  assert s["flags"]["batch_size"] == 3 and s["flags"]["save_feature_maps"] is True
  assert s["model"]["name"] == "efficientnet_lite0" and s["model"]["num_maps"] == 1280
  assert s["checkpoint"]["dir"] == str(cohort["weights"])
  assert s["checkpoint"]["arch"] == "efficientnet_lite0"
  human_path = cohort["root"] / "human.csv"
  assert s["inputs"]["human"]["sha256"] == hashlib.sha256(human_path.read_bytes()).hexdigest()
  assert s["inputs"]["human"]["missing_pairs"] == 1
  files = s["inputs"]["images"]["files"]
  assert [f["name"] for f in files] == cohort["run"]["images"]
  assert files[3]["sha256"] == hashlib.sha256(
      (cohort["images"] / "im3.png").read_bytes()).hexdigest()
  env = s["environment"]
  assert env["jax_version"] == jax.__version__ and env["devices"][0]["platform"] == "cpu"
  assert {"load_images", "load_human", "load_weights", "resize", "trunk", "ais",
          "heatmaps"} <= set(s["timings_s"])
  assert s["counts"] == {"images": 8, "maps": 1280, "map_size": [7, 7], "embedding_dim": 1280,
                         "input_size": [224, 224]}
  assert s["undefined"]["per_image_ais"] == {"count": 0, "total": 8 * 1280, "locations": [],
                                             "locations_truncated": False}
  assert s["undefined"]["cohort_ais"]["count"] == 0
  assert len(s["warnings"]) == 1 and "squashes" in s["warnings"][0]
  # summary.json is strict JSON (no NaN tokens).
  json.loads((cohort["out"] / "summary.json").read_text(), parse_constant=pytest.fail)


def test_refusals_are_one_line_with_exit_code_2(cohort):
  root = cohort["root"]
  common = [f"--weights={cohort['weights']}", f"--images={cohort['images']}"]
  before = {f: os.path.getmtime(cohort["out"] / f) for f in os.listdir(cohort["out"])}
  proc = _cli(*common, f"--human={root / 'human.csv'}", f"--out={cohort['out']}")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      f"error: {cohort['out']}: output folder exists and is not empty; choose another --out or "
      "pass --overwrite to replace the run in it"]
  assert {f: os.path.getmtime(cohort["out"] / f) for f in os.listdir(cohort["out"])} == before
  np.save(root / "h7.npy", cohort["human"][:7, :7])
  proc = _cli(*common, f"--human={root / 'h7.npy'}", f"--out={root / 'other'}", "--noprogress")
  assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
  assert proc.stderr.startswith(f"error: {root / 'h7.npy'}: matrix is 7x7 but the cohort has 8")
  proc = _cli(*common, f"--human={root / 'human.csv'}", f"--out={root / 'other'}",
              "--precision=double")
  assert proc.returncode == 2 and proc.stderr.count("\n") == 1
  assert "--precision" in proc.stderr and "exact|float32|fast" in proc.stderr
  assert not (root / "other").exists()


def test_figure_flags_fail_before_the_swap_and_lose_nothing(cohort, tmp_path):
  """--categories is checked before the run (malformed file) and inside the staging folder
  (an image without a category): a failure leaves the existing run exactly as it was."""
  import shutil
  root = cohort["root"]
  out = tmp_path / "run"
  shutil.copytree(cohort["out"], out)
  before = {p.name: p.read_bytes() for p in out.iterdir()}
  common = [f"--weights={cohort['weights']}", f"--images={cohort['images']}",
            f"--human={root / 'human.csv'}", f"--out={out}", "--overwrite", "--save_overlays",
            "--noprogress"]
  (tmp_path / "bad.csv").write_text("image,label\nim0.png,a\n")
  proc = _cli(*common, f"--categories={tmp_path / 'bad.csv'}")
  assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
  assert proc.stderr.startswith(f"error: {tmp_path / 'bad.csv'} line 1: header ")
  assert "name,category" in proc.stderr and "trunk" not in proc.stderr
  rows = "".join(f"im{i}.png,c{i % 2}\n" for i in range(N - 1))  # im7.png has no row
  (tmp_path / "missing.csv").write_text("name,category\n" + rows)
  proc = _cli(*common, f"--categories={tmp_path / 'missing.csv'}")
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith(
      f"error: {tmp_path / 'missing.csv'}: no category for 1 of 8 images: 'im7.png'")
  assert {p.name: p.read_bytes() for p in out.iterdir()} == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "missing.csv", "run"]
  # With every image categorised: overlays and datasets.txt are part of the run (listed, hashed).
  (tmp_path / "good.csv").write_text("name,category\n" + rows + "im7.png,c1\n")
  proc = _cli(*common, f"--categories={tmp_path / 'good.csv'}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert f"8 overlays in {out / 'overlays'}" in proc.stdout
  run = ais_jax.io.load_run(str(out))  # verifies every listed file's sha256
  files = run["summary"]["files"]
  assert sorted(f for f in files if f.startswith("overlays/")) == [
      f"overlays/im{i}.png" for i in range(N)]
  assert (out / "datasets.txt").read_text().splitlines() == [f"c{i % 2}" for i in range(N - 1)] + [
      "c1"]
  assert "datasets.txt" in files and "feature_maps.npy" not in files


# ------------------------------------------------------------------------------------------------
# The pipeline's public pieces, and the other experiment scripts on the same tiny cohort.


def test_trunk_compiles_once_and_logits_match_the_head(cohort):
  import jax
  from ais_jax import pipeline
  from ais_jax.io import images as images_io
  spec, variables, provenance, module = pipeline.load_model(str(cohort["weights"]),
                                                            "efficientnet_lite0")
  assert provenance["checkpoint_dir"] == str(cohort["weights"])
  loaded, names = images_io.load_images(str(cohort["images"]))
  resized = images_io.fit_to_model(loaded, spec, names=names)
  first = pipeline.trunk_maps(spec, module, variables, resized, batch_size=3)
  # The jitted trunk is shared by the whole process (other tests may have compiled it for their
  # batch shapes): count the compiled shapes after the first call.
  compiled = pipeline._jitted_apply(module, "trunk")._cache_size()
  other_module = pipeline.load_model(str(cohort["weights"]))[3]
  assert other_module is not module
  again = pipeline.trunk_maps(spec, other_module, variables, resized[:5], batch_size=3)
  # Two calls, two module objects, a ragged last batch each time: one jitted trunk, one compile.
  assert pipeline._jitted_apply(other_module, "trunk") is pipeline._jitted_apply(module, "trunk")
  assert pipeline._jitted_apply(module, "trunk")._cache_size() == compiled
  np.testing.assert_array_equal(first, cohort["run"]["feature_maps"])
  np.testing.assert_array_equal(again, first[:5])
  # Logits: the padded, batched head vs one unbatched call written independently.
  logits = pipeline.head_logits(module, variables, first, batch_size=3)
  want = jax.jit(lambda v, m: module.apply(v, m, method="head"))(variables, first)[1]
  assert logits.shape == (N, spec.num_classes) and logits.dtype == np.float32
  np.testing.assert_allclose(logits, np.asarray(want), rtol=1e-5, atol=1e-5)
  run = pipeline.run_ais(weights=(spec, variables, provenance, module), images=resized,
                         human=cohort["human"], batch_size=3)
  np.testing.assert_allclose(run.logits, logits, rtol=1e-6, atol=1e-6)
  assert pipeline._jitted_apply(module, "trunk")._cache_size() == compiled


def _module_cli(module, *args, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_selection_and_plot_selection_command_lines(cohort):
  root = cohort["root"]
  out = root / "selection"
  proc = _module_cli("experiments.selection", f"--weights={cohort['weights']}",
                     f"--maps={cohort['out'] / 'feature_maps.npy'}",
                     f"--human={root / 'human.csv'}", f"--out={out}", "--folds=2", "--seeds=1",
                     "--noprogress")
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in ("cv.json", "cv.csv", "cv_arrays.npz", "selection.png", "selection.csv",
               "selection_curves.png", "selection_curves.csv"):
    assert os.path.getsize(out / name) > 0, name
  with open(out / "cv.json") as f:
    cv = json.load(f)
  arrays = np.load(out / "cv_arrays.npz")
  rows = list(csv.DictReader(open(out / "cv.csv")))
  assert [int(r["fold"]) for r in rows] == [0, 1] and len(cv["splits"]) == 2
  assert sorted(i for s in cv["splits"] for i in s["test_indices"]) == list(range(N))
  for row, split, test_curve, m_star in zip(rows, cv["splits"], arrays["test_curves"],
                                            arrays["m_star"]):
    assert int(row["m_star"]) == split["m_star"] == m_star
    np.testing.assert_allclose(float(row["test_full"]), test_curve[-1], rtol=1e-15)
    if m_star > 0:
      np.testing.assert_allclose(float(row["test_retained"]), test_curve[m_star - 1], rtol=1e-15)
  finite = [s["test_full"] for s in cv["splits"] if s["test_full"] is not None]
  np.testing.assert_allclose(cv["summary"]["mean_test_full"], np.mean(finite), rtol=1e-12)
  assert cv["flags"]["folds"] == 2 and cv["label"] == "efficientnet_lite0"
  assert arrays["train_masks"].shape == arrays["test_masks"].shape == (2, N * (N - 1) // 2)
  png = root / "combined.png"
  proc = _module_cli("experiments.plot_selection", f"--runs={out},{out / 'cv.json'}",
                     "--labels=a,b", f"--out_png={png}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  combined = json.load(open(root / "combined.json"))
  assert "a" in json.dumps(combined) and os.path.getsize(png) > 0


def test_saliency_command_line_on_the_run(cohort):
  out = cohort["root"] / "saliency"
  categories = cohort["root"] / "categories.csv"
  categories.write_text("name,category\n" + "".join(
      f"im{i}.png,{'odd' if i % 2 else 'even'}\n" for i in range(N)))
  proc = _module_cli("experiments.saliency", f"--ais_run={cohort['out']}", f"--out={out}",
                     "--n_examples=2", "--save_overlays", "--colormap=magma",
                     f"--categories={categories}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  # One overlay per image; the RR table has a row per category and one over all images.
  assert sorted(os.listdir(out / "overlays")) == [f"im{i}.png" for i in range(N)]
  assert {r["dataset"] for r in csv.DictReader(open(out / "rr_table.csv"))} == {
      "even", "odd", "all images"}
  assert "| " in proc.stdout and f"to {out}" in proc.stdout
  # im3 is 40x30, the others 32x32: maps of mixed sizes are kept per image name.
  with np.load(out / "saliency.npz") as maps:
    assert maps["im3.png"].shape == (40, 30) and maps["im0.png"].shape == (32, 32)
  summary = json.load(open(out / "saliency_summary.json"))
  assert summary["n_images"] == N and summary["ais_run"] == str(cohort["out"])
  for rel in summary["files"]:
    assert os.path.getsize(out / rel) > 0, rel
  proc = _module_cli("experiments.saliency", f"--out={out}")
  assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(
      "error: --ais_run: required")


def test_experiment_modules_share_one_process():
  """Every experiment module imports next to the others (no flag is defined twice)."""
  code = ("import experiments.ais, experiments.selection, experiments.saliency, "
          "experiments.plot_selection, experiments.lpips_baseline, experiments.run as r; "
          "r.define_flags(); from absl import flags; "
          "print(sorted(n for n in ('ais_run', 'saliency', 'folds', 'maps', 'dataset') "
          "if n in flags.FLAGS))")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == "['ais_run', 'dataset', 'folds', 'maps', 'saliency']"
