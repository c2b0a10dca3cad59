"""Checks survivors of a mutation run against tests that mutmut cannot link to them.

Usage:
  python experiments/mutation_apply.py RESULTS_FILE "TEST COMMAND" MUTANT...

For each mutant named in RESULTS_FILE (a file written by experiments/mutation.sh: the ``== name``
lines and the ``-``/``+`` diff lines under them), a clean clone of this repository's HEAD gets
the ``-`` lines (consecutive) replaced by the ``+`` lines inside the mutated function, the test
command runs in the clone and the mutant is printed as ``killed`` (the command failed) or
``survived``. The command must pass on the unmutated code first (the control), or nothing is
checked.

Two uses (BUILD.md, "Mutation testing"): tests added after a long run started (the run cloned an
earlier commit), and tests that run the library in a subprocess (tests/test_sharding.py: 8 fake
devices), which mutmut never links to a function because it only sees the functions a test calls
in its own process.
"""

import os
import re
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_diffs(results):
  diffs, name = {}, None
  with open(results) as f:
    for line in f:
      if line.startswith("== "):
        name = line[3:].strip()
        diffs[name] = ([], [])
      elif name and line[:1] in "-+" and not line.startswith(("---", "+++")):
        diffs[name][line[0] == "+"].append(line[1:].rstrip("\n"))
  return diffs


def mutate(source, name, old, new):
  """``source`` with the consecutive lines ``old`` of the mutant's function replaced by ``new``
  (indented like the first line of ``old``: mutmut joins the lines of one statement)."""
  func = re.fullmatch(r"[\w.]+\.x_(\w+?)__mutmut_\d+", name).group(1)
  start = source.index(f"\ndef {func}(")
  end = source.find("\ndef ", start + 1)
  end = len(source) if end < 0 else end
  lines = source[start:end].split("\n")
  want = [line.strip() for line in old]
  hits = [i for i in range(len(lines) - len(old) + 1)
          if [line.strip() for line in lines[i:i + len(old)]] == want]
  if len(hits) != 1:
    raise ValueError(f"{name}: the mutated lines occur {len(hits)} times in {func}")
  first = lines[hits[0]]
  indent = first[:len(first) - len(first.lstrip())]
  lines[hits[0]:hits[0] + len(old)] = [indent + line.strip() for line in new]
  return source[:start] + "\n".join(lines) + source[end:]


def main(results, test_cmd, names):
  diffs = read_diffs(results)
  with tempfile.TemporaryDirectory() as work:
    subprocess.run(["git", "clone", "-q", REPO, work], check=True)
    if subprocess.run(test_cmd, shell=True, cwd=work, capture_output=True).returncode:
      sys.exit(f"control failed: {test_cmd!r} fails on the unmutated code")
    head = subprocess.check_output(["git", "-C", work, "rev-parse", "--short", "HEAD"], text=True)
    print(f"# {test_cmd} (passes at {head.strip()})", flush=True)
    for name in names:
      module = re.fullmatch(r"(ais_jax(?:\.\w+)*?)\.x_\w+__mutmut_\d+", name).group(1)
      path = os.path.join(work, *module.split(".")) + ".py"
      with open(path) as f:
        clean = f.read()
      old, new = diffs[name]
      with open(path, "w") as f:
        f.write(mutate(clean, name, old, new))
      failed = subprocess.run(test_cmd, shell=True, cwd=work, capture_output=True).returncode
      print(name, "killed" if failed else "survived", flush=True)
      with open(path, "w") as f:
        f.write(clean)


if __name__ == "__main__":
  if len(sys.argv) < 4:
    sys.exit(__doc__)
  main(sys.argv[1], sys.argv[2], sys.argv[3:])
