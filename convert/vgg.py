"""torchvision VGG16/VGG19 state dict -> Flax variables of :class:`ais_jax.models.vgg.VGG`.

The Flax submodules mirror the torchvision keys (``features.28.weight`` ->
``params/features_28/kernel``), so the table is four rules; :func:`convert.core.convert_state_dict`
checks every key and shape. The fc6 kernel needs no permutation: the module flattens its maps in
PyTorch's ``(K, h, w)`` order before fc6, exactly as torch does.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import numpy as np

from convert import tables
from convert.core import Rule, convert_state_dict

RULES = (
    Rule(r"features\.(\d+)\.weight", r"params/features_\1/kernel", "conv"),
    Rule(r"features\.(\d+)\.bias", r"params/features_\1/bias"),
    Rule(r"classifier\.(\d+)\.weight", r"params/classifier_\1/kernel", "dense"),
    Rule(r"classifier\.(\d+)\.bias", r"params/classifier_\1/bias"),
)

ARCHS = ("vgg16", "vgg19")


def convert(state_dict: Mapping[str, Any], num_classes: int = 1000, *,
            arch: str = "vgg16") -> dict[str, Any]:
  """Converts a torchvision ``vgg16``/``vgg19`` state dict (numpy arrays or tensors).

  Args:
    state_dict: torch key -> array (``{'state_dict': ...}`` wrappers and ``module.`` prefixes ok).
    num_classes: fc8 size of the checkpoint (1000 ImageNet, 565 Ecoset).
    arch: 'vgg16' or 'vgg19'.

  Returns:
    ``{'params': ...}`` for ``ais_jax.models.get(arch).build(num_classes=num_classes)``.

  Raises:
    ConversionError listing every missing, unexpected or mis-shaped key.
  """
  from ais_jax import models
  if arch not in ARCHS:
    raise ValueError(f"arch must be one of {ARCHS}; got {arch!r}")
  spec = models.get(arch)
  abstract = models.abstract_variables(spec, num_classes=num_classes)
  return convert_state_dict(to_numpy(state_dict), RULES, abstract,
                            arch=f"{arch} ({num_classes} classes)")


for _arch in ARCHS:
  tables.register(_arch, functools.partial(convert, arch=_arch))


def to_numpy(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Accepts torch tensors too (``.numpy()``), without importing torch."""
  out = {}
  for k, v in state_dict.items():
    if isinstance(v, Mapping):
      out[k] = to_numpy(v)
    elif hasattr(v, "detach"):
      out[k] = v.detach().cpu().numpy()
    else:
      out[k] = v if isinstance(v, np.ndarray) else np.asarray(v)
  return out
