"""PyTorch -> Flax converters (no torch import needed)."""
