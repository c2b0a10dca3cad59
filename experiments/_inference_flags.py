"""Flags of the resampling tests (``experiments.inference`` and the 92-image ``experiments.run``),
defined once here so their meaning is the same in both:

    --bootstrap --permutations --bootstrap_seed --permutation_seed
"""

from __future__ import annotations

from absl import flags

from experiments import _common


def define_resampling_flags() -> None:
  """--bootstrap, --permutations and their seeds (registered for the calling module)."""
  module = _common._caller_module(1)  # pylint: disable=protected-access
  _common.define_flag(flags.DEFINE_integer, "bootstrap", 1000, "Image resamples for the "
                      "intervals of the baseline agreement and of every map's cohort AIS "
                      "(0: none).", lower_bound=0, module_name=module)
  _common.define_flag(flags.DEFINE_integer, "permutations", 1000, "Joint row/column "
                      "permutations of the human matrix for the per-map tests (0: none).",
                      lower_bound=0, module_name=module)
  _common.define_flag(flags.DEFINE_integer, "bootstrap_seed", 0, "Seed of the image resamples.",
                      module_name=module)
  _common.define_flag(flags.DEFINE_integer, "permutation_seed", 1, "Seed of the permutations.",
                      module_name=module)
