"""Shared pieces of the experiment scripts: flag groups, progress lines, user-error handling.

Each ``define_*`` function defines one group of absl flags, so several experiment scripts share
the exact names and help texts:

    --arch --weights --batch_size --precision                       (define_model_flags)
    --images --image_list --tfds_data_dir --human --human_labels
    --human_key --human_kind                                        (define_cohort_flags)
    --dataset --data_dir                                            (define_dataset_flags)
    --similarity --comparison --cohort_score --memory_budget_gb     (define_ais_flags)
    --folds --seeds --fold_seed --min_test_images --random_orders   (define_selection_flags)
    --selection_score, --alternative, --saliency                    (define_*_flag)
    --out --overwrite --[no]progress --save_feature_maps            (define_output_flags)

Rules: a flag that seeds something names what it seeds (``--fold_seed``, ``--planted_seed``,
``--bootstrap_seed``; ``--folds`` and ``--seeds`` are counts). A shared flag is defined once, here:
defining it again with the same meaning reuses it, with a different meaning (type, default,
allowed values, help) is an error (:func:`define_flag`). Every flag defined through these functions
is a key flag of the module that asked for it, so ``python -m MODULE --help`` lists it
(``--helpfull`` adds absl's own). Path flags (:func:`define_path`) expand ``~`` and ``$VARS``.

:func:`run` replaces ``absl.app.run``: a flag error or an
:class:`ais_jax.errors.UserInputError` ends the program with one line ``error: <input>: <problem>``
on stderr and exit status 2, not a traceback; other exceptions are bugs and keep their traceback.
"""

from __future__ import annotations

import logging
import os
import signal
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


# ----------------------------------------------------------------------------------------------
# Flag definitions


class PathParser(flags.ArgumentParser):
  """A path flag's value with ``~`` and ``$VARS`` expanded (``--dst=~/ckpt`` -> ``$HOME/ckpt``).

  Values that are not paths (a registry name, ``spectral_residual``) pass through unchanged.
  """

  def parse(self, argument):
    if not isinstance(argument, str):
      raise TypeError(f"expected a path string, got {argument!r}")
    return expand_path(argument)

  def flag_type(self):
    return "path"


class PathListParser(flags.ListParser):
  """A comma-separated list of paths, each expanded as :class:`PathParser` does."""

  def parse(self, argument):
    return [expand_path(p) for p in super().parse(argument)]

  def flag_type(self):
    return "path list"


def expand_path(value: str) -> str:
  """``~`` and ``$VARS`` expanded; an empty value stays empty."""
  return os.path.expandvars(os.path.expanduser(value)) if value else value


def _caller_module(depth: int) -> str:
  """The module name ``depth`` frames up, as absl names modules (``sys.argv[0]`` for __main__)."""
  name = sys._getframe(depth + 1).f_globals["__name__"]  # pylint: disable=protected-access
  return sys.argv[0] if name == "__main__" else name


def _meaning(flag) -> tuple:
  """What a flag means: type, default, allowed values and help (compared on redefinition)."""
  parser = flag.parser
  return (flag.flag_type(), flag.default, getattr(parser, "enum_values", None),
          getattr(parser, "lower_bound", None), getattr(parser, "upper_bound", None),
          " ".join(flag.help.split()))


def define_flag(define: Callable[..., object], name: str, *args, module_name: str | None = None,
                **kwargs) -> None:
  """``define(name, *args, **kwargs)``, or nothing when the same flag is already defined.

  Several experiment modules share options; absl refuses a second definition, so a module
  imported next to another one that defined the same flag with the same meaning (type, default,
  allowed values, help) reuses it. A second definition with a different meaning is an error
  (``flags.Error``): a shared flag is defined once, in this module's ``define_*`` groups. Either
  way the flag is a key flag of the calling module, so that module's ``--help`` lists it.
  """
  module_name = module_name or _caller_module(1)
  if name in FLAGS:
    existing = FLAGS[name]
    probe = flags.FlagValues()
    define(name, *args, flag_values=probe, **kwargs)
    if _meaning(probe[name]) != _meaning(existing):
      defined_by = FLAGS.find_module_defining_flag(name, default="?")
      raise flags.Error(
          f"--{name} is defined twice with different meanings ({defined_by}: "
          f"{_meaning(existing)}; {module_name}: {_meaning(probe[name])}); define it once in "
          "experiments/_common.py and call that definition from both")
  else:
    define(name, *args, module_name=module_name, **kwargs)
  FLAGS.register_key_flag_for_module(module_name, FLAGS[name])


