r"""Converts a PyTorch state dict file into an ais_jax checkpoint directory, without torch.

    python -m convert.torch_to_flax --arch=vgg16 --src=vgg16-397923af.pth --dst=/tmp/vgg16
    python -m convert.torch_to_flax --arch=vgg16 --num_classes=565 --src=ecoset.pth --dst=DIR

Reads .pth/.pt (zip or legacy format) and .safetensors through a restricted unpickler that refuses
anything but tensors; maps keys with the architecture's conversion table (every key and shape
checked); writes an orbax checkpoint plus provenance.json into --dst.
"""

from __future__ import annotations

from absl import app
from absl import flags

from ais_jax.io import weights
from experiments import _common

_ARCH = flags.DEFINE_string("arch", None, "Architecture name (ais_jax.models.names()).",
                            required=True)
_SRC = flags.DEFINE(_common.PathParser(), "src", None, "State dict file: .pth/.pt or "
                    ".safetensors (~ and $VARS expanded).", serializer=flags.ArgumentSerializer(),
                    required=True)
_DST = flags.DEFINE(_common.PathParser(), "dst", None, "Checkpoint directory to create (~ and "
                    "$VARS expanded).", serializer=flags.ArgumentSerializer(), required=True)
_NUM_CLASSES = flags.DEFINE_integer(
    "num_classes", None, "Classifier size in the file (default: the architecture's; 0: none).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --dst.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import os  # pylint: disable=g-import-not-at-top
  from ais_jax import models  # pylint: disable=g-import-not-at-top
  from ais_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top
  from ais_jax.io import runs  # pylint: disable=g-import-not-at-top
  # Before reading the (possibly large) --src: the names, and that --dst can be written.
  if _ARCH.value not in models.names():
    raise UserInputError("--arch", f"unknown architecture {_ARCH.value!r}; known: "
                         f"{', '.join(models.names())}")
  if not os.path.isfile(_SRC.value):
    raise UserInputError(_SRC.value, "no such file; --src is a .pth/.pt or .safetensors state "
                         "dict")
  if os.path.lexists(_DST.value) and not _OVERWRITE.value:
    raise UserInputError(_DST.value, "already exists; choose another --dst or pass --overwrite "
                         "to replace it")
  runs.check_out_dir(_DST.value, overwrite=True, input_name="--dst")
  try:
    directory = weights.convert_file(_SRC.value, _DST.value, arch=_ARCH.value,
                                     num_classes=_NUM_CLASSES.value, overwrite=_OVERWRITE.value)
  except (ValueError, KeyError, FileExistsError) as e:  # Unreadable file, wrong architecture.
    raise UserInputError(None, str(e).strip("'\"")) from None
  print(f"converted {_SRC.value} ({_ARCH.value}) -> {directory}")


if __name__ == "__main__":
  _common.run(main)  # one-line errors; library INFO logs only with --verbosity
