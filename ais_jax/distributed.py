"""Multi-process and multi-host runs (``jax.distributed``): set-up, the global mesh, and the rule
that only process 0 touches the run folder.

Every experiment takes JAX's own argument names as flags (:func:`define_distributed_flags`)::

    # two GPU nodes, one process each (run the same command on both, process_id 0 and 1)
    python -m experiments.run ... --coordinator_address=node0:1234 --num_processes=2 \\
        --process_id=0

On a multi-host Cloud TPU slice (or under SLURM / Open MPI) give none of them: JAX finds them
itself (:func:`initialize` calls ``jax.distributed.initialize()`` when the environment says there
are several hosts). On the CPU the collectives run over gloo (tests start two local processes).

Rules (issue 15): all processes run the same computation on the same inputs; the image and map
axes of the AIS engine are sharded over the global mesh (:func:`global_mesh`); results are
replicated back to every process, so all agree; only process 0 validates ``--out``, cleans stale
temporaries and writes; when it fails, the others exit with its exit code
(:func:`primary_first`) instead of waiting for it in a collective.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Optional

import numpy as np

IMAGE_AXIS = "images"
MAP_AXIS = "maps"
# Exit status of a UserInputError (experiments._common.USER_ERROR_EXIT_CODE).
USER_ERROR_EXIT_CODE = 2
FAILURE_EXIT_CODE = 1

_STATE = {"initialized": False}


def define_distributed_flags() -> None:
  """--coordinator_address, --num_processes, --process_id (JAX's names; defined once)."""
  from absl import flags
  if "coordinator_address" in flags.FLAGS:
    return
  flags.DEFINE_string("coordinator_address", "", "Multi-process runs: HOST:PORT of process 0's "
                      "coordinator (jax.distributed.initialize). Leave empty on one machine, and "
                      "on a Cloud TPU slice / SLURM / Open MPI where JAX finds it itself.")
  flags.DEFINE_integer("num_processes", None, "Multi-process runs: the number of processes.",
                       lower_bound=1)
  flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index, 0 to "
                       "num_processes - 1 (process 0 writes the run folder).", lower_bound=0)


def _cluster_environment() -> bool:
  """True where ``jax.distributed.initialize()`` can find the set-up itself with several hosts."""
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if len([h for h in hosts.split(",") if h.strip()]) > 1:
    return True
  for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    try:
      if int(os.environ.get(name, "1")) > 1:
        return True
    except ValueError:
      pass
  return False


def initialize(coordinator_address: str = "", num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> bool:
  """Starts ``jax.distributed`` when asked to (or when the cluster environment says so).

  Returns True when this is a multi-process run. Raises :class:`ais_jax.errors.UserInputError`
  naming the flag when the three values are inconsistent.
  """
  from ais_jax.errors import UserInputError
  given = [coordinator_address, num_processes, process_id]
  if _STATE["initialized"]:
    return True
  if not any(v not in ("", None) for v in given):
    if not _cluster_environment():
      return False
    import jax
    jax.distributed.initialize()
    _STATE["initialized"] = True
    return True
  if not coordinator_address or num_processes is None or process_id is None:
    raise UserInputError("--coordinator_address", "multi-process runs need all three of "
                         "--coordinator_address=HOST:PORT, --num_processes and --process_id "
                         f"(got {coordinator_address!r}, {num_processes}, {process_id})")
  if ":" not in coordinator_address:
    raise UserInputError("--coordinator_address", f"{coordinator_address!r} is not HOST:PORT")
  if not 0 <= process_id < num_processes:
    raise UserInputError("--process_id", f"{process_id} is not in 0..{num_processes - 1}")
  import jax
  # CPU collectives across processes (only the CPU client reads it; asking for the backend here
  # would start it before jax.distributed, which JAX refuses).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  _STATE["initialized"] = True
  return True


def initialize_from_flags() -> bool:
  """:func:`initialize` with the values of the flags of :func:`define_distributed_flags`."""
  from absl import flags
  f = flags.FLAGS
  if "coordinator_address" not in f:
    return False
  return initialize(f.coordinator_address, f.num_processes, f.process_id)


def process_count() -> int:
  import jax
  return jax.process_count()


def is_primary() -> bool:
  """True in process 0 (and in a single-process run)."""
  import jax
  return jax.process_index() == 0


def broadcast_status(code: int) -> int:
  """Process 0's ``code`` in every process (identity in a single-process run)."""
  if process_count() == 1:
    return int(code)
  from jax.experimental import multihost_utils
  return int(multihost_utils.broadcast_one_to_all(np.int32(code)))


def primary_first(fn: Callable[[], object]):
  """Runs ``fn`` in process 0 only and shares its outcome.

  In process 0: ``fn()``'s value is returned; when it raises, the exit code (2 for a
  UserInputError, 1 otherwise) is sent to the other processes first and the exception re-raised.
  In the others: ``None``, or ``sys.exit(code)`` when process 0 failed, with one line on stderr -
  never a wait in a collective that process 0 will not reach.
  """
  from ais_jax.errors import UserInputError
  if process_count() == 1:
    return fn()
  if is_primary():
    try:
      value = fn()
    except UserInputError:
      broadcast_status(USER_ERROR_EXIT_CODE)
      raise
    except BaseException:
      broadcast_status(FAILURE_EXIT_CODE)
      raise
    broadcast_status(0)
    return value
  code = broadcast_status(0)
  if code:
    print(f"error: process 0 failed (exit status {code}); see its output", file=sys.stderr,
          flush=True)
    sys.exit(code)
  return None


def global_mesh(image_devices: Optional[int] = None):
  """A mesh over every device of every process with axes ('images', 'maps').

  ``image_devices`` (default: the number of processes) devices split the images, the rest the
  maps; None when there is only one device (no mesh needed).
  """
  import jax
  devices = jax.devices()
  total = len(devices)
  if total == 1:
    return None
  images = image_devices or jax.process_count()
  if images < 1 or total % images:
    images = 1
  return jax.make_mesh((images, total // images), (IMAGE_AXIS, MAP_AXIS))
