"""Shared pieces of the experiment scripts: flag groups, progress lines, user-error handling.

Each ``define_*`` function defines one group of absl flags once (a second call is a no-op), so
several experiment scripts share the exact names and help texts of issue 5:

    --arch --weights --batch_size --precision                       (define_model_flags)
    --images --image_list --human --human_key --human_kind          (define_cohort_flags)
    --similarity --comparison --cohort_score --memory_budget_gb     (define_ais_flags)
    --out --overwrite --[no]progress --save_feature_maps            (define_output_flags)

:func:`run` replaces ``absl.app.run``: a flag error or an
:class:`ais_jax.errors.UserInputError` ends the program with one line ``error: <input>: <problem>``
on stderr and exit status 2, not a traceback; other exceptions are bugs and keep their traceback.
"""

from __future__ import annotations

import sys
import time
import warnings
from typing import Callable, Iterable

from absl import app
from absl import flags
from absl import logging as absl_logging

from ais_jax.errors import UserInputError

FLAGS = flags.FLAGS
USER_ERROR_EXIT_CODE = 2


def _defined(name: str) -> bool:
  return name in FLAGS


def define_flag(define: Callable[..., object], name: str, *args, **kwargs) -> None:
  """``define(name, *args, **kwargs)`` unless a flag ``name`` already exists (the first is kept).

  Several experiment modules define the same option (--seed, --folds, --saliency, ...); absl
  refuses a second definition, so a module imported next to another keeps the first one. The flag
  is registered for the calling module (as a direct ``flags.DEFINE_*`` call would be), so it stays
  in that module's ``--help``.
  """
  if name in FLAGS:
    return
  module_name = sys._getframe(1).f_globals["__name__"]  # pylint: disable=protected-access
  kwargs.setdefault("module_name", sys.argv[0] if module_name == "__main__" else module_name)
  define(name, *args, **kwargs)


def define_model_flags() -> None:
  """--arch, --weights, --batch_size, --precision."""
  if _defined("weights"):
    return
  flags.DEFINE_string("arch", "", "Architecture (ais_jax.models name, e.g. efficientnet_lite0, "
                      "vgg16). Optional: taken from the weights; checked against them if given.")
  flags.DEFINE_string("weights", "", "Registered weights name (e.g. efficientnet_lite0_imagenet) "
                      "or a checkpoint directory from `python -m convert.torch_to_flax`. "
                      "Required: random weights are not allowed.")
  flags.DEFINE_integer("batch_size", 32, "Images per trunk batch (the last batch is padded to "
                       "this size so the trunk compiles once).", lower_bound=1)
  flags.DEFINE_enum("precision", "exact", ["exact", "float32", "fast"],
                    "exact: head and similarities in float64; float32: head in float32 "
                    "(precision HIGHEST); fast: head in TF32/bf16. Similarities are float64 in "
                    "every mode (DESIGN.md section 3).")


def define_cohort_flags() -> None:
  """--images, --image_list, --human, --human_key, --human_kind."""
  if _defined("images"):
    return
  flags.DEFINE_string("images", "", "A directory of image files (png/jpg/jpeg/bmp/tif/tiff/gif/"
                      "webp; sorted by file name) or a .npy uint8 array [n, H, W, 3].")
  flags.DEFINE_string("image_list", "", "Text file with one image file name per line: the "
                      "images of --images (a directory) to use, in this order.")
  flags.DEFINE_string("human", "", "Human similarity matrix [n, n] in the image order: .npy, "
                      ".csv (numbers only, no header, nan or empty for missing) or .mat.")
  flags.DEFINE_string("human_key", "", "Variable of a .mat --human file (required when it "
                      "holds more than one matrix).")
  flags.DEFINE_enum("human_kind", "similarity", ["similarity", "dissimilarity"],
                    "What --human holds; dissimilarities are negated (S = -D).")


def define_ais_flags() -> None:
  """--similarity, --comparison, --cohort_score, --memory_budget_gb."""
  if _defined("similarity"):
    return
  flags.DEFINE_enum("similarity", "pearson", ["pearson", "spearman", "cosine"],
                    "Similarity between two images' embeddings.")
  flags.DEFINE_enum("comparison", "pearson", ["pearson", "spearman"],
                    "Agreement between model and human similarities.")
  flags.DEFINE_enum("cohort_score", "r", ["r", "r2"],
                    "Cohort AIS on the agreement r, or on r^2 (squared Pearson r, as the "
                    "published cross-validation; needs --comparison=pearson).")
  flags.DEFINE_float("memory_budget_gb", 2.0, "Memory budget of the AIS stage (bounds its "
                     "chunks of ablations).")


def define_output_flags() -> None:
  """--out, --overwrite, --[no]progress, --save_feature_maps."""
  if _defined("out"):
    return
  flags.DEFINE_string("out", "", "Output folder of the run (required).")
  flags.DEFINE_bool("overwrite", False, "Replace the files of an existing non-empty --out.")
  flags.DEFINE_bool("progress", True, "Progress lines on stderr, per stage with counts "
                    "(--noprogress: quiet).")
  flags.DEFINE_bool("save_feature_maps", False, "Also write feature_maps.npy [n, h, w, K].")


def flag_values(names: Iterable[str]) -> dict:
  """The current values of the named flags (for summary.json)."""
  return {name: FLAGS[name].value for name in names}


def require(*names: str) -> None:
  """UserInputError for the first of the named string flags that is empty."""
  for name in names:
    if not FLAGS[name].value:
      raise UserInputError(f"--{name}", f"required ({FLAGS[name].help})")


def progress_printer(enabled: bool) -> Callable[[str], None] | None:
  """A progress callback printing ``[+12.3s] message`` lines to stderr, or None when disabled."""
  if not enabled:
    return None
  start = time.perf_counter()

  def report(message: str) -> None:
    print(f"[+{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

  return report


def _show_warning(message, category, filename, lineno, file=None, line=None):
  del filename, lineno, line  # One line per warning, no source location.
  print(f"warning: {message}", file=file or sys.stderr, flush=True)


def _fail(message: str) -> None:
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
  sys.exit(USER_ERROR_EXIT_CODE)


def _parse_flags(argv):
  try:
    return FLAGS(argv)
  except flags.Error as e:
    _fail(f"{e} (see --help)")


def run(main: Callable[[list], None]) -> None:
  """``absl.app.run(main)`` with one-line errors (exit 2) for flag errors and UserInputError."""

  def wrapped(argv):
    warnings.showwarning = _show_warning
    if not FLAGS["verbosity"].present:  # Library INFO logs (jax, orbax) only on request (-v 0).
      absl_logging.set_verbosity(absl_logging.WARNING)
    if len(argv) > 1:
      _fail(f"command line: unexpected arguments {argv[1:]}; every option is a --flag=value")
    try:
      return main(argv)
    except UserInputError as e:
      _fail(str(e))
    except KeyboardInterrupt:
      print("interrupted", file=sys.stderr)
      sys.exit(130)

  app.run(wrapped, flags_parser=_parse_flags)
