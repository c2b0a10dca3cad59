"""Bad inputs across the commands and the API: one clear line, exit 2, no run ever lost.

Every command case runs an absl main in-process (``experiments._common.run(main, argv=...)``,
which raises SystemExit instead of ending the process) on a tiny test architecture, and asserts
three things: the exit status, that stderr is exactly one ``error: ...`` line of at most a few
hundred characters naming the input (no traceback), and that a previous run in the same folder
is byte for byte untouched. The converters define conflicting flags, so they run as
subprocesses. Hypothesis fuzzes the matrix and image loaders: any bytes give a result or a
UserInputError, never another exception.
"""

import contextlib
import hashlib
import importlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
import scipy.io
from absl import flags
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_checkpoints as tiny  # pylint: disable=g-import-not-at-top,wrong-import-position

from ais_jax import validation
from ais_jax.errors import UserInputError
from ais_jax.io import checkpoints
from ais_jax.io import human as human_io
from ais_jax.io import images as images_io
from ais_jax.io import runs
from experiments import _common

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 8
MAX_LINE = 600


# ------------------------------------------------------------------------------------------------
# Harness


def run_main(module: str, *args: str):
  """``python -m experiments.<module> ARGS`` in this process -> (exit code, stdout, stderr)."""
  mod = importlib.import_module(f"experiments.{module}")
  if hasattr(mod, "define_flags"):
    mod.define_flags()
  flags.FLAGS.unparse_flags()
  if "memory_budget_gb" in flags.FLAGS and not any(
      a.startswith("--memory_budget_gb") for a in args):
    # The budget counts the process's resident memory, and this test process holds several GB by
    # the time these cases run in the full suite; the budget warning is not what they test.
    args = (*args, "--memory_budget_gb=1000")
  out, err = io.StringIO(), io.StringIO()
  saved_showwarning = warnings.showwarning
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      _common.run(mod.main, argv=[f"experiments.{module}", *args])
      code = 0
    except SystemExit as e:
      code = e.code or 0  # absl's sys.exit(main(argv)): None after a main that returned.
    finally:
      warnings.showwarning = saved_showwarning
  return code, out.getvalue(), err.getvalue()