def define_path(name: str, default: str | None, help_text: str, *,
                module_name: str | None = None, **kwargs) -> None:
  """A string flag holding a path (or a name), with ``~`` and ``$VARS`` expanded."""
  define_flag(_define_path, name, default, help_text,
              module_name=module_name or _caller_module(1), **kwargs)


def define_path_list(name: str, default, help_text: str, *, module_name: str | None = None,
                     **kwargs) -> None:
  """A comma-separated list of paths, each with ``~`` and ``$VARS`` expanded."""
  define_flag(_define_path_list, name, default, help_text,
              module_name=module_name or _caller_module(1), **kwargs)


def _define_path(name, default, help_text, **kwargs):
  return flags.DEFINE(PathParser(), name, default, help_text,
                      serializer=flags.ArgumentSerializer(), **kwargs)


def _define_path_list(name, default, help_text, **kwargs):
  return flags.DEFINE(PathListParser(), name, default, help_text,
                      serializer=flags.CsvListSerializer(","), **kwargs)


def define_model_flags() -> None:
  """--arch, --weights, --batch_size, --precision."""
  module = _caller_module(1)
  define_flag(flags.DEFINE_string, "arch", "", "Architecture (ais_jax.models name, e.g. "
              "efficientnet_lite0, vgg16). Optional: taken from the weights; checked against "
              "them if given.", module_name=module)
  define_path("weights", "", "Registered weights name (e.g. efficientnet_lite0_imagenet; see "
              "python -m convert.fetch --list) or a checkpoint directory from "
              "`python -m convert.torch_to_flax`. Random weights are not allowed.",
              module_name=module)
  define_flag(flags.DEFINE_integer, "batch_size", 32, "Images per trunk batch (the last batch "
              "is padded to this size so the trunk compiles once).", lower_bound=1,
              module_name=module)
  define_flag(flags.DEFINE_enum, "precision", "exact", ["exact", "float32", "fast"],
              "exact: head and similarities in float64; float32: head in float32 (precision "
              "HIGHEST); fast: head in TF32/bf16. Similarities are float64 in every mode "
              "(DESIGN.md section 3).", module_name=module)


def define_cohort_flags(human: bool = True) -> None:
  """--images, --image_list, --tfds_data_dir, and with ``human``: --human, --human_labels,
  --human_key, --human_kind."""
  module = _caller_module(1)
  define_path("images", "", "A directory of image files (png/jpg/jpeg/bmp/tif/tiff/gif/webp; "
              "sorted by file name), a .npy uint8 array [n, H, W, 3], or "
              "tfds:NAME[:SPLIT][:COUNT] (a prepared tensorflow-datasets dataset; needs the "
              "tfds extra).", module_name=module)
  define_path("image_list", "", "Text file with one image file name per line: the images of "
              "--images (a directory) to use, in this order; with a .npy --images, the names "
              "of its images.", module_name=module)
  define_path("tfds_data_dir", "", "data_dir of a prepared tensorflow-datasets dataset for "
              "--images=tfds:... (default: tfds' own, ~/tensorflow_datasets). Nothing is "
              "downloaded.", module_name=module)
  if not human:
    return
  define_path("human", "", "Human similarity matrix [n, n]: .npy, .csv or .mat. A .csv holds "
              "numbers only (nan or empty for missing) in the image order, or is labelled as "
              "pandas' to_csv writes it (header row of image names after an empty corner cell, "
              "each row starting with its name): then it is reordered to the image order.",
              module_name=module)
  define_path("human_labels", "", "Text file with the image name of each row/column of a "
              ".npy/.mat --human (one per line): the matrix is reordered to the image order.",
              module_name=module)
  define_human_reading_flags(module_name=module)


