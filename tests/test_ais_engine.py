"""The AIS engine (ais_jax.ais + ais_jax.ablation) against the golden values and float64 loops.

Compile budget: JAX CPU compiles cost 1-3 s each here, so the jitted kernel is compiled for the
default paths and a few options; every (path, similarity, comparison) combination is also run
op-by-op under ``jax.disable_jit()`` (the same code; op compiles are shared between cases), and
``test_jit_equals_no_jit`` ties the two modes together.
"""

import functools

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from ais_jax import ablation, ais, rsa
from ais_jax.precision import float64_scope

COMBOS = [(s, c) for s in ("pearson", "spearman", "cosine") for c in ("pearson", "spearman")
          if not (s == c == "spearman")]
TOL = 1e-10


def _heads(golden):
  fc = ablation.FcHead(w1=golden["W1"].T, b1=golden["b1"], w2=golden["W2"].T, b2=golden["b2"],
                       pool_window=2)
  return {"fc": fc, "gap": ablation.PooledHead()}


def _numpy_fc_embedding(golden, f):
  """Independent float64 forward of the golden fc head for one image ``f [4, 4, 6]``."""
  pooled = f.reshape(2, 2, 2, 2, 6).max(axis=(1, 3))          # [2, 2, 6]
  p = pooled.transpose(2, 0, 1).reshape(-1)                     # (map, row, col)
  h = np.maximum(golden["W1"] @ p + golden["b1"], 0)
  return np.maximum(golden["W2"] @ h + golden["b2"], 0)


def _assert_matches(got, want, what):
  got, want = np.asarray(got), np.asarray(want)
  np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN pattern")
  err = np.nanmax(np.abs(got - want)) if np.isfinite(want).any() else 0.0
  assert err <= TOL, f"{what}: max abs error {err:.3e} > {TOL}"


# ----------------------------------------------------------------------------------------------
# The algebra


def test_fc_contributions_equal_masked_forward(golden):
  f = golden["F"]
  head = _heads(golden)["fc"]
  with float64_scope():
    a, d = ablation.fc_contributions(head, f, dtype=jnp.float64,
                                     precision=jax.lax.Precision.HIGHEST)
    a, d = np.asarray(a), np.asarray(d)
    embed = np.asarray(ablation.fc_embed(head, a[:, None, :] - d, dtype=jnp.float64))
    base = np.asarray(ablation.fc_embed(head, a, dtype=jnp.float64))
  assert d.shape == (15, 6, 32)
  np.testing.assert_allclose(base, [_numpy_fc_embedding(golden, x) for x in f], rtol=0, atol=1e-13)
  for i in (0, 2, 9):
    for k in range(6):
      masked = f[i].copy()
      masked[..., k] = 0
      np.testing.assert_allclose(embed[i, k], _numpy_fc_embedding(golden, masked), rtol=0,
                                 atol=1e-13)
  assert not d[2, 4].any()  # map 4 of image 2 is all zero: no contribution
  with float64_scope():
    np.testing.assert_allclose(ablation.pooled_embeddings(f), f.mean(axis=(1, 2)), rtol=0,
                               atol=1e-15)


# ----------------------------------------------------------------------------------------------
# Golden values


@pytest.mark.parametrize("head_name", ["fc", "gap"])
def test_golden_jitted_default_path(golden, head_name):
  head = _heads(golden)[head_name]
  res = ais.compute_ais(head, golden["F"], golden["H"])
  assert res.options["path"] == ("fc" if head_name == "fc" else "pooled_rank_one")
  _assert_matches(res.per_image, golden[f"per_image_{head_name}_pearson_pearson"], "per_image")
  _assert_matches(res.cohort, golden[f"cohort_{head_name}_pearson_pearson"], "cohort")
  assert res.per_image[2, 4] == 0.0 and not res.active[2, 4]
  assert res.per_image.dtype == np.float64 and res.embeddings.dtype == np.float32
  assert res.undefined["per_image"]["count"] == 0 and res.undefined["undefined_baseline_rows"] == []
  # The r^2 score is a host-side transform of the same kernel outputs (no new compile).
  r2 = ais.cohort_ais(head, golden["F"], golden["H"], score="r2")
  _assert_matches(r2, golden[f"cohort_r2_{head_name}"], "cohort r2")


