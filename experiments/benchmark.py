r"""Per-image AIS on VGG16 shapes: the published structure vs batched PyTorch vs ais_jax.

    python -m experiments.benchmark --n=24 --out=benchmark.json

VGG16 head shapes (K = 512 maps of 14x14, fc 25088 -> 4096 -> 4096), random variance-preserving
(He) weights, ``--n`` images of random post-ReLU maps (about 40% of the channels all-zero per
image, as a random VGG16's conv5_3), a random symmetric human matrix. The AIS stage is timed from
the same maps for every variant:

(a) the published structure: per image, per map, batch 1, a host copy of the masked maps, full
    fc6 + fc7 in PyTorch float32, NumPy float64 row correlations (``np.corrcoef``). Slow: when the
    whole cohort would take longer than ``--a_budget_s``, it runs on a subset of (image, map)
    pairs and is extrapolated linearly (said so in the output).
(b) batched PyTorch float32: all 512 ablated copies of one image in one batch through fc6 + fc7,
    correlations in torch (float32).
(c) ais_jax in each ``--modes`` precision: the first call compiles; later calls are timed
    (steady state), several times interleaved with the segments of (a) because the machine is
    shared and its speed drifts; the median is reported, every sample is in the JSON.

Errors are max |AIS - AIS_exact| over the values each variant computed; the 'exact' mode is
itself checked against an independent float64 NumPy loop on a few (row, map) pairs. The
end-to-end time (random-weight VGG16 trunk in Flax + AIS) is reported separately for ais_jax.
"""

from __future__ import annotations

import json
import os
import platform
import time

from absl import app
from absl import flags

import numpy as np

from experiments import _common

FLAGS = flags.FLAGS
flags.DEFINE_integer("n", 24, "Images in the cohort.")
flags.DEFINE(_common.PathParser(), "out", None, "JSON output path (optional).")
flags.DEFINE_list("modes", ["exact", "float32", "fast"], "ais_jax precision modes to time.")
flags.DEFINE_integer("data_seed", 0, "Seed of the synthetic weights, maps and human matrix.")
flags.DEFINE_float("a_budget_s", 300.0, "Longest time (a) may run before it is subsampled.")
flags.DEFINE_bool("end_to_end", True, "Also time trunk + AIS with a random-weight Flax VGG16.")
flags.DEFINE_float("memory_budget_gb", 2.0, "ais_jax memory budget (the AIS stage for 'vgg'; "
                   "the whole run for 'cohort' and 'scaling').")
flags.DEFINE_enum("task", "vgg", ["vgg", "float64_free", "cohort", "scaling"],
                  "vgg: the VGG16-head comparison above; float64_free: error of the float64-free "
                  "path against float64 (Lite0 on the 92 images, VGG16 fc head on --n images); "
                  "cohort: one whole run (pipeline.run_ais) on --n synthetic images with "
                  "--weights, peak RSS and stage times; scaling: 'cohort' in a fresh process for "
                  "each of --ns, a table, fitted log-log exponents per stage and a plot.")
flags.DEFINE_list("ns", ["250", "500", "1000", "2000"], "Cohort sizes of --task=scaling.")
flags.DEFINE_enum("trunk", "real", ["real", "standin"], "--task=cohort/scaling: the real trunk of "
                  "--weights, or a cheap stand-in with the same map shape and sparsity (average "
                  "pool, fixed random 1x1 projection, ReLU6, 90% zeros) where a shared CPU cannot "
                  "afford thousands of real trunk passes: everything else (streaming, AIS, "
                  "heatmaps, memory) is the real pipeline.")
flags.DEFINE_string("weights", "efficientnet_lite0_imagenet", "Weights of --task=cohort/scaling.")
flags.DEFINE_string("precision", "exact", "Precision of --task=cohort/scaling.")
flags.DEFINE_enum("similarity", "pearson", ["pearson", "spearman", "cosine"],
                  "First-order similarity of --task=cohort/scaling.")
