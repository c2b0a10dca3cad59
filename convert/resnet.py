"""torchvision ResNet-50/152 and ResNeXt-50 32x4d state dicts -> Flax variables.

Target: :class:`ais_jax.models.resnet.ResNet`, whose submodule names mirror the torchvision keys
(``layer3.5.downsample.1.running_var`` -> ``batch_stats/layer3_5/downsample_1/var``).
BatchNorm: ``weight``/``bias`` -> ``params/.../scale``/``bias``, ``running_mean``/``running_var``
-> ``batch_stats/.../mean``/``var``; ``num_batches_tracked`` is ignored.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp

from convert import tables
from convert.core import Rule, convert_state_dict
from convert.vgg import to_numpy

ARCHS = ("resnet50", "resnet152", "resnext50_32x4d")


def batch_norm_rules(torch_prefix: str, flax_prefix: str) -> tuple[Rule, ...]:
  """Rules for one BatchNorm2d whose torch key prefix (regex) maps to the Flax path prefix."""
  return (
      Rule(torch_prefix + r"\.weight", f"params/{flax_prefix}/scale"),
      Rule(torch_prefix + r"\.bias", f"params/{flax_prefix}/bias"),
      Rule(torch_prefix + r"\.running_mean", f"batch_stats/{flax_prefix}/mean"),
      Rule(torch_prefix + r"\.running_var", f"batch_stats/{flax_prefix}/var"),
  )


RULES = (
    Rule(r".*\.num_batches_tracked", "", "ignore"),
    Rule(r"conv1\.weight", "params/conv1/kernel", "conv"),
    *batch_norm_rules(r"bn1", "bn1"),
    Rule(r"layer(\d)\.(\d+)\.conv(\d)\.weight", r"params/layer\1_\2/conv\3/kernel", "conv"),
    *batch_norm_rules(r"layer(\d)\.(\d+)\.bn(\d)", r"layer\1_\2/bn\3"),
    Rule(r"layer(\d)\.(\d+)\.downsample\.0\.weight", r"params/layer\1_\2/downsample_0/kernel",
         "conv"),
    *batch_norm_rules(r"layer(\d)\.(\d+)\.downsample\.1", r"layer\1_\2/downsample_1"),
    Rule(r"fc\.weight", "params/fc/kernel", "dense"),
    Rule(r"fc\.bias", "params/fc/bias"),
)


def convert(state_dict: Mapping[str, Any], num_classes: Optional[int] = 1000, *,
            arch: str = "resnet50") -> dict[str, Any]:
  """Converts a torchvision ``resnet50`` / ``resnet152`` / ``resnext50_32x4d`` state dict.

  Args:
    state_dict: torch key -> array (``{'state_dict': ...}`` wrappers and ``module.`` prefixes ok).
    num_classes: fc size of the checkpoint; None or 0 for a checkpoint without ``fc`` (Barlow
      Twins ResNet-50); the result then has no ``fc`` and the module must be built the same way.
    arch: one of ARCHS.

  Returns:
    ``{'params': ..., 'batch_stats': ...}`` for ``models.get(arch).build(num_classes=...)``.

  Raises:
    ConversionError listing every missing, unexpected or mis-shaped key (e.g. ``fc.weight``
    unexpected when num_classes is None: pass the checkpoint's class count).
  """
  from ais_jax import models
  if arch not in ARCHS:
    raise ValueError(f"arch must be one of {ARCHS}; got {arch!r}")
  spec = models.get(arch)
  module = spec.build(num_classes=num_classes or None)
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)  # parameter shapes do not depend on H, W
  abstract = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
  label = f"{arch} ({num_classes} classes)" if num_classes else f"{arch} (no fc)"
  return convert_state_dict(to_numpy(state_dict), RULES, abstract, arch=label)


for _arch in ARCHS:
  tables.register(_arch, functools.partial(convert, arch=_arch))
