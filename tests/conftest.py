import os

import pytest

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
