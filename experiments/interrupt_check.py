r"""Ctrl-C at every stage of ``experiments.run --overwrite``: exit 130, one line, old report intact.

    python -m experiments.interrupt_check --out=/tmp/interrupt_check --tries=10

Runs a small planted report once (the "previous report"; its progress lines are the stages),
then ``--tries`` more runs over it with ``--overwrite``: the first sent SIGINT during the imports,
the others after the k-th progress line (k spread over all stages) plus 0.3, 1.0 or 1.7 s. After each it checks: the exit status (130, or 0 when the run
had already finished), that stderr ends in one ``interrupted`` line without a traceback or a
``Fatal Python error``, that the folder is byte for byte the previous report (or, after exit 0, a
complete new one, which then becomes the reference), and that no staging folder is left beside
it. Prints one line per try and a tally; exit 1 if any check failed.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time

from absl import flags

from experiments import _common

_OUT = flags.DEFINE_string("out", "/tmp/interrupt_check", "Folder for the report under test.")
_TRIES = flags.DEFINE_integer("tries", 10, "Interrupted runs.", lower_bound=1)
RUN_FLAGS = ["--dataset=planted", "--n_images=12", "--image_size=64", "--folds=2", "--seeds=1"]


def _snapshot(folder: str) -> dict:
  files = {}
  for root, _, names in os.walk(folder):
    for name in names:
      with open(os.path.join(root, name), "rb") as f:
        files[os.path.relpath(os.path.join(root, name), folder)] = hashlib.sha256(
            f.read()).hexdigest()
  return files


def _start(out: str, overwrite: bool) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", "experiments.run", f"--out={out}", *RUN_FLAGS,
                           *(["--overwrite"] if overwrite else [])],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def main(argv):
  del argv
  out = os.path.join(_OUT.value, "report")
  if os.path.isdir(out):
    proc = _start(out, overwrite=True)
  else:
    proc = _start(out, overwrite=False)
  t0 = time.perf_counter()
  _, err = proc.communicate()
  duration = time.perf_counter() - t0
  if proc.returncode != 0:
    raise RuntimeError(f"the reference run failed ({proc.returncode}): {err[-2000:]}")
  reference = _snapshot(out)
  print(f"reference run: {duration:.1f} s, {len(reference)} files", flush=True)
  tally = {"tries": 0, "exit_130": 0, "exit_0": 0, "exit_139": 0, "other_exit": 0,
           "traceback_or_fatal": 0, "report_damaged": 0, "staging_left": 0}
  stage_lines = [line for line in err.splitlines() if line.startswith("[+")]
  for i in range(_TRIES.value):
    # Try 0 during the imports; then after the k-th progress line of the reference run, k spread
    # over all of them, plus a delay that varies (so each stage is hit at its start and inside).
    target = round((len(stage_lines) - 2) * (i - 1) / max(1, _TRIES.value - 2)) if i else -1
    jitter = 0.3 + (i % 3) * 0.7
    proc = _start(out, overwrite=True)
    seen = []

    def read(stream=proc.stderr, seen=seen):
      for line in stream:
        seen.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started = time.perf_counter()
    while sum(l.startswith("[+") for l in seen) <= target and proc.poll() is None:
      time.sleep(0.05)
    time.sleep(jitter)
    delay = time.perf_counter() - started
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=300)
    reader.join(timeout=10)
    err = "\n".join(seen)
    stages = [line.split("] ", 1)[-1][:50] for line in seen if line.startswith("[+")]
    code = proc.returncode
    tally["tries"] += 1
    key = {130: "exit_130", 0: "exit_0", -11: "exit_139", 139: "exit_139"}.get(code, "other_exit")
    tally[key] += 1
    other = [line for line in err.splitlines() if not line.startswith(("[+", "warning: "))]
    bad_text = "Traceback" in err or "Fatal Python error" in err
    tally["traceback_or_fatal"] += bad_text
    now = _snapshot(out)
    damaged = now != reference and code != 0
    tally["report_damaged"] += damaged
    if bad_text:
      print("  stderr: " + " | ".join(other[:6]), flush=True)
    if code == 0:
      reference = now
    left = [n for n in os.listdir(os.path.dirname(out)) if ".staging-" in n]
    tally["staging_left"] += bool(left)
    print(f"try {i + 1}: SIGINT at {delay:5.1f} s (last stage: {stages[-1] if stages else 'start'})"
          f" -> exit {code}; stderr {other[-1:] if other else []}; report "
          f"{'DAMAGED' if damaged else 'intact' if code else 'replaced (run had finished)'}"
          f"{'; staging left: ' + str(left) if left else ''}", flush=True)
  print("tally: " + ", ".join(f"{k} {v}" for k, v in tally.items()), flush=True)
  failed = tally["exit_139"] + tally["other_exit"] + tally["traceback_or_fatal"] + tally[
      "report_damaged"] + tally["staging_left"]
  if failed:
    raise SystemExit(1)


if __name__ == "__main__":
  _common.run(main)
