"""Image and map axes split over 8 fake CPU devices give the same AIS as one device, on every
engine path (fc, pooled rank-one with and without row blocks, pooled Spearman, pooled dense), in
float64 and on the float64-free path; on meshes with explicit and with Auto axes, and on meshes
with only one of the two axes.

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
    mesh = jax.make_mesh((2, 4), ("images", "maps"))   # explicit axes
    # jax.sharding.Mesh's axes are Auto (placed by sharding constraints, not resharded); a mesh
    # may also have only one of the two axes.
    auto = jax.sharding.Mesh(np.array(jax.devices()).reshape(4, 2), ("images", "maps"))
    maps_only = jax.sharding.Mesh(np.array(jax.devices()), ("maps",))
    images_only = jax.make_mesh((8,), ("images",))
    pooled = ablation.PooledHead()
    # name, head, options, float64, budget (GB), golden key (15 images over 2 devices: padded)
    cases = [
        ("fc", fc, {}, True, 2.0, "fc_pearson_pearson"),
        ("gap", pooled, {}, True, 2.0, "gap_pearson_pearson"),
        ("gap_row_blocks", pooled, {}, True, 1e-7, "gap_pearson_pearson"),
        ("gap_spearman", pooled, {"similarity": "spearman"}, True, 2.0, "gap_spearman_pearson"),
        ("gap_dense", pooled, {"path": "pooled_dense", "similarity": "cosine",
                               "comparison": "spearman"}, True, 2.0, "gap_cosine_spearman"),
        ("f32_fc", fc, {}, False, 2.0, "fc_pearson_pearson"),
        ("f32_gap", pooled, {"similarity": "cosine"}, False, 2.0, "gap_cosine_pearson"),
        ("f32_gap_spearman", pooled, {"similarity": "spearman"}, False, 2.0,
         "gap_spearman_pearson"),
        ("f32_gap_dense", pooled, {"path": "pooled_dense"}, False, 2.0, "gap_pearson_pearson"),
        ("auto_gap", pooled, {}, True, 2.0, "gap_pearson_pearson", auto),
        ("maps_only_fc", fc, {}, True, 2.0, "fc_pearson_pearson", maps_only),
        ("f32_images_only_gap_spearman", pooled, {"similarity": "spearman"}, False, 2.0,
         "gap_spearman_pearson", images_only),
    ]
    out = {}
    for name, head, options, float64, budget, key, *on in cases:
      os.environ["AIS_JAX_FLOAT64"] = "1" if float64 else "0"
      plain = ais.compute_ais(head, g["F"], g["H"], **options)
      sharded = ais.compute_ais(head, g["F"], g["H"], mesh=(on or [mesh])[0],
                                memory_budget_gb=budget, **options)
      out[name] = {
          "per_image": float(np.max(np.abs(sharded.per_image - plain.per_image))),
          "cohort": float(np.max(np.abs(sharded.cohort - plain.cohort))),
          "golden": float(np.max(np.abs(sharded.per_image - g[f"per_image_{key}"]))),
          "golden_cohort": float(np.max(np.abs(sharded.cohort - g[f"cohort_{key}"]))),
          "row_block": sharded.options["row_block"],
          "path": sharded.options["path"],
          "float64": sharded.options["float64"],
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
  assert len(result) == 12
  meshes = {"auto_gap": {"images": 4, "maps": 2}, "maps_only_fc": {"maps": 8},
            "f32_images_only_gap_spearman": {"images": 8}}
  for name, r in result.items():
    assert r["mesh"] == meshes.get(name, {"images": 2, "maps": 4}), name
    assert r["float64"] is not name.startswith("f32"), (name, r)
    # float64: the same sums in another order; float64-free: compensated float32 sums.
    same, golden = (1e-12, 1e-10) if r["float64"] else (1e-6, 2e-6)
    assert r["per_image"] <= same and r["cohort"] <= same, (name, r)
    assert r["golden"] <= golden and r["golden_cohort"] <= golden, (name, r)
    assert r["zero"] == 0.0, (name, r)
  assert result["gap_row_blocks"]["row_block"] > 0 and result["gap"]["row_block"] == 0
  assert result["gap_spearman"]["path"] == result["f32_gap_spearman"]["path"] == "pooled_spearman"
  assert result["gap_dense"]["path"] == result["f32_gap_dense"]["path"] == "pooled_dense"
