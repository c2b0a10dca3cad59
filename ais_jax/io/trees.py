"""Nested-dict helpers shared by the converter, the checkpoint store and the .pth reader."""

from __future__ import annotations

from typing import Any, Mapping


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested dicts -> {'a/b/c': leaf}."""
  flat = {}
  for k, v in tree.items():
    path = f"{prefix}/{k}" if prefix else str(k)
    if isinstance(v, Mapping):
      flat.update(flatten(v, path))
    else:
      flat[path] = v
  return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """{'a/b/c': leaf} -> nested dicts."""
  tree: dict[str, Any] = {}
  for path, v in flat.items():
    node = tree
    parts = path.split("/")
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = v
  return tree


def strip_wrappers(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Unwraps {'state_dict': ...} / {'model': ...} and 'module.' prefixes (DataParallel)."""
  sd = state_dict
  for wrapper in ("state_dict", "model", "model_state_dict"):
    if isinstance(sd, Mapping) and wrapper in sd and isinstance(sd[wrapper], Mapping):
      sd = sd[wrapper]
  out = {}
  for k, v in sd.items():
    out[k[len("module."):] if k.startswith("module.") else k] = v
  return out