flags.DEFINE_float("run_timeout_s", 3600, "Time limit of each run of --task=scaling.")
flags.DEFINE_list("merge", [], "--task=scaling: run nothing; merge these scaling reports (JSON "
                  "written by --out, e.g. sizes measured at different times) into --out, with "
                  "the exponents refitted over all sizes and the plot.")

K, SIDE, POOLED, D1, D2 = 512, 14, 7, 4096, 4096


def make_problem(n: int, seed: int):
  """Random VGG16-shaped head, maps ``[n, 14, 14, 512]`` float32 and human ``[n, n]``."""
  rng = np.random.default_rng(seed)
  fan1 = K * POOLED * POOLED
  w1 = rng.standard_normal((fan1, D1), dtype=np.float32) * np.float32(np.sqrt(2.0 / fan1))
  w2 = rng.standard_normal((D1, D2), dtype=np.float32) * np.float32(np.sqrt(2.0 / D1))
  b1 = rng.standard_normal(D1, dtype=np.float32) * np.float32(0.01)
  b2 = rng.standard_normal(D2, dtype=np.float32) * np.float32(0.01)
  maps = np.maximum(rng.standard_normal((n, SIDE, SIDE, K), dtype=np.float32), 0)
  maps *= (rng.random((n, 1, 1, K)) > 0.4).astype(np.float32)
  human = rng.standard_normal((n, n))
  human = (human + human.T) / 2
  np.fill_diagonal(human, 1.0)
  return dict(w1=w1, b1=b1, w2=w2, b2=b2, maps=maps, human=human)


# ----------------------------------------------------------------------------------------------
# (a) the published structure


def _torch_head(p):
  import torch
  w1 = torch.from_numpy(p["w1"].T.copy())  # torch Linear layout (out, in)
  w2 = torch.from_numpy(p["w2"].T.copy())
  b1, b2 = torch.from_numpy(p["b1"]), torch.from_numpy(p["b2"])

  def embed(x):  # x [m, 512, 14, 14] NCHW float32
    x = torch.nn.functional.max_pool2d(x, 2)
    x = torch.flatten(x, 1)
    x = torch.relu(torch.nn.functional.linear(x, w1, b1))
    return torch.relu(torch.nn.functional.linear(x, w2, b2))
  return embed


def published(p, pairs):
  """AIS of the (image, map) ``pairs`` one at a time, batch 1, NumPy float64 correlations."""
  import torch
  embed = _torch_head(p)
  maps_nchw = np.ascontiguousarray(p["maps"].transpose(0, 3, 1, 2))
  human = p["human"]
  n = maps_nchw.shape[0]
  with torch.no_grad():
    base = np.stack([embed(torch.from_numpy(maps_nchw[i:i + 1]))[0].numpy() for i in range(n)])
  base = base.astype(np.float64)

  def row_agreement(e, i):
    sims = np.array([np.corrcoef(e, base[j])[0, 1] for j in range(n) if j != i])
    return np.corrcoef(sims, np.delete(human[i], i))[0, 1]

  baseline = {}
  out = []
  t0 = time.perf_counter()
  with torch.no_grad():
    for i, k in pairs:
      if i not in baseline:
        baseline[i] = row_agreement(base[i], i)
      x = maps_nchw[i].copy()           # host copy, as the published loop does
      x[k] = 0
      e = embed(torch.from_numpy(x)[None])[0].numpy().astype(np.float64)
      out.append(baseline[i] - row_agreement(e, i))
  return np.array(out), time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------
# (b) batched PyTorch float32


