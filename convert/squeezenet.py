"""torchvision SqueezeNet 1.1 state dict -> Flax variables of
:class:`ais_jax.models.squeezenet.SqueezeNet11` (``features.3.expand3x3.weight`` ->
``params/features_3/expand3x3/kernel``; the classifier is a 1x1 conv: ``classifier.1``).
"""

from __future__ import annotations

from typing import Any, Mapping

from convert import tables
from convert.core import Rule, convert_state_dict
from convert.vgg import to_numpy

RULES = (
    Rule(r"features\.0\.weight", "params/features_0/kernel", "conv"),
    Rule(r"features\.0\.bias", "params/features_0/bias"),
    Rule(r"features\.(\d+)\.(squeeze|expand1x1|expand3x3)\.weight", r"params/features_\1/\2/kernel",
         "conv"),
    Rule(r"features\.(\d+)\.(squeeze|expand1x1|expand3x3)\.bias", r"params/features_\1/\2/bias"),
    Rule(r"classifier\.1\.weight", "params/classifier_1/kernel", "conv"),
    Rule(r"classifier\.1\.bias", "params/classifier_1/bias"),
)


def convert(state_dict: Mapping[str, Any], num_classes: int = 1000) -> dict[str, Any]:
  """Converts a torchvision ``squeezenet1_1`` state dict (classifier conv of ``num_classes``).

  Raises:
    ConversionError listing every missing, unexpected or mis-shaped key.
  """
  from ais_jax import models
  spec = models.get("squeezenet1_1")
  abstract = models.abstract_variables(spec, num_classes=num_classes)
  return convert_state_dict(to_numpy(state_dict), RULES, abstract,
                            arch=f"squeezenet1_1 ({num_classes} classes)")


tables.register("squeezenet1_1", convert)
