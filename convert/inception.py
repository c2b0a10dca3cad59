"""torchvision Inception-V3 state dict -> Flax variables of
:class:`ais_jax.models.inception.InceptionV3`.

Every BasicConv2d is ``<Block>[.<branch>].conv.weight`` + ``.bn.*``; the Flax paths are the same
names joined by '/'. torchvision's full state dict (``inception_v3_google-0cc3c7bd.pth``, or a
model built with ``aux_logits=True``) also holds the auxiliary classifier ``AuxLogits.*``, which
only runs in training: its keys are accepted and skipped (nothing of the analysis uses them).
"""

from __future__ import annotations

from convert import tables
from convert.core import Rule
from convert.resnet import batch_norm_rules

ARCHS = ("inception_v3",)

_STEM = r"(Conv2d_\w+)"
_BRANCH = r"(Mixed_\w+)\.(branch\w+)"

RULES = (
    Rule(r".*\.num_batches_tracked", "", "ignore"),
    Rule(r"AuxLogits\..*", "", "ignore"),
    Rule(_STEM + r"\.conv\.weight", r"params/\1/conv/kernel", "conv"),
    *batch_norm_rules(_STEM + r"\.bn", r"\1/bn"),
    Rule(_BRANCH + r"\.conv\.weight", r"params/\1/\2/conv/kernel", "conv"),
    *batch_norm_rules(_BRANCH + r"\.bn", r"\1/\2/bn"),
    Rule(r"fc\.weight", "params/fc/kernel", "dense"),
    Rule(r"fc\.bias", "params/fc/bias"),
)


for _arch in ARCHS:
  tables.register(_arch, tables.rule_converter(RULES, _arch))
