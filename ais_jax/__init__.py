"""ais_jax: Alignment Importance Score (AIS) heatmaps in JAX/Flax.

Which feature maps of a CNN explain human similarity judgments, per cohort and per image.
"""

__version__ = "0.1.0"
