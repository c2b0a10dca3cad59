"""Table-driven conversion of a PyTorch state dict into a Flax variable tree.

A family's converter is a list of :class:`Rule` s. Each rule maps torch keys matching a regular
expression to a '/'-separated Flax path (``\\1``-style groups allowed) and names a transform.
:func:`convert_state_dict` applies the table, then checks the result against the model's
abstract variables: every torch key must be used (or explicitly ignored), every Flax leaf filled,
every shape equal. All problems are collected and raised together in one :class:`ConversionError`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ais_jax.io.trees import flatten as _flatten
from ais_jax.io.trees import strip_wrappers  # noqa: F401  (part of this module's API)
from ais_jax.io.trees import unflatten as _unflatten

# Transforms from the PyTorch layout to the Flax layout.
TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda a: a,
    # Conv2d weight [out, in/groups, kh, kw] -> Flax Conv kernel [kh, kw, in/groups, out].
    # Also right for depthwise convs (groups = channels): [C, 1, kh, kw] -> [kh, kw, 1, C].
    "conv": lambda a: np.transpose(a, (2, 3, 1, 0)),
    # Linear weight [out, in] -> Dense kernel [in, out].
    "dense": lambda a: np.transpose(a, (1, 0)),
}


class ConversionError(ValueError):
  """A state dict does not fit the model: lists every missing, unexpected and mis-shaped key."""


@dataclasses.dataclass(frozen=True)
class Rule:
  pattern: str      # regex, full match on the torch key
  target: str       # Flax path, e.g. r'params/features_\1/kernel'; '' with transform 'ignore'
  transform: str = "identity"  # a key of TRANSFORMS, or 'ignore'


def convert_state_dict(state_dict: Mapping[str, Any], rules: Sequence[Rule],
                       abstract_variables: Mapping[str, Any], *, arch: str = "",
                       extra: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
  """Applies ``rules`` to ``state_dict`` and checks the result against ``abstract_variables``.

  Args:
    state_dict: torch key -> numpy array (wrappers and 'module.' prefixes are stripped here).
    rules: the family's table; the first matching rule wins.
    abstract_variables: the Flax variable tree with ``.shape`` leaves (ShapeDtypeStruct or arrays).
    arch: architecture name, for messages.
    extra: Flax path -> array for leaves with no torch source (rare; e.g. constants).

  Returns:
    The variable tree (nested dicts of float32 numpy arrays) with exactly the abstract tree's keys.

  Raises:
    ConversionError listing unexpected torch keys, Flax leaves left missing, and shape mismatches.
  """
  sd = strip_wrappers(state_dict)
  compiled = [(re.compile(r.pattern), r) for r in rules]
  expected = {p: tuple(v.shape) for p, v in _flatten(abstract_variables).items()}
  flat: dict[str, np.ndarray] = {}
  unexpected, misshaped, duplicated = [], [], []
  misshaped_targets = set()
  for key, value in sd.items():
    for regex, rule in compiled:
      m = regex.fullmatch(key)
      if m is None:
        continue
      if rule.transform == "ignore":
        break
      target = m.expand(rule.target)
      arr = TRANSFORMS[rule.transform](np.asarray(value))
      if target in flat:
        duplicated.append(f"{key} -> {target}")
      elif target not in expected:
        unexpected.append(f"{key} (mapped to {target}, which the model does not have)")
      elif tuple(arr.shape) != expected[target]:
        misshaped.append(f"{key} -> {target}: checkpoint {tuple(arr.shape)} "
                         f"(after {rule.transform}), model expects {expected[target]}")
        misshaped_targets.add(target)
      else:
        flat[target] = arr.astype(np.float32)
      break
    else:
      unexpected.append(f"{key} {tuple(np.shape(value))} (no rule matches)")
  for path, arr in (extra or {}).items():
    flat[path] = np.asarray(arr, np.float32)
  missing = [f"{p} {expected[p]}" for p in sorted(expected)
             if p not in flat and p not in misshaped_targets]
  problems = []
  if missing:
    problems.append(f"missing in checkpoint ({len(missing)}): " + "; ".join(missing[:20]) +
                    (" ..." if len(missing) > 20 else ""))
  if unexpected:
    problems.append(f"unexpected in checkpoint ({len(unexpected)}): " + "; ".join(unexpected[:20]) +
                    (" ..." if len(unexpected) > 20 else ""))
  if misshaped:
    problems.append(f"wrong shape ({len(misshaped)}): " + "; ".join(misshaped[:20]) +
                    (" ..." if len(misshaped) > 20 else ""))
  if duplicated:
    problems.append(f"several checkpoint keys map to one leaf: " + "; ".join(duplicated[:20]))
  if problems:
    name = f" for {arch}" if arch else ""
    raise ConversionError(f"checkpoint does not fit the model{name}:\n  " + "\n  ".join(problems) +
                          "\nCheck --arch (and --num_classes) against the file.")
  return _unflatten(flat)


def flatten_variables(tree: Mapping[str, Any]) -> dict[str, Any]:
  """'/'-joined path -> leaf (exposed for tests and provenance)."""
  return _flatten(tree)