def batched_torch(p):
  import torch
  embed = _torch_head(p)
  maps_nchw = torch.from_numpy(np.ascontiguousarray(p["maps"].transpose(0, 3, 1, 2)))
  human = torch.from_numpy(p["human"].astype(np.float32))
  n = maps_nchw.shape[0]

  def unit(e):
    e = e - e.mean(dim=-1, keepdim=True)
    return e / e.norm(dim=-1, keepdim=True)

  def corr_rows(x, y):
    return (unit(x) * unit(y)).sum(-1)

  t0 = time.perf_counter()
  out = torch.empty(n, K, dtype=torch.float32)
  keep = 1 - torch.eye(K, dtype=torch.float32)[:, :, None, None]          # [K, K, 1, 1]
  with torch.no_grad():
    u_base = unit(embed(maps_nchw))                                       # [n, D]
    sims = u_base @ u_base.T
    for i in range(n):
      others = torch.tensor([j for j in range(n) if j != i])
      ablated = embed(maps_nchw[i][None] * keep)                          # [K, D]
      rows = unit(ablated) @ u_base[others].T                             # [K, n-1]
      base_r = corr_rows(sims[i, others][None], human[i, others][None])[0]
      out[i] = base_r - corr_rows(rows, human[i, others][None].expand(K, -1))
  return out.numpy().astype(np.float64), time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------
# Float64 check of the 'exact' mode


def numpy_float64_rows(p, pairs):
  """Independent float64 loop: full fc6/fc7 of the masked maps, np.corrcoef."""
  w1, w2 = p["w1"].astype(np.float64), p["w2"].astype(np.float64)
  b1, b2 = p["b1"].astype(np.float64), p["b2"].astype(np.float64)
  maps, human = p["maps"].astype(np.float64), p["human"]
  n = maps.shape[0]

  def embed(m):
    pooled = m.reshape(POOLED, 2, POOLED, 2, K).max(axis=(1, 3))
    flat = pooled.transpose(2, 0, 1).reshape(-1)
    return np.maximum(np.maximum(flat @ w1 + b1, 0) @ w2 + b2, 0)

  base = np.stack([embed(m) for m in maps])

  def row_agreement(e, i):
    sims = np.array([np.corrcoef(e, base[j])[0, 1] for j in range(n) if j != i])
    return np.corrcoef(sims, np.delete(human[i], i))[0, 1]

  out = []
  for i, k in pairs:
    m = maps[i].copy()
    m[..., k] = 0
    out.append(row_agreement(base[i], i) - row_agreement(embed(m), i))
  return np.array(out)


# ----------------------------------------------------------------------------------------------


def machine() -> dict:
  import jax
  return {"processor": platform.processor() or platform.machine(),
          "platform": platform.platform(), "cpu_count": os.cpu_count(),
          "jax_devices": [str(d) for d in jax.devices()], "jax_version": jax.__version__,
          "load_average": list(os.getloadavg())}