def define_human_reading_flags(module_name: str | None = None) -> None:
  """--human_key, --human_kind: how the human matrices (--human, or experiments.inference's
  --human_subjects) are read."""
  module = module_name or _caller_module(1)
  define_flag(flags.DEFINE_string, "human_key", "", "Variable of a .mat human file (--human, or "
              "--human_subjects of experiments.inference): required when it holds more than one "
              "matrix.", module_name=module)
  define_flag(flags.DEFINE_enum, "human_kind", None, ["similarity", "dissimilarity"],
              "What the human matrices hold; dissimilarities are negated (S = -D). Not given: "
              "used as similarities, but a matrix whose diagonal is the minimum of nearly every "
              "row (a distance matrix) is refused until you state the kind.", module_name=module)


DATASETS = ("planted", "kriegeskorte92", "custom")
COHORT_DATASETS = ("kriegeskorte92", "custom")  # what inference and architectures take


def define_dataset_flags() -> None:
  """--dataset, --data_dir: one meaning in every command that takes them (each command refuses
  the values it does not support, see :func:`dataset_of`)."""
  module = _caller_module(1)
  define_flag(flags.DEFINE_enum, "dataset", None, list(DATASETS),
              "Images and human judgments: planted (a generated cohort, offline; "
              "experiments.run only, its default), kriegeskorte92 (the 92 images and 16 "
              "subjects, from --data_dir or the cache) or custom (your own: --images and "
              "the human flags; implied when --images is given).", module_name=module)
  define_path("data_dir", "", "Folder holding the 92-image files (kriegeskorte92), e.g. "
              "../shared/data/kriegeskorte92; empty: downloaded into "
              "$AIS_JAX_HOME/data/kriegeskorte92 from the public rsatoolbox copy (sha256 "
              "checked).", module_name=module)


def dataset_of(value: str | None, *, images_given: bool, supported: Iterable[str],
               default: str) -> str:
  """The --dataset a command runs: ``value``, else ``custom`` when images are given, else
  ``default``; a value the command does not support is a :class:`UserInputError`."""
  supported = tuple(supported)
  dataset = value or ("custom" if images_given else default)
  if dataset not in supported:
    raise UserInputError("--dataset", f"{dataset} is not available in this command (it takes "
                         f"{', '.join(supported)}); planted is experiments.run's generated cohort")
  return dataset


def define_ais_flags() -> None:
  """--similarity, --comparison, --cohort_score, --memory_budget_gb."""
  module = _caller_module(1)
  define_flag(flags.DEFINE_enum, "similarity", "pearson", ["pearson", "spearman", "cosine"],
              "Similarity between two images' embeddings.", module_name=module)
  define_flag(flags.DEFINE_enum, "comparison", "pearson", ["pearson", "spearman"],
              "Agreement between model and human similarities.", module_name=module)
  define_flag(flags.DEFINE_enum, "cohort_score", "r", ["r", "r2"],
              "Cohort AIS on the agreement r, or on r^2 (squared Pearson r, as the published "
              "cross-validation; needs --comparison=pearson).", module_name=module)
  define_flag(flags.DEFINE_float, "memory_budget_gb", 2.0, "Memory budget of the AIS stage "
              "(bounds its chunks of ablations).", module_name=module)


