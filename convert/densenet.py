"""torchvision DenseNet-161 state dict -> Flax variables of
:class:`ais_jax.models.densenet.DenseNet`.

torchvision's published DenseNet files still use the old layer keys ``denselayerN.norm.1.weight``
/ ``conv.2.weight`` (torchvision renames them on load); state dicts saved from a current model
use ``norm1`` / ``conv2``. Both are accepted.
"""

from __future__ import annotations

from convert import tables
from convert.core import Rule
from convert.resnet import batch_norm_rules

ARCHS = ("densenet161",)

_LAYER = r"features\.denseblock(\d)\.denselayer(\d+)"

RULES = (
    Rule(r".*\.num_batches_tracked", "", "ignore"),
    Rule(r"features\.conv0\.weight", "params/conv0/kernel", "conv"),
    *batch_norm_rules(r"features\.(norm[05])", r"\1"),
    # Dense layers: 'conv1' or the published files' 'conv.1'.
    Rule(_LAYER + r"\.conv\.?([12])\.weight", r"params/denseblock_\1/denselayer\2/conv\3/kernel",
         "conv"),
    *batch_norm_rules(_LAYER + r"\.norm\.?([12])", r"denseblock_\1/denselayer\2/norm\3"),
    Rule(r"features\.transition(\d)\.conv\.weight", r"params/transition_\1/conv/kernel", "conv"),
    *batch_norm_rules(r"features\.transition(\d)\.norm", r"transition_\1/norm"),
    Rule(r"classifier\.weight", "params/classifier/kernel", "dense"),
    Rule(r"classifier\.bias", "params/classifier/bias"),
)


for _arch in ARCHS:
  tables.register(_arch, tables.rule_converter(RULES, _arch))
