r"""Trunk throughput and AIS stage time of the nine Aim 4 architectures on this machine.

    python -m experiments.benchmark_trunks --batch=4 --n_ais=92 --out=benchmark_trunks.json

Per architecture (random weights: He-normal kernels, BatchNorm scale 1 / bias 0 / mean 0 /
var 1; nothing is downloaded):

* trunk: ``module.trunk`` jitted on ``--batch`` random images at the architecture's input size,
  float32 precision HIGHEST; the first call (compile + run) is reported separately, then
  ``--trunk_repeats`` calls are timed: images/s = batch x repeats / seconds.
* AIS stage: ``ais_jax.ais.compute_ais`` (per-image and cohort AIS, ``--ais_precision``) on
  ``--n_ais`` images' maps. Running the trunk on 92 images would dominate the run, so the maps
  are the trunk batch's maps tiled to ``--n_ais`` images, each (image, map) scaled by a random
  factor in [0.5, 1.5] (same shapes and zero pattern as real trunk output of these weights; the
  engine skips all-zero (image, map) pairs, and trained weights give sparser maps, so this is the
  slower case). The first call (with compile) and ``--ais_repeats`` steady calls are timed.

Barlow Twins is torchvision's ResNet-50 without ``fc`` (its published checkpoint), so it is timed
as ``resnet50`` built without a classifier. Prints a table; ``--out`` writes every number as JSON.
"""

from __future__ import annotations

import json
import os
import platform
import time

from absl import flags
import numpy as np

from experiments import _common

# (label, ais_jax architecture, classifier size: 0 = none)
ARCHITECTURES = (
    ("vgg16", "vgg16", 1000),
    ("vgg19", "vgg19", 1000),
    ("resnet152", "resnet152", 1000),
    ("resnext50_32x4d", "resnext50_32x4d", 1000),
    ("barlowtwins_resnet50", "resnet50", 0),
    ("densenet161", "densenet161", 1000),
    ("inception_v3", "inception_v3", 1000),
    ("efficientnet_b3", "efficientnet_b3", 1000),
    ("regnet_y_400mf", "regnet_y_400mf", 1000),
)

FLAGS = flags.FLAGS
flags.DEFINE_list("archs", [a[0] for a in ARCHITECTURES], "Labels of the architectures to time.")
flags.DEFINE_integer("batch", 4, "Images per trunk call.")
flags.DEFINE_integer("trunk_repeats", 2, "Timed trunk calls after the compiling one.")
flags.DEFINE_integer("n_ais", 92, "Images in the AIS stage.")
flags.DEFINE_integer("ais_repeats", 1, "Timed AIS calls after the compiling one (0: only that).")
flags.DEFINE_enum("ais_precision", "exact", ["exact", "float32", "fast"], "AIS precision mode.")
flags.DEFINE_float("ais_memory_budget_gb", 2.0, "AIS memory budget (GB).")
flags.DEFINE_integer("weights_seed", 0, "Seed of the random weights, images and human matrix.")
_common.define_path("out", None, "JSON output path (optional).")


def random_variables(spec, num_classes: int, seed: int):
  """He-normal kernels, zero biases, identity BatchNorm, for ``spec`` built with num_classes."""
  import jax
  from ais_jax import models
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return (rng.standard_normal(leaf.shape, dtype=np.float32) *
              np.float32(np.sqrt(2.0 / fan_in)))
    if name in ("scale", "var"):
      return np.ones(leaf.shape, np.float32)
    return np.zeros(leaf.shape, np.float32)  # bias, mean

  return jax.tree_util.tree_map_with_path(fill, models.abstract_variables(spec, num_classes))


