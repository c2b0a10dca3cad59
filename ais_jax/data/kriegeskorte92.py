"""The 92-object image set (Kriegeskorte et al. 2008) with 16 subjects' similarity judgments
(Mur et al. 2013).

Files are read from a local folder (tests and CI: ``../shared/data/kriegeskorte92``) or, on a
machine with internet, downloaded from the public rsatoolbox copy and checked against sha256.

The human matrix for AIS is a **similarity**: the subject-averaged dissimilarity D is converted
as ``S = -D`` (any decreasing map gives the same rank order; Pearson agreement is invariant to
this affine map).
"""

from __future__ import annotations

import dataclasses
import os
import urllib.request

import numpy as np

from ais_jax.io.runs import sha256_file

STIMULI_FILE = "Kriegeskorte_Neuron2008_supplementalData.mat"
JUDGMENTS_FILE = "92_behavRDMs.mat"
SHA256 = {
    STIMULI_FILE: "06f21214399a5d43dc264eed19a7f4b8daf11c8622a59eec3e106064ce5e3504",
    JUDGMENTS_FILE: "7a8e118c144c3840adeeeef6ea0706a0be2b3e80df719af15fbb56fc62562f5f",
}
URL = "https://github.com/rsagroup/rsatoolbox/raw/main/demos/92imageData/{}"
CATEGORIES = ("human bodypart", "human face", "nonhuman bodypart", "nonhuman face",
              "natural inanimate", "artificial inanimate")


@dataclasses.dataclass(frozen=True)
class Kriegeskorte92:
  images: np.ndarray              # [92, 175, 175, 3] uint8
  categories: np.ndarray          # [92] int index into CATEGORIES
  category_names: tuple
  subject_dissimilarity: np.ndarray  # [16, 92, 92] float64
  subject_names: tuple
  image_names: tuple              # 'img000_human-bodypart' ...

  @property
  def dissimilarity(self) -> np.ndarray:
    """Subject-averaged dissimilarity [92, 92]."""
    return self.subject_dissimilarity.mean(axis=0)

  @property
  def similarity(self) -> np.ndarray:
    """Subject-averaged similarity S = -D [92, 92] (diagonal ignored by every analysis)."""
    return -self.dissimilarity


def download(data_dir: str, *, quiet: bool = False) -> str:
  """Fetches both files from the public rsatoolbox copy into ``data_dir`` (needs internet)."""
  os.makedirs(data_dir, exist_ok=True)
  for name, digest in SHA256.items():
    dst = os.path.join(data_dir, name)
    if os.path.exists(dst) and sha256_file(dst) == digest:
      continue
    if not quiet:
      print(f"downloading {URL.format(name)} -> {dst}")
    tmp = dst + ".part"
    urllib.request.urlretrieve(URL.format(name), tmp)
    got = sha256_file(tmp)
    if got != digest:
      os.remove(tmp)
      raise ValueError(f"{name}: sha256 {got} does not match the expected {digest}; "
                       "the download is corrupt or the source changed")
    os.replace(tmp, dst)
  return data_dir


def load(data_dir: str, *, verify: bool = True, allow_download: bool = False) -> Kriegeskorte92:
  """Reads the 92 images and the 16 subjects' judgments from ``data_dir``."""
  import scipy.io
  missing = [n for n in SHA256 if not os.path.exists(os.path.join(data_dir, n))]
  if missing:
    if not allow_download:
      raise FileNotFoundError(
          f"{data_dir}: missing {', '.join(missing)}. Point --data_dir at the folder holding the "
          f"92-image files, or allow the download (needs internet) from {URL.format('')}")
    download(data_dir)
  if verify:
    for name, digest in SHA256.items():
      got = sha256_file(os.path.join(data_dir, name))
      if got != digest:
        raise ValueError(f"{os.path.join(data_dir, name)}: sha256 {got} != expected {digest}")
  stim = scipy.io.loadmat(os.path.join(data_dir, STIMULI_FILE), simplify_cells=True)
  structs = stim["stimuli_92objs"]
  images = np.stack([np.asarray(s["image"], np.uint8) for s in structs])
  cat_index = {c: i for i, c in enumerate(CATEGORIES)}
  categories = np.array([cat_index[s["category"]] for s in structs], np.int32)
  behav = scipy.io.loadmat(os.path.join(data_dir, JUDGMENTS_FILE), simplify_cells=True)
  rdms = behav["rdms_behav_92"]
  subject_dis = np.stack([np.asarray(r["RDM"], np.float64) for r in rdms])
  names = tuple(f"img{i:03d}_{CATEGORIES[c].replace(' ', '-')}" for i, c in enumerate(categories))
  return Kriegeskorte92(images=images, categories=categories, category_names=CATEGORIES,
                        subject_dissimilarity=subject_dis,
                        subject_names=tuple(str(r["name"]) for r in rdms), image_names=names)


def load_for_command(data_dir: str) -> tuple[Kriegeskorte92, str]:
  """``--data_dir`` as the commands take it: a folder holding the two files, or empty for the
  cache (``$AIS_JAX_HOME/data/kriegeskorte92``), filled from the public rsatoolbox copy (needs
  internet; both files are checked against their sha256 before use).

  Returns:
    ``(data, the folder read)``.

  Raises:
    UserInputError naming ``--data_dir`` when the files are missing, corrupt or unreachable.
  """
  from ais_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top
  allow_download = not data_dir
  if allow_download:
    from ais_jax.io import weights as weights_io  # pylint: disable=g-import-not-at-top
    data_dir = os.path.join(weights_io.cache_dir(), "data", "kriegeskorte92")
  data_dir = os.path.expanduser(data_dir)
  try:
    return load(data_dir, allow_download=allow_download), data_dir
  except (FileNotFoundError, ValueError, OSError) as e:
    raise UserInputError("--data_dir", f"{e} (offline: point --data_dir at a folder holding "
                         f"{STIMULI_FILE} and {JUDGMENTS_FILE})") from None
