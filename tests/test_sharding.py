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
    import functools, json, os, sys
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
    # and, where it is not `mesh`, the mesh
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
    for name, head, options, float64, budget, key, *other_mesh in cases:  # default: `mesh`
      os.environ["AIS_JAX_FLOAT64"] = "1" if float64 else "0"
      plain = ais.compute_ais(head, g["F"], g["H"], **options)
      on = other_mesh[0] if other_mesh else mesh
      sharded = ais.compute_ais(head, g["F"], g["H"], mesh=on, memory_budget_gb=budget,
                                **options)
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
    # The work is split: each device's part of the map slots and of the target images.
    split = {}
    for name, on in (("explicit", mesh), ("auto", auto), ("maps_only", maps_only),
                     ("images_only", images_only)):
      plan = ais._plan(pooled, g["F"].shape, similarity="pearson", comparison="pearson",
                       precision="exact", memory_budget_gb=2.0, mesh=on)
      with jax.enable_x64(True):
        jaxpr = jax.make_jaxpr(functools.partial(ais._kernel, plan))(pooled, g["F"], g["H"])
      shard_maps = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "shard_map"]
      local = [v.aval.shape[0] for v in shard_maps[0].params["jaxpr"].invars[:4]]
      split[name] = [plan.map_pad, plan.image_pad, len(shard_maps), *local]
    print(json.dumps({"cases": out, "split": split}))
""")


def test_sharded_equals_unsharded():
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run([sys.executable, "-c", SCRIPT, GOLDEN], capture_output=True, text=True,
                        env=env, cwd=REPO, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  printed = json.loads(proc.stdout.strip().splitlines()[-1])
  result = printed["cases"]
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
  # Each device holds its share of the map slots (K = 6 maps + the baseline slot, padded) and of
  # the 15 target images (padded), in the order (map slots, their validity, targets, validity).
  devices = {"explicit": (4, 2), "auto": (2, 4), "maps_only": (8, 1), "images_only": (1, 8)}
  for name, (map_devices, image_devices) in devices.items():
    map_pad, image_pad, shard_maps, *local = printed["split"][name]
    assert shard_maps == 1, name
    assert map_pad >= 7 and map_pad % map_devices == 0 and 15 <= image_pad < 15 + image_devices
    assert image_pad % image_devices == 0, name
    assert local == [map_pad // map_devices] * 2 + [image_pad // image_devices] * 2, name
