"""The 92-image loader and its sha256-checked downloader (file:// URLs stand in for the web)."""

import os
import shutil

import numpy as np
import pytest

from ais_jax.data import kriegeskorte92
from conftest import K92_DIR


def test_load_shapes_and_similarity(k92):
  assert k92.images.shape == (92, 175, 175, 3) and k92.images.dtype == np.uint8
  assert k92.subject_dissimilarity.shape == (16, 92, 92)
  np.testing.assert_array_equal(k92.similarity, -k92.subject_dissimilarity.mean(axis=0))
  assert np.bincount(k92.categories).tolist() == [12, 12, 12, 12, 23, 21]
  assert len(set(k92.image_names)) == 92


def test_loader_against_the_raw_mat_entries(k92):
  """Each array the loader returns against the .mat structs read without simplify_cells."""
  import scipy.io
  stimuli = scipy.io.loadmat(os.path.join(K92_DIR, kriegeskorte92.STIMULI_FILE))["stimuli_92objs"]
  behaviour = scipy.io.loadmat(os.path.join(K92_DIR, kriegeskorte92.JUDGMENTS_FILE))["rdms_behav_92"]
  assert stimuli.shape == (1, 92) and behaviour.shape == (1, 16)
  for i in (0, 11, 12, 47, 68, 91):
    np.testing.assert_array_equal(k92.images[i], stimuli[0, i]["image"])
    assert k92.category_names[k92.categories[i]] == str(stimuli[0, i]["category"][0])
  raw = np.stack([behaviour[0, s]["RDM"].astype(np.float64) for s in range(16)])
  np.testing.assert_array_equal(k92.subject_dissimilarity, raw)
  # The documented conversion S = -mean_s D_s, entry by entry from the raw numbers.
  assert k92.similarity[3, 70] == pytest.approx(-sum(raw[s, 3, 70] for s in range(16)) / 16,
                                                rel=1e-15)
  labels = [str(stimuli[0, i]["category"][0]) for i in range(92)]
  assert [labels.count(c) for c in ("human bodypart", "human face", "nonhuman bodypart",
                                    "nonhuman face", "natural inanimate",
                                    "artificial inanimate")] == [12, 12, 12, 12, 23, 21]


def test_download_checks_sha256(tmp_path, monkeypatch):
  monkeypatch.setattr(kriegeskorte92, "URL", "file://" + os.path.abspath(K92_DIR) + "/{}")
  dst = tmp_path / "k92"
  data = kriegeskorte92.load(str(dst), allow_download=True)
  assert data.images.shape[0] == 92
  # A corrupt source is refused and leaves no file behind.
  bad = tmp_path / "bad"
  bad.mkdir()
  for name in kriegeskorte92.SHA256:
    shutil.copy(os.path.join(K92_DIR, name), bad / name)
  with open(bad / kriegeskorte92.JUDGMENTS_FILE, "ab") as f:
    f.write(b"tampered")
  monkeypatch.setattr(kriegeskorte92, "URL", "file://" + str(bad) + "/{}")
  fresh = tmp_path / "fresh"
  with pytest.raises(ValueError, match="sha256"):
    kriegeskorte92.download(str(fresh), quiet=True)
  assert not (fresh / kriegeskorte92.JUDGMENTS_FILE).exists()
  with pytest.raises(FileNotFoundError, match="missing"):
    kriegeskorte92.load(str(tmp_path / "nothing"))


def test_inference_job_fills_the_cache_when_data_dir_is_empty(tmp_path, monkeypatch):
  """experiments.inference --dataset=kriegeskorte92 without --data_dir: the cache, downloaded
  there (sha256-checked) as for experiments.run; a folder without the files names --data_dir."""
  from ais_jax import inference_job
  from ais_jax.errors import UserInputError
  monkeypatch.setenv("AIS_JAX_HOME", str(tmp_path / "home"))
  monkeypatch.setattr(kriegeskorte92, "URL", "file://" + os.path.abspath(K92_DIR) + "/{}")
  common = dict(dataset="kriegeskorte92", images="", human_subjects="", human_kind=None,
                human_key=None)
  images, names, subjects, record = inference_job._load_cohort(data_dir="", **common)
  cache = tmp_path / "home" / "data" / "kriegeskorte92"
  assert record["data_dir"] == str(cache)
  assert sorted(os.listdir(cache)) == sorted(kriegeskorte92.SHA256)
  assert images.shape == (92, 175, 175, 3) and subjects.shape == (16, 92, 92) and len(names) == 92
  with pytest.raises(UserInputError, match=r"^--data_dir: .*offline: point --data_dir at a folder"):
    inference_job._load_cohort(data_dir=str(tmp_path / "empty"), **common)