@pytest.mark.parametrize("head_name,sim,cmp", [("fc", "spearman", "pearson"),
                                               ("gap", "cosine", "spearman")])
def test_golden_jitted_other_options(golden, head_name, sim, cmp):
  head = _heads(golden)[head_name]
  res = ais.compute_ais(head, golden["F"], golden["H"], similarity=sim, comparison=cmp)
  _assert_matches(res.per_image, golden[f"per_image_{head_name}_{sim}_{cmp}"], "per_image")
  _assert_matches(res.cohort, golden[f"cohort_{head_name}_{sim}_{cmp}"], "cohort")


@pytest.mark.parametrize("head_name,path", [("fc", None), ("fc", "generic"), ("gap", None),
                                            ("gap", "pooled_dense"), ("gap", "generic")])
def test_golden_every_path_and_option(golden, head_name, path):
  head = _heads(golden)[head_name]
  with jax.disable_jit():
    for sim, cmp in COMBOS:
      res = ais.compute_ais(head, golden["F"], golden["H"], similarity=sim, comparison=cmp,
                            path=path)
      what = f"{head_name}/{res.options['path']}/{sim}/{cmp}"
      _assert_matches(res.per_image, golden[f"per_image_{head_name}_{sim}_{cmp}"], what)
      _assert_matches(res.cohort, golden[f"cohort_{head_name}_{sim}_{cmp}"], what + " cohort")
      assert res.per_image[2, 4] == 0.0, what
    r2 = ais.cohort_ais(head, golden["F"], golden["H"], score="r2")
  _assert_matches(r2, golden[f"cohort_r2_{head_name}"], f"{head_name}/{path} r2")


def test_jit_equals_no_jit(golden):
  head = _heads(golden)["fc"]
  jitted = ais.compute_ais(head, golden["F"], golden["H"])
  with jax.disable_jit():
    eager = ais.compute_ais(head, golden["F"], golden["H"])
  np.testing.assert_allclose(jitted.per_image, eager.per_image, rtol=0, atol=1e-13)
  np.testing.assert_allclose(jitted.cohort, eager.cohort, rtol=0, atol=1e-13)
  np.testing.assert_array_equal(jitted.per_image == 0, eager.per_image == 0)


def test_compiles_once_per_cohort_shape(golden):
  f, h = golden["F"][:13], golden["H"][:13, :13]  # a shape no other test uses
  head = ais.ablation.PooledHead()
  before = dict(ais.TRACE_COUNTS)
  first = ais.compute_ais(head, f, h)
  rng = np.random.default_rng(3)
  second = ais.compute_ais(head, f * rng.uniform(0.5, 2.0, size=f.shape), h)
  traced = sum(ais.TRACE_COUNTS.values()) - sum(before.values())
  assert traced == 1, f"kernel traced {traced} times for one cohort shape"
  assert first.timings["compiled"] and not second.timings["compiled"]
  assert not np.allclose(first.per_image, second.per_image)
  assert not jax.config.jax_enable_x64, "the caller's global x64 flag must stay off"