def snapshot(folder) -> dict:
  """relative path -> sha256 of every file under ``folder`` (and the folder's siblings' names)."""
  folder = os.fspath(folder)
  files = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        files[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
  return files


def assert_one_error_line(code, err, *patterns, exit_code=2):
  lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[+")
           and not line.startswith("warning: ")]
  assert code == exit_code, err
  assert len(lines) == 1, err
  assert lines[0].startswith("error: "), err
  assert "Traceback" not in err
  assert len(lines[0]) <= MAX_LINE, len(lines[0])
  for pattern in patterns:
    assert pattern in lines[0], (pattern, lines[0])


def _images(folder, n=N, seed=0, identical=False):
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  first = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
  for i in range(n):
    px = first if identical else rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    Image.fromarray(px).save(os.path.join(folder, f"im{i}.png"))
  return str(folder)


def _similarity(n=N, seed=1):
  x = np.random.default_rng(seed).normal(size=(n, 4))
  return np.corrcoef(x)


def _distances(n=N, seed=1):
  x = np.random.default_rng(seed).normal(size=(n, 4))
  return np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """A tiny checkpoint, 8 images, a human matrix, and a completed previous run of each kind."""
  import jax
  from ais_jax import models
  root = tmp_path_factory.mktemp("bad")
  # Caches (registry weights, activations) of these runs stay in the test's folder.
  saved_home = os.environ.get("AIS_JAX_HOME")
  os.environ["AIS_JAX_HOME"] = str(root / "home")
  rng = np.random.default_rng(0)
  variables = jax.tree_util.tree_map(
      lambda leaf: (0.5 * rng.normal(size=leaf.shape) + (leaf.ndim == 1)).astype(np.float32),
      models.abstract_variables(tiny.TINY_SPEC))
  weights = checkpoints.save_checkpoint(root / "weights", variables,
                                        {"arch": tiny.TINY, "num_classes": tiny.TINY_CLASSES})
  images = _images(root / "images")
  np.save(root / "human.npy", _similarity())
  e = {"root": root, "weights": weights, "images": images, "human": str(root / "human.npy")}
  e["base"] = [f"--weights={weights}", f"--images={images}", f"--human={e['human']}",
               "--batch_size=4", "--noprogress"]
  # A previous experiments.ais run, and a fake previous experiments.run report.
  code, _, err = run_main("ais", *e["base"], f"--out={root / 'prev'}")
  assert code == 0, err
  e["prev"] = str(root / "prev")
  e["prev_files"] = snapshot(e["prev"])
  report = root / "report"
  (report / "ais").mkdir(parents=True)
  (report / "index.html").write_text("<html>previous report</html>")
  (report / "summary.json").write_text(json.dumps({"files": {"index.html": {}}}))
  (report / "ais" / "per_image_ais.npy").write_bytes(b"previous")
  e["report"] = str(report)
  e["report_files"] = snapshot(report)
  yield e
  if saved_home is None:
    os.environ.pop("AIS_JAX_HOME", None)
  else:
    os.environ["AIS_JAX_HOME"] = saved_home


def _bad(env, name, content: bytes | str | np.ndarray):
  path = env["root"] / "inputs" / name
  path.parent.mkdir(exist_ok=True)
  if isinstance(content, np.ndarray):
    np.save(path, content)
  elif isinstance(content, str):
    path.write_text(content)
  else:
    path.write_bytes(content)
  return str(path)


def _ais_case(env, overrides: dict, extra=()):
  """experiments.ais over the previous run with --overwrite and some flags replaced."""
  args = {"weights": env["base"][0], "images": env["base"][1], "human": env["base"][2]}
  args.update({k: f"--{k}={v}" for k, v in overrides.items()})
  argv = [a for a in args.values() if a is not None] + ["--batch_size=4", "--noprogress",
                                                         f"--out={env['prev']}", "--overwrite",
                                                         *extra]
  code, out, err = run_main("ais", *argv)
  assert snapshot(env["prev"]) == env["prev_files"], "the previous run was changed"
  assert not [n for n in os.listdir(os.path.dirname(env["prev"])) if ".staging-" in n]
  return code, out, err


# ------------------------------------------------------------------------------------------------
# experiments.ais: each bad input is one line, exit 2, and the previous run is untouched.

def _mat_v73_like():
  return b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon" + b"\0" * 80 + b"\x00\x02IM"


AIS_CASES = {
    # id: (flag overrides, extra argv, expected substrings of the error line)
    "unknown_flag": ({}, ["--bogus=1"], ["bogus"]),
    "positional_argument": ({}, ["stray"], ["unexpected arguments"]),
    "bad_enum": ({}, ["--similarity=kendall"], ["similarity"]),
    "zero_batch": ({}, ["--batch_size=0"], ["batch_size"]),
    "r2_with_spearman": ({}, ["--cohort_score=r2", "--comparison=spearman"], ["r2"]),
    "missing_images_dir": ({"images": "/nonexistent/images"}, [], ["/nonexistent/images"]),
    "empty_images_dir": ({"images": "EMPTY_DIR"}, [], ["EMPTY_DIR"]),
    "corrupt_png": ({"images": "CORRUPT_DIR"}, [], ["im3.png"]),
    "float_npy_images": ({"images": "FLOAT_NPY"}, [], ["float_images.npy"]),
    "object_npy_images": ({"images": "OBJECT_NPY"}, [], ["object_images.npy"]),
    "image_list_missing_name": ({}, ["--image_list=LIST"], ["nope.png"]),
    "human_missing": ({"human": "/nonexistent/h.npy"}, [], ["/nonexistent/h.npy"]),
    "human_wrong_size": ({"human": "H_WRONG_SIZE"}, [], ["cohort has 8 images"]),
    "human_asymmetric": ({"human": "H_ASYM"}, [], ["not symmetric"]),
    "human_tiny_scale_asymmetric": ({"human": "H_TINY_ASYM"}, [], ["not symmetric"]),
    "human_infinite": ({"human": "H_INF"}, [], ["infinite"]),
    "human_csv_header": ({"human": "H_CSV_TEXT"}, [], ["is not a number"]),
    "human_unknown_extension": ({"human": "H_TXT"}, [], ["unknown extension"]),
    "human_garbage_mat": ({"human": "H_MAT_GARBAGE"}, [], ["h_garbage.mat"]),
    "human_constant_rows": ({"human": "H_CONST"}, [], ["constant"]),
    "human_distance_unstated": ({"human": "H_DIST"}, [], ["--human_kind=dissimilarity"]),
    "human_pickle_npy": ({"human": "H_PICKLE"}, [], ["h_pickle.npy"]),
    "weights_empty": ({"weights": ""}, [], ["--weights"]),
    "weights_unknown_name": ({"weights": "no_such_weights"}, [], ["no_such_weights"]),
    "weights_not_checkpoint": ({"weights": "IMAGES_AS_WEIGHTS"}, [], ["not"]),
    "weights_damaged": ({"weights": "DAMAGED_CKPT"}, [], ["damaged"]),
    "arch_mismatch": ({}, ["--arch=vgg16"], ["--arch"]),
    "arch_unknown": ({}, ["--arch=vgg17"], ["--arch"]),
}


@pytest.fixture(scope="module")
def bad_inputs(env):
  root = env["root"]
  (root / "inputs").mkdir(exist_ok=True)
  (root / "inputs" / "empty").mkdir()
  corrupt = _images(root / "inputs" / "corrupt")
  with open(os.path.join(corrupt, "im3.png"), "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
  h = _similarity()
  asym = h.copy()
  asym[0, 1] += 0.5
  tiny_asym = np.random.default_rng(3).normal(size=(N, N)) * 1e-12
  inf = h.copy()
  inf[2, 3] = inf[3, 2] = np.inf
  const = h.copy()
  const[0, 1:] = const[1:, 0] = 0.25
  damaged = root / "inputs" / "damaged_ckpt"
  import shutil
  shutil.copytree(env["weights"], damaged)
  for folder, _, names in os.walk(damaged / "variables"):
    for name in names:
      if os.sep + "d" in folder:
        with open(os.path.join(folder, name), "wb") as f:
          f.write(b"garbage")
  (root / "inputs" / "list.txt").write_text("im0.png\nnope.png\n")
  return {
      "EMPTY_DIR": str(root / "inputs" / "empty"),
      "CORRUPT_DIR": corrupt,
      "FLOAT_NPY": _bad(env, "float_images.npy", np.zeros((N, 12, 12, 3), np.float32)),
      "OBJECT_NPY": _bad(env, "object_images.npy", np.array([None] * N, dtype=object)),
      "LIST": str(root / "inputs" / "list.txt"),
      "H_WRONG_SIZE": _bad(env, "h_wrong.npy", _similarity(6)),
      "H_ASYM": _bad(env, "h_asym.npy", asym),
      "H_TINY_ASYM": _bad(env, "h_tiny_asym.npy", tiny_asym),
      "H_INF": _bad(env, "h_inf.npy", inf),
      "H_CSV_TEXT": _bad(env, "h_text.csv", "a,b,c\n1,2,3\n"),
      "H_TXT": _bad(env, "h.txt", "1 2\n2 1\n"),
      "H_MAT_GARBAGE": _bad(env, "h_garbage.mat", b"MATLAB 5.0 MAT-file" + b"\x07" * 200),
      "H_CONST": _bad(env, "h_const.npy", const),
      "H_DIST": _bad(env, "h_dist.npy", _distances()),
      "H_PICKLE": _bad(env, "h_pickle.npy", np.array([{"a": 1}] * N, dtype=object)),
      "IMAGES_AS_WEIGHTS": env["images"],
      "DAMAGED_CKPT": str(damaged),
  }


@pytest.mark.parametrize("case", sorted(AIS_CASES))
def test_ais_command_bad_input(env, bad_inputs, case):
  overrides, extra, patterns = AIS_CASES[case]
  overrides = {k: bad_inputs.get(v, v) for k, v in overrides.items()}
  extra = [a.replace("LIST", bad_inputs["LIST"]) for a in extra]
  if "weights" in overrides and overrides["weights"] == "":
    overrides["weights"] = ""
  patterns = [bad_inputs.get(p, p) for p in patterns]
  code, out, err = _ais_case(env, overrides, extra)
  assert_one_error_line(code, err, *patterns)
  assert out == ""


def test_debug_adds_the_traceback_before_the_same_line(env):
  code, _, err = _ais_case(env, {"human": "/nonexistent/h.npy"}, ["--debug"])
  assert code == 2 and "Traceback (most recent call last)" in err
  assert err.strip().splitlines()[-1].startswith("error: /nonexistent/h.npy: no such file")


def test_long_messages_are_elided_in_the_middle():
  message = "input.npy: " + "x" * 5000 + " the fix"
  line = _common.one_line(message)
  assert len(line) <= _common.MAX_ERROR_CHARS + 5
  assert line.startswith("input.npy: ") and line.endswith(" the fix") and " ... " in line


@pytest.mark.parametrize("case", ["out_is_file", "out_under_file", "out_unwritable",
                                  "out_not_empty", "overwrite_a_folder_that_is_not_a_run"])
def test_ais_command_bad_out(env, case):
  root = env["root"]
  (root / "a_file").write_text("x")
  (root / "my_notes").mkdir(exist_ok=True)
  (root / "my_notes" / "notes.txt").write_text("mine")
  out = {"out_is_file": root / "a_file", "out_under_file": root / "a_file" / "run",
         "out_unwritable": "/proc/ais_jax_run", "out_not_empty": env["prev"],
         "overwrite_a_folder_that_is_not_a_run": root / "my_notes"}[case]
  extra = ["--overwrite"] if case == "overwrite_a_folder_that_is_not_a_run" else []
  code, _, err = run_main("ais", *env["base"], f"--out={out}", *extra)
  assert_one_error_line(code, err, {"out_not_empty": "--overwrite", "out_unwritable": "/proc",
                                    "out_is_file": "not a folder",
                                    "out_under_file": "not a folder",
                                    "overwrite_a_folder_that_is_not_a_run": "no ais_jax output"
                                    }[case])
  assert snapshot(env["prev"]) == env["prev_files"]
  assert (root / "a_file").read_text() == "x"
  assert os.listdir(root / "my_notes") == ["notes.txt"]


def test_stated_kind_that_contradicts_the_diagonal_runs_with_a_warning(env, tmp_path):
  np.save(tmp_path / "d.npy", _distances())
  code, _, err = run_main("ais", *env["base"][:2], f"--human={tmp_path / 'd.npy'}",
                          "--human_kind=similarity", "--noprogress", f"--out={tmp_path / 'run'}")
  assert code == 0, err
  assert "warning: " in err and "--human_kind" in err
  summary = runs.load_run(str(tmp_path / "run"))["summary"]
  assert any("diagonal" in w for w in summary["warnings"])
  assert summary["inputs"]["human"]["kind_warning"]
  # Stated the right way round: no warning, and the matrix is negated.
  code, _, err = run_main("ais", *env["base"][:2], f"--human={tmp_path / 'd.npy'}",
                          "--human_kind=dissimilarity", "--noprogress",
                          f"--out={tmp_path / 'run2'}")
  assert code == 0 and "warning" not in err, err
  assert not runs.load_run(str(tmp_path / "run2"))["summary"]["warnings"]


def test_all_identical_images_finish_with_their_counts(env, tmp_path):
  images = _images(tmp_path / "same", identical=True)
  code, out, err = run_main("ais", env["base"][0], f"--images={images}", env["base"][2],
                            "--noprogress", f"--out={tmp_path / 'run'}")
  assert code == 0, err
  run = runs.load_run(str(tmp_path / "run"))
  undefined = run["summary"]["undefined"]
  assert np.isnan(run["per_image_ais"]).all() and np.isnan(run["cohort_ais"]).all()
  assert undefined["per_image_ais"]["count"] == run["per_image_ais"].size
  assert f"{run['per_image_ais'].size}/{run['per_image_ais'].size}" in out
  assert "baseline agreement undefined" in out and "top cohort maps none" in out
  assert run["summary"]["results"]["cohort_ais_top10_maps"] == []  # No undefined map is "top".


def test_edited_run_is_refused_by_load_run(env, tmp_path):
  import shutil
  copy = tmp_path / "copy"
  shutil.copytree(env["prev"], copy)
  per_image = np.load(copy / "per_image_ais.npy")
  np.save(copy / "per_image_ais.npy", per_image + 1)
  with pytest.raises(UserInputError, match="per_image_ais.npy does not match the sha256"):
    runs.load_run(str(copy))
  np.testing.assert_array_equal(runs.load_run(str(copy), verify=False)["per_image_ais"],
                                per_image + 1)
  (copy / "summary.json").write_text("{not json")
  with pytest.raises(UserInputError, match="cannot be read as JSON"):
    runs.load_run(str(copy))


# ------------------------------------------------------------------------------------------------
# experiments.run: its inputs are checked before the previous report is touched.

RUN_CASES = {
    "distance_matrix_unstated": (["--human=H_DIST"], ["--human_kind"]),
    "asymmetric_human": (["--human=H_ASYM"], ["not symmetric"]),
    "planted_with_images": (["--dataset=planted", "--images=IMAGES"], ["--dataset"]),
    "too_few_images": (["--dataset=planted", "--n_images=2"], ["n_images"]),
    "missing_weights": (["--human=HUMAN", "--weights=/nonexistent/ckpt"], ["/nonexistent/ckpt"]),
    "missing_saliency_maps": (["--human=HUMAN", "--saliency=/nonexistent/sal.npy"],
                              ["--saliency", "/nonexistent/sal.npy"]),
}


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_run_command_keeps_the_previous_report(env, bad_inputs, case):
  extra, patterns = RUN_CASES[case]
  names = dict(bad_inputs, IMAGES=env["images"], HUMAN=env["human"])
  extra = [a.split("=")[0] + "=" + names.get(a.split("=", 1)[1], a.split("=", 1)[1])
           for a in extra]
  base = [] if any(a.startswith("--dataset=planted") for a in extra) else [
      f"--images={env['images']}", f"--weights={env['weights']}"]
  if not any(a.startswith("--human") for a in extra) and not base == []:
    base.append(f"--human={env['human']}")
  if not any(a.startswith("--saliency") for a in extra):
    extra.append("--saliency=none")
  code, _, err = run_main("run", *base, *extra, f"--out={env['report']}", "--overwrite",
                          "--noprogress", "--folds=0")
  assert_one_error_line(code, err, *patterns)
  assert snapshot(env["report"]) == env["report_files"], "the previous report was changed"


def test_run_command_bad_out_is_found_before_any_work(env):
  code, _, err = run_main("run", "--out=/proc/ais_jax_report", "--noprogress")
  assert_one_error_line(code, err, "/proc")


# ------------------------------------------------------------------------------------------------
# Other commands.

def test_saliency_command_on_a_missing_run(env, tmp_path):
  code, _, err = run_main("saliency", f"--ais_run={tmp_path / 'nope'}", f"--images={env['images']}",
                          f"--out={tmp_path / 'sal'}")
  assert_one_error_line(code, err, "nope")
  assert not (tmp_path / "sal").exists()


def test_saliency_command_on_an_edited_run(env, tmp_path):
  import shutil
  shutil.copytree(env["prev"], tmp_path / "run")
  np.save(tmp_path / "run" / "heatmaps.npy", np.zeros((N, 4, 4), np.float32))
  code, _, err = run_main("saliency", f"--ais_run={tmp_path / 'run'}",
                          f"--images={env['images']}", f"--out={tmp_path / 'sal'}")
  assert_one_error_line(code, err, "heatmaps.npy does not match the sha256")
  assert not (tmp_path / "sal").exists()


def test_selection_command_with_unreadable_maps(env, tmp_path):
  (tmp_path / "maps.npy").write_bytes(b"\x93NUMPY truncated")
  code, _, err = run_main("selection", env["base"][0], env["base"][2], "--noprogress",
                          f"--maps={tmp_path / 'maps.npy'}", f"--out={tmp_path / 'sel'}")
  assert_one_error_line(code, err, "maps.npy")
  assert not (tmp_path / "sel").exists()


def _convert(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=120)


@pytest.fixture(scope="module")
def pth_files(tmp_path_factory):
  import torch
  root = tmp_path_factory.mktemp("pth")
  torch.save(tiny.torch_tiny().state_dict(), root / "tiny.pth")
  (root / "trunc.pth").write_bytes((root / "tiny.pth").read_bytes()[:300])
  torch.save({"step": 3}, root / "not_state_dict.pth")
  (root / "existing").mkdir()
  (root / "existing" / "keep.txt").write_text("keep")
  return root


@pytest.mark.parametrize("case", ["truncated", "not_state_dict", "wrong_arch", "existing_dst"])
def test_convert_command_errors(pth_files, case):
  src = {"truncated": "trunc.pth", "not_state_dict": "not_state_dict.pth"}.get(case, "tiny.pth")
  dst = pth_files / ("existing" if case == "existing_dst" else f"out_{case}")
  proc = _convert("convert.torch_to_flax", f"--arch={'vgg16' if case == 'wrong_arch' else 'alexnet'}",
                  f"--src={pth_files / src}", f"--dst={dst}")
  assert_one_error_line(proc.returncode, proc.stderr,
                        {"truncated": "trunc.pth", "not_state_dict": "not a state dict",
                         "wrong_arch": "vgg16", "existing_dst": "--overwrite"}[case])
  assert not dst.exists() or (dst / "keep.txt").read_text() == "keep"


def test_fetch_command_unknown_name():
  proc = _convert("convert.fetch", "--name=no_such_weights")
  assert_one_error_line(proc.returncode, proc.stderr, "no_such_weights")


# ------------------------------------------------------------------------------------------------
# Interrupts, swaps, stale temporaries, modes.

def test_ctrl_c_exits_130_with_one_line_and_keeps_the_run(env, monkeypatch):
  from ais_jax import ais
  real = ais.compute_ais

  def interrupted(*args, **kwargs):
    signal.raise_signal(signal.SIGINT)  # Through the command's own SIGINT handler.
    return real(*args, **kwargs)

  monkeypatch.setattr(ais, "compute_ais", interrupted)
  code, _, err = run_main("ais", *env["base"], f"--out={env['prev']}", "--overwrite")
  assert code == 130
  assert err.strip().splitlines() == [err.strip()] and err.startswith("interrupted")
  assert snapshot(env["prev"]) == env["prev_files"]


def test_ctrl_c_swallowed_by_a_gc_callback_is_delivered_again(monkeypatch):
  """Python only prints an exception raised in a garbage-collector callback (JAX has one): a
  Ctrl-C landing there must still stop the command."""
  import gc
  reached = []

  def main(argv):
    del argv

    def callback(phase, info):
      del info
      if phase == "start":
        gc.callbacks.remove(callback)
        raise KeyboardInterrupt  # As the SIGINT handler does when the signal lands here.

    _common._interrupt["count"] = 1  # pylint: disable=protected-access  (the handler ran)
    gc.callbacks.append(callback)
    gc.collect()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # The re-delivered interrupt lands here.
      pass
    reached.append("after")

  flags.FLAGS.unparse_flags()
  err = io.StringIO()
  with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
    _common.run(main, argv=["x"])
  assert info.value.code == 130 and not reached
  assert "Exception ignored" not in err.getvalue() and err.getvalue().startswith("interrupted")


def test_stale_staging_of_a_dead_writer_is_removed_and_a_live_one_kept(tmp_path):
  out = tmp_path / "run"
  runs.write_run(str(out), {"a": np.arange(3.0)}, {"first": True})
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  stale = tmp_path / f".run.staging-{dead.pid}-x"
  stale.mkdir()
  (stale / "half.npy").write_bytes(b"half")
  (stale / ".ais_jax_writer").write_text(json.dumps({"pid": dead.pid, "host": os.uname()[1]}))
  live = tmp_path / f".run.staging-{os.getppid()}-y"
  live.mkdir()
  runs.write_run(str(out), {"a": np.arange(4.0)}, {"first": False}, overwrite=True)
  assert not stale.exists() and live.exists()
  assert runs.load_run(str(out))["a"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_a_kill_between_the_two_renames_of_the_fallback_swap_is_undone(tmp_path, monkeypatch):
  out = tmp_path / "run"
  runs.write_run(str(out), {"a": np.arange(3.0)}, {"first": True})
  monkeypatch.setattr(runs, "_exchange", lambda a, b: False)
  real_rename = os.rename
  calls = []

  def rename_then_die(src, dst):
    real_rename(src, dst)
    calls.append(dst)
    if dst.endswith(runs._SWAPPED_OUT):  # pylint: disable=protected-access
      raise KeyboardInterrupt  # As if killed right after moving the old run aside.

  monkeypatch.setattr(runs.os, "rename", rename_then_die)
  with pytest.raises(KeyboardInterrupt):
    runs.write_run(str(out), {"a": np.arange(4.0)}, {"first": False}, overwrite=True)
  monkeypatch.setattr(runs.os, "rename", real_rename)
  assert not out.exists()
  # The next writer (after this "killed" one) puts the old run back before anything else.
  staging = [p for p in tmp_path.iterdir() if ".staging-" in p.name]
  lock = json.loads((staging[0] / ".ais_jax_writer").read_text())
  lock["pid"] = 2 ** 22 + 7  # Beyond pid_max: a writer that no longer runs.
  (staging[0] / ".ais_jax_writer").write_text(json.dumps(lock))
  runs.clean_stale(str(out))
  assert runs.load_run(str(out))["summary"]["first"] is True
  assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_files_and_folders_follow_the_umask(tmp_path):
  old = os.umask(0o027)
  try:
    runs.write_run(str(tmp_path / "run"), {"a": np.arange(3.0)}, {})
    import jax
    from ais_jax import models
    variables = jax.tree_util.tree_map(lambda leaf: np.zeros(leaf.shape, np.float32),
                                       models.abstract_variables(tiny.TINY_SPEC))
    checkpoints.save_checkpoint(tmp_path / "ckpt", variables,
                                {"arch": tiny.TINY, "num_classes": tiny.TINY_CLASSES})
  finally:
    os.umask(old)
  assert os.stat(tmp_path / "run").st_mode & 0o777 == 0o750
  assert os.stat(tmp_path / "run" / "a.npy").st_mode & 0o777 == 0o640
  assert os.stat(tmp_path / "ckpt").st_mode & 0o777 == 0o750
  assert os.stat(tmp_path / "ckpt" / "provenance.json").st_mode & 0o777 == 0o640


def test_refused_out_leaves_no_created_folders(tmp_path):
  with pytest.raises(RuntimeError):
    with runs.staged_dir(tmp_path / "new" / "deeper" / "run"):
      raise RuntimeError("the run failed")
  assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# The API: the human matrix's orientation rule.

def test_orientation_rule_in_the_api(tmp_path):
  d = _distances()
  np.save(tmp_path / "d.npy", d)
  with pytest.raises(UserInputError, match=r"d.npy: the diagonal is the smallest value of 8 of 8"):
    human_io.load_human(str(tmp_path / "d.npy"))
  np.testing.assert_array_equal(human_io.load_human(str(tmp_path / "d.npy"),
                                                    kind="dissimilarity"), -d)
  with pytest.warns(validation.HumanKindWarning, match="check --human_kind"):
    human_io.load_human(str(tmp_path / "d.npy"), kind="similarity")
  # A NaN diagonal skips the rule; one row of nine is not "nearly every row".
  nan_diag = d.copy()
  np.fill_diagonal(nan_diag, np.nan)
  np.save(tmp_path / "nan_diag.npy", nan_diag)
  human_io.load_human(str(tmp_path / "nan_diag.npy"))
  s = _similarity(9)
  s[0, 0] = -5.0
  assert validation.diagonal_minimum_rows(s) == (1, 9)
  validation.validate_human_similarity(s, kind_stated=False)


# ------------------------------------------------------------------------------------------------
# Fuzzing: any bytes give a result or a UserInputError.

FUZZ = hypothesis.settings(max_examples=40, deadline=None, derandomize=True,
                           suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])


def _valid_npy(matrix):
  buf = io.BytesIO()
  np.save(buf, matrix)
  return buf.getvalue()


@FUZZ
@hypothesis.given(data=st.binary(max_size=400), ext=st.sampled_from([".npy", ".csv", ".mat"]),
                  cut=st.integers(0, 400))
def test_fuzz_human_loader(tmp_path, data, ext, cut):
  path = tmp_path / f"h{ext}"
  if ext == ".npy" and cut % 2:  # Half the cases start from a valid file, cut short or damaged.
    data = _valid_npy(_similarity(5))[:cut] + data
  path.write_bytes(data)
  try:
    matrix = human_io.load_human(str(path), kind="similarity")
  except UserInputError:
    return
  assert matrix.ndim == 2 and matrix.dtype == np.float64


@FUZZ
@hypothesis.given(data=st.binary(max_size=300), ext=st.sampled_from([".png", ".jpg", ".bmp",
                                                                     ".gif", ".tif", ".npy"]),
                  cut=st.integers(0, 600))
def test_fuzz_image_loader(tmp_path, data, ext, cut):
  path = tmp_path / f"im{ext}"
  if cut % 2 and ext != ".npy":  # Damage a real image: truncate it and append the bytes.
    buf = io.BytesIO()
    Image.fromarray(np.full((6, 6, 3), 100, np.uint8)).save(
        buf, format={".jpg": "JPEG", ".tif": "TIFF"}.get(ext, ext[1:].upper()))
    data = buf.getvalue()[:cut] + data
  path.write_bytes(data)
  try:
    if ext == ".npy":
      images, _ = images_io.load_images(str(path))
    else:
      images = images_io.read_image_file(str(path))
  except UserInputError:
    return
  assert np.asarray(images).dtype == np.uint8


@FUZZ
@hypothesis.given(values=st.lists(st.sampled_from([0.0, 1.0, -1.0, 2.5, np.nan, np.inf, 1e-300,
                                                   1e300]), min_size=16, max_size=16))
def test_fuzz_human_matrix_values(values):
  matrix = np.asarray(values).reshape(4, 4)
  try:
    out = validation.validate_human_similarity(matrix, kind_stated=False)
  except ValueError:
    return
  assert np.isfinite(out[~np.eye(4, dtype=bool) & ~np.isnan(out)]).all()