def define_selection_flags() -> None:
  """--folds, --seeds, --fold_seed, --min_test_images, --random_orders (cross-validated
  selection; the seeds flag counts, --fold_seed seeds)."""
  module = _caller_module(1)
  define_flag(flags.DEFINE_integer, "folds", 5, "Image folds per seed (test set = one fold); "
              "reduced by the --min_test_images rule. experiments.run: 0 skips the selection.",
              lower_bound=0, module_name=module)
  define_flag(flags.DEFINE_integer, "seeds", 8, "Fold permutations per run (folds x seeds "
              "splits): numpy.random.default_rng(s) for s = fold_seed .. fold_seed + seeds - 1.",
              lower_bound=1, module_name=module)
  define_flag(flags.DEFINE_integer, "fold_seed", 0, "First seed of the fold permutations (also "
              "seeds the random-order control).", module_name=module)
  define_flag(flags.DEFINE_integer, "min_test_images", 4, "Fewest test images per split (4 "
              "images = 6 pairs): when --folds would give smaller test sets the folds are "
              "reduced to n // min_test_images (at least 2); fewer than 2 x min_test_images "
              "images is an error.", lower_bound=2, module_name=module)
  define_flag(flags.DEFINE_integer, "random_orders", 1, "Random map orders per split for the "
              "chance control (0: none).", lower_bound=0, module_name=module)


def define_alternative_flag() -> None:
  """--alternative: the t-tests' alternative hypothesis on retained - full."""
  define_flag(flags.DEFINE_enum, "alternative", "two-sided", ["two-sided", "greater", "less"],
              "t-test alternative on retained - full test scores ('greater': the AIS-selected "
              "maps are better).", module_name=_caller_module(1))


def define_selection_score_flag() -> None:
  """--selection_score (experiments.run and the architecture sweep)."""
  define_flag(flags.DEFINE_enum, "selection_score", "r2", ["r2", "r"], "Score of the selection "
              "(ranks maps and traces the curves): r^2 (published) or r; a Spearman comparison "
              "always uses r.", module_name=_caller_module(1))


def define_cache_flags() -> None:
  """--[no]cache, --cache_max_gb: the activation cache of trunk maps (ais_jax.io.activation_cache;
  experiments.ais and the architecture sweep)."""
  module = _caller_module(1)
  define_flag(flags.DEFINE_bool, "cache", True, "Read and write trunk maps in the activation "
              "cache ($AIS_JAX_HOME/activations): a run on the same images and weights skips the "
              "trunk; --nocache computes the trunk every time.", module_name=module)
  define_flag(flags.DEFINE_float, "cache_max_gb", 10.0, "Size bound of the activation cache in "
              "GiB (least recently used entries are evicted).", module_name=module)


def trunk_cache():
  """The activation cache that --cache/--cache_max_gb ask for, or None (--nocache)."""
  from ais_jax.io import activation_cache
  return activation_cache.open_cache(FLAGS.cache, FLAGS.cache_max_gb)


def define_saliency_flag() -> None:
  """--saliency (experiments.saliency and experiments.run)."""
  define_path("saliency", "spectral_residual", "Saliency compared with the AIS heatmaps: "
              "'spectral_residual' (built-in classical baseline), a .npy [n, H, W], a folder of "
              "maps named like the images, or 'none' (experiments.run: skip the comparison).",
              module_name=_caller_module(1))


def define_output_flags() -> None:
  """--out, --overwrite, --[no]progress, --save_feature_maps."""
  module = _caller_module(1)
  define_path("out", "", "Output folder of the run.", module_name=module)
  define_flag(flags.DEFINE_bool, "overwrite", False, "Replace the files of an existing "
              "non-empty --out.", module_name=module)
  define_flag(flags.DEFINE_bool, "progress", True, "Progress lines on stderr, per stage with "
              "counts (--noprogress: quiet).", module_name=module)
  define_flag(flags.DEFINE_bool, "save_feature_maps", False, "Also write feature_maps.npy "
              "[n, h, w, K].", module_name=module)


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


# ----------------------------------------------------------------------------------------------
# Running a main: one-line errors, exit codes, Ctrl-C

