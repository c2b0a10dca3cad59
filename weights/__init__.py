"""Registry of named checkpoints (metadata only); see weights/README.md."""
from weights.registry import REGISTRY, WeightsEntry, get, names

__all__ = ["REGISTRY", "WeightsEntry", "get", "names"]
