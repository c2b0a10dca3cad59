"""ais_jax.ais against an independent float64 NumPy loop on tiny cohorts (mutation tests).

The reference literally zeroes map k (in image i only for per-image AIS, in every image for
cohort AIS), recomputes the embeddings and similarities pair by pair (np.corrcoef, scipy ranks,
dot products), and the agreements with scipy.stats; undefined values follow DESIGN.md section 1.
Every path of the engine (pooled rank-one, pooled Spearman, pooled dense, fc, generic with each
head kind, row blocks, chunked map loops, the float64-free compensated path) is run on the same
tiny inputs. Most cases run op by op under ``jax.disable_jit()`` (op compiles are shared);
a few are jitted. Also: the golden values, the options record, each refusal's exact message.
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from ais_jax import ablation, ais, precision
from ais_jax.errors import UserInputError

TOL = 1e-10


# ----------------------------------------------------------------------------------------------
# Independent reference


def _np_fc(head, maps):
  """float64 VGG-like head on ``maps [..., 4, 4, K]``: 2x2 max-pool, (map, row, col) flatten."""
  w1, b1 = np.asarray(head.w1, np.float64), np.asarray(head.b1, np.float64)
  w2, b2 = np.asarray(head.w2, np.float64), np.asarray(head.b2, np.float64)
  k = maps.shape[-1]
  pooled = maps.reshape(maps.shape[:-3] + (2, 2, 2, 2, k)).max(axis=(-4, -2))
  flat = np.moveaxis(pooled, -1, -3).reshape(maps.shape[:-3] + (-1,))
  return np.maximum(np.maximum(flat @ w1 + b1, 0) @ w2 + b2, 0)


def _np_pooled(maps):
  return maps.mean(axis=(-3, -2))


USER_MIX = np.array([[1.0, 0.5, -0.3], [0.2, -1.0, 0.7], [-0.4, 0.3, 1.1], [0.9, 0.1, 0.2],
                     [0.3, 0.8, -0.6]])


def _user_embed(maps, keep):
  """A GenericHead's embed: tanh of the pooled maps times a fixed matrix, plus the pooled maps."""
  if keep is not None:
    maps = maps[None] * keep[:, None, None, None, :]
  p = jnp.mean(maps, axis=(-3, -2))
  return jnp.concatenate([jnp.tanh(p @ USER_MIX[: p.shape[-1]]), p], axis=-1)


def _np_user(maps):
  p = maps.mean(axis=(-3, -2))
  return np.concatenate([np.tanh(p @ USER_MIX[: p.shape[-1]]), p], axis=-1)


def _constant(v):
  v = np.asarray(v, np.float64)
  return np.sqrt(np.mean((v - v.mean()) ** 2)) <= 1e-12 * np.max(np.abs(v))


def _sim(a, b, kind):
  if kind == "cosine":
    if not a.any() or not b.any():
      return np.nan
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))
  if _constant(a) or _constant(b):
    return np.nan
  if kind == "spearman":
    a, b = scipy.stats.rankdata(a), scipy.stats.rankdata(b)
  return float(np.corrcoef(a, b)[0, 1])


def _agree(x, y, kind):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if np.isnan(x).any() or len(x) < 2 or _constant(x) or _constant(y):
    return np.nan
  if kind == "spearman":
    return float(scipy.stats.spearmanr(x, y)[0])
  return float(scipy.stats.pearsonr(x, y)[0])


def _row(e, i, human, sim, cmp):
  others = [j for j in range(len(e)) if j != i and np.isfinite(human[i, j])]
  return _agree([_sim(e[i], e[j], sim) for j in others], human[i, others], cmp)


def _cohort(e, human, sim, cmp):
  pairs = [(i, j) for i in range(len(e)) for j in range(i + 1, len(e)) if np.isfinite(human[i, j])]
  return _agree([_sim(e[i], e[j], sim) for i, j in pairs], [human[i, j] for i, j in pairs], cmp)


def reference(embed, maps, human, sim="pearson", cmp="pearson", score="r"):
  """(per_image [n, K], cohort [K], baseline_rows [n], baseline) by literal zeroing."""
  maps = np.asarray(maps, np.float64)
  n, k = maps.shape[0], maps.shape[-1]
  e = embed(maps)
  base_rows = np.array([_row(e, i, human, sim, cmp) for i in range(n)])
  per_image = np.zeros((n, k))
  for i in range(n):
    for m in range(k):
      if not np.isfinite(base_rows[i]):
        per_image[i, m] = np.nan
      elif maps[i, ..., m].any():
        masked = maps[i].copy()
        masked[..., m] = 0
        e_i = e.copy()
        e_i[i] = embed(masked[None])[0]
        per_image[i, m] = base_rows[i] - _row(e_i, i, human, sim, cmp)
  base = _cohort(e, human, sim, cmp)
  cohort = np.zeros(k)
  for m in range(k):
    if not np.isfinite(base):
      cohort[m] = np.nan
    elif maps[..., m].any():
      masked = maps.copy()
      masked[..., m] = 0
      abl = _cohort(embed(masked), human, sim, cmp)
      cohort[m] = base ** 2 - abl ** 2 if score == "r2" else base - abl
  return per_image, cohort, base_rows, base, maps.any(axis=(1, 2))


def _case(seed, n=6, k=5, hw=4):
  """ReLU maps, map 1 all zero in image 2, map k-1 all zero in every image; human with a NaN pair."""
  rng = np.random.default_rng(seed)
  maps = np.maximum(rng.standard_normal((n, hw, hw, k)), 0).astype(np.float32)
  maps[2, ..., 1] = 0
  maps[..., k - 1] = 0
  h = rng.standard_normal((n, n))
  h = (h + h.T) / 2
  np.fill_diagonal(h, 1.0)
  h[0, 3] = h[3, 0] = np.nan
  return maps, h


def _fc_head(seed=1, k=5, d1=8, d2=7):
  rng = np.random.default_rng(seed)
  return ablation.FcHead(w1=rng.standard_normal((k * 4, d1)).astype(np.float32) * 0.5,
                         b1=rng.standard_normal(d1).astype(np.float32) * 0.1,
                         w2=rng.standard_normal((d1, d2)).astype(np.float32) * 0.5,
                         b2=rng.standard_normal(d2).astype(np.float32) * 0.1, pool_window=2)


def _check(res, ref, tol=TOL, what=""):
  per_image, cohort, base_rows, base, active = ref
  for name, got, want in (("per_image", res.per_image, per_image), ("cohort", res.cohort, cohort),
                          ("baseline_rows", res.baseline_rows, base_rows),
                          ("baseline", np.array([res.baseline]), np.array([base]))):
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what} {name} NaN")
    if np.isfinite(want).any():
      err = np.nanmax(np.abs(got - want))
      assert err <= tol, f"{what} {name}: error {err:.3e} > {tol}"
  # Exact zeros where DESIGN.md says (inactive pair, defined baseline).
  zero = ~active & np.isfinite(base_rows)[:, None]
  assert (res.per_image[zero] == 0).all(), what
  np.testing.assert_array_equal(res.active, active)
  if np.isfinite(base):
    assert (res.cohort[~active.any(axis=0)] == 0).all(), what
  if np.isfinite(per_image).any():
    assert np.abs(per_image[np.isfinite(per_image)]).max() > 1e-4  # a real signal


