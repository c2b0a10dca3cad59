"""torchvision RegNetY-400MF state dict -> Flax variables of :class:`ais_jax.models.regnet.RegNet`.

Key scheme: ``stem.{0,1}`` (conv, BatchNorm); ``trunk_output.block<s>.block<s>-<i>.`` followed by
``proj.{0,1}`` (projection shortcut), ``f.{a,b,c}.{0,1}`` (the bottleneck's Conv2dNormActivations)
and ``f.se.fc{1,2}`` (squeeze-excitation 1x1 convs with bias); ``fc`` the final Linear. The Flax
paths are ``block<s>_<i>/proj_0``, ``block<s>_<i>/f_a_0``, ``block<s>_<i>/f_se_fc1``, ...
"""

from __future__ import annotations

from convert import tables
from convert.core import Rule
from convert.resnet import batch_norm_rules

ARCHS = ("regnet_y_400mf",)

_BLOCK = r"trunk_output\.block(\d)\.block\d-(\d+)"

RULES = (
    Rule(r".*\.num_batches_tracked", "", "ignore"),
    Rule(r"stem\.0\.weight", "params/stem_0/kernel", "conv"),
    *batch_norm_rules(r"stem\.1", "stem_1"),
    Rule(_BLOCK + r"\.proj\.0\.weight", r"params/block\1_\2/proj_0/kernel", "conv"),
    *batch_norm_rules(_BLOCK + r"\.proj\.1", r"block\1_\2/proj_1"),
    Rule(_BLOCK + r"\.f\.([abc])\.0\.weight", r"params/block\1_\2/f_\3_0/kernel", "conv"),
    *batch_norm_rules(_BLOCK + r"\.f\.([abc])\.1", r"block\1_\2/f_\3_1"),
    Rule(_BLOCK + r"\.f\.se\.(fc[12])\.weight", r"params/block\1_\2/f_se_\3/kernel", "conv"),
    Rule(_BLOCK + r"\.f\.se\.(fc[12])\.bias", r"params/block\1_\2/f_se_\3/bias"),
    Rule(r"fc\.weight", "params/fc/kernel", "dense"),
    Rule(r"fc\.bias", "params/fc/bias"),
)

for _arch in ARCHS:
  tables.register(_arch, tables.rule_converter(RULES, _arch))
