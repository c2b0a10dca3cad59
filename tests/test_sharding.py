"""Image and map axes split over 8 fake CPU devices give the same AIS as one device.

The device count must be set before jax is imported, so the check runs in a subprocess.
"""

import json
import os
import subprocess
import sys
import textwrap

from conftest import GOLDEN, REPO

SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import numpy as np
    import jax
    from ais_jax import ablation, ais
    g = dict(np.load(sys.argv[1]))
    assert len(jax.devices()) == 8, jax.devices()
    fc = ablation.FcHead(w1=g["W1"].T, b1=g["b1"], w2=g["W2"].T, b2=g["b2"], pool_window=2)
    mesh = jax.make_mesh((2, 4), ("images", "maps"))
    out = {}
    for name, head, budget in (("fc", fc, 2.0), ("gap", ablation.PooledHead(), 2.0),
                               ("gap_row_blocks", ablation.PooledHead(), 1e-7)):
      plain = ais.compute_ais(head, g["F"], g["H"])
      sharded = ais.compute_ais(head, g["F"], g["H"], mesh=mesh, memory_budget_gb=budget)
      out[name] = {
          "per_image": float(np.max(np.abs(sharded.per_image - plain.per_image))),
          "cohort": float(np.max(np.abs(sharded.cohort - plain.cohort))),
          "golden": float(np.max(np.abs(
              sharded.per_image - g[f"per_image_{name[:3].rstrip('_')}_pearson_pearson"]))),
          "row_block": sharded.options["row_block"],
          "zero": float(sharded.per_image[2, 4]),
          "mesh": sharded.options["mesh"],
      }
    print(json.dumps(out))
""")


def test_sharded_equals_unsharded():
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run([sys.executable, "-c", SCRIPT, GOLDEN], capture_output=True, text=True,
                        env=env, cwd=REPO, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  for name, r in result.items():
    assert r["mesh"] == {"images": 2, "maps": 4}, name
    assert r["per_image"] <= 1e-12 and r["cohort"] <= 1e-12, (name, r)
    assert r["golden"] <= 1e-10, (name, r)
    assert r["zero"] == 0.0, (name, r)
  assert result["gap_row_blocks"]["row_block"] > 0 and result["gap"]["row_block"] == 0
