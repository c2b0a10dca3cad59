import os

import pytest
from hypothesis import settings

# Hypothesis: CI replays the same examples every run (derandomised, so a red CI is reproducible
# and a green one is not luck); locally the default profile searches new examples and keeps the
# counterexamples it finds in .hypothesis/ (git-ignored), replaying them first on the next run.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

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