def test_row_blocks_equal_whole_matrices_and_golden(golden):
  """A budget below one map's n x n matrices splits their rows into blocks (pooled rank-one path,
  float64, Pearson agreement): the same AIS as the whole matrices and the golden values, the same
  undefined values, and Spearman agreement (ranks need the whole matrix) is never blocked."""
  head = _heads(golden)["gap"]
  f, h = golden["F"], golden["H"]
  for sim in ("pearson", "cosine"):
    whole = ais.compute_ais(head, f, h, similarity=sim)
    blocked = ais.compute_ais(head, f, h, similarity=sim, memory_budget_gb=1e-7)
    assert whole.options["row_block"] == 0
    assert blocked.options["row_block"] == 8 and blocked.options["chunk"] == 1  # 15 rows -> 2 x 8
    _assert_matches(blocked.per_image, golden[f"per_image_gap_{sim}_pearson"], f"{sim} blocked")
    _assert_matches(blocked.cohort, golden[f"cohort_gap_{sim}_pearson"], f"{sim} blocked cohort")
    assert np.max(np.abs(blocked.per_image - whole.per_image)) <= 1e-14
    assert np.max(np.abs(blocked.cohort - whole.cohort)) <= 1e-14
    assert abs(blocked.baseline - whole.baseline) <= 1e-15
    assert blocked.per_image[2, 4] == 0.0
  r2 = ais.cohort_ais(head, f, h, score="r2", memory_budget_gb=1e-7)
  _assert_matches(r2, golden["cohort_r2_gap"], "blocked r2")
  # Undefined values: a map whose removal empties image 5, then an all-zero image 7.
  f = f.copy()
  k = int(np.argmax(f[5].mean(axis=(0, 1))))
  f[5, ..., [j for j in range(6) if j != k]] = 0
  for case in ("one NaN", "all-zero image"):
    if case == "all-zero image":
      f[7] = 0
    whole = ais.compute_ais(head, f, h)
    blocked = ais.compute_ais(head, f, h, memory_budget_gb=1e-7)
    np.testing.assert_array_equal(np.isnan(blocked.per_image), np.isnan(whole.per_image), case)
    np.testing.assert_array_equal(np.isnan(blocked.cohort), np.isnan(whole.cohort), case)
    assert blocked.undefined["undefined_baseline_rows"] == whole.undefined[
        "undefined_baseline_rows"]
    assert np.nanmax(np.abs(blocked.per_image - whole.per_image)) <= 1e-14, case
  assert np.isnan(blocked.cohort).all() and np.isnan(blocked.per_image).sum() > 1
  spearman = ais.compute_ais(head, golden["F"], h, comparison="spearman", memory_budget_gb=1e-7)
  assert spearman.options["row_block"] == 0


# ----------------------------------------------------------------------------------------------
# Undefined values and option checks


def test_undefined_values_are_reported(golden):
  f = golden["F"].copy()
  head = _heads(golden)["gap"]
  # Image 5 keeps a single active map: removing it leaves an all-zero embedding -> NaN there.
  k = int(np.argmax(f[5].mean(axis=(0, 1))))
  f[5, ..., [j for j in range(6) if j != k]] = 0
  with jax.disable_jit():
    res = ais.compute_ais(head, f, golden["H"])
  nan = np.isnan(res.per_image)
  assert nan[5, k] and nan.sum() == 1
  assert (res.per_image[5, [j for j in range(6) if j != k]] == 0).all()  # inactive -> exactly 0
  assert res.undefined["per_image"]["count"] == 1
  assert res.undefined["per_image"]["locations"] == [{"image": 5, "map": k}]
  # An all-zero image: every similarity with it is undefined, so every row that uses it is NaN;
  # row 3 does not (the human pair (3, 7) is missing) and stays defined.
  f[7] = 0
  with jax.disable_jit():
    res = ais.compute_ais(head, f, golden["H"])
  expected = [i for i in range(15) if i == 7 or np.isfinite(golden["H"][i, 7])]
  assert expected == [i for i in range(15) if i != 3]
  assert res.undefined["undefined_baseline_rows"] == expected
  assert np.isnan(res.per_image[expected]).all() and np.isfinite(res.per_image[3]).all()
  assert np.isnan(res.cohort).all() and np.isnan(res.baseline)


def test_option_errors(golden):
  head = _heads(golden)["gap"]
  with pytest.raises(ValueError, match="Spearman has no r\\^2"):
    ais.cohort_ais(head, golden["F"], golden["H"], comparison="spearman", score="r2")
  with pytest.raises(ValueError, match="similarity"):
    ais.compute_ais(head, golden["F"], golden["H"], similarity="euclid")
  with pytest.raises(ValueError, match="precision"):
    ais.compute_ais(head, golden["F"], golden["H"], precision="half")
  with pytest.raises(ValueError, match=r"\[n, h, w, K\]"):
    ais.compute_ais(head, golden["F"][0], golden["H"])
  with pytest.raises(ValueError, match="cohort has 15 images"):
    ais.compute_ais(head, golden["F"], golden["H"][:14, :14])


