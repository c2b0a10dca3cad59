"""`efficientnet-lite-pytorch` state dicts -> Flax variables of ais_jax.models.efficientnet_lite.

The Flax module mirrors the PyTorch keys (``_blocks.N.x`` -> ``_blocks_N/x``), so the table below
is the whole converter; convert.core checks every key and shape against the model.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Optional

from convert import tables
from convert.core import Rule, convert_state_dict

_BLOCK = r"_blocks\.(\d+)\.(_expand_conv|_depthwise_conv|_project_conv)"
_BLOCK_BN = r"_blocks\.(\d+)\.(_bn[012])"
_TOP_BN = r"(_bn[01])"

RULES: tuple[Rule, ...] = (
    Rule(r".*\.num_batches_tracked", "", "ignore"),
    # Convolutions (no biases anywhere: every conv is followed by BatchNorm).
    Rule(r"_conv_stem\.weight", r"params/_conv_stem/kernel", "conv"),
    Rule(_BLOCK + r"\.weight", r"params/_blocks_\1/\2/kernel", "conv"),
    Rule(r"_conv_head\.weight", r"params/_conv_head/kernel", "conv"),
    # BatchNorm: affine parameters in 'params', running statistics in 'batch_stats'.
    Rule(_BLOCK_BN + r"\.weight", r"params/_blocks_\1/\2/scale"),
    Rule(_BLOCK_BN + r"\.bias", r"params/_blocks_\1/\2/bias"),
    Rule(_BLOCK_BN + r"\.running_mean", r"batch_stats/_blocks_\1/\2/mean"),
    Rule(_BLOCK_BN + r"\.running_var", r"batch_stats/_blocks_\1/\2/var"),
    Rule(_TOP_BN + r"\.weight", r"params/\1/scale"),
    Rule(_TOP_BN + r"\.bias", r"params/\1/bias"),
    Rule(_TOP_BN + r"\.running_mean", r"batch_stats/\1/mean"),
    Rule(_TOP_BN + r"\.running_var", r"batch_stats/\1/var"),
    # Classifier.
    Rule(r"_fc\.weight", r"params/_fc/kernel", "dense"),
    Rule(r"_fc\.bias", r"params/_fc/bias"),
)


def convert(state_dict: Mapping[str, Any], num_classes: Optional[int] = 1000, *,
            arch: str = "efficientnet_lite0") -> dict[str, Any]:
  """Converts an `efficientnet-lite-pytorch` state dict.

  Args:
    state_dict: torch key -> array (numpy arrays or anything ``np.asarray`` accepts).
    num_classes: classifier size of the checkpoint (None: the spec's 1000, the ImageNet weights).
    arch: 'efficientnet_lite0', 'efficientnet_lite1' or 'efficientnet_lite2'.

  Returns:
    ``{'params': ..., 'batch_stats': ...}`` as nested dicts of float32 numpy arrays.

  Raises:
    convert.core.ConversionError naming every missing, unexpected and mis-shaped key (for example
    a Lite1 file converted with ``arch='efficientnet_lite0'``).
  """
  from ais_jax import models
  spec = models.get(arch)
  if spec.family != "efficientnet_lite":
    raise ValueError(f"arch {arch!r} is a {spec.family!r} model, not efficientnet_lite")
  return convert_state_dict(state_dict, RULES, models.abstract_variables(spec, num_classes),
                            arch=arch)


for _arch in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
  tables.register(_arch, functools.partial(convert, arch=_arch))
