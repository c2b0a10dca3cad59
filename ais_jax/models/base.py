"""The model interface every analysis uses.

A model family is one Flax linen module with two entry points:

* ``trunk(x)``: images ``[n, H, W, 3]`` (already preprocessed, float32) -> feature maps of the
  layer that AIS ablates, ``[n, h, w, K]`` (after its nonlinearity).
* ``head(maps, keep=None)``: maps -> ``(embedding, logits)``. ``keep`` is None, ``[K]`` or
  ``[m, K]`` (0/1 or weights) multiplying the maps channel-wise before the head; with ``[m, K]``
  the outputs gain a leading ``m`` axis: embedding ``[m, n, D]``, logits ``[m, n, C]``.
  ``logits`` is None for models without a classifier (Barlow Twins).

``__call__(x)`` is ``head(trunk(x))`` and is what ``init`` uses.

A :class:`ModelSpec` holds everything else an analysis needs to know about one architecture:
sizes, preprocessing and layer names. The zoo knows nothing of PyTorch state dicts: the conversion
tables live in ``convert/`` and register themselves there (``convert.tables.get(name)``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import numpy as np

# Normalisations (applied to float pixels in 0..255):
#   'imagenet': (x / 255 - mean) / std with torchvision's ImageNet mean/std.
#   'tf_127':   (x - 127) / 128, what TensorFlow's EfficientNet-Lite builder trained with.
#   'unit':     x / 255, no mean/std (TranSalNet's test-time path).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("imagenet", "tf_127", "unit")
# What a model is for: 'embedding' models have trunk/head and enter AIS; 'saliency' models
# (TranSalNet) map an image to a saliency map and are used by the Aim 3 comparison only.
MODEL_KINDS = ("embedding", "saliency")
# Resize rules: 'square' = PIL BILINEAR (antialiased when shrinking) to input_size x input_size,
# the default for batched cohorts; 'shorter_side' = the published Resize(input_size) on the shorter
# side, no crop (only meaningful for square stimuli or batch size 1).
# 'letterbox' = TranSalNet's test-time path: aspect kept, centred on a padded canvas (OpenCV).
RESIZE_RULES = ("square", "shorter_side", "letterbox")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Static description of one architecture (no parameters).

  Attributes:
    name: registry name, e.g. 'efficientnet_lite0', 'vgg16'.
    family: module file under ais_jax/models, e.g. 'efficientnet_lite', 'vgg', 'resnet'.
    build: ``build(num_classes) -> flax.linen.Module`` implementing trunk/head.
    num_maps: K, channels of the ablated layer.
    embedding_dim: D, size of the embedding the paper uses.
    input_size: square input side in pixels (224 for VGG/ResNet, 240/260 for Lite1/2).
    map_size: spatial side h = w of the ablated maps at input_size.
    normalization: one of NORMALIZATIONS.
    resize: one of RESIZE_RULES (the default rule for this model).
    ablation_layer: name of the ablated layer in the source network (e.g. 'features.29' /
      'conv5_3 (after ReLU)').
    embedding_layer: name of the embedding layer in the source network.
    pooled_head: True if the embedding is the global average of the maps (removing map k
      zeroes embedding coordinate k); False for fully connected heads (VGG).
    num_classes: default classifier size (None: no classifier).
  """
  name: str
  family: str
  build: Callable[..., Any]
  num_maps: int
  embedding_dim: int
  input_size: int
  map_size: int
  normalization: str
  resize: str
  ablation_layer: str
  embedding_layer: str
  pooled_head: bool
  num_classes: Optional[int]
  # ablation_head(variables) -> ais_jax.ablation.PooledHead | FcHead | GenericHead. None means
  # PooledHead for pooled heads; fully connected families must provide it.
  ablation_head: Optional[Callable[..., Any]] = None
  # Input height when the network needs a non-square input (TranSalNet: 288 x 384); None: square.
  input_height: Optional[int] = None
  kind: str = "embedding"  # one of MODEL_KINDS

  @property
  def input_shape(self) -> tuple[int, int]:
    """(H, W) of the network's input."""
    return (self.input_height or self.input_size, self.input_size)

  def get_ablation_head(self, variables):
    if self.ablation_head is not None:
      return self.ablation_head(variables)
    if self.pooled_head:
      from ais_jax.ablation import PooledHead
      return PooledHead()
    raise ValueError(f"{self.name}: no ablation head defined for a fully connected head")

  def preprocess(self, pixels):
    """float pixels in 0..255 ``[n, H, W, 3]`` -> normalised float32 input (numpy or jax)."""
    x = pixels.astype(np.float32) if isinstance(pixels, np.ndarray) else pixels.astype("float32")
    if self.normalization == "imagenet":
      mean = np.asarray(IMAGENET_MEAN, np.float32)
      std = np.asarray(IMAGENET_STD, np.float32)
      return (x / 255.0 - mean) / std
    if self.normalization == "tf_127":
      return (x - 127.0) / 128.0
    if self.normalization == "unit":
      return x / 255.0
    raise ValueError(f"unknown normalization {self.normalization!r}; expected one of {NORMALIZATIONS}")

  def metadata(self) -> dict:
    """JSON-ready description (for summary.json and provenance records)."""
    return {
        "name": self.name, "family": self.family, "num_maps": self.num_maps,
        "embedding_dim": self.embedding_dim, "input_size": self.input_size,
        "map_size": self.map_size, "normalization": self.normalization, "resize": self.resize,
        "ablation_layer": self.ablation_layer, "embedding_layer": self.embedding_layer,
        "pooled_head": self.pooled_head, "num_classes": self.num_classes,
    }


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
  if spec.name in _REGISTRY:
    raise ValueError(f"model {spec.name!r} registered twice")
  _REGISTRY[spec.name] = spec
  return spec


def get(name: str) -> ModelSpec:
  """Returns the ModelSpec registered as ``name`` (e.g. 'efficientnet_lite0', 'vgg16')."""
  import_families()
  if name not in _REGISTRY:
    raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(_REGISTRY))}")
  return _REGISTRY[name]


def names() -> list[str]:
  import_families()
  return sorted(_REGISTRY)


# Families register themselves on import: their models here, their converters in convert/.
FAMILIES = ("efficientnet_lite", "vgg", "resnet", "alexnet", "squeezenet", "transalnet",
            "densenet", "inception", "efficientnet", "regnet")


def import_families(package: str = "ais_jax.models") -> None:
  """Imports ``package.<family>`` for every family (each registers itself on import). A family
  module that is missing (not written yet) is skipped; any other import error is a bug and
  propagates."""
  import importlib
  for family in FAMILIES:
    try:
      importlib.import_module(f"{package}.{family}")
    except ModuleNotFoundError as e:
      if e.name != f"{package}.{family}":
        raise


def init_variables(spec: ModelSpec, num_classes: Optional[int] = None, seed: int = 0):
  """Random variables for ``spec`` (tests, benchmarks and abstract shapes)."""
  import jax
  import jax.numpy as jnp
  module = spec.build(num_classes=spec.num_classes if num_classes is None else num_classes)
  x = jnp.zeros((1, *spec.input_shape, 3), jnp.float32)
  return jax.jit(module.init)(jax.random.PRNGKey(seed), x)


def abstract_variables(spec: ModelSpec, num_classes: Optional[int] = None):
  """Shape-only variable tree (jax.ShapeDtypeStruct leaves), no FLOPs spent."""
  import jax
  import jax.numpy as jnp
  module = spec.build(num_classes=spec.num_classes if num_classes is None else num_classes)
  x = jax.ShapeDtypeStruct((1, *spec.input_shape, 3), jnp.float32)
  return jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