# ----------------------------------------------------------------------------------------------
# VGG16-size fully connected head against a float64 numpy loop


@pytest.fixture(scope="module")
def vgg_case():
  rng = np.random.default_rng(16)
  k, s, d1, d2, n = 512, 49, 4096, 4096, 12
  w1 = rng.standard_normal((k * s, d1), dtype=np.float32) * np.float32(np.sqrt(2 / (k * s)))
  w2 = rng.standard_normal((d1, d2), dtype=np.float32) * np.float32(np.sqrt(2 / d1))
  b1 = rng.standard_normal(d1, dtype=np.float32) * np.float32(0.01)
  b2 = rng.standard_normal(d2, dtype=np.float32) * np.float32(0.01)
  maps = np.maximum(rng.standard_normal((n, 14, 14, k)), 0)
  maps *= rng.random((n, 1, 1, k)) > 0.4                         # ~40% channels all-zero
  human = rng.standard_normal((n, n))
  human = (human + human.T) / 2
  human[0, 4] = human[4, 0] = np.nan
  head = ablation.FcHead(w1=w1, b1=b1, w2=w2, b2=b2, pool_window=2)
  return head, maps, human


def _numpy_per_image_rows(head, maps, human, rows, maps_idx):
  """Float64 loop: full fc6/fc7 of the masked maps, np.corrcoef rows (independent of the engine)."""
  w1, w2 = np.asarray(head.w1, np.float64), np.asarray(head.w2, np.float64)
  b1, b2 = np.asarray(head.b1, np.float64), np.asarray(head.b2, np.float64)

  def embed(m):  # m [..., 14, 14, 512]
    pooled = m.reshape(m.shape[:-3] + (7, 2, 7, 2, 512)).max(axis=(-4, -2))
    flat = np.moveaxis(pooled, -1, -3).reshape(m.shape[:-3] + (-1,))
    return np.maximum(np.maximum(flat @ w1 + b1, 0) @ w2 + b2, 0)

  n = maps.shape[0]
  base = embed(maps)

  def row_agreement(e_i, i):
    others = [j for j in range(n) if j != i and np.isfinite(human[i, j])]
    sims = np.array([np.corrcoef(e_i, base[j])[0, 1] for j in others])
    return np.corrcoef(sims, human[i, others])[0, 1]

  out = {}
  for i in rows:
    masked = np.repeat(maps[i][None], len(maps_idx), axis=0)
    masked[np.arange(len(maps_idx)), ..., maps_idx] = 0
    ablated = embed(masked)
    b = row_agreement(base[i], i)
    out[i] = np.array([b - row_agreement(e, i) for e in ablated])
  return out


