"""Which conversion table serves which architecture.

The model zoo (``ais_jax.models``) knows nothing of PyTorch state dicts: each ``convert/<family>.py``
registers its converter here for the architecture names it serves, and the file-conversion code
(``ais_jax.io.weights.convert_file``, the ``convert.*`` CLIs) looks it up with :func:`get`. The
dependency runs one way: ``convert`` -> ``ais_jax.models``.

A converter is ``convert(state_dict, num_classes) -> variables``: torch key -> array in, the
plain nested dict ``{'params': ..., 'batch_stats': ...}`` of ``models.get(arch).build(num_classes)``
out, every key and shape checked (:func:`convert.core.convert_state_dict`).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

Converter = Callable[..., Any]

_CONVERTERS: dict[str, Converter] = {}

# Family modules register on import (as ais_jax.models.base does for the modules themselves).
_FAMILIES = ("efficientnet_lite", "vgg", "resnet", "alexnet", "squeezenet", "densenet",
             "inception", "efficientnet", "regnet", "transalnet")


def register(arch: str, converter: Converter) -> Converter:
  """Makes ``converter`` the table for architecture ``arch`` (an ``ais_jax.models`` name)."""
  if arch in _CONVERTERS and _CONVERTERS[arch] is not converter:
    raise ValueError(f"a converter for {arch!r} is registered twice")
  _CONVERTERS[arch] = converter
  return converter


def _import_families() -> None:
  for family in _FAMILIES:
    try:
      importlib.import_module(f"convert.{family}")
    except ModuleNotFoundError as e:
      if e.name != f"convert.{family}":
        raise


def get(arch: str) -> Converter:
  """The converter registered for ``arch``.

  Raises:
    ValueError: no converter is registered (names the architectures that have one).
  """
  _import_families()
  if arch not in _CONVERTERS:
    raise ValueError(f"architecture {arch!r} has no PyTorch converter; architectures with one: "
                     f"{', '.join(sorted(_CONVERTERS))}")
  return _CONVERTERS[arch]


def archs() -> list[str]:
  """Architecture names that have a converter."""
  _import_families()
  return sorted(_CONVERTERS)