INTERRUPT_EXIT_CODE = 130
MAX_ERROR_CHARS = 500
# Seconds a first Ctrl-C waits for the program to unwind (staging folders removed, files closed)
# before the process ends anyway; a second Ctrl-C ends it at once.
INTERRUPT_GRACE_S = 10.0
_interrupt = {"count": 0, "in_process": False}


def one_line(message: str, limit: int = MAX_ERROR_CHARS) -> str:
  """``message`` on one line, its middle elided past ``limit`` characters (start and end kept:
  the input is named first and the fix said last)."""
  text = " ".join(str(message).split())
  if len(text) <= limit:
    return text
  head, tail = (limit * 2) // 3, limit // 3 - 5
  return f"{text[:head]} ... {text[-tail:]}"


def _exit(code: int) -> None:
  """Ends the process with ``code``: stdout/stderr flushed, then ``os._exit``.

  Not ``sys.exit``: at interpreter shutdown after JAX has run, XLA's and orbax's worker threads
  are torn down under live Python callbacks, which crashed with ``Fatal Python error:
  Segmentation fault`` (exit 139) after a Ctrl-C. Every file of a run is already closed (written
  through staging folders), so nothing is lost by skipping the shutdown. In-process callers
  (tests) get ``SystemExit(code)`` instead.
  """
  for stream in [sys.stdout, sys.stderr] + [getattr(h, "stream", None) for h in
                                            logging.getLogger().handlers]:
    try:
      stream.flush()
    except (AttributeError, OSError, ValueError):
      pass
  if _interrupt["in_process"]:
    raise SystemExit(code)
  os._exit(code)  # pylint: disable=protected-access


def _fail(message: str, *, debug: bool = False) -> None:
  if debug:
    import traceback  # pylint: disable=g-import-not-at-top
    traceback.print_exc()
  print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
  _exit(USER_ERROR_EXIT_CODE)


def _interrupted() -> None:
  print("interrupted (Ctrl-C); an existing --out is left as it was", file=sys.stderr, flush=True)
  _exit(INTERRUPT_EXIT_CODE)


def _on_sigint(signum, frame) -> None:
  """First Ctrl-C: KeyboardInterrupt in the main thread (the program unwinds and removes its
  staging folders; one raised inside a garbage-collector callback, where Python only prints it,
  is delivered again by :func:`_unraisable`), and a watchdog that ends the process after
  INTERRUPT_GRACE_S whatever happens. Second Ctrl-C: ends the process at once (kill-safe: runs
  are swapped in whole, and the next run removes the staging folder)."""
  del signum, frame
  if _interrupt.pop("redeliver", False):  # The first Ctrl-C again, after it was swallowed.
    raise KeyboardInterrupt
  _interrupt["count"] += 1
  if _interrupt["count"] > 1 and not _interrupt["in_process"]:
    _interrupted()
  if _interrupt["count"] == 1 and not _interrupt["in_process"]:
    import threading  # pylint: disable=g-import-not-at-top

    def watchdog():
      time.sleep(INTERRUPT_GRACE_S)
      _interrupted()

    threading.Thread(target=watchdog, daemon=True, name="ctrl-c-watchdog").start()
  raise KeyboardInterrupt


def _unraisable(hook_args) -> None:
  """A KeyboardInterrupt raised where Python can only print it (a garbage-collector callback,
  e.g. JAX's) is delivered again, as a signal, to the code that runs next; other unraisable
  exceptions go to the default hook."""
  if issubclass(hook_args.exc_type, KeyboardInterrupt) and _interrupt["count"]:
    import threading  # pylint: disable=g-import-not-at-top
    _interrupt["redeliver"] = True

    def redeliver():
      # After this hook has returned: raised before, the handler would run inside the hook (or
      # inside Thread.start, still in the hook) and be lost again.
      time.sleep(0.1)
      signal.raise_signal(signal.SIGINT)

    threading.Thread(target=redeliver, daemon=True).start()
    return
  sys.__unraisablehook__(hook_args)