def run(n: int, modes, seed: int, a_budget_s: float, end_to_end: bool,
        memory_budget_gb: float) -> dict:
  import torch
  from ais_jax import ablation, ais
  p = make_problem(n, seed)
  import jax
  # Weights resident on the device, as model variables are (no host transfer in the timing).
  head = jax.device_put(
      ablation.FcHead(w1=p["w1"], b1=p["b1"], w2=p["w2"], b2=p["b2"], pool_window=2))
  report = {"machine": machine(), "n": n, "maps": K, "torch_threads": torch.get_num_threads(),
            "active_fraction": float(np.mean(p["maps"].any(axis=(1, 2)))), "variants": {}}
  v = report["variants"]

  # The machine is shared, so its speed drifts: the fast variants are timed repeatedly, interleaved
  # with the segments of (a), and each is reported as the median of its samples.
  mode_list = ["exact"] + [m for m in modes if m != "exact"]
  results, first_call, samples = {}, {}, {m: [] for m in mode_list}
  for mode in mode_list:
    t0 = time.perf_counter()
    results[mode] = ais.compute_ais(head, p["maps"], p["human"], precision=mode,
                                    memory_budget_gb=memory_budget_gb)
    first_call[mode] = time.perf_counter() - t0

  def time_jax():
    for mode in mode_list:
      res = ais.compute_ais(head, p["maps"], p["human"], precision=mode,
                            memory_budget_gb=memory_budget_gb)
      samples[mode].append(res.timings["kernel"])
      results[mode] = res
    print("ais_jax: " + ", ".join(f"{m} {samples[m][-1]:.2f} s" for m in mode_list), flush=True)

  b_samples = []

  def time_b():
    ais_b, secs_b = batched_torch(p)
    b_samples.append(secs_b)
    print(f"(b) batched torch: {secs_b:.1f} s", flush=True)
    return ais_b

  time_jax()
  ais_b = time_b()

  # (a) the published structure: estimate, then run all pairs or a subset, in segments.
  probe = [(0, k) for k in range(8)]
  _, t_probe = published(p, probe)
  per_pair = t_probe / len(probe)
  total_pairs = n * K
  if per_pair * total_pairs <= a_budget_s:
    pairs = [(i, k) for i in range(n) for k in range(K)]
  else:
    m = max(16, int(a_budget_s / per_pair))
    flat = np.sort(np.random.default_rng(seed + 2).choice(total_pairs, m, replace=False))
    pairs = [(int(f // K), int(f % K)) for f in flat]
  segments = np.array_split(np.arange(len(pairs)), 5)
  ais_a, secs = [], 0.0
  for number, seg in enumerate(segments):
    values, seg_secs = published(p, [pairs[q] for q in seg])
    ais_a.append(values)
    secs += seg_secs
    print(f"(a) segment {number + 1}/{len(segments)}: {seg_secs:.1f} s for {len(seg)} pairs",
          flush=True)
    time_jax()
    if number == len(segments) // 2:
      time_b()
  time_b()
  ais_a = np.concatenate(ais_a)
  extrapolated = secs * total_pairs / len(pairs)

  exact = results["exact"].per_image
  rng = np.random.default_rng(seed + 1)
  check_pairs = [(int(i), int(k)) for i in rng.choice(n, 2, replace=False)
                 for k in rng.choice(K, 8, replace=False)]
  ref = numpy_float64_rows(p, check_pairs)
  report["exact_vs_float64_numpy_loop"] = {
      "pairs": len(check_pairs),
      "max_abs_error": float(np.max(np.abs(np.array([exact[i, k] for i, k in check_pairs]) - ref)))}
  for mode in modes:
    v[f"ais_jax_{mode}"] = {
        "seconds": float(np.median(samples[mode])), "samples_seconds": samples[mode],
        "first_call_seconds": first_call[mode], "chunk": results[mode].options["chunk"],
        "sub_batch": results[mode].options["sub_batch"],
        "max_abs_error": float(np.nanmax(np.abs(results[mode].per_image - exact)))}
  v["b_batched_torch_float32"] = {"seconds": float(np.median(b_samples)),
                                  "samples_seconds": b_samples,
                                  "max_abs_error": float(np.nanmax(np.abs(ais_b - exact)))}
  v["a_published_structure"] = {
      "seconds": extrapolated, "measured_seconds": secs, "pairs_measured": len(pairs),
      "pairs_total": total_pairs, "extrapolated": len(pairs) < total_pairs,
      "max_abs_error": float(np.max(np.abs(ais_a - np.array([exact[i, k] for i, k in pairs]))))}
  print(f"(a) published: {secs:.1f} s for {len(pairs)} of {total_pairs} pairs -> "
        f"{extrapolated:.1f} s", flush=True)

  t_a, t_b = v["a_published_structure"]["seconds"], v["b_batched_torch_float32"]["seconds"]
  for entry in v.values():
    entry["speedup_vs_a"] = t_a / entry["seconds"]
    entry["speedup_vs_b"] = t_b / entry["seconds"]

  if end_to_end:
    report["end_to_end"] = time_end_to_end(n, modes, seed, memory_budget_gb)
  return report


def time_end_to_end(n: int, modes, seed: int, memory_budget_gb: float) -> dict:
  """Random-weight Flax VGG16: images -> trunk -> AIS (steady state, second call timed)."""
  try:
    import jax
    import jax.numpy as jnp
    from ais_jax import ais, models
    spec = models.get("vgg16")
  except Exception as e:  # noqa: BLE001 - reported, not fatal
    return {"skipped": f"vgg16 model not available: {e}"}
  variables = models.init_variables(spec)
  module = spec.build(num_classes=spec.num_classes)
  trunk = jax.jit(lambda v, x: module.apply(v, x, method=module.trunk))
  rng = np.random.default_rng(seed)
  pixels = rng.integers(0, 256, size=(n, 224, 224, 3), dtype=np.uint8)
  x = jnp.asarray(spec.preprocess(pixels))
  human = rng.standard_normal((n, n))
  human = (human + human.T) / 2
  head = spec.get_ablation_head(variables)
  out = {"weights": "random (flax default init)", "trunk_precision": "float32 default"}
  trunk(variables, x).block_until_ready()
  t0 = time.perf_counter()
  maps = np.asarray(trunk(variables, x).block_until_ready())
  out["trunk_seconds"] = time.perf_counter() - t0
  out["active_fraction"] = float(np.mean(maps.any(axis=(1, 2))))
  for mode in modes:
    ais.compute_ais(head, maps, human, precision=mode, memory_budget_gb=memory_budget_gb)
    t0 = time.perf_counter()
    ais.compute_ais(head, maps, human, precision=mode, memory_budget_gb=memory_budget_gb)
    out[f"ais_{mode}_seconds"] = time.perf_counter() - t0
    out[f"total_{mode}_seconds"] = out["trunk_seconds"] + out[f"ais_{mode}_seconds"]
  return out


def table(report: dict) -> str:
  lines = [f"machine: {report['machine']['processor']}, {report['machine']['cpu_count']} CPUs, "
           f"jax devices {report['machine']['jax_devices']}, load {report['machine']['load_average']}",
           f"n = {report['n']} images, K = {report['maps']} maps, active fraction "
           f"{report['active_fraction']:.2f}",
           f"{'variant':32s} {'seconds':>10s} {'vs (a)':>9s} {'vs (b)':>8s} {'max abs err':>12s}"]
  for name, e in report["variants"].items():
    note = " (extrapolated)" if e.get("extrapolated") else ""
    lines.append(f"{name:32s} {e['seconds']:10.3f} {e['speedup_vs_a']:9.1f} "
                 f"{e['speedup_vs_b']:8.1f} {e['max_abs_error']:12.2e}{note}")
  a = report["variants"]["a_published_structure"]
  if a["extrapolated"]:
    lines.append(f"(a) measured on {a['pairs_measured']} of {a['pairs_total']} (image, map) pairs "
                 f"({a['measured_seconds']:.1f} s), extrapolated linearly")
  chk = report["exact_vs_float64_numpy_loop"]
  lines.append(f"exact vs float64 NumPy loop ({chk['pairs']} pairs): {chk['max_abs_error']:.2e}")
  if "end_to_end" in report:
    lines.append(f"end to end: {json.dumps(report['end_to_end'])}")
  return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Float64-free path (issue 15)


def float64_free_errors(n_vgg: int, seed: int) -> dict:
  """Max |AIS(float64-free) - AIS(float64)| on the same trunk maps: EfficientNet-Lite0 (pooled
  head) on the 92 images, and the VGG16 fc head with random weights on ``n_vgg`` images."""
  from ais_jax import ablation, ais, pipeline, precision
  from ais_jax.data import kriegeskorte92
  from ais_jax.io import images as images_io
  data_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                          "shared", "data", "kriegeskorte92")
  p = make_problem(n_vgg, seed)
  cases = {f"vgg16_fc_random_{n_vgg}": (ablation.FcHead(w1=p["w1"], b1=p["b1"], w2=p["w2"],
                                                        b2=p["b2"], pool_window=2),
                                        p["maps"], p["human"])}
  data_dir = os.environ.get("AIS_JAX_K92", data_dir)
  if os.path.isdir(data_dir):
    k92 = kriegeskorte92.load(data_dir)
    spec, variables, _, module = pipeline.load_model("efficientnet_lite0_imagenet")
    maps = pipeline.trunk_maps(spec, module, variables, images_io.fit_to_model(k92.images, spec))
    cases["lite0_92_pooled"] = (spec.get_ablation_head(variables), maps, k92.similarity)
  else:
    print(f"no 92-image data at {data_dir} (set AIS_JAX_K92): Lite0 case skipped", flush=True)
  out = {"machine": machine(), "cases": {}}
  for name, (head, m, human) in cases.items():
    for sim, cmp in (("pearson", "pearson"), ("cosine", "pearson"), ("spearman", "pearson"),
                     ("pearson", "spearman")):
      res = {}
      for flag in ("1", "0"):
        os.environ[precision.FLOAT64_ENV] = flag
        t = time.perf_counter()
        res[flag] = ais.compute_ais(head, m, human, similarity=sim, comparison=cmp)
        res[flag + "_s"] = time.perf_counter() - t
      os.environ.pop(precision.FLOAT64_ENV)
      out["cases"][f"{name}/{sim}/{cmp}"] = {
          "max_abs_ais": float(np.nanmax(np.abs(res["1"].per_image))),
          "per_image_max_abs_error": float(np.nanmax(np.abs(res["0"].per_image
                                                            - res["1"].per_image))),
          "cohort_max_abs_error": float(np.nanmax(np.abs(res["0"].cohort - res["1"].cohort))),
          "seconds_float64": res["1_s"], "seconds_float64_free": res["0_s"]}
      print(name, sim, cmp, json.dumps(out["cases"][f"{name}/{sim}/{cmp}"]), flush=True)
  return out


# ----------------------------------------------------------------------------------------------
# Cohorts of thousands of images in bounded memory (issue 15)


def synthetic_cohort(n: int, seed: int, folder: str, size: int = 224):
  """Random smooth images ``[n, size, size, 3]`` uint8 written to ``folder/images.npy`` a block
  at a time, and a random symmetric human matrix ``[n, n]``; returns their paths."""
  rng = np.random.default_rng(seed)
  path = os.path.join(folder, "images.npy")
  with open(path, "wb") as f:
    np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False,
                                             "shape": (n, size, size, 3)})
    for i0 in range(0, n, 64):
      b = min(64, n - i0)
      coarse = rng.random((b, size // 16, size // 16, 3))
      img = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)
      img = img + 0.25 * rng.random((b, size, size, 3))
      f.write(np.clip(img * 204, 0, 255).astype(np.uint8).tobytes())
  human = rng.standard_normal((n, n))
  human_path = os.path.join(folder, "human.npy")
  np.save(human_path, (human + human.T) / 2)
  return path, human_path


def standin_model(weights: str):
  """``(spec, variables, provenance, module)`` of ``weights``' architecture with a stand-in
  trunk: 32x32 average pool -> fixed random 1x1 projection to K channels -> ReLU6, shifted so
  that about 90% of the values are 0 (as Lite0's head maps); same map shape, pooled head."""
  import flax.linen as nn
  import jax.numpy as jnp
  from ais_jax import pipeline
  spec = pipeline.load_model(weights)[0]
  k, side = spec.num_maps, spec.map_size

  class StandinTrunk(nn.Module):
    @nn.compact
    def trunk(self, x):
      w = self.param("w", nn.initializers.normal(1.0), (3, k))
      pooled = nn.avg_pool(x, (x.shape[1] // side,) * 2, strides=(x.shape[1] // side,) * 2)
      return jnp.clip(pooled @ w - 1.3, 0, 6)

    def head(self, maps):
      return jnp.mean(maps, axis=(1, 2)), None

    def __call__(self, x):
      return self.head(self.trunk(x))

  module = StandinTrunk()
  import jax
  size = spec.input_size
  variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)), method="trunk")
  return spec, variables, {"weights_name": "standin"}, module