def test_vgg16_size_against_float64_loop(vgg_case):
  head, maps, human = vgg_case
  exact = ais.compute_ais(head, maps, human, precision="exact")
  f32 = ais.compute_ais(head, maps, human, precision="float32")
  assert exact.options["path"] == "fc"
  rng = np.random.default_rng(0)
  rows = [0, 4, 11]
  # 3 target rows x 96 maps each (active and inactive): the loop recomputes fc6 per ablation.
  maps_idx = np.sort(rng.choice(512, size=96, replace=False))
  ref = _numpy_per_image_rows(head, maps, human, rows, maps_idx)
  for i in rows:
    err_exact = np.max(np.abs(exact.per_image[i, maps_idx] - ref[i]))
    err_f32 = np.max(np.abs(f32.per_image[i, maps_idx] - ref[i]))
    assert err_exact <= 1e-9, f"row {i}: exact error {err_exact:.2e}"
    assert err_f32 <= 1e-5, f"row {i}: float32 error {err_f32:.2e}"
    inactive = ~maps[i][..., maps_idx].any(axis=(0, 1))
    assert inactive.any() and (exact.per_image[i, maps_idx][inactive] == 0).all()
  assert np.abs(exact.per_image).max() > 1e-6  # a real signal, not all zeros
  assert np.isfinite(exact.per_image).all() and np.isfinite(exact.cohort).all()
  np.testing.assert_allclose(f32.cohort, exact.cohort, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Spearman similarity of pooled heads: rank updates without sorting, against scipy


def _tied_relu_maps(seed, n=12, hw=2, k=16):
  """ReLU-like maps with many exact ties in the pooled embedding: small integers, ~60% zeros,
  whole channels off, one negative channel, one image with a single active map."""
  rng = np.random.default_rng(seed)
  maps = np.round(np.abs(rng.standard_normal((n, hw, hw, k))) * 2) * (rng.random((n, hw, hw, k))
                                                                     > 0.4)
  maps *= rng.random((n, 1, 1, k)) > 0.3
  maps[:, :, :, 3] *= -1                     # negative values: the zero block moves up instead
  maps[5] = 0
  maps[5, 0, 0, 7] = 3.0                     # removing map 7 leaves image 5 all zero -> NaN
  human = rng.standard_normal((n, n))
  human = (human + human.T) / 2
  human[0, 4] = human[4, 0] = np.nan
  return maps.astype(np.float32), human


def _scipy_spearman_ais(e, human, comparison="pearson"):
  """Float64 loop: scipy ranks of every ablated embedding, np.corrcoef similarities, agreement
  by np.corrcoef or scipy.stats.spearmanr."""
  import scipy.stats
  n, k = e.shape
  agree = {"pearson": lambda x, y: np.corrcoef(x, y)[0, 1],
           "spearman": lambda x, y: scipy.stats.spearmanr(x, y)[0]}[comparison]
  ranks = scipy.stats.rankdata(e, axis=1)

  def sim(r_a, r_b, e_a):
    return np.nan if np.all(e_a == 0) else np.corrcoef(r_a, r_b)[0, 1]

  def row_agreement(r_i, e_i, i):
    others = [j for j in range(n) if j != i and np.isfinite(human[i, j])]
    s = np.array([sim(r_i, ranks[j], e_i) for j in others])
    return np.nan if np.isnan(s).any() else agree(s, human[i, others])

  def cohort_agreement(e_all):
    r_all = scipy.stats.rankdata(e_all, axis=1)
    iu = [(i, j) for i in range(n) for j in range(i + 1, n) if np.isfinite(human[i, j])]
    s = np.array([sim(r_all[i], r_all[j], e_all[i]) if e_all[j].any() else np.nan
                  for i, j in iu])
    return np.nan if np.isnan(s).any() else agree(s, [human[i, j] for i, j in iu])

  per_image = np.zeros((n, k))
  for i in range(n):
    base = row_agreement(ranks[i], e[i], i)
    for m in range(k):
      if e[i, m] == 0:
        continue                                         # inactive: exactly 0 by definition
      e_i = e[i].copy()
      e_i[m] = 0
      per_image[i, m] = base - row_agreement(scipy.stats.rankdata(e_i), e_i, i)
  base = cohort_agreement(e)
  cohort = np.zeros(k)
  for m in range(k):
    if e[:, m].any():
      e_m = e.copy()
      e_m[:, m] = 0
      cohort[m] = base - cohort_agreement(e_m)
  return per_image, cohort


def test_average_ranks_match_scipy():
  import scipy.stats
  rng = np.random.default_rng(2)
  x = np.round(rng.standard_normal((40, 33)), 1) * (rng.random((40, 33)) > 0.5)
  x[3] = 0.0
  x[4, 7] = np.nan
  x[5] = np.arange(33)[::-1]
  with float64_scope():
    got = np.asarray(jax.jit(functools.partial(rsa.rankdata.kernel, axis=-1))(jnp.asarray(x)))
  want = scipy.stats.rankdata(x, axis=-1, nan_policy="omit")
  np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
  np.testing.assert_array_equal(got[~np.isnan(got)], want[~np.isnan(want)])


def test_spearman_removal_terms_are_exact():
  """p, q and the norms equal the explicit rank differences bit for bit (half-integer ranks)."""
  import scipy.stats
  maps, _ = _tied_relu_maps(0)
  e = maps.astype(np.float64).mean(axis=(1, 2))
  n, k = e.shape
  ks = np.array([0, 3, 7, 9, 15, 2])
  kvalid = np.array([True, True, True, True, True, False])
  with float64_scope():
    stats = ais._spearman_base(jnp.asarray(e))
    p, q, norm, bad = jax.device_get(ais.spearman_removal_terms(stats, jnp.asarray(ks),
                                                                 jnp.asarray(kvalid)))
  rho = scipy.stats.rankdata(e, axis=1) - (k + 1) / 2
  for c, (m, valid) in enumerate(zip(ks, kvalid)):
    e_m = e.copy()
    if valid:
      e_m[:, m] = 0
    delta = scipy.stats.rankdata(e_m, axis=1) - (k + 1) / 2 - rho
    np.testing.assert_array_equal(p[c], delta @ rho.T, err_msg=f"p, map {m}")
    np.testing.assert_array_equal(q[c], delta @ delta.T, err_msg=f"q, map {m}")
    np.testing.assert_array_equal(norm[c], np.sum((rho + delta) ** 2, axis=1))
    np.testing.assert_array_equal(bad[c], ~e_m.any(axis=1))
  assert bad[2, 5] and not bad[:, 5][[0, 1, 3, 4, 5]].any()


@pytest.mark.parametrize("seed", [0, 1])
def test_pooled_spearman_matches_dense_and_scipy(seed):
  maps, human = _tied_relu_maps(seed)
  head = ablation.PooledHead()
  fast = ais.compute_ais(head, maps, human, similarity="spearman")
  assert fast.options["path"] == "pooled_spearman"
  with jax.disable_jit():
    dense = ais.compute_ais(head, maps, human, similarity="spearman", path="pooled_dense")
  per_image, cohort = _scipy_spearman_ais(maps.astype(np.float64).mean(axis=(1, 2)), human)
  for got, want, what in ((fast.per_image, dense.per_image, "per_image vs dense"),
                          (fast.cohort, dense.cohort, "cohort vs dense"),
                          (fast.per_image, per_image, "per_image vs scipy"),
                          (fast.cohort, cohort, "cohort vs scipy")):
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what)
    err = np.nanmax(np.abs(got - want))
    assert err <= 1e-12, f"{what}: {err:.2e}"
  assert np.isnan(fast.per_image[5, 7]) and np.isnan(fast.cohort[7])
  assert np.isfinite(fast.per_image[[i for i in range(12) if i != 5]]).all()
  assert np.nanmax(np.abs(fast.per_image)) > 1e-3
  np.testing.assert_array_equal(fast.per_image == 0, maps.mean(axis=(1, 2)) == 0)
  # Spearman comparison, against the loop. Ablated rows often have exactly tied similarities
  # (integer rank dot products over equal norms: rows with as many zeros have equal rank norms);
  # this path keeps them tied, as np.corrcoef does, while the dense path's unit vectors break such
  # ties by rounding, which a Spearman comparison then ranks (so no comparison with it here).
  rng = np.random.default_rng(seed + 10)
  maps = np.maximum(rng.standard_normal((12, 2, 2, 48)), 0).astype(np.float32)
  maps *= rng.random((12, 1, 1, 48)) > 0.3                  # zero ties in the embeddings
  fast_s = ais.compute_ais(head, maps, human, similarity="spearman", comparison="spearman")
  per_image, cohort = _scipy_spearman_ais(maps.astype(np.float64).mean(axis=(1, 2)), human,
                                          comparison="spearman")
  for got, want, what in ((fast_s.per_image, per_image, "spearman/spearman per_image"),
                          (fast_s.cohort, cohort, "spearman/spearman cohort")):
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what)
    err = np.nanmax(np.abs(got - want))
    assert err <= 1e-12, f"{what}: {err:.2e}"