def _parse_flags(argv):
  try:
    return FLAGS(argv)
  except flags.Error as e:
    _fail(f"{e} (see --help)")


def _os_error_message(e: OSError) -> str:
  """``<path>: <reason>`` of an OSError about a file (permission, missing, disk full...)."""
  names = [n for n in (e.filename, e.filename2) if n]
  what = " -> ".join(str(n) for n in names) or "a file"
  reason = e.strerror or str(e)
  return f"{what}: {reason} ({type(e).__name__}; --debug shows where)"


def run(main: Callable[[list], None], argv: list | None = None) -> None:
  """``absl.app.run(main)`` with the error rules every command follows.

  * A flag error or :class:`UserInputError`: one line ``error: <input>: <problem and fix>`` on
    stderr (at most :data:`MAX_ERROR_CHARS` characters), exit status 2.
  * An ``OSError`` about a file (permission denied, disk full, missing file): one line naming the
    file, exit 2. ``MemoryError``: one line, exit 2.
  * Ctrl-C: one line, exit 130, never a crash at exit; outputs are swapped in whole
    (``ais_jax.io.runs.staged_dir``), so an existing ``--out`` is left as it was.
  * ``--debug``: the traceback too. Any other exception is a bug and keeps its traceback (exit 1).

  Args:
    main: the absl main.
    argv: the command line (default ``sys.argv``); given, the run is in-process (tests): exits
      raise ``SystemExit`` instead of ending the process, and no Ctrl-C watchdog is started.
  """
  define_flag(flags.DEFINE_bool, "debug", False, "On an error, also print the Python traceback "
              "(for bug reports).")
  from ais_jax import distributed  # --coordinator_address --num_processes --process_id
  distributed.define_distributed_flags()
  _interrupt.update(count=0, in_process=argv is not None)
  previous_handler = signal.getsignal(signal.SIGINT)
  signal.signal(signal.SIGINT, _on_sigint)
  sys.unraisablehook = _unraisable

  def wrapped(argv):
    warnings.showwarning = _show_warning
    if not FLAGS["verbosity"].present:  # Library INFO logs (jax, orbax) only on request (-v 0).
      absl_logging.set_verbosity(absl_logging.WARNING)
    if len(argv) > 1:
      _fail(f"command line: unexpected arguments {argv[1:]}; every option is a --flag=value")
    debug = FLAGS.debug
    try:
      distributed.initialize_from_flags()
      main(argv)
    except UserInputError as e:
      _fail(str(e), debug=debug)
    except app.UsageError as e:
      _fail(f"command line: {e} (see --help)", debug=debug)
    except KeyboardInterrupt:
      _interrupted()
    except MemoryError:
      _fail("out of memory; lower --batch_size or --memory_budget_gb, or use fewer images",
            debug=debug)
    except OSError as e:
      if e.filename is None and e.errno is None and type(e) is OSError:  # pylint: disable=unidiomatic-typecheck
        raise  # A bare OSError without a file: a bug.
      # With a file, or a FileNotFoundError/FileExistsError/... raised with a message about the
      # user's path: one line.
      _fail(_os_error_message(e) if e.filename or e.errno else str(e), debug=debug)
    if _interrupt["count"]:  # A Ctrl-C that came too late to stop the run.
      print("interrupted (Ctrl-C) as the run finished: --out holds the new run",
            file=sys.stderr, flush=True)
      _exit(INTERRUPT_EXIT_CODE)
    # Success ends through the normal interpreter shutdown (atexit: e.g. jax.distributed's).

  try:
    app.run(wrapped, argv=argv, flags_parser=_parse_flags)
  except KeyboardInterrupt:  # During flag parsing or imports before main.
    _interrupted()
  finally:
    signal.signal(signal.SIGINT, previous_handler)
    sys.unraisablehook = sys.__unraisablehook__