def cohort_run(n: int, seed: int, weights: str, memory_budget_gb: float, precision: str,
               trunk: str = "real", similarity: str = "pearson") -> dict:
  """One whole run (trunk, per-image + cohort AIS, heatmaps) on ``n`` synthetic images."""
  import tempfile
  from ais_jax import pipeline
  model = weights if trunk == "real" else standin_model(weights)
  with tempfile.TemporaryDirectory(prefix="ais_bench_") as folder:
    images, human = synthetic_cohort(n, seed, folder)
    rss_start = pipeline.current_rss_bytes()
    t = time.perf_counter()
    result = pipeline.run_ais(weights=model, images=images, human=np.load(human),
                              precision=precision, memory_budget_gb=memory_budget_gb,
                              similarity=similarity)
    total = time.perf_counter() - t
  s = result.summary
  timings = s["timings_s"]
  return {"n": n, "weights": weights, "trunk": trunk, "precision": precision,
          "similarity": similarity, "memory_budget_gb": memory_budget_gb,
          "seconds": {"total": total, "trunk": timings.get("trunk"), "ais": timings.get("ais"),
                      "heatmaps": timings.get("heatmaps"),
                      "ais_kernel": s["engine"]["timings_s"].get("kernel")},
          "peak_rss_gb": pipeline.peak_rss_bytes() / 2**30, "rss_start_gb": rss_start / 2**30,
          "memory_plan": s.get("memory_plan"), "float64": s.get("float64"),
          "engine": s["engine"]["options"], "machine": machine()}


