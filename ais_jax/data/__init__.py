"""Data sets: the 92-object set with human judgments, and the planted-truth cohort."""
