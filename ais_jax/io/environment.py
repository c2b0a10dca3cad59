"""The environment record every run writes into its summary.json (one definition for all
commands): Python, platform, package versions, JAX backend and devices."""

from __future__ import annotations

import platform
import sys


def environment() -> dict:
  """JSON-ready ``{python, platform, ais_jax_version, jax_version, jaxlib_version, flax_version,
  numpy_version, scipy_version, matplotlib_version, pillow_version, backend, devices}``."""
  import flax
  import jax
  import matplotlib
  import numpy as np
  import PIL
  import scipy
  import ais_jax
  env = {"python": sys.version.split()[0], "platform": platform.platform(),
         "ais_jax_version": ais_jax.__version__, "jax_version": jax.__version__,
         "flax_version": flax.__version__, "numpy_version": np.__version__,
         "scipy_version": scipy.__version__, "matplotlib_version": matplotlib.__version__,
         "pillow_version": PIL.__version__, "backend": jax.default_backend(),
         "devices": [{"id": d.id, "platform": d.platform, "kind": d.device_kind}
                     for d in jax.devices()]}
  try:
    import jaxlib
    env["jaxlib_version"] = jaxlib.__version__
  except ImportError:  # jaxlib comes with jax; the version is informative only.
    pass
  return env
