"""The data every report section reads: the cohort and one AIS run per model.

* :func:`load_cohort` - :func:`planted_cohort` (generated), :func:`k92_cohort` (the 92 real images)
  or :func:`custom_cohort` (``--images``/``--human``), with categories from ``--categories`` when
  given (the 92-image set brings its own);
* :func:`run_model` - ``ais_jax.pipeline.run_ais`` for one model into its run folder.

``config`` is an ``ais_jax.main_job.RunConfig`` (the flags of ``experiments.run``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Optional, Sequence

import numpy as np


@dataclasses.dataclass
class Cohort:
  """What the analyses need of a cohort.

  images: uint8 ``[n, H, W, 3]`` (or a list of ``[H_i, W_i, 3]`` for custom images of mixed size);
  human: float64 ``[n, n]``; names: n strings; groups: n labels (categories; one label if none);
  inputs: provenance (paths, sha256s); planted: the PlantedCohort (planted only);
  subjects: float64 ``[S, n, n]`` per-subject similarities when the data set has them
  (kriegeskorte92: 16 subjects, negated dissimilarities like ``human``), else None.
  """
  dataset: str
  images: Any
  human: np.ndarray
  names: list
  groups: list
  inputs: dict
  description: str
  images_arg: Any = None   # what run_ais gets for --images (an array or the user's path)
  human_arg: Any = None
  planted: Any = None
  subjects: Any = None

  @property
  def has_categories(self) -> bool:
    return len(set(self.groups)) > 1


def planted_cohort(config) -> Cohort:
  from ais_jax.data import planted
  from ais_jax.pipeline import sha256_array
  c = planted.generate(config.n_images, config.image_size, seed=config.planted_seed,
                       noise_sd=config.noise_sd)
  inputs = {"generator": c.metadata(), "images_sha256": sha256_array(c.images),
            "human_sha256": sha256_array(c.human_similarity),
            "target_masks_sha256": sha256_array(c.target_masks),
            "distractor_masks_sha256": sha256_array(c.distractor_masks)}
  return Cohort("planted", c.images, c.human_similarity, list(c.image_names),
                ["planted"] * c.n, inputs, c.description, images_arg=c.images,
                human_arg=c.human_similarity, planted=c)


def k92_cohort(config) -> Cohort:
  from ais_jax.data import kriegeskorte92
  d, data_dir = kriegeskorte92.load_for_command(config.data_dir)
  inputs = {"data_dir": os.path.abspath(data_dir),
            "files_sha256": dict(kriegeskorte92.SHA256), "sha256_verified": True,
            "human": "subject-averaged dissimilarity of 16 subjects, negated (S = -D)"}
  groups = [d.category_names[c] for c in d.categories]
  return Cohort("kriegeskorte92", d.images, d.similarity, list(d.image_names), groups, inputs,
                "The 92 object images of Kriegeskorte et al. (2008) with the similarity "
                "judgments of 16 subjects (Mur et al. 2013), averaged over subjects.",
                images_arg=d.images, human_arg=d.similarity,
                subjects=-d.subject_dissimilarity.astype(np.float64))


def custom_cohort(config) -> Cohort:
  from ais_jax.errors import UserInputError
  from ais_jax.io import human as human_io
  from ais_jax.io import images as images_io
  from ais_jax.io import runs
  if not config.images or not config.human:
    raise UserInputError("--images" if not config.images else "--human",
                         "required for your own cohort: --images=DIR_OR_NPY and --human=MATRIX")
  images, names = images_io.load_images(config.images, image_list=config.image_list or None,
                                        tfds_data_dir=config.tfds_data_dir or None)
  labelled = human_io.load_human_labelled(config.human, key=config.human_key or None,
                                          kind=config.human_kind, n_images=len(names),
                                          image_names=names,
                                          labels=config.human_labels or None)
  human = labelled.matrix
  tfds = config.images.startswith(images_io.TFDS_PREFIX)
  inputs = {"images": config.images if tfds else os.path.abspath(config.images),
            "human": os.path.abspath(config.human),
            "human_sha256": runs.sha256_file(config.human),
            "human_labels": labelled.labels,
            "human_reordered_to_image_order": labelled.reordered}
  if not tfds and os.path.isfile(config.images):
    inputs["images_sha256"] = runs.sha256_file(config.images)
  return Cohort("custom", images, human, list(names), ["images"] * len(names), inputs,
                f"{len(names)} images from {config.images} with the similarity in {config.human}.",
                images_arg=config.images, human_arg=config.human)


COHORTS = {"planted": planted_cohort, "kriegeskorte92": k92_cohort, "custom": custom_cohort}


def load_cohort(config) -> Cohort:
  """The cohort of ``config.dataset``; ``config.categories`` (a ``name,category`` CSV) replaces
  its groups (``ais_jax.io.categories``)."""
  cohort = COHORTS[config.dataset](config)
  if getattr(config, "categories", ""):
    from ais_jax.io import categories as categories_io
    from ais_jax.io import runs
    cohort.groups = categories_io.load_categories(config.categories, cohort.names)
    cohort.inputs["categories"] = os.path.abspath(config.categories)
    cohort.inputs["categories_sha256"] = runs.sha256_file(config.categories)
  return cohort


# ----------------------------------------------------------------------------------------------
# Models


def model_label(spec_name: str) -> str:
  """Short display name of a model (``efficientnet_lite0`` -> ``Lite0``)."""
  return spec_name.replace("efficientnet_lite", "Lite")


@dataclasses.dataclass
class ModelRun:
  label: str
  weights: str
  spec: Any
  variables: Any
  provenance: dict
  run: Any          # ais_jax.pipeline.AisRun
  logits: Optional[np.ndarray]
  folder: str


def run_model(weights: str, cohort: Cohort, config, folder: str,
              report: Callable[[str], None], *, arch: str = "",
              command: Optional[Sequence[str]] = None) -> ModelRun:
  """``ais_jax.pipeline.run_ais`` for one model on the cohort, into ``folder``.

  ``command`` (the command line) is recorded in the run folder's summary.json.
  """
  from ais_jax import pipeline
  spec, variables, provenance, module = pipeline.load_model(weights, arch or None)
  report(f"model {spec.name} ({weights}): AIS on {len(cohort.names)} images")
  custom = cohort.dataset == "custom"
  run = pipeline.run_ais(
      weights=(spec, variables, provenance, module), images=cohort.images_arg,
      image_list=(config.image_list or None) if custom else None,
      tfds_data_dir=(config.tfds_data_dir or None) if custom else None,
      human_labels=(config.human_labels or None) if custom else None,
      image_names=None if custom else cohort.names,
      human=cohort.human_arg, human_key=(config.human_key or None) if custom else None,
      human_kind=config.human_kind if custom else "similarity",
      similarity=config.similarity, comparison=config.comparison,
      cohort_score=config.cohort_score, precision=config.precision,
      batch_size=config.batch_size, memory_budget_gb=config.memory_budget_gb,
      save_feature_maps=config.save_feature_maps, overwrite=True, out=folder,
      progress=lambda m: report(f"  {spec.name}: {m}"),
      flags={**dataclasses.asdict(config), "weights": weights, "dataset": cohort.dataset},
      command=command)
  # Groups beside the run, for experiments.saliency --ais_run=<folder>.
  with open(os.path.join(folder, "datasets.txt"), "w") as f:
    f.write("".join(f"{g}\n" for g in cohort.groups))
  return ModelRun(model_label(spec.name), weights, spec, variables, provenance, run, run.logits,
                  folder)
