"""The inference section of the main job's report (cohorts with per-subject matrices, e.g. the
92-image set): files, links, and each model's mean-over-subjects agreement against numpy."""

import os
import types

import numpy as np

from ais_jax import ablation
from ais_jax.report import index
from ais_jax.report.sections import inference as inference_section


def _model(label, maps):
  spec = types.SimpleNamespace(get_ablation_head=lambda variables: ablation.PooledHead())
  return types.SimpleNamespace(label=label, spec=spec, variables=None,
                               run=types.SimpleNamespace(feature_maps=maps))


def _upper_corr(a, b):
  iu = np.triu_indices(a.shape[0], 1)
  return np.corrcoef(a[iu], b[iu])[0, 1]


def test_inference_section_files_links_and_agreements(tmp_path):
  rng = np.random.default_rng(0)
  n, k, subjects = 10, 6, 4
  maps = [np.abs(rng.normal(size=(n, 2, 2, k))) for _ in range(2)]
  latent = rng.normal(size=(n, 3))
  human = np.stack([np.corrcoef(latent + rng.normal(size=(n, 3))) for _ in range(subjects)])
  cohort = types.SimpleNamespace(subjects=human, names=[f"im{i}" for i in range(n)])
  config = types.SimpleNamespace(similarity="pearson", comparison="pearson", cohort_score="r",
                                 precision="exact", bootstrap=20, permutations=20,
                                 bootstrap_seed=0, permutation_seed=1)
  models = [_model("A", maps[0]), _model("B", maps[1])]
  result = inference_section.analyse(models, cohort, config, str(tmp_path), lambda m: None)
  for rel in result["files"]:
    assert os.path.isfile(tmp_path / rel), rel
  # The section's figures and data links resolve from the report folder (write_index checks).
  index.write_index(str(tmp_path), title="t", sections=[inference_section.section(result)])
  for label, m in zip("AB", maps):
    pooled = m.mean(axis=(1, 2))
    model_sim = np.corrcoef(pooled)
    want = np.mean([_upper_corr(model_sim, h) for h in human])
    got = result["summary"]["mean_over_subjects"][label]["pearson"]
    assert abs(got - want) <= 1e-12, (label, got, want)
  # No per-subject matrices (or no resamples): no section.
  assert inference_section.analyse(models, types.SimpleNamespace(subjects=None), config,
                                   str(tmp_path), print) is None
