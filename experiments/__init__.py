"""Experiment entry points (``python -m experiments.NAME``); shared pieces in ``_common``."""

import os as _os
import signal as _signal
import sys as _sys


def _interrupted_while_starting(signum, frame):
  del signum, frame  # Nothing is written before a command's main starts: end at once.
  print("interrupted (Ctrl-C)", file=_sys.stderr, flush=True)
  _os._exit(130)  # pylint: disable=protected-access


# ``python -m experiments.X``: a Ctrl-C during the seconds of imports (numpy, JAX) ends with one
# line and exit 130 instead of a traceback; ``_common.run`` installs the handler of the run proper.
_argv = getattr(_sys, "orig_argv", [])
if "-m" in _argv[:-1] and _argv[_argv.index("-m") + 1].startswith(("experiments.", "convert.")):
  _signal.signal(_signal.SIGINT, _interrupted_while_starting)