def scaling(ns, seed, weights, memory_budget_gb, precision, timeout_s, out, trunk="real",
            similarity="pearson"):
  """``cohort_run`` in a fresh process per n (peak RSS per run), fitted exponents, a plot."""
  import subprocess
  import sys
  rows = []
  for n in ns:
    cmd = [sys.executable, "-m", "experiments.benchmark", "--task=cohort", f"--n={n}",
           f"--data_seed={seed}", f"--weights={weights}", f"--precision={precision}",
           f"--memory_budget_gb={memory_budget_gb}", f"--trunk={trunk}",
           f"--similarity={similarity}"]
    t = time.perf_counter()
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
      rows.append({"n": n, "error": f"timeout after {timeout_s} s"})
      continue
    lines = [l for l in proc.stdout.splitlines() if l.startswith("COHORT ")]
    if proc.returncode or not lines:
      rows.append({"n": n, "error": proc.stderr[-2000:]})
      continue
    rows.append(json.loads(lines[-1][len("COHORT "):]))
    print(f"n={n}: {time.perf_counter() - t:.0f} s, {json.dumps(rows[-1]['seconds'])}, "
          f"peak RSS {rows[-1]['peak_rss_gb']:.2f} GB", flush=True)
  return scaling_report(rows, out)


def scaling_report(rows, out):
  """Fitted log-log exponents per stage over the successful ``rows``; written to ``out`` (JSON)
  with the plot beside it."""
  good = sorted((r for r in rows if "error" not in r), key=lambda r: r["n"])
  fits = {}
  if len(good) >= 2:
    x = np.log([r["n"] for r in good])
    for stage in ("total", "trunk", "ais", "heatmaps"):
      y = [r["seconds"][stage] for r in good]
      if all(v and v > 0 for v in y):
        fits[stage] = float(np.polyfit(x, np.log(y), 1)[0])
    fits["peak_rss"] = float(np.polyfit(x, np.log([r["peak_rss_gb"] for r in good]), 1)[0])
  report = {"runs": sorted(rows, key=lambda r: r["n"]), "exponents": fits, "machine": machine()}
  if out:
    with open(out, "w") as f:
      json.dump(report, f, indent=2)
    if good:
      plot_scaling(report, os.path.splitext(out)[0] + ".png")
  return report


