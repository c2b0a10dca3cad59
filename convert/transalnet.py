"""The authors' TranSalNet_Res state dict -> Flax variables of :class:`ais_jax.models.transalnet.TranSalNetRes`.

The released file (``TranSalNet_Res.pth``, distributed by hand from the authors' repository
github.com/LJOVO/TranSalNet) holds ``encoder.encoder.<i>.*``, where ``<i>`` indexes the first eight
children of torchvision's ResNet-50 (0 conv1, 1 bn1, 4..7 layer1..layer4; 2 and 3 are ReLU and
max-pool, parameter-free), and ``decoder.*`` with the three transformer encoders. Every key and
shape is checked (:func:`convert.core.convert_state_dict`); the names and shapes the table expects
are those of the authors' module (tests/data/transalnet_res_keys.json records them).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from convert import tables
from convert.core import Rule, convert_state_dict
from convert.resnet import batch_norm_rules

ARCH = "transalnet_res"
_ENCODER = r"encoder\.encoder\."
# ResNet children index -> stage name of the zoo's ResNet.
_STAGES = {4: "layer1", 5: "layer2", 6: "layer3", 7: "layer4"}
_TRANSFORMER = r"decoder\.TransEncoder(\d)\.transformer_encoder\."
_FLAX_TRANSFORMER = r"decoder/TransEncoder\1/transformer_encoder/"


def _stage_rules(index: int, stage: str) -> tuple[Rule, ...]:
  prefix = _ENCODER + f"{index}" + r"\.(\d+)\."
  return (
      Rule(prefix + r"conv(\d)\.weight", rf"params/encoder/{stage}_\1/conv\2/kernel", "conv"),
      *batch_norm_rules(prefix + r"bn(\d)", rf"encoder/{stage}_\1/bn\2"),
      Rule(prefix + r"downsample\.0\.weight", rf"params/encoder/{stage}_\1/downsample_0/kernel",
           "conv"),
      *batch_norm_rules(prefix + r"downsample\.1", rf"encoder/{stage}_\1/downsample_1"),
  )


def _layer_norm_rules(torch_prefix: str, flax_prefix: str) -> tuple[Rule, ...]:
  return (Rule(torch_prefix + r"\.weight", f"params/{flax_prefix}/scale"),
          Rule(torch_prefix + r"\.bias", f"params/{flax_prefix}/bias"))


RULES = (
    Rule(r".*\.num_batches_tracked", "", "ignore"),
    Rule(_ENCODER + r"0\.weight", "params/encoder/conv1/kernel", "conv"),
    *batch_norm_rules(_ENCODER + r"1", "encoder/bn1"),
    *(rule for index, stage in _STAGES.items() for rule in _stage_rules(index, stage)),
    Rule(r"decoder\.conv(\d)\.weight", r"params/decoder/conv\1/kernel", "conv"),
    Rule(r"decoder\.conv(\d)\.bias", r"params/decoder/conv\1/bias"),
    *batch_norm_rules(r"decoder\.batchnorm(\d)", r"decoder/batchnorm\1"),
    Rule(r"decoder\.TransEncoder(\d)\.position_embeddings",
         r"params/decoder/TransEncoder\1/position_embeddings"),
    Rule(r"decoder\.TransEncoder(\d)\.patch_embeddings\.weight",
         r"params/decoder/TransEncoder\1/patch_embeddings/kernel", "conv"),
    Rule(r"decoder\.TransEncoder(\d)\.patch_embeddings\.bias",
         r"params/decoder/TransEncoder\1/patch_embeddings/bias"),
    Rule(_TRANSFORMER + r"layer\.(\d)\.attn\.(query|key|value|out)\.weight",
         "params/" + _FLAX_TRANSFORMER + r"layer_\2/attn/\3/kernel", "dense"),
    Rule(_TRANSFORMER + r"layer\.(\d)\.attn\.(query|key|value|out)\.bias",
         "params/" + _FLAX_TRANSFORMER + r"layer_\2/attn/\3/bias"),
    Rule(_TRANSFORMER + r"layer\.(\d)\.ffn\.(fc\d)\.weight",
         "params/" + _FLAX_TRANSFORMER + r"layer_\2/ffn/\3/kernel", "dense"),
    Rule(_TRANSFORMER + r"layer\.(\d)\.ffn\.(fc\d)\.bias",
         "params/" + _FLAX_TRANSFORMER + r"layer_\2/ffn/\3/bias"),
    *_layer_norm_rules(_TRANSFORMER + r"layer\.(\d)\.(attention_norm|ffn_norm)",
                       _FLAX_TRANSFORMER + r"layer_\2/\3"),
    *_layer_norm_rules(_TRANSFORMER + r"encoder_norm", _FLAX_TRANSFORMER + "encoder_norm"),
)


def convert(state_dict: Mapping[str, Any], num_classes: Optional[int] = None) -> dict[str, Any]:
  """Converts the authors' ``TranSalNet_Res`` state dict (``num_classes`` is ignored: no
  classifier).

  Raises:
    convert.core.ConversionError naming every missing, unexpected and mis-shaped key (e.g. the
    DenseNet variant's file, whose encoder keys differ).
  """
  del num_classes
  from ais_jax import models
  spec = models.get(ARCH)
  return convert_state_dict(state_dict, RULES, models.abstract_variables(spec), arch=ARCH)


tables.register(ARCH, convert)
