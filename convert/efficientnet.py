"""torchvision EfficientNet-B3 state dict -> Flax variables of
:class:`ais_jax.models.efficientnet.EfficientNet`.

Key scheme: ``features.<stage>.<layer>`` Conv2dNormActivation (``.0`` conv, ``.1`` BatchNorm) for
the stem (stage 0) and head (stage 8); ``features.<stage>.<block>.block.<i>.{0,1}`` for the MBConv
convolutions and BatchNorms and ``...block.<i>.fc1/fc2`` (1x1 convs with bias) for the
squeeze-excitation; ``classifier.1`` the final Linear. The Flax paths join the indices with '_'.
"""

from __future__ import annotations

from convert import tables
from convert.core import Rule
from convert.resnet import batch_norm_rules

ARCHS = ("efficientnet_b3",)

_BLOCK = r"features\.(\d+)\.(\d+)\.block\.(\d+)"

RULES = (
    Rule(r".*\.num_batches_tracked", "", "ignore"),
    # Stem and head Conv2dNormActivation.
    Rule(r"features\.(\d+)\.0\.weight", r"params/features_\1_0/kernel", "conv"),
    *batch_norm_rules(r"features\.(\d+)\.1", r"features_\1_1"),
    # MBConv layers.
    Rule(_BLOCK + r"\.0\.weight", r"params/features_\1_\2/block_\3_0/kernel", "conv"),
    *batch_norm_rules(_BLOCK + r"\.1", r"features_\1_\2/block_\3_1"),
    Rule(_BLOCK + r"\.(fc[12])\.weight", r"params/features_\1_\2/block_\3_\4/kernel", "conv"),
    Rule(_BLOCK + r"\.(fc[12])\.bias", r"params/features_\1_\2/block_\3_\4/bias"),
    Rule(r"classifier\.1\.weight", "params/classifier_1/kernel", "dense"),
    Rule(r"classifier\.1\.bias", "params/classifier_1/bias"),
)

for _arch in ARCHS:
  tables.register(_arch, tables.rule_converter(RULES, _arch))
