"""File input/output: images, human judgments, checkpoints, run folders."""


def __getattr__(name):
  # Lazy, so that `import ais_jax.io` stays cheap and pulls in no submodule it does not need.
  if name == "load_run":
    from ais_jax.io.runs import load_run
    return load_run
  raise AttributeError(f"module 'ais_jax.io' has no attribute {name!r}")