def plot_scaling(report: dict, path: str) -> None:
  """Log-log plot of the stage times and the peak RSS of a :func:`scaling` report."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  good = sorted((r for r in report["runs"] if "error" not in r), key=lambda r: r["n"])
  fits, first = report["exponents"], good[0]
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
  ns_ = [r["n"] for r in good]
  for stage in ("total", "trunk", "ais", "heatmaps"):
    ax1.loglog(ns_, [r["seconds"][stage] for r in good], "o-",
               label=f"{stage} (n^{fits.get(stage, float('nan')):.2f})")
  ax1.set_xlabel("images n"), ax1.set_ylabel("seconds"), ax1.legend()
  ax2.loglog(ns_, [r["peak_rss_gb"] for r in good], "o-",
             label=f"peak RSS (n^{fits.get('peak_rss', float('nan')):.2f})")
  ax2.axhline(first["memory_budget_gb"], color="gray", ls="--", label="budget")
  ax2.set_xlabel("images n"), ax2.set_ylabel("GB"), ax2.legend()
  # The measured sizes as plain x ticks; a few plain GB values as y ticks of the memory panel.
  from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter
  for ax in (ax1, ax2):
    ax.xaxis.set_major_locator(FixedLocator(ns_))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(ScalarFormatter())
  gbs = [r["peak_rss_gb"] for r in good] + [first["memory_budget_gb"]]
  low, high = 0.8 * min(gbs), 1.25 * max(gbs)
  ax2.set_ylim(low, high)
  ax2.yaxis.set_major_locator(FixedLocator(
      [v for v in (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 16, 32, 64) if low <= v <= high]))
  ax2.yaxis.set_minor_locator(NullLocator())
  ax2.yaxis.set_major_formatter(ScalarFormatter())
  fig.suptitle(f"{first['weights']} ({first.get('trunk', 'real')} trunk), {first['precision']}, "
               f"{first.get('similarity', 'pearson')} similarity, "
               f"--memory_budget_gb={first['memory_budget_gb']}")
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def scaling_table(report: dict) -> str:
  lines = ["| n | total s | trunk s | AIS s | heatmaps s | peak RSS GB | maps kept |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
  for r in report["runs"]:
    if "error" in r:
      lines.append(f"| {r['n']} | failed: {r['error'][-120:]!r} | | | | | |")
      continue
    s = r["seconds"]
    lines.append(f"| {r['n']} | {s['total']:.0f} | {s['trunk']:.0f} | {s['ais']:.0f} | "
                 f"{s['heatmaps']:.1f} | {r['peak_rss_gb']:.2f} | "
                 f"{r['memory_plan']['keep_maps']} |")
  if report["exponents"]:
    lines.append("fitted exponents (log-log): " + ", ".join(
        f"{k} {v:.2f}" for k, v in report["exponents"].items()))
  return "\n".join(lines)


def main(argv):
  del argv
  if FLAGS.task == "float64_free":
    report = float64_free_errors(FLAGS.n, FLAGS.data_seed)
  elif FLAGS.task == "cohort":
    report = cohort_run(FLAGS.n, FLAGS.data_seed, FLAGS.weights, FLAGS.memory_budget_gb,
                        FLAGS.precision, FLAGS.trunk, FLAGS.similarity)
    print("COHORT " + json.dumps(report), flush=True)
  elif FLAGS.task == "scaling" and FLAGS.merge:
    rows = []
    for path in FLAGS.merge:
      with open(path) as f:
        rows += json.load(f)["runs"]
    print(scaling_table(scaling_report(rows, FLAGS.out)))
    return
  elif FLAGS.task == "scaling":
    report = scaling([int(v) for v in FLAGS.ns], FLAGS.data_seed, FLAGS.weights,
                     FLAGS.memory_budget_gb, FLAGS.precision, FLAGS.run_timeout_s, FLAGS.out,
                     FLAGS.trunk, FLAGS.similarity)
    print(scaling_table(report))
    return
  if FLAGS.task != "vgg":
    if FLAGS.out:
      with open(FLAGS.out, "w") as f:
        json.dump(report, f, indent=2)
    return
  report = run(FLAGS.n, FLAGS.modes, FLAGS.data_seed, FLAGS.a_budget_s, FLAGS.end_to_end,
               FLAGS.memory_budget_gb)
  report["command"] = (f"python -m experiments.benchmark --n={FLAGS.n} "
                       f"--modes={','.join(FLAGS.modes)}")
  report["machine"]["load_average_end"] = list(os.getloadavg())
  print(table(report))
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(report, f, indent=2)


if __name__ == "__main__":
  app.run(main)