def time_architecture(label: str, arch: str, num_classes: int, *, batch: int, trunk_repeats: int,
                      n_ais: int, ais_repeats: int, precision: str, memory_budget_gb: float,
                      seed: int, log=print) -> dict:
  """Times one architecture's trunk and AIS stage; returns the numbers (seconds, images/s)."""
  import jax
  from ais_jax import ais, models
  spec = models.get(arch)
  module = spec.build(num_classes=num_classes or None)
  variables = jax.device_put(random_variables(spec, num_classes, seed))
  rng = np.random.default_rng(seed)
  size = spec.input_size
  x = spec.preprocess(rng.integers(0, 256, (batch, size, size, 3)).astype(np.float32))
  trunk = jax.jit(lambda v, images: module.apply(v, images, method="trunk"))
  t = time.perf_counter()
  maps = np.asarray(jax.block_until_ready(trunk(variables, x)))
  first = time.perf_counter() - t
  t = time.perf_counter()
  for _ in range(trunk_repeats):
    jax.block_until_ready(trunk(variables, x))
  steady = time.perf_counter() - t
  images_per_s = batch * trunk_repeats / steady if trunk_repeats else float("nan")
  log(f"{label}: trunk {size} px -> {maps.shape[1:]}: first call {first:.1f} s, "
      f"{images_per_s:.2f} images/s")

  tiled = maps[np.arange(n_ais) % batch]
  tiled = tiled * rng.uniform(0.5, 1.5, (n_ais, 1, 1, maps.shape[-1])).astype(np.float32)
  human = np.corrcoef(rng.standard_normal((n_ais, 8)))
  head = spec.get_ablation_head(variables)
  samples = []
  for _ in range(1 + ais_repeats):
    t = time.perf_counter()
    result = ais.compute_ais(head, tiled, human, precision=precision,
                             memory_budget_gb=memory_budget_gb)
    jax.block_until_ready(result.per_image)
    samples.append(time.perf_counter() - t)
  active = float(np.mean(np.abs(tiled).max(axis=(1, 2)) > 0))
  log(f"{label}: AIS stage n = {n_ais}, K = {maps.shape[-1]}: first call {samples[0]:.1f} s"
      + (f", steady {min(samples[1:]):.1f} s" if ais_repeats else "")
      + f" ({active:.0%} of (image, map) pairs active)")
  return {"label": label, "arch": arch, "num_classes": num_classes, "input_size": size,
          "maps_shape": list(maps.shape[1:]), "batch": batch,
          "trunk_first_call_s": first, "trunk_steady_s": steady,
          "trunk_repeats": trunk_repeats, "trunk_images_per_s": images_per_s,
          "n_ais": n_ais, "ais_first_call_s": samples[0], "ais_steady_s": samples[1:],
          "active_pairs": active, "precision": precision}


def table(rows: list[dict]) -> str:
  lines = [f"{'architecture':22s} {'input':>5s} {'maps':>14s} {'trunk img/s':>11s} "
           f"{'trunk 1st (s)':>13s} {'AIS n (s)':>10s} {'AIS 1st (s)':>11s}"]
  for r in rows:
    h, w, k = r["maps_shape"]
    steady = f"{min(r['ais_steady_s']):.1f}" if r["ais_steady_s"] else "-"
    lines.append(f"{r['label']:22s} {r['input_size']:5d} {f'{h}x{w}x{k}':>14s} "
                 f"{r['trunk_images_per_s']:11.2f} {r['trunk_first_call_s']:13.1f} "
                 f"{steady:>10s} {r['ais_first_call_s']:11.1f}")
  return "\n".join(lines)


def main(argv):
  del argv
  import jax
  known = {a[0]: a for a in ARCHITECTURES}
  unknown = [a for a in FLAGS.archs if a not in known]
  if unknown:
    raise _common.UserInputError("--archs", f"unknown {unknown}; choose from {sorted(known)}")
  machine = {"platform": platform.platform(), "cpus": os.cpu_count(),
             "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
             "load_average_start": list(os.getloadavg())}
  rows = []
  for label in FLAGS.archs:
    _, arch, num_classes = known[label]
    rows.append(time_architecture(
        label, arch, num_classes, batch=FLAGS.batch, trunk_repeats=FLAGS.trunk_repeats,
        n_ais=FLAGS.n_ais, ais_repeats=FLAGS.ais_repeats, precision=FLAGS.ais_precision,
        memory_budget_gb=FLAGS.ais_memory_budget_gb, seed=FLAGS.weights_seed))
  machine["load_average_end"] = list(os.getloadavg())
  print(table(rows))
  print(f"machine: {machine}")
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump({"machine": machine, "rows": rows}, f, indent=2)


if __name__ == "__main__":
  _common.run(main)
