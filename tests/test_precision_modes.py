"""Every precision mode against an independent float64 loop (DESIGN.md section 3).

`exact` is held to rounding (1e-9) and `float32` to 1e-5 elsewhere; this module adds `fast`, the
mode no test ran before: on a CPU its DEFAULT matmul precision is plain float32, so it is held to
the float32 bound here (on a GPU it would run TF32 and is measured by the benchmark instead).
"""

import numpy as np
import pytest

from ais_jax import ablation, ais

N_IMAGES, SIDE, K, HIDDEN = 10, 4, 8, 24


def _problem(seed=0):
  rng = np.random.default_rng(seed)
  maps = np.maximum(rng.standard_normal((N_IMAGES, SIDE, SIDE, K)), 0)
  maps[3, ..., 5] = 0.0                                   # an inactive map: AIS exactly 0
  w1 = rng.standard_normal((HIDDEN, K * (SIDE // 2) ** 2)) / np.sqrt(K)
  b1 = 0.1 * rng.standard_normal(HIDDEN)
  w2 = rng.standard_normal((HIDDEN, HIDDEN)) / np.sqrt(HIDDEN)
  b2 = 0.1 * rng.standard_normal(HIDDEN)
  latent = rng.standard_normal((N_IMAGES, 3))
  human = np.corrcoef(latent + 0.5 * rng.standard_normal((N_IMAGES, 3)))
  return maps, (w1, b1, w2, b2), human


def _embed(weights, image_maps):
  """float64 forward written independently of ais_jax: 2x2 max-pool, (map, row, col) flatten."""
  w1, b1, w2, b2 = weights
  h, w, k = image_maps.shape
  pooled = image_maps.reshape(h // 2, 2, w // 2, 2, k).max(axis=(1, 3))
  flat = pooled.transpose(2, 0, 1).reshape(-1)
  return np.maximum(w2 @ np.maximum(w1 @ flat + b1, 0) + b2, 0)


def _row_agreement(embeddings, human, i):
  others = [j for j in range(len(embeddings)) if j != i]
  sims = [np.corrcoef(embeddings[i], embeddings[j])[0, 1] for j in others]
  return np.corrcoef(sims, human[i, others])[0, 1]


def _float64_per_image_ais(maps, weights, human):
  base = np.stack([_embed(weights, m) for m in maps])
  out = np.zeros((len(maps), maps.shape[-1]))
  for i in range(len(maps)):
    full = _row_agreement(base, human, i)
    for k in range(maps.shape[-1]):
      ablated = maps[i].copy()
      ablated[..., k] = 0
      emb = base.copy()
      emb[i] = _embed(weights, ablated)
      out[i, k] = full - _row_agreement(emb, human, i)
  return out


@pytest.fixture(scope="module")
def reference():
  maps, weights, human = _problem()
  return maps, weights, human, _float64_per_image_ais(maps, weights, human)


@pytest.mark.parametrize("precision,tolerance", [("exact", 1e-9), ("float32", 1e-5),
                                                 ("fast", 1e-5)])
def test_precision_mode_against_float64_loop(reference, precision, tolerance):
  maps, (w1, b1, w2, b2), human, want = reference
  head = ablation.FcHead(w1=w1.T, b1=b1, w2=w2.T, b2=b2, pool_window=2)
  got = ais.compute_ais(head, maps.astype(np.float32) if precision != "exact" else maps, human,
                        precision=precision)
  per_image = np.asarray(got.per_image)
  assert per_image.shape == want.shape
  assert np.isfinite(per_image).all()
  assert per_image[3, 5] == 0.0
  err = np.max(np.abs(per_image - want))
  assert err <= tolerance, f"{precision}: max abs error {err:.2e} > {tolerance:.0e}"
  # The effect is far larger than the error: the mode keeps what the analysis reads.
  assert np.max(np.abs(want)) > 100 * tolerance