# ----------------------------------------------------------------------------------------------
# Every path and option (float64), against the loop


POOLED_CASES = [("pearson", "pearson"), ("pearson", "spearman"), ("cosine", "pearson"),
                ("cosine", "spearman"), ("spearman", "pearson")]


# One test per case, so that a mutant fails at its first wrong case.
@pytest.mark.parametrize("sim,cmp", POOLED_CASES)
@pytest.mark.parametrize("path", [None, "pooled_dense", "generic"])
def test_pooled_head_every_option(path, sim, cmp):
  maps, h = _case(0)
  head = ablation.PooledHead()
  with jax.disable_jit():
    res = ais.compute_ais(head, maps, h, similarity=sim, comparison=cmp, path=path)
  want = path or ("pooled_spearman" if sim == "spearman" else "pooled_rank_one")
  assert res.options["path"] == want
  _check(res, reference(_np_pooled, maps, h, sim, cmp), what=f"{want} {sim}/{cmp}")
  np.testing.assert_array_equal(res.active, maps.any(axis=(1, 2)))
  np.testing.assert_allclose(res.embeddings, _np_pooled(maps.astype(np.float64)), rtol=1e-6)


@pytest.mark.parametrize("path", [None, "pooled_dense", "generic"])
def test_pooled_head_r2(path):
  maps, h = _case(0)
  with jax.disable_jit():
    r2 = ais.compute_ais(ablation.PooledHead(), maps, h, cohort_score="r2", path=path)
  _check(r2, reference(_np_pooled, maps, h, score="r2"), what=f"{path} r2")


