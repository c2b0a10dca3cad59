"""torchvision AlexNet state dict -> Flax variables of :class:`ais_jax.models.alexnet.AlexNet`.

Submodule names mirror the torchvision keys (``features.3.weight`` -> ``params/features_3/kernel``).
"""

from __future__ import annotations

from typing import Any, Mapping

from convert import tables
from convert.core import convert_state_dict
from convert.vgg import RULES, to_numpy  # same key scheme: features.N / classifier.N


def convert(state_dict: Mapping[str, Any], num_classes: int = 1000) -> dict[str, Any]:
  """Converts a torchvision ``alexnet`` state dict (fc8 of size ``num_classes``).

  Raises:
    ConversionError listing every missing, unexpected or mis-shaped key.
  """
  from ais_jax import models
  spec = models.get("alexnet")
  abstract = models.abstract_variables(spec, num_classes=num_classes)
  return convert_state_dict(to_numpy(state_dict), RULES, abstract,
                            arch=f"alexnet ({num_classes} classes)")


tables.register("alexnet", convert)
