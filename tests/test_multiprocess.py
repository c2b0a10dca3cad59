"""Two local CPU processes (jax.distributed over gloo, 2 fake devices each) reproduce the
single-process AIS, and only process 0 decides about the run folder.

Each process must set its device count before jax starts, so the processes are subprocesses.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

from conftest import GOLDEN, REPO

WORKER = textwrap.dedent("""
    import json, os, sys
    pid, port, golden, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    import numpy as np
    from ais_jax import ablation, ais, distributed
    from ais_jax.errors import UserInputError
    from ais_jax.io import runs
    assert distributed.initialize(f"localhost:{port}", 2, pid)
    import jax
    g = dict(np.load(golden))
    head = ablation.FcHead(w1=g["W1"].T, b1=g["b1"], w2=g["W2"].T, b2=g["b2"], pool_window=2)
    mesh = distributed.global_mesh()
    r = ais.compute_ais(head, g["F"], g["H"], mesh=mesh)
    print("RESULT" + json.dumps({"devices": len(jax.devices()), "mesh": dict(mesh.shape),
                                 "per_image": r.per_image.tolist(), "cohort": r.cohort.tolist()}),
          flush=True)
    # Process 0 alone checks the (non-empty) run folder; its failure ends process 1 too.
    try:
      distributed.primary_first(lambda: runs.check_out_dir(out, overwrite=False))
    except UserInputError as e:
      print("error:", e, flush=True)
      sys.exit(2)
    print("NOT REACHED", flush=True)
""")


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_reproduce_one(tmp_path, golden):
  from ais_jax import ablation, ais
  out = tmp_path / "run"
  out.mkdir()
  (out / "old.txt").write_text("not empty")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  port = str(_free_port())
  procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(i), port, GOLDEN, str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO) for i in range(2)]
  outputs = [p.communicate(timeout=300) for p in procs]
  head = ablation.FcHead(w1=golden["W1"].T, b1=golden["b1"], w2=golden["W2"].T,
                         b2=golden["b2"], pool_window=2)
  single = ais.compute_ais(head, golden["F"], golden["H"])
  for i, (p, (stdout, stderr)) in enumerate(zip(procs, outputs)):
    assert p.returncode == 2, (i, p.returncode, stderr[-3000:])
    assert "NOT REACHED" not in stdout
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT")]
    assert lines, (i, stderr[-3000:])
    result = json.loads(lines[0][len("RESULT"):])
    assert result["devices"] == 4 and result["mesh"] == {"images": 2, "maps": 2}
    # Within 1e-12 of the single-process run (measured: 2.4e-15; not bitwise, since the map
    # chunks and the image split change the order of some float64 sums).
    per_image, cohort = np.array(result["per_image"]), np.array(result["cohort"])
    diff = max(np.max(np.abs(per_image - single.per_image)), np.max(np.abs(cohort - single.cohort)))
    print(f"process {i}: max |multi-process - single-process| = {diff:.3g}")
    assert diff <= 1e-12, (i, diff)
    if i == 1:  # every process holds the same, whole result
      np.testing.assert_array_equal(per_image, first)
    first = per_image
  assert "not empty" in outputs[0][0] or "--out" in outputs[0][0] or "exists" in outputs[0][0]
  assert "process 0 failed (exit status 2)" in outputs[1][1]
