"""Model zoo: one Flax module per architecture family, behind ``get(name)``."""
from ais_jax.models.base import ModelSpec, abstract_variables, get, init_variables, names, register

__all__ = ["ModelSpec", "abstract_variables", "get", "init_variables", "names", "register"]
