import os

import pytest
from hypothesis import settings

# Hypothesis: CI replays the same examples every run (derandomised, so a red CI is reproducible
# and a green one is not luck); locally the default profile searches new examples and keeps the
# counterexamples it finds in .hypothesis/ (git-ignored), replaying them first on the next run.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))



def pytest_configure(config):
  """Runs in tests (and the command lines they start) read and write a private activation cache
  (ais_jax.io.activation_cache), never the user's: a hit there would skip the trunk that a test
  means to run. The folder is named by this process id, created only when an entry is written,
  emptied first (a killed session with the same id may have left it) and removed at the end."""
  import shutil
  import tempfile
  root = os.path.join(tempfile.gettempdir(), f"ais_jax_test_activations-{os.getpid()}")
  shutil.rmtree(root, ignore_errors=True)
  config._ais_jax_activations = root
  os.environ["AIS_JAX_ACTIVATIONS"] = root


def pytest_unconfigure(config):
  import shutil
  shutil.rmtree(getattr(config, "_ais_jax_activations", ""), ignore_errors=True)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("AIS_JAX_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
GOLDEN = os.path.join(SHARED, "golden", "ais_small.npz")
K92_DIR = os.path.join(SHARED, "data", "kriegeskorte92")


@pytest.fixture(scope="session")
def golden():
  import numpy as np
  if not os.path.exists(GOLDEN):
    pytest.fail(f"golden values not found at {GOLDEN} (set AIS_JAX_SHARED to the shared/ folder)")
  return dict(np.load(GOLDEN))


@pytest.fixture(scope="session")
def k92():
  from ais_jax.data import kriegeskorte92
  if not os.path.isdir(K92_DIR):
    pytest.fail(f"92-image data not found at {K92_DIR} (set AIS_JAX_SHARED to the shared/ folder)")
  return kriegeskorte92.load(K92_DIR)
