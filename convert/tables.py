"""Which conversion table serves which architecture.

The model zoo (``ais_jax.models``) knows nothing of PyTorch state dicts: each
``convert/<family>.py`` registers its converter here for the architecture names it serves, and
the file-conversion code (``ais_jax.io.weights.convert_file``, the ``convert.*`` CLIs) looks it up
with :func:`get`. The dependency runs one way: ``convert`` -> ``ais_jax.models``.

A converter is ``convert(state_dict, num_classes) -> variables``: torch key -> array in, the
plain nested dict ``{'params': ..., 'batch_stats': ...}`` of ``models.get(arch).build(num_classes)``
out, every key and shape checked (:func:`convert.core.convert_state_dict`).
"""

from __future__ import annotations

from typing import Any, Callable

Converter = Callable[..., Any]

_CONVERTERS: dict[str, Converter] = {}


def register(arch: str, converter: Converter) -> Converter:
  """Makes ``converter`` the table for architecture ``arch`` (an ``ais_jax.models`` name)."""
  if arch in _CONVERTERS and _CONVERTERS[arch] is not converter:
    raise ValueError(f"a converter for {arch!r} is registered twice")
  _CONVERTERS[arch] = converter
  return converter


def _import_families() -> None:
  """Every family's converter module registers its table on import (the families of
  :data:`ais_jax.models.base.FAMILIES`)."""
  from ais_jax.models import base as models_base
  models_base.import_families("convert")


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


def rule_converter(rules, arch: str) -> Converter:
  """A converter applying the rule table ``rules`` (``convert.core.Rule`` s) for ``arch``.

  The returned ``convert(state_dict, num_classes=1000)`` builds ``arch`` with ``num_classes``
  (None or 0: no classifier) and checks every key and shape against it
  (:func:`convert.core.convert_state_dict`); torch tensors are accepted as well as arrays.
  """

  def convert(state_dict, num_classes=1000):
    from ais_jax import models  # pylint: disable=g-import-not-at-top
    from convert.core import convert_state_dict  # pylint: disable=g-import-not-at-top
    from convert.vgg import to_numpy  # pylint: disable=g-import-not-at-top
    abstract = models.abstract_variables(models.get(arch), num_classes=num_classes or 0)
    return convert_state_dict(to_numpy(state_dict), rules, abstract,
                              arch=f"{arch} ({num_classes or 'no'} classes)")

  convert.__name__ = f"convert_{arch}"
  return convert