@pytest.mark.parametrize("path", [None, "generic"])
def test_fc_head_every_option(path):
  maps, h = _case(1)
  head = _fc_head()
  embed = lambda m: _np_fc(head, m)
  with jax.disable_jit():
    for sim, cmp in POOLED_CASES:
      res = ais.compute_ais(head, maps, h, similarity=sim, comparison=cmp, path=path)
      assert res.options["path"] == (path or "fc")
      _check(res, reference(embed, maps, h, sim, cmp), what=f"fc {path} {sim}/{cmp}")
      np.testing.assert_array_equal(res.active, maps.any(axis=(1, 2)))
    r2 = ais.compute_ais(head, maps, h, cohort_score="r2", path=path)
  _check(r2, reference(embed, maps, h, score="r2"), what="fc r2")
  np.testing.assert_allclose(res.embeddings, embed(maps.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_user_generic_head():
  maps, h = _case(2)
  head = ablation.GenericHead(embed=_user_embed)
  with jax.disable_jit():
    for sim, cmp in [("pearson", "pearson"), ("cosine", "spearman"), ("spearman", "pearson")]:
      res = ais.compute_ais(head, maps, h, similarity=sim, comparison=cmp)
      assert res.options["path"] == "generic"
      _check(res, reference(_np_user, maps, h, sim, cmp), what=f"user {sim}/{cmp}")
      np.testing.assert_array_equal(res.active, maps.any(axis=(1, 2)))


@pytest.mark.parametrize("head_name", ["gap", "fc"])
def test_jitted_chunked_map_loop(head_name):
  """A budget that fits 2 maps per chunk: K=5 maps + the baseline slot -> 3 chunks of 2."""
  maps, h = _case(3)
  head = ablation.PooledHead() if head_name == "gap" else _fc_head()
  embed = _np_pooled if head_name == "gap" else (lambda m: _np_fc(head, m))
  # pooled rank-one: 2 x 8 n^2 float64 per map = 4608 bytes (n = 6); fc: see _plan.
  budget = 10000 / 2**30 if head_name == "gap" else 2 * 2 * (6 * (2 * 8 * 8 + 7 * 8) + 2 * 6 * 7 * 8
                                                           + 4 * 36 * 8) / 2**30
  res = ais.compute_ais(head, maps, h, memory_budget_gb=budget)
  assert res.options["chunk"] == 2, res.options
  _check(res, reference(embed, maps, h), what=f"{head_name} chunked")
  whole = ais.compute_ais(head, maps, h, cohort_score="r2")
  assert whole.options["chunk"] == 6 and whole.options["row_block"] == 0
  _check(whole, reference(embed, maps, h, score="r2"), what=f"{head_name} whole r2")
  if head_name == "fc":
    assert whole.options["sub_batch"] == 36 and res.options["sub_batch"] == 12


@pytest.mark.parametrize("sub_batch", [4, 2])
def test_fc_sub_batches_smaller_than_pairs(monkeypatch, sub_batch):
  """fc7 runs on compacted sub-batches of active pairs: 23 active of 36 pairs in sub-batches of 4
  (the last one 3 rows) or 2 (the last one a single row: the trip count must round up)."""
  monkeypatch.setattr(ais, "SUB_BATCH", sub_batch)
  maps, h = _case(4)
  head = _fc_head()
  with jax.disable_jit():
    res = ais.compute_ais(head, maps, h)
  assert res.options["sub_batch"] == sub_batch and res.active.sum() == 23
  _check(res, reference(lambda m: _np_fc(head, m), maps, h), what=f"fc sub-batch {sub_batch}")


def test_fc_last_chunk_past_the_last_map():
  """Chunks of 2 slots over K = 5 maps: the last chunk (slots 4, 5) reads w1 rows 3-4 (clamped to
  fit) and rolls them back into slot order. Map 4 is active here (``_case`` turns it off)."""
  maps, h = _case(31)
  maps[..., 4] = np.maximum(np.random.default_rng(32).standard_normal(maps.shape[:-1]), 0)
  head = _fc_head()
  budget = 2 * 2 * (6 * (2 * 8 * 8 + 7 * 8) + 2 * 6 * 7 * 8 + 4 * 36 * 8) / 2**30
  with jax.disable_jit():
    res = ais.compute_ais(head, maps, h, memory_budget_gb=budget)
  assert res.options["chunk"] == 2 and res.active[:, 4].all()
  _check(res, reference(lambda m: _np_fc(head, m), maps, h), what="fc, last chunk")


@pytest.mark.parametrize("sim,score", [("pearson", "r"), ("cosine", "r2")])
def test_row_blocks_against_loop(sim, score):
  """Below one map's n x n matrices: rows in blocks (n = 10 -> 2 blocks of 5)."""
  maps, h = _case(5, n=10)
  head = ablation.PooledHead()
  with jax.disable_jit():
    res = ais.compute_ais(head, maps, h, similarity=sim, cohort_score=score, memory_budget_gb=1e-7)
  assert res.options["row_block"] == 5 and res.options["chunk"] == 1
  _check(res, reference(_np_pooled, maps, h, sim, score=score), what=f"blocked {sim}")


def test_row_blocks_only_for_pearson_rank_one():
  """Spearman agreement and the dense path never use row blocks; n = 8 is never blocked
  (ROW_BLOCK_MIN), n = 9 is (2 blocks of 5, one padding row)."""
  maps, h = _case(5, n=10)
  head = ablation.PooledHead()
  with jax.disable_jit():
    spear = ais.compute_ais(head, maps, h, comparison="spearman", memory_budget_gb=1e-7)
    assert spear.options["row_block"] == 0
    dense = ais.compute_ais(head, maps, h, memory_budget_gb=1e-7, path="pooled_dense")
    assert dense.options["row_block"] == 0
  p8 = ais._plan(head, (8, 4, 4, 5), similarity="pearson", comparison="pearson",
                 precision="exact", memory_budget_gb=1e-7, mesh=None)
  p9 = ais._plan(head, (9, 4, 4, 5), similarity="pearson", comparison="pearson",
                 precision="exact", memory_budget_gb=1e-7, mesh=None)
  assert p8.row_block == 0 and p9.row_block == 5 and p9.image_pad == 10


def test_row_blocks_undefined_values():
  """Blocked rows keep the undefined-value rules: an all-zero image's rows and the cohort are NaN."""
  maps, h = _case(6, n=10)
  head = ablation.PooledHead()
  maps[7] = 0
  with jax.disable_jit():
    res = ais.compute_ais(head, maps, h, memory_budget_gb=1e-7)
  assert res.options["row_block"] == 5
  _check(res, reference(_np_pooled, maps, h), what="blocked, image 7 all zero")
  assert np.isnan(res.cohort).all()


# ----------------------------------------------------------------------------------------------
# Head precision modes and the float64-free path


@pytest.mark.parametrize("prec", ["float32", "fast"])
def test_float32_head_precision(prec):
  maps, h = _case(7)
  head = _fc_head()
  with jax.disable_jit():
    res = ais.compute_ais(head, maps, h, precision=prec)
  assert res.options["precision"] == prec
  _check(res, reference(lambda m: _np_fc(head, m), maps, h), tol=2e-3 if prec == "fast" else 1e-5)


F32_CASES = [("gap", None, "pearson", "pearson"), ("gap", None, "cosine", "spearman"),
             ("gap", None, "spearman", "pearson"), ("gap", "pooled_dense", "pearson", "pearson"),
             ("gap", "pooled_dense", "spearman", "pearson"), ("gap", "generic", "cosine", "pearson"),
             ("fc", None, "pearson", "pearson"), ("fc", None, "cosine", "pearson"),
             ("fc", "generic", "pearson", "pearson"),
             ("user", None, "pearson", "spearman")]


def _f32_heads():
  fc = _fc_head()
  return {"gap": (ablation.PooledHead(), _np_pooled), "fc": (fc, lambda m: _np_fc(fc, m)),
          "user": (ablation.GenericHead(embed=_user_embed), _np_user)}


# One test per case, so that a mutant of the float64-free code fails at its first wrong case.
@pytest.mark.parametrize("head_name,path,sim,cmp", F32_CASES)
def test_float64_free_path(monkeypatch, head_name, path, sim, cmp):
  monkeypatch.setenv(precision.FLOAT64_ENV, "0")
  head, embed = _f32_heads()[head_name]
  maps, h = _case(8)
  with jax.disable_jit():
    res = ais.compute_ais(head, maps, h, similarity=sim, comparison=cmp, path=path)
  assert res.options["float64"] is False
  _check(res, reference(embed, maps, h, sim, cmp), tol=3e-5 if head_name == "fc" else 2e-6,
         what=f"f32 {head_name} {path} {sim}/{cmp}")


def test_float64_free_r2(monkeypatch):
  monkeypatch.setenv(precision.FLOAT64_ENV, "0")
  maps, h = _case(8)
  with jax.disable_jit():
    r2 = ais.compute_ais(ablation.PooledHead(), maps, h, cohort_score="r2")
  assert r2.options["float64"] is False
  # The documented dtypes hold on this path too (its kernel computes in float32).
  assert r2.per_image.dtype == r2.cohort.dtype == r2.baseline_rows.dtype == np.float64
  assert isinstance(r2.baseline, float) and r2.embeddings.dtype == np.float32
  _check(r2, reference(_np_pooled, maps, h, score="r2"), tol=2e-6, what="f32 r2")


def test_float64_free_undefined(monkeypatch):
  monkeypatch.setenv(precision.FLOAT64_ENV, "0")
  maps, h = _case(9)
  maps[4] = 0
  maps[5, ..., 1:] = 0    # image 5 keeps map 0 only: removing it empties the image
  head = ablation.PooledHead()
  with jax.disable_jit():
    for sim in ("pearson", "spearman"):
      res = ais.compute_ais(head, maps, h, similarity=sim)
      _check_undefined(res, reference(_np_pooled, maps, h, sim))


# ----------------------------------------------------------------------------------------------
# Undefined values (float64)


def _check_undefined(res, ref):
  per_image, cohort, base_rows, base, active = ref
  np.testing.assert_array_equal(np.isnan(res.per_image), np.isnan(per_image))
  np.testing.assert_array_equal(np.isnan(res.cohort), np.isnan(cohort))
  np.testing.assert_array_equal(np.isnan(res.baseline_rows), np.isnan(base_rows))
  assert np.isnan(res.baseline) == np.isnan(base)
  ok = np.isfinite(per_image)
  assert np.max(np.abs(res.per_image[ok] - per_image[ok]), initial=0) <= 1e-5
  assert (res.per_image[~active & np.isfinite(base_rows)[:, None]] == 0).all()
  assert res.undefined["undefined_baseline_rows"] == np.flatnonzero(np.isnan(base_rows)).tolist()
  assert res.undefined["per_image"]["count"] == int(np.isnan(per_image).sum())
  assert res.undefined["cohort"]["count"] == int(np.isnan(cohort).sum())
  assert res.undefined["baseline_undefined"] == bool(np.isnan(base))


@pytest.mark.parametrize("path", [None, "pooled_dense"])
def test_undefined_values(path):
  maps, h = _case(10)
  head = ablation.PooledHead()
  maps[5, ..., 1:] = 0    # image 5 keeps map 0 only: removing it empties the image -> NaN
  with jax.disable_jit():
    for sim in ("pearson", "cosine", "spearman"):
      res = ais.compute_ais(head, maps, h, similarity=sim, path=path)
      ref = reference(_np_pooled, maps, h, sim)
      assert np.isnan(ref[0][5, 0]) and np.isnan(ref[0]).sum() == 1
      _check_undefined(res, ref)
      assert res.undefined["per_image"]["locations"] == [{"image": 5, "map": 0}]
      assert np.isnan(res.cohort).sum() == np.isnan(ref[1]).sum() == 1  # map 0 empties image 5
      assert res.undefined["cohort"]["locations"] == [{"map": 0}]
      assert res.undefined["cohort"]["per_map"] == {0: 1}
    maps[4] = 0             # an all-zero image: rows that use it and the cohort are NaN
    res = ais.compute_ais(head, maps, h, path=path)
  ref = reference(_np_pooled, maps, h)
  _check_undefined(res, ref)
  assert np.isnan(res.cohort).all() and np.isnan(res.baseline)
  assert res.undefined["undefined_baseline_rows"] == [0, 1, 2, 3, 4, 5]
  assert np.isnan(res.per_image).all()


def test_undefined_when_one_map_is_left():
  """Removing map k from cohort with only two active maps: a pooled Pearson similarity of 2-vectors
  is +-1 everywhere (after removing one map, every vector is constant: NaN)."""
  maps, h = _case(11, k=3)
  head = ablation.PooledHead()
  with jax.disable_jit():
    res = ais.compute_ais(head, maps, h, similarity="cosine")
  ref = reference(_np_pooled, maps, h, "cosine")
  _check_undefined(res, ref)


def test_human_row_with_missing_pairs():
  """Row 0 of the human matrix keeps 3 pairs (2 NaN): defined, over those pairs only."""
  maps, h = _case(12)
  head = ablation.PooledHead()
  h = h.copy()
  h[0, 2] = h[2, 0] = np.nan
  with jax.disable_jit():
    res = ais.compute_ais(head, maps, h)
  _check(res, reference(_np_pooled, maps, h), what="row 0 with three pairs")
  h[0, 4] = h[4, 0] = np.nan
  _raises(UserInputError, "human: rows [0] have fewer than 3 finite off-diagonal entries ([2]); "
          "drop those images or supply their judgments", lambda: ais.compute_ais(head, maps, h))


# ----------------------------------------------------------------------------------------------
# Golden values (shared/golden, an independent loop)


def test_golden_default_paths_jitted(golden):
  fc = ablation.FcHead(w1=golden["W1"].T, b1=golden["b1"], w2=golden["W2"].T, b2=golden["b2"],
                       pool_window=2)
  for name, head in (("fc", fc), ("gap", ablation.PooledHead())):
    res = ais.compute_ais(head, golden["F"], golden["H"])
    for key, got in (("per_image", res.per_image), ("cohort", res.cohort)):
      want = golden[f"{key}_{name}_pearson_pearson"]
      assert np.max(np.abs(got - want)) <= TOL, (name, key)
    r2 = ais.cohort_ais(head, golden["F"], golden["H"], score="r2")
    assert np.max(np.abs(r2 - golden[f"cohort_r2_{name}"])) <= TOL
    pi = ais.per_image_ais(head, golden["F"], golden["H"], similarity="cosine",
                           comparison="spearman")
    assert np.max(np.abs(pi - golden[f"per_image_{name}_cosine_spearman"])) <= TOL


# ----------------------------------------------------------------------------------------------
# The result record


def test_result_record():
  maps, h = _case(13)
  head = _fc_head()
  res = ais.compute_ais(head, maps, h, similarity="cosine", comparison="spearman",
                        memory_budget_gb=0.5)
  assert res.options == {"similarity": "cosine", "comparison": "spearman", "cohort_score": "r",
                         "precision": "exact", "path": "fc", "chunk": 6, "row_block": 0,
                         "sub_batch": 36, "memory_budget_gb": 0.5, "mesh": None,
                         "float64": True}
  assert res.per_image.dtype == np.float64 and res.cohort.dtype == np.float64
  assert res.baseline_rows.dtype == np.float64 and isinstance(res.baseline, float)
  assert res.embeddings.dtype == np.float32 and res.embeddings.shape == (6, 7)
  assert res.active.dtype == bool and res.active.shape == (6, 5)
  assert res.per_image.shape == (6, 5) and res.cohort.shape == (5,)
  assert set(res.timings) == {"prepare", "kernel", "finalize", "total", "compiled"}
  t = res.timings
  assert 0 <= t["prepare"] <= t["total"] and 0 <= t["kernel"] <= t["total"]
  assert 0 <= t["finalize"] <= t["total"]
  assert abs(t["prepare"] + t["kernel"] + t["finalize"] - t["total"]) < 0.05 * t["total"] + 1e-3
  assert res.undefined == {
      "per_image": {"count": 0, "total": 30, "locations": [], "locations_truncated": False},
      "cohort": {"count": 0, "total": 5, "locations": [], "locations_truncated": False},
      "undefined_baseline_rows": [], "baseline_undefined": False}
  with jax.disable_jit():
    again = ais.compute_ais(head, maps.astype(np.float64), h, similarity="cosine",
                            comparison="spearman", memory_budget_gb=0.5)
  assert np.max(np.abs(again.per_image - res.per_image)) <= 1e-13


def test_compile_once_and_trace_counts(monkeypatch):
  maps, h = _case(14, n=7, k=4)        # a shape no other test uses
  head = ablation.PooledHead()
  monkeypatch.setattr(ais, "TRACE_COUNTS", {})
  first = ais.compute_ais(head, maps, h)
  second = ais.compute_ais(head, maps * 1.5 + maps ** 2, h)
  assert ais.TRACE_COUNTS == {"pooled_rank_one": 1}
  assert first.timings["compiled"] is True and second.timings["compiled"] is False
  assert not jax.config.jax_enable_x64


# ----------------------------------------------------------------------------------------------
# Refusals: exact messages


def _raises(exc, message, fn):
  with pytest.raises(exc) as info:
    fn()
  assert str(info.value) == message
  assert type(info.value) is exc


def test_option_refusals():
  maps, h = _case(15)
  head = ablation.PooledHead()
  run = lambda **kw: (lambda: ais.compute_ais(head, maps, h, **kw))
  _raises(ValueError, "similarity='euclid' is not one of ('pearson', 'spearman', 'cosine')",
          run(similarity="euclid"))
  _raises(ValueError, "comparison='kendall' is not one of ('pearson', 'spearman')",
          run(comparison="kendall"))
  _raises(ValueError, "cohort_score='r3' is not one of ('r', 'r2')", run(cohort_score="r3"))
  _raises(ValueError, "cohort_score='r2' needs comparison='pearson': the r^2 variant is the squared "
          "Pearson agreement and Spearman has no r^2 variant; use cohort_score='r' with "
          "comparison='spearman'", run(cohort_score="r2", comparison="spearman"))
  _raises(ValueError, "precision='half' is not one of ('exact', 'float32', 'fast')",
          run(precision="half"))
  _raises(ValueError, "path='dense' is not one of generic, pooled_dense, pooled_rank_one, "
          "pooled_spearman, fc", run(path="dense"))
  fc = _fc_head()
  for p in ("pooled_dense", "pooled_rank_one", "pooled_spearman"):
    _raises(ValueError, f"path={p!r} needs a PooledHead, got FcHead",
            lambda p=p: ais.compute_ais(fc, maps, h, path=p))
  _raises(ValueError, "path='fc' needs an FcHead, got PooledHead", run(path="fc"))
  _raises(ValueError, "path='fc' needs an FcHead, got GenericHead",
          lambda: ais.compute_ais(ablation.GenericHead(embed=_user_embed), maps, h, path="fc"))
  _raises(TypeError, "head must be PooledHead, FcHead or GenericHead (spec.get_ablation_head("
          "variables)), got dict", lambda: ais.compute_ais({}, maps, h))
  # The r2 refusal comes before any look at the maps.
  _raises(ValueError, "cohort_score='r3' is not one of ('r', 'r2')",
          lambda: ais.compute_ais(head, maps[0], h, cohort_score="r3"))


def test_input_refusals():
  maps, h = _case(16)
  head = ablation.PooledHead()
  _raises(ValueError, "maps must be [n, h, w, K] feature maps, got shape (4, 4, 5)",
          lambda: ais.compute_ais(head, maps[0], h))
  _raises(ValueError, "maps must be [n, h, w, K] feature maps, got shape (6, 4, 4, 5, 1)",
          lambda: ais.compute_ais(head, jnp.asarray(maps[..., None]), h))
  _raises(ValueError, "maps must be floating point, got dtype int32",
          lambda: ais.compute_ais(head, maps.astype(np.int32), h))
  _raises(ValueError, "maps must be floating point, got dtype int32",
          lambda: ais.compute_ais(head, jnp.asarray(maps.astype(np.int32)), h))
  bad = maps.copy()
  bad[1, 0, 2, 3] = np.nan
  bad[4, 3, 3, 0] = np.inf
  _raises(UserInputError, "maps: NaN or inf values at (image 1, map 3), (image 4, map 0); feature "
          "maps must be finite (check the images and the trunk's precision)",
          lambda: ais.compute_ais(head, bad, h))
  _raises(UserInputError, "human: matrix is 5x5 but the cohort has 6 images; the matrix must list "
          "the images in the same order as the images",
          lambda: ais.compute_ais(head, maps, h[:5, :5]))
  try:
    ais.compute_ais(head, maps, h[:5, :5])
  except UserInputError as e:
    assert e.input_name is None


def test_non_finite_maps_are_located_in_blocks():
  """Images past the first block of 64; at most 10 pairs named, then 'and more'."""
  maps = np.ones((70, 1, 1, 12), np.float32)
  h = np.eye(70)
  maps[66, 0, 0, 2] = np.nan
  _raises(UserInputError, "maps: NaN or inf values at (image 66, map 2); feature maps must be "
          "finite (check the images and the trunk's precision)",
          lambda: ais.compute_ais(ablation.PooledHead(), maps, h))
  maps[66, 0, 0, :10] = np.inf
  shown = ", ".join(f"(image 66, map {k})" for k in range(10))
  _raises(UserInputError, f"maps: NaN or inf values at {shown}; feature maps must be finite "
          "(check the images and the trunk's precision)",
          lambda: ais.compute_ais(ablation.PooledHead(), maps, h))
  maps[66, 0, 0, 10] = np.nan
  _raises(UserInputError, f"maps: NaN or inf values at {shown} and more; feature maps must be "
          "finite (check the images and the trunk's precision)",
          lambda: ais.compute_ais(ablation.PooledHead(), maps, h))
  maps[66] = 1
  maps[3, 0, 0, :6] = np.nan
  maps[65, 0, 0, :6] = np.nan       # 12 pairs over two blocks: the first 10 named
  shown = ", ".join([f"(image 3, map {k})" for k in range(6)]
                    + [f"(image 65, map {k})" for k in range(4)])
  _raises(UserInputError, f"maps: NaN or inf values at {shown} and more; feature maps must be "
          "finite (check the images and the trunk's precision)",
          lambda: ais.compute_ais(ablation.PooledHead(), maps, h))
  maps[3, 0, 0, 6:10] = np.inf      # exactly 10 in the first block, one more in the second
  maps[65, 0, 0, :6] = 1
  maps[65, 0, 0, 11] = np.nan
  shown = ", ".join(f"(image 3, map {k})" for k in range(10))
  _raises(UserInputError, f"maps: NaN or inf values at {shown} and more; feature maps must be "
          "finite (check the images and the trunk's precision)",
          lambda: ais.compute_ais(ablation.PooledHead(), maps, h))
  maps[:] = 1
  maps[0, 0, 0, 5] = np.nan         # the very first image
  _raises(UserInputError, "maps: NaN or inf values at (image 0, map 5); feature maps must be "
          "finite (check the images and the trunk's precision)",
          lambda: ais.compute_ais(ablation.PooledHead(), maps, h))


# ----------------------------------------------------------------------------------------------
# Planning (no compile): chunk sizes from the documented per-map bytes, at both sides of each bound


def _plan(head, shape=(6, 4, 4, 5), budget_bytes=2 * 2**30, **kw):
  kw = {"similarity": "pearson", "comparison": "pearson", "precision": "exact", "mesh": None,
        **kw}
  return ais._plan(head, shape, memory_budget_gb=budget_bytes / 2**30, **kw)


@pytest.mark.parametrize("path,sim,prec,per_map", [
    # 2x safety factor times the dominating intermediates (n = t = 6, 4x4 maps, K = 5, D1 = 8,
    # D2 = 7; head itemsize 8 for 'exact', 4 for 'float32').
    ("pooled_rank_one", "pearson", "exact", 2 * 8 * 36 * 8),
    ("pooled_spearman", "spearman", "exact", 2 * (6 * 5 * 24 + 12 * 36 * 8)),
    ("pooled_dense", "pearson", "exact", 2 * (6 * 5 * 48 + 4 * 36 * 8)),
    ("fc", "pearson", "exact", 2 * (6 * (2 * 8 * 8 + 7 * 8) + 2 * 6 * 7 * 8 + 4 * 36 * 8)),
    ("fc", "pearson", "float32", 2 * (6 * (2 * 8 * 4 + 7 * 4) + 2 * 6 * 7 * 8 + 4 * 36 * 8)),
    ("fc", "spearman", "exact", 2 * (6 * (2 * 8 * 8 + 7 * 8) + 4 * 6 * 7 * 8 + 4 * 36 * 8)),
    ("generic", "pearson", "exact", 2 * (6 * 16 * 5 * 12 + 4 * 6 * 1024 * 8 + 4 * 36 * 8)),
    ("generic", "pearson", "float32", 2 * (6 * 16 * 5 * 8 + 4 * 6 * 1024 * 8 + 4 * 36 * 8))])
def test_plan_chunks(path, sim, prec, per_map):
  head = _fc_head() if path == "fc" else (
      ablation.GenericHead(embed=_user_embed) if path == "generic" else ablation.PooledHead())
  p = lambda b: _plan(head, budget_bytes=b, similarity=sim, precision=prec,
                      path=None if path.startswith("pooled_") and path != "pooled_dense" else path)
  # 6 slots (K = 5 maps + the baseline slot): 1, 2, 3 fit -> chunks of that size, 4 or 5 fit ->
  # 2 chunks of 3 (same number of chunks, least padding), 6 -> 6.
  for fits, chunk in ((1, 1), (2, 2), (3, 3), (4, 3), (5, 3), (6, 6), (60, 6)):
    plan = p(fits * per_map)
    assert (plan.path, plan.chunk, plan.map_pad, plan.row_block) == (path, chunk, 6, 0), fits
    assert p(fits * per_map - 1).chunk == {1: 1, 2: 1, 3: 2, 4: 3, 5: 3, 6: 3, 60: 6}[fits]
  plan = p(per_map)
  assert plan.num_maps == 5 and plan.image_pad == 6 and plan.image_devices == 1
  assert plan.similarity == sim and plan.comparison == "pearson" and plan.float64
  assert plan.head_dtype == (jnp.float64 if prec == "exact" else jnp.float32)
  assert p(1).chunk == 1  # never below one map per chunk


def test_plan_details():
  fc = _fc_head()
  # fc sub-batches: min(chunk x t, SUB_BATCH, budget // (4 (D1 + D2) itemsize)).
  assert _plan(fc).sub_batch == 36
  assert _plan(fc, budget_bytes=5856).sub_batch == 6 and _plan(fc, budget_bytes=5855).chunk == 1
  assert _plan(ablation.PooledHead()).sub_batch == 1
  # Below one chunk's pairs (t = 6 here) the budget term binds: 3 rows of 4 (D1 + D2) x 8 bytes.
  assert _plan(fc, budget_bytes=4 * 15 * 8 * 3).sub_batch == 3
  assert _plan(fc, budget_bytes=4 * 15 * 8 * 3 - 1).sub_batch == 2
  assert _plan(fc, budget_bytes=4 * 15 * 4 * 3, precision="float32").sub_batch == 3
  assert _plan(fc, budget_bytes=1).sub_batch == 1   # never below one row
  # generic with a pooled or fc head: the reference from that head.
  assert _plan(ablation.PooledHead(), path="generic").generic_kind == "pooled"
  assert _plan(fc, path="generic").generic_kind == "fc"
  user = ablation.GenericHead(embed=_user_embed)
  assert _plan(user).generic_kind == "user" and _plan(user).generic_embed is _user_embed
  assert _plan(fc).generic_embed is None and _plan(fc).generic_kind == "user"
  # pooled_rank_one / pooled_spearman: the update path that fits the similarity.
  for forced in ("pooled_rank_one", "pooled_spearman"):
    assert _plan(ablation.PooledHead(), path=forced, similarity="cosine").path == "pooled_rank_one"
    assert _plan(ablation.PooledHead(), path=forced, similarity="spearman").path == "pooled_spearman"
  assert _plan(ablation.PooledHead(), float64=False).float64 is False
  assert _plan(ablation.PooledHead(), precision="fast").head_precision == jax.lax.Precision.DEFAULT
  # Row blocks: float64, Pearson agreement, pooled rank-one, n > 8, one map over the budget.
  head = ablation.PooledHead()
  n10 = (10, 4, 4, 5)
  assert _plan(head, n10, 2 * 8 * 100 * 8).row_block == 0
  assert _plan(head, n10, 2 * 8 * 100 * 8 - 1).row_block == 5
  assert _plan(head, n10, 100, comparison="spearman").row_block == 0
  assert _plan(head, n10, 100, float64=False).row_block == 0
  assert _plan(head, n10, 100, similarity="spearman").row_block == 0
  b = _plan(head, (40, 4, 4, 5), 2 * 12 * 40 * 8 * 13)   # 13 rows fit -> 4 blocks of 10
  assert (b.row_block, b.image_pad, b.chunk) == (10, 40, 1)
  b = _plan(head, (40, 4, 4, 5), 2 * 12 * 40 * 8 * 14 + 2 * 12 * 40 * 8 - 1)   # 14 -> 3 x 14
  assert (b.row_block, b.image_pad) == (14, 42)
  b = _plan(head, (40, 4, 4, 5), 2 * 12 * 40 * 8 * 50)   # n rows at most
  assert b.row_block == 0
  b = _plan(head, (40, 4, 4, 5), 2 * 8 * 1600 * 8 - 1)   # just below one map: 26 rows -> 2 x 20
  assert (b.row_block, b.image_pad, b.chunk) == (20, 40, 1)
  assert _plan(head, (9, 4, 4, 5), 1).row_block == 5    # at least 8 rows -> 2 blocks of 5


def test_plan_refuses_other_heads():
  with pytest.raises(TypeError, match="^head must be PooledHead, FcHead or GenericHead "
                     r"\(spec.get_ablation_head\(variables\)\), got str$"):
    _plan("vgg")


def test_wrappers_pass_every_option():
  maps, h = _case(17)
  head = ablation.PooledHead()
  for fn in (ais.per_image_ais, ais.cohort_ais):
    with pytest.raises(ValueError, match="^similarity='x'"):
      fn(head, maps, h, similarity="x")
    with pytest.raises(ValueError, match="^comparison='x'"):
      fn(head, maps, h, comparison="x")
    with pytest.raises(ValueError, match="^precision='x'"):
      fn(head, maps, h, precision="x")
    with pytest.raises(TypeError):
      fn(head, maps, h, memory_budget_gb=None)
    with pytest.raises(AttributeError):
      fn(head, maps, h, mesh="x")
  with pytest.raises(ValueError, match="^cohort_score='x'"):
    ais.cohort_ais(head, maps, h, score="x")


def test_one_device_mesh():
  """The shard_map code path on a 1 x 1 mesh (the only mesh one CPU device allows). Jitted:
  shard_map op by op takes 11 s here, compiled about 1 s."""
  maps, h = _case(18)
  head = ablation.PooledHead()
  mesh = jax.make_mesh((1, 1), ("images", "maps"))
  res = ais.compute_ais(head, maps, h, mesh=mesh, similarity="cosine")
  assert res.options["mesh"] == {"images": 1, "maps": 1}
  _check(res, reference(_np_pooled, maps, h, "cosine"), what="mesh")
  _raises(ValueError, "mesh axes ('images', 'data') are not 'images' and/or 'maps': name the axis "
          "that splits the images 'images' and the one that splits the maps 'maps' "
          "(ais_jax.distributed.global_mesh builds such a mesh)",
          lambda: ais.compute_ais(head, maps, h, mesh=jax.make_mesh((1, 1), ("images", "data"))))


def test_row_blocks_tiny_human_scale():
  """Constancy is relative to the largest value (DESIGN.md): a human matrix of order 1e-13 is
  not constant, blocked or not (Pearson agreement is scale-free: the loop's AIS are unchanged).
  Jitted: lax.scan's carry structure is checked (under disable_jit it is not)."""
  maps, h = _case(19, n=9)
  head = ablation.PooledHead()
  res = ais.compute_ais(head, maps, h * 1e-13, memory_budget_gb=1e-7)
  assert res.options["row_block"] == 5
  _check(res, reference(_np_pooled, maps, h), tol=1e-9, what="blocked, human x 1e-13")


def test_wrapper_defaults():
  maps, h = _case(21)
  head = ablation.PooledHead()
  with jax.disable_jit():
    ref = reference(_np_pooled, maps, h)
    pi = ais.per_image_ais(head, maps, h)
    co = ais.cohort_ais(head, maps, h)
  assert np.nanmax(np.abs(pi - ref[0])) <= TOL and np.max(np.abs(co - ref[1])) <= TOL


def test_row_blocks_constant_model_similarities():
  """Two active maps (K = 3, map 2 off everywhere): removing one from every image leaves pooled
  vectors [a, 0, 0] whose Pearson similarities are all 1 (within rounding): cohort AIS NaN."""
  maps, h = _case(20, n=9, k=3)
  head = ablation.PooledHead()
  with jax.disable_jit():
    res = ais.compute_ais(head, maps, h, memory_budget_gb=1e-7)
  assert res.options["row_block"] == 5
  ref = reference(_np_pooled, maps, h)
  assert np.isnan(ref[1][:2]).all() and ref[1][2] == 0
  _check_undefined(res, ref)


def _pooled_maps(pooled, hw=4):
  """float32 maps ``[n, hw, hw, K]`` constant over space, whose mean pool is exactly ``pooled``."""
  pooled = np.asarray(pooled, np.float32)
  return np.broadcast_to(pooled[:, None, None, :], (len(pooled), hw, hw, pooled.shape[1])).copy()


def _human(seed, n):
  h = np.random.default_rng(seed).standard_normal((n, n))
  h = (h + h.T) / 2
  np.fill_diagonal(h, 1.0)
  return h


def _constancy_ratio(values):
  """RMS deviation over (1e-12 x the largest |value|): <= 1 is constant (DESIGN.md)."""
  values = np.asarray(values, np.float64)
  return np.sqrt(np.mean((values - values.mean()) ** 2)) / (1e-12 * np.max(np.abs(values)))


def _cohort_cosines(pooled, drop):
  p = np.asarray(pooled, np.float32).astype(np.float64)
  p[:, drop] = 0
  n = len(p)
  return [_sim(p[i], p[j], "cosine") for i in range(n) for j in range(i + 1, n)]


def test_row_blocks_nearly_constant_cohort_similarities():
  """The blocked cohort constancy test is an RMS (divided by the pair count) against 1e-12 times
  the largest |similarity|, as in DESIGN.md, on both sides of the threshold.

  Near 1: removing map 0 from every image leaves 2-d vectors at angles 0.3 + 1.4e-6 t: cosines
  1 - O(1e-12), RMS about 0.2 of the threshold -> constant, cohort AIS NaN (36x the RMS would
  not be). Near 0.01: nine vectors with pairwise cosines c = 0.01 plus a shared tiny component
  w_i ~ 1e-6: deviations ~ 1e-12, far above 1e-12 x 0.01 -> defined (1e-12 / 0.01 would call it
  constant)."""
  n = 9
  rng = np.random.default_rng(23)
  theta = 0.3 + 1.4e-6 * rng.uniform(size=n)
  near_one = np.stack([rng.uniform(0.5, 1.5, n), np.cos(theta), np.sin(theta)], axis=1)
  ratio = _constancy_ratio(_cohort_cosines(near_one, drop=0))
  assert 2 / 36 < ratio < 0.5, ratio            # the case sits where the two RMS forms disagree
  maps, h = _pooled_maps(near_one), _human(24, n)
  head = ablation.PooledHead()
  with jax.disable_jit():
    res = ais.compute_ais(head, maps, h, similarity="cosine", memory_budget_gb=1e-7)
  assert res.options["row_block"] == 5
  _check(res, reference(_np_pooled, maps, h, "cosine"), what="blocked, cosines near 1")
  assert np.isnan(res.cohort[0]) and np.isfinite(res.cohort[1:]).all()

  c = 0.01
  near_c = np.zeros((n, n + 3))
  near_c[:, 0] = rng.uniform(0.5, 1.5, n)                  # map 0: the one removed
  near_c[:, 1:n + 1] = np.sqrt(1 - c) * np.eye(n)          # one map per image
  near_c[:, n + 1] = np.sqrt(c)                            # shared: pairwise cosines c
  near_c[:, n + 2] = 1e-6 * rng.uniform(1, 2, n)           # shared, tiny: deviations ~ 1e-12
  ratio = _constancy_ratio(_cohort_cosines(near_c, drop=0))
  assert 10 < ratio < 0.5 / c**2, ratio         # above 1e-12 x 0.01, below 1e-12 / 0.01
  maps = _pooled_maps(near_c)
  with jax.disable_jit():
    res = ais.compute_ais(head, maps, h, similarity="cosine", memory_budget_gb=1e-7)
  assert res.options["row_block"] == 5
  per_image, cohort, base_rows, base, _ = reference(_np_pooled, maps, h, "cosine")
  np.testing.assert_array_equal(np.isnan(res.cohort), np.isnan(cohort))
  assert np.isfinite(res.cohort).all()
  # Cosines of 1e-12 deviations carry float64 rounding of 1e-18 / 1e-12: compare loosely.
  np.testing.assert_allclose(res.cohort, cohort, atol=1e-4)
  np.testing.assert_allclose(res.baseline_rows, base_rows, atol=1e-10)


def _tied_embed(maps, keep):
  """A GenericHead whose embedding of an image without map 0 is constant, [p1, p1, p1], while the
  full embedding [p0 + p1, p1, p1] is not."""
  if keep is not None:
    maps = maps[None] * keep[:, None, None, None, :]
  p = jnp.mean(maps, axis=(-3, -2))
  return jnp.stack([p[..., 0] + p[..., 1], p[..., 1], p[..., 1]], axis=-1)


def _np_tied(maps):
  p = maps.mean(axis=(-3, -2))
  return np.stack([p[..., 0] + p[..., 1], p[..., 1], p[..., 1]], axis=-1)


@pytest.mark.parametrize("float64", [True, False])
def test_cosine_of_constant_embedding_is_defined(monkeypatch, float64):
  """Cosine similarity is undefined only for an all-zero embedding: a constant non-zero one
  (an image's embedding without map 0) has ordinary cosines (Pearson would be undefined)."""
  if not float64:
    monkeypatch.setenv(precision.FLOAT64_ENV, "0")
  rng = np.random.default_rng(25)
  pooled = rng.uniform(0.2, 1.0, (7, 2))
  pooled[3, 0] = 0.0           # image 3's full embedding is constant too: [p1, p1, p1]
  maps = _pooled_maps(pooled)
  h = _human(26, 7)
  head = ablation.GenericHead(embed=_tied_embed)
  with jax.disable_jit():
    res = ais.compute_ais(head, maps, h, similarity="cosine", path="generic")
  assert res.options["float64"] is float64
  # float32 embeddings of nearly parallel vectors (cosines near 1): 3e-6 here.
  ref = reference(_np_tied, maps, h, "cosine")
  _check(res, ref, tol=1e-10 if float64 else 1e-5, what=f"constant ablated embedding, {float64=}")
  defined = np.ones(res.per_image.shape, bool)
  defined[3, 1] = False        # image 3 without map 1 is all zero
  assert np.isfinite(res.per_image[defined]).all() and np.isnan(res.per_image[3, 1])
  # Removing map 0 (or 1) from every image leaves every embedding parallel: all cosines 1.
  assert np.isnan(ref[1]).all()


@pytest.mark.parametrize("float64", [True, False])
def test_spearman_similarity_with_negative_tied_and_unit_values(monkeypatch, float64):
  """Pooled Spearman similarity (rank updates without a sort) on embeddings that ReLU maps never
  give: negative values, ties across signs, exact zeros, and a row of ones but one value (removing
  that value leaves [1, 1, 1, 0], not constant)."""
  if not float64:
    monkeypatch.setenv(precision.FLOAT64_ENV, "0")
  rng = np.random.default_rng(27)
  pooled = rng.standard_normal((7, 5))
  pooled[1] = [1.0, 1.0, 1.0, -0.25, 1.0]
  pooled[2] = [0.5, -0.5, 0.5, 0.0, -0.5]
  pooled[3] = [-1.5, -0.75, 0.0, -0.75, -2.0]
  pooled[4, 2] = 0.0
  maps = _pooled_maps(pooled)
  h = _human(28, 7)
  head = ablation.PooledHead()
  # Pearson agreement only: Spearman similarities of 5-d ranks tie often, and a Spearman
  # agreement would rank the ties by their last-bit rounding (in the loop as in the engine).
  with jax.disable_jit():
    res = ais.compute_ais(head, maps, h, similarity="spearman")
  assert res.options["path"] == "pooled_spearman" and res.options["float64"] is float64
  _check(res, reference(_np_pooled, maps, h, "spearman"), tol=1e-10 if float64 else 2e-6,
         what=f"spearman similarity, signed values, {float64=}")
  assert np.isfinite(res.per_image[1]).all()


def test_spearman_removal_terms_exact_for_wide_embeddings():
  """The rank-update products run in float32 only while 2 D^2 < 2^24 (exact there); at D = 8000
  they must run in float64, and p, q, |rho^(k)|^2 equal the float64 loop exactly (half-integer
  ranks: every sum is exact in float64). Float32 products are off by 0.25 here."""
  d = 8000
  rng = np.random.default_rng(29)
  e = np.abs(rng.standard_normal((3, d)))
  e[:, 0] = 100.0          # removing the largest value shifts the rank of every other entry
  e[1, 7] = 0.0
  ks = np.array([0, 7, 11])
  rho = scipy.stats.rankdata(e, axis=1) - (d + 1) / 2
  with precision.float64_scope():
    base = ais._spearman_base(jnp.asarray(e))
    p, q, norm, bad = (np.asarray(a) for a in ais.spearman_removal_terms(
        base, jnp.asarray(ks), jnp.ones(len(ks), bool)))
  for c, k in enumerate(ks):
    ablated = e.copy()
    ablated[:, k] = 0
    change = scipy.stats.rankdata(ablated, axis=1) - (d + 1) / 2 - rho
    np.testing.assert_array_equal(p[c], change @ rho.T, err_msg=f"p, k = {k}")
    np.testing.assert_array_equal(q[c], change @ change.T, err_msg=f"q, k = {k}")
    np.testing.assert_array_equal(norm[c], np.sum((rho + change) ** 2, axis=1), err_msg=f"k = {k}")
  assert not bad.any()


@pytest.mark.parametrize("sim", ["pearson", "cosine", "spearman"])
def test_float64_free_sparse_images(monkeypatch, sim):
  """Images with one and two non-zero pooled values, one of ones, and no all-zero image (the
  cohort stays defined): removing an image's only map empties it (its row and the cohort AIS of
  that map are NaN); removing one of two leaves one value (defined); removing a map an image
  lacks changes nothing there."""
  monkeypatch.setenv(precision.FLOAT64_ENV, "0")
  maps, h = _case(30, n=7)
  maps[5, ..., 1:] = 0                  # image 5: map 0 only
  maps[3, ..., 1] = maps[3, ..., 3:] = 0  # image 3: maps 0 and 2
  maps[3, 0, 0, 2] = maps[5, 0, 0, 0] = 0.75
  maps[6, ..., :4] = 1.0                # image 6: [1, 1, 1, 1, 0] (counting non-ones is wrong)
  with jax.disable_jit():
    res = ais.compute_ais(ablation.PooledHead(), maps, h, similarity=sim)
  assert res.options["float64"] is False
  ref = reference(_np_pooled, maps, h, sim)
  _check(res, ref, tol=2e-6, what=f"f32 sparse images {sim}")
  assert np.isnan(ref[1][0]) and np.isfinite(ref[1][1:]).all()
  assert np.isnan(ref[0][5, 0]) and np.isfinite(ref[0][3]).all()


def test_dot32_compensated_sums():
  """The float64-free path's float32 products sum with compensation: 2^16 positive terms within
  6e-8 relative of the float64 sums (an uncompensated float32 einsum is off by 1.8e-7 here);
  ``precision='fast'`` products are not compensated (a plain einsum)."""
  rng = np.random.default_rng(33)
  a = rng.uniform(0, 1, (3, 1 << 16)).astype(np.float32)
  b = rng.uniform(0, 1, (2, 1 << 16)).astype(np.float32)
  exact = a.astype(np.float64) @ b.T.astype(np.float64)
  got = np.asarray(ais._dot32("id,jd->ij", a, b))
  assert got.dtype == np.float32 and got.shape == (3, 2)
  assert np.max(np.abs(got - exact) / exact) <= 6e-8
  fast = np.asarray(ais._dot32("id,jd->ij", a, b, jax.lax.Precision.DEFAULT))
  np.testing.assert_array_equal(fast, np.asarray(jnp.einsum("id,jd->ij", a, b)))


def test_float64_free_fast_precision(monkeypatch):
  """``precision='fast'`` on the float64-free path (fc head): TF32/bf16-class products on
  accelerators, full float32 on this CPU; the AIS within 2e-3 of the float64 loop."""
  monkeypatch.setenv(precision.FLOAT64_ENV, "0")
  maps, h = _case(34)
  head = _fc_head()
  with jax.disable_jit():
    res = ais.compute_ais(head, maps, h, precision="fast")
  assert res.options["precision"] == "fast" and res.options["float64"] is False
  _check(res, reference(lambda m: _np_fc(head, m), maps, h), tol=2e-3, what="f32 fast")


@pytest.mark.parametrize("path", [None, "pooled_dense"])
def test_cosine_of_constant_pooled_embedding(path):
  """Pooled head, cosine: an image whose pooled values are all equal has ordinary cosines
  (undefined only when all zero), in the baseline and after a map is removed elsewhere."""
  rng = np.random.default_rng(35)
  pooled = rng.uniform(0.1, 1.0, (6, 4))
  pooled[2] = 0.5
  maps, h = _pooled_maps(pooled), _human(36, 6)
  with jax.disable_jit():
    res = ais.compute_ais(ablation.PooledHead(), maps, h, similarity="cosine", path=path)
  _check(res, reference(_np_pooled, maps, h, "cosine"), what=f"cosine, constant image, {path}")
  assert np.isfinite(res.baseline_rows).all() and np.isfinite(res.per_image).all()


def test_float64_free_takes_float64_maps(monkeypatch):
  """float64 maps on the float64-free path are cast to float32 first (the same AIS as float32
  maps of the same values)."""
  monkeypatch.setenv(precision.FLOAT64_ENV, "0")
  maps, h = _case(37, n=5)
  with jax.disable_jit():
    res = ais.compute_ais(ablation.PooledHead(), maps.astype(np.float64), h)
  assert res.options["float64"] is False
  _check(res, reference(_np_pooled, maps, h), tol=2e-6, what="f32 path, float64 maps")
