"""The main job (ais_jax.main_job, behind experiments.run) on a tiny planted cohort: report files,
numbers, determinism; and the command line's one-line user-input errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ais_jax import main_job
from ais_jax.errors import UserInputError
from ais_jax.report import index

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tiny: 8 images of 64 px (resized to Lite0's 224), 2 folds x 1 seed.
TINY = dict(dataset="planted", n_images=8, image_size=64, planted_seed=1, folds=2, seeds=1,
            batch_size=8, random_orders=1, examples_per_group=2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("run") / "planted")
  config = main_job.RunConfig(out=out, **TINY)
  first = main_job.run_report(config)
  first_arrays = {name: np.load(os.path.join(out, "ais", f"{name}.npy"))
                  for name in ("per_image_ais", "cohort_ais", "heatmaps")}
  # Without --overwrite the finished folder is refused before any work.
  with pytest.raises(UserInputError, match="overwrite"):
    main_job.run_report(config)
  # The same flags again into the same folder (--overwrite): identical numbers expected.
  second = main_job.run_report(main_job.RunConfig(out=out, overwrite=True, **TINY))
  return out, first, second, first_arrays


def test_index_and_every_referenced_file_exist(runs):
  out, _, second, _ = runs
  path = os.path.join(out, "index.html")
  assert os.path.isfile(path)
  referenced = index.files_in_index(path)
  for expected in ("planted/mass.png", "planted/examples.png", "figures/heatmaps.png",
                   "figures/mean_activation.png", "selection/selection.png",
                   "aim2/ais_distributions.png", "saliency/pr_curves.png",
                   "planted/mass_per_image.csv", "selection/cv.json"):
    assert expected in referenced, expected
  for rel in referenced:
    assert os.path.isfile(os.path.join(out, rel)), rel
  for rel in second["files"]:
    assert os.path.isfile(os.path.join(out, rel)), rel
  with open(path, encoding="utf-8") as f:
    text = f.read()
  assert text.count("How to read it:") >= 8
  assert "What this does and does not show" in text
  # PNGs are real images.
  from PIL import Image
  with Image.open(os.path.join(out, "planted", "mass.png")) as im:
    assert im.size[0] > 300 and im.size[1] > 150


def test_summary_records_what_reruns_it(runs):
  out, _, second, _ = runs
  with open(os.path.join(out, "summary.json")) as f:
    summary = json.load(f)
  assert summary["flags"]["n_images"] == 8 and summary["flags"]["planted_seed"] == 1
  assert "--n_images=8" in summary["rerun"] and "--planted_seed=1" in summary["rerun"]
  assert summary["inputs"]["images_sha256"] and summary["inputs"]["human_sha256"]
  assert summary["environment"]["jax_version"] and summary["models"]["Lite0"]["weights"]
  assert summary["seeds"]["selection_folds"] == [0]
  # The AIS run folder reads back and matches the summary's counts.
  from ais_jax.io import load_run
  run = load_run(os.path.join(out, "ais"))
  assert run["per_image_ais"].shape == (8, 1280) and run["heatmaps"].shape == (8, 7, 7)
  assert summary["results"]["n_maps"] == 1280


def test_planted_numbers_match_a_direct_computation(runs):
  out, _, second, _ = runs
  from ais_jax import heatmaps as heatmaps_lib
  from ais_jax.data import planted
  cohort = planted.generate(8, 64, seed=1)
  heat = np.load(os.path.join(out, "ais", "heatmaps.npy"))
  up = np.asarray(heatmaps_lib.upsample(heat, (64, 64)), np.float64)
  positive = np.maximum(up, 0)
  want = (positive * cohort.target_masks).sum((1, 2)) / positive.sum((1, 2))
  got = second["results"]["planted"]["AIS heatmap"]["target_mass"]["mean"]
  np.testing.assert_allclose(got, want.mean(), rtol=1e-9)
  rows = np.genfromtxt(os.path.join(out, "planted", "mass_per_image.csv"), delimiter=",",
                       names=True, dtype=None, encoding="utf-8")
  np.testing.assert_allclose(rows["AIS_heatmap_target_mass"], want, rtol=1e-9)
  np.testing.assert_allclose(rows["target_area"], cohort.target_masks.mean((1, 2)))


def test_two_runs_give_identical_numbers(runs):
  out, first, second, first_arrays = runs
  assert json.dumps(first["results"], sort_keys=True) == json.dumps(second["results"],
                                                                     sort_keys=True)
  for name, array in first_arrays.items():
    np.testing.assert_array_equal(np.load(os.path.join(out, "ais", f"{name}.npy")), array)
  compared = 0
  for rel, record in first["files"].items():
    if rel.endswith((".png", ".html")) or os.path.basename(rel) in ("summary.json",
                                                                     "saliency_summary.json"):
      continue  # images and timing records; the numbers behind every figure are compared
    assert second["files"][rel]["sha256"] == record["sha256"], rel
    compared += 1
  assert compared >= 20


def test_user_input_errors_are_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.run", "--dataset=kriegeskorte92",
       f"--data_dir={tmp_path / 'missing'}", f"--out={tmp_path / 'out'}", "--noprogress"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: --data_dir:") and "Traceback" not in proc.stderr


def test_define_flag_reuses_a_same_meaning_definition_and_refuses_another():
  from absl import flags
  from experiments import _common
  name = "test_run_define_flag_probe"
  _common.define_flag(flags.DEFINE_integer, name, 3, "first", lower_bound=0)
  _common.define_flag(flags.DEFINE_integer, name, 3, "first", lower_bound=0)  # Same: reused.
  flag = flags.FLAGS[name]
  assert (flag.default, flag.help) == (3, "first")
  assert flag in flags.FLAGS.flags_by_module_dict()[__name__]
  with pytest.raises(flags.Error, match=f"--{name} is defined twice with different meanings"):
    _common.define_flag(flags.DEFINE_string, name, "x", "second")
  assert flags.FLAGS[name] is flag


def test_every_experiment_defines_its_flags_beside_the_others():
  """--dataset, --data_dir, --images, --human_key, --human_kind mean one thing in every command:
  importing all the experiment scripts (and run's flags) into one process defines each once."""
  modules = ["experiments.ais", "experiments.selection", "experiments.saliency",
             "experiments.architectures", "experiments.inference", "experiments.lpips_baseline",
             "experiments.plot_selection", "experiments.check_report"]
  code = ("import importlib\n"
          f"for m in {modules!r}: importlib.import_module(m)\n"
          "from experiments import run\nrun.define_flags()\n"
          "from absl import flags\nprint(flags.FLAGS['dataset'].parser.enum_values)")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().splitlines()[-1] == "['planted', 'kriegeskorte92', 'custom']"


def test_dataset_of_each_command():
  from ais_jax import main_job
  from ais_jax.errors import UserInputError
  from experiments import _common
  assert _common.DATASETS == main_job.DATASETS
  both = ("kriegeskorte92", "custom")
  assert _common.dataset_of(None, images_given=False, supported=both,
                            default="custom") == "custom"
  assert _common.dataset_of(None, images_given=True, supported=_common.DATASETS,
                            default="planted") == "custom"
  assert _common.dataset_of(None, images_given=False, supported=_common.DATASETS,
                            default="planted") == "planted"
  assert _common.dataset_of("kriegeskorte92", images_given=True, supported=both,
                            default="custom") == "kriegeskorte92"  # the command refuses images
  with pytest.raises(UserInputError) as e:
    _common.dataset_of("planted", images_given=False, supported=both, default="custom")
  assert str(e.value) == ("--dataset: planted is not available in this command (it takes "
                          "kriegeskorte92, custom); planted is experiments.run's generated cohort")


def test_inference_refuses_the_planted_dataset_in_one_line(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "experiments.inference", f"--out={tmp_path}/o",
                         "--weights=w", "--dataset=planted"], cwd=REPO, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip() == ("error: --dataset: planted is not available in this command "
                                 "(it takes kriegeskorte92, custom); planted is experiments.run's "
                                 "generated cohort")
