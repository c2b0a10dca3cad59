"""The ablation heads and algebra (ais_jax.ablation) that mutation testing (experiments/mutation.sh
ablation) checks: every helper against float64 NumPy references written as explicit loops (max
pooling window by window with odd sizes, global averages summed by hand, the PyTorch (K, h', w')
flatten index by index, fc layers as sums of products), removing one map = zeroing that channel
before the head, every refusal's exact message and exception type (the window and row checks at
both sides), the computation dtype of every output and the matmul precision reaching every dot.

Every expected value is worked out from the small arrays below by the loops in this file, never
taken from the code's output.
"""

import dataclasses

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from ais_jax import ablation
from ais_jax.ablation import FcHead, GenericHead, PooledHead
from ais_jax.precision import float64_scope

TOL = 1e-12
HIGHEST = jax.lax.Precision.HIGHEST


def _maps(n, h, w, k, seed=0):
  """Maps with signed, distinct values (so every max and every window position matters)."""
  rng = np.random.default_rng(seed)
  return rng.permutation(n * h * w * k).reshape(n, h, w, k).astype(np.float64) / 7.0 - 3.0


# ------------------------------------------------------------------------- float64 references --
def _ref_max_pool(maps, window):
  n, h, w, k = maps.shape
  hp, wp = h // window, w // window
  out = np.empty((n, hp, wp, k))
  for b in range(n):
    for i in range(hp):
      for j in range(wp):
        for c in range(k):
          best = -np.inf
          for di in range(window):
            for dj in range(window):
              best = max(best, maps[b, i * window + di, j * window + dj, c])
          out[b, i, j, c] = best
  return out


def _ref_mean(maps):
  n, h, w, k = maps.shape
  out = np.zeros((n, k))
  for b in range(n):
    for c in range(k):
      total = 0.0
      for i in range(h):
        for j in range(w):
          total += maps[b, i, j, c]
      out[b, c] = total / (h * w)
  return out


def _ref_flat(maps, window):
  """PyTorch's NCHW flatten of the pooled maps: entry c * S + i * w' + j = P[i, j, c]."""
  pooled = _ref_max_pool(maps, window)
  n, hp, wp, k = pooled.shape
  flat = np.empty((n, k * hp * wp))
  for b in range(n):
    for c in range(k):
      for i in range(hp):
        for j in range(wp):
          flat[b, c * hp * wp + i * wp + j] = pooled[b, i, j, c]
  return flat


def _ref_dense(x, w, b):
  out = np.empty((x.shape[0], w.shape[1]))
  for r in range(x.shape[0]):
    for col in range(w.shape[1]):
      out[r, col] = sum(x[r, t] * w[t, col] for t in range(w.shape[0])) + b[col]
  return out


def _relu(x):
  return np.where(x > 0, x, 0.0)


def _ref_head(head_np, maps):
  """(fc6 pre-activation, embedding) of a float64 numpy head."""
  w1, b1, w2, b2, window = head_np
  a = _ref_dense(_ref_flat(maps, window), w1, b1)
  return a, _relu(_ref_dense(_relu(a), w2, b2))


def _head_np(k=3, s=6, d1=5, d2=4, window=2, seed=1):
  rng = np.random.default_rng(seed)
  w1 = rng.normal(size=(k * s, d1))
  b1 = rng.normal(size=d1)
  w2 = rng.normal(size=(d1, d2))
  b2 = rng.normal(size=d2)
  return w1, b1, w2, b2, window


def _fc(head_np, dtype=None):
  w1, b1, w2, b2, window = head_np
  cast = (lambda x: x) if dtype is None else (lambda x: np.asarray(x, dtype))
  return FcHead(w1=cast(w1), b1=cast(b1), w2=cast(w2), b2=cast(b2), pool_window=window)


# 2 images of 5 x 7 with 3 maps, window 2: 2 x 3 after the pool (row 4 and column 6 dropped),
# S = 6, w1 [18, 5], w2 [5, 4].
MAPS = _maps(2, 5, 7, 3)
HEAD = _head_np()


def _refusal(fn, *args, **kwargs) -> str:
  with pytest.raises(ValueError) as info:
    fn(*args, **kwargs)
  assert type(info.value) is ValueError
  return str(info.value)


def _dot_precisions(closed):
  """The precision of every dot_general in a jaxpr, nested jaxprs (einsum's jit) included."""
  found = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "dot_general":
        found.append(eqn.params["precision"])
      for v in eqn.params.values():
        for sub in (v if isinstance(v, (tuple, list)) else (v,)):
          if isinstance(sub, jax.extend.core.ClosedJaxpr):
            walk(sub.jaxpr)
          elif isinstance(sub, jax.extend.core.Jaxpr):
            walk(sub)

  walk(closed.jaxpr)
  return found


# ---------------------------------------------------------------------------------- the heads --
def test_fc_head_pool_window_defaults_to_2_and_is_static():
  w1, b1, w2, b2, _ = HEAD
  head = FcHead(w1=w1, b1=b1, w2=w2, b2=b2)
  assert head.pool_window == 2
  leaves = jax.tree.leaves(head)
  assert len(leaves) == 4  # w1, b1, w2, b2; the window is static (part of the tree structure)
  assert [x.shape for x in leaves] == [(18, 5), (5,), (5, 4), (4,)]
  assert FcHead(w1=w1, b1=b1, w2=w2, b2=b2, pool_window=3).pool_window == 3
  # jit over the head: the window stays a Python int (max_pool needs it static)
  with float64_scope():
    got = jax.jit(ablation.fc_embeddings)(_fc(HEAD), MAPS)
  np.testing.assert_allclose(np.asarray(got), _ref_head(HEAD, MAPS)[1], rtol=0, atol=TOL)


def test_pooled_and_generic_heads():
  assert jax.tree.leaves(PooledHead()) == []
  calls = []

  def embed(maps, keep=None):
    calls.append(keep)
    return maps.sum(axis=(1, 2))

  head = GenericHead(embed)
  assert head.embed is embed
  assert head == GenericHead(embed=embed) and hash(head) == hash(GenericHead(embed))
  with pytest.raises(dataclasses.FrozenInstanceError):
    head.embed = None
  np.testing.assert_array_equal(head.embed(np.ones((1, 2, 3, 4))), np.full((1, 4), 6.0))
  assert calls == [None]


# ------------------------------------------------------------------------- pooled_embeddings --
def test_pooled_embeddings_is_the_mean_of_each_map():
  with float64_scope():
    got = ablation.pooled_embeddings(MAPS)
    assert got.dtype == jnp.float64 and got.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(got), _ref_mean(MAPS), rtol=0, atol=TOL)
    # nested lists are taken (converted to an array first)
    np.testing.assert_allclose(np.asarray(ablation.pooled_embeddings(MAPS.tolist())),
                               _ref_mean(MAPS), rtol=0, atol=TOL)
  # one image of 1 x 1 with 2 maps: the mean is the value itself
  np.testing.assert_array_equal(np.asarray(ablation.pooled_embeddings([[[[2.0, -5.0]]]])),
                                [[2.0, -5.0]])


def test_pooled_embeddings_removing_a_map_zeroes_its_coordinate():
  for k in range(3):
    zeroed = MAPS.copy()
    zeroed[..., k] = 0
    with float64_scope():
      got = np.asarray(ablation.pooled_embeddings(zeroed))
    want = _ref_mean(MAPS)
    want[:, k] = 0
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_pooled_embeddings_refuses_other_ranks():
  assert (_refusal(ablation.pooled_embeddings, np.zeros((2, 3, 4)))
          == "maps must be [n, h, w, K], got shape (2, 3, 4)")
  assert (_refusal(ablation.pooled_embeddings, np.zeros((1, 2, 3, 4, 5)))
          == "maps must be [n, h, w, K], got shape (1, 2, 3, 4, 5)")


# -------------------------------------------------------------------------------- max_pool --
@pytest.mark.parametrize("shape,window", [((2, 5, 7, 3), 2), ((1, 7, 10, 2), 3),
                                          ((1, 6, 4, 2), 2), ((2, 3, 2, 2), 1),
                                          ((1, 4, 9, 1), 4)])
def test_max_pool_against_a_loop(shape, window):
  maps = _maps(*shape, seed=sum(shape) + window)
  # the dropped trailing rows/columns hold the largest values: including them would show
  maps[:, (shape[1] // window) * window:, :, :] += 1000.0
  maps[:, :, (shape[2] // window) * window:, :] += 1000.0
  want = _ref_max_pool(maps, window)
  got = ablation.max_pool(maps, window)
  assert got.shape == want.shape == (shape[0], shape[1] // window, shape[2] // window, shape[3])
  np.testing.assert_array_equal(np.asarray(got), want)
  got = ablation.max_pool(jnp.asarray(maps, jnp.float32), window)
  assert got.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(got), want.astype(np.float32))


def test_max_pool_window_at_both_sides():
  # just fits: one window each way (the largest entry is the last one)
  fits2 = ablation.max_pool(np.arange(8.0).reshape(1, 2, 2, 2), 2)
  np.testing.assert_array_equal(np.asarray(fits2), [[[[6.0, 7.0]]]])
  fits3 = ablation.max_pool(np.arange(18.0).reshape(1, 3, 3, 2), 3)
  np.testing.assert_array_equal(np.asarray(fits3), [[[[16.0, 17.0]]]])
  # one row or one column short
  assert (_refusal(ablation.max_pool, np.zeros((1, 1, 4, 2)), 2)
          == "maps of 1x4 are smaller than the pool window 2")
  assert (_refusal(ablation.max_pool, np.zeros((1, 4, 1, 2)), 2)
          == "maps of 4x1 are smaller than the pool window 2")
  assert (_refusal(ablation.max_pool, np.zeros((2, 2, 3, 1)), 3)
          == "maps of 2x3 are smaller than the pool window 3")
  assert (_refusal(ablation.max_pool, np.zeros((2, 3, 2, 1)), 3)
          == "maps of 3x2 are smaller than the pool window 3")


# ---------------------------------------------------------------------------- fc_pooled_maps --
def test_fc_pooled_maps_in_pytorch_flatten_order():
  with float64_scope():
    got = ablation.fc_pooled_maps(_fc(HEAD), MAPS)
  assert got.shape == (2, 3, 6) and got.dtype == jnp.float64
  np.testing.assert_array_equal(np.asarray(got).reshape(2, 18), _ref_flat(MAPS, 2))
  # window 3 on 7 x 10: 2 x 3 again, the rows must be read from the 3-windows
  maps3 = _maps(2, 7, 10, 3, seed=5)
  head3 = _fc(_head_np(window=3))
  with float64_scope():
    got = ablation.fc_pooled_maps(head3, maps3.tolist())  # nested lists are taken
  np.testing.assert_array_equal(np.asarray(got).reshape(2, 18), _ref_flat(maps3, 3))


def test_fc_pooled_maps_dtype():
  ints = (np.arange(2 * 5 * 7 * 3).reshape(2, 5, 7, 3) % 11).astype(np.int32)
  got = ablation.fc_pooled_maps(_fc(HEAD), ints)               # no dtype: the maps' own
  assert got.dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(got).reshape(2, 18), _ref_flat(ints.astype(float), 2))
  with float64_scope():
    assert ablation.fc_pooled_maps(_fc(HEAD), MAPS.astype(np.float32), dtype=jnp.float64).dtype \
        == jnp.float64
    got = ablation.fc_pooled_maps(_fc(HEAD), MAPS, dtype=jnp.float32)
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got).reshape(2, 18),
                                  _ref_flat(MAPS, 2).astype(np.float32))


def test_fc_pooled_maps_refusals():
  head = _fc(HEAD)
  assert (_refusal(ablation.fc_pooled_maps, head, np.zeros((5, 7, 3)))
          == "maps must be [n, h, w, K], got shape (5, 7, 3)")
  assert (_refusal(ablation.fc_pooled_maps, head, np.zeros((1, 2, 5, 7, 3)))
          == "maps must be [n, h, w, K], got shape (1, 2, 5, 7, 3)")
  # 4 maps instead of 3: 4 * 2 * 3 = 24 rows needed, w1 has 18
  assert _refusal(ablation.fc_pooled_maps, head, np.zeros((1, 5, 7, 4))) == (
      "FcHead.w1 has 18 rows but the maps give K * h' * w' = 4 * 2 * 3 = 24 after the 2x2 "
      "max-pool; check the maps' size (VGG16: 14x14 at 224 px) and that the maps are [n, h, w, K]")
  # one pooled row fewer (4 x 7 -> 2 x 3 is fine, 3 x 7 -> 1 x 3 is not)
  assert ablation.fc_pooled_maps(head, np.zeros((1, 4, 7, 3))).shape == (1, 3, 6)
  assert _refusal(ablation.fc_pooled_maps, head, np.zeros((1, 3, 7, 3))) == (
      "FcHead.w1 has 18 rows but the maps give K * h' * w' = 3 * 1 * 3 = 9 after the 2x2 "
      "max-pool; check the maps' size (VGG16: 14x14 at 224 px) and that the maps are [n, h, w, K]")
  head3 = _fc(_head_np(window=3, s=4))  # 12 rows: 3 maps of 2 x 2 after a 3x3 pool
  assert ablation.fc_pooled_maps(head3, np.zeros((1, 6, 8, 3))).shape == (1, 3, 4)
  assert _refusal(ablation.fc_pooled_maps, head3, np.zeros((1, 6, 9, 3))) == (
      "FcHead.w1 has 12 rows but the maps give K * h' * w' = 3 * 2 * 3 = 18 after the 3x3 "
      "max-pool; check the maps' size (VGG16: 14x14 at 224 px) and that the maps are [n, h, w, K]")
  # too small for the window: max_pool's refusal
  assert _refusal(ablation.fc_pooled_maps, head3, np.zeros((1, 2, 9, 3))) == (
      "maps of 2x9 are smaller than the pool window 3")


# -------------------------------------------------------------- fc6: baseline and contributions --
def test_fc_pre_activation_against_a_loop():
  with float64_scope():
    head = _fc(HEAD)
    pooled = ablation.fc_pooled_maps(head, MAPS)
    got = ablation.fc_pre_activation(head, pooled, dtype=jnp.float64)
  assert got.dtype == jnp.float64 and got.shape == (2, 5)
  np.testing.assert_allclose(np.asarray(got), _ref_head(HEAD, MAPS)[0], rtol=0, atol=TOL)


def test_fc_contributions_against_a_loop_and_zeroed_maps():
  with float64_scope():
    a, d = ablation.fc_contributions(_fc(HEAD), MAPS)  # default dtype: float64
  assert a.dtype == d.dtype == jnp.float64
  assert a.shape == (2, 5) and d.shape == (2, 3, 5)
  a, d = np.asarray(a), np.asarray(d)
  flat = _ref_flat(MAPS, 2)
  w1, b1 = HEAD[0], HEAD[1]
  for b in range(2):
    for k in range(3):
      for col in range(5):
        want = sum(flat[b, t] * w1[t, col] for t in range(k * 6, k * 6 + 6))
        assert abs(d[b, k, col] - want) <= TOL
  want_a = _ref_head(HEAD, MAPS)[0]
  np.testing.assert_allclose(a, want_a, rtol=0, atol=TOL)
  np.testing.assert_allclose(a, d.sum(axis=1) + b1, rtol=0, atol=TOL)
  # removing map k: a - d[:, k] is the pre-activation of the maps with channel k zeroed
  for k in range(3):
    zeroed = MAPS.copy()
    zeroed[..., k] = 0
    np.testing.assert_allclose(a - d[:, k], _ref_head(HEAD, zeroed)[0], rtol=0, atol=TOL)


def test_fc_map_contributions_in_the_order_asked():
  idx = jnp.array([2, 0, 2, 1])
  with float64_scope():
    head = _fc(HEAD)
    pooled = ablation.fc_pooled_maps(head, MAPS)
    a = np.asarray(ablation.fc_pre_activation(head, pooled, dtype=jnp.float64))
    d = ablation.fc_map_contributions(head, pooled, idx, dtype=jnp.float64)
  assert d.dtype == jnp.float64 and d.shape == (4, 2, 5)
  d = np.asarray(d)
  for j, k in enumerate([2, 0, 2, 1]):
    zeroed = MAPS.copy()
    zeroed[..., k] = 0
    np.testing.assert_allclose(a - d[j], _ref_head(HEAD, zeroed)[0], rtol=0, atol=TOL)
  # one map, a single contribution by hand
  flat = _ref_flat(MAPS, 2)
  want = sum(flat[1, 6 + s] * HEAD[0][6 + s, 3] for s in range(6))
  assert abs(d[3, 1, 3] - want) <= TOL


# -------------------------------------------------------------------------- the rest of the head --
def test_fc_embed_both_relus():
  w2 = np.array([[1.0, -2.0, 0.5], [3.0, 1.0, -1.0]])
  b2 = np.array([0.25, -0.5, 1.0])
  head = FcHead(w1=np.zeros((2, 2)), b1=np.zeros(2), w2=w2, b2=b2)
  pre = np.array([[2.0, -1.0], [-3.0, 0.5], [1.0, 1.0]])
  # by hand: relu(pre) = [[2, 0], [0, .5], [1, 1]]
  #   @ w2 + b2 = [[2.25, -4.5, 2], [1.75, 0, .5], [4.25, -1.5, .5]]; relu of that
  want = [[2.25, 0.0, 2.0], [1.75, 0.0, 0.5], [4.25, 0.0, 0.5]]
  with float64_scope():
    got = ablation.fc_embed(head, pre)  # default dtype: float64
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=TOL)
    # any leading axes
    got = ablation.fc_embed(head, np.stack([pre, -pre]), dtype=jnp.float64)
  assert got.shape == (2, 3, 3)
  np.testing.assert_allclose(np.asarray(got[0]), want, rtol=0, atol=TOL)
  np.testing.assert_allclose(np.asarray(got[1]), _relu(_ref_dense(_relu(-pre), w2, b2)), rtol=0,
                             atol=TOL)


def test_fc_embeddings_and_ablated_embeddings():
  with float64_scope():
    head = _fc(HEAD)
    got = ablation.fc_embeddings(head, MAPS)  # default dtype: float64
    assert got.dtype == jnp.float64 and got.shape == (2, 4)
    a, d = ablation.fc_contributions(head, MAPS, dtype=jnp.float64)
    removed = np.asarray(ablation.fc_embed(head, a[:, None, :] - d, dtype=jnp.float64))
  pre, emb = _ref_head(HEAD, MAPS)
  assert (pre < 0).any() and (pre > 0).any() and (emb == 0).any() and (emb > 0).any()
  np.testing.assert_allclose(np.asarray(got), emb, rtol=0, atol=TOL)
  for k in range(3):
    zeroed = MAPS.copy()
    zeroed[..., k] = 0
    np.testing.assert_allclose(removed[:, k], _ref_head(HEAD, zeroed)[1], rtol=0, atol=TOL)


# --------------------------------------------------------------------- dtypes and precision --
def test_every_output_in_the_requested_dtype():
  """float64 inputs with dtype float32 come out float32 (and float32 inputs with float64 come out
  float64): every input is cast, not only some."""
  idx = jnp.array([1, 2])
  for given, asked in ((np.float64, jnp.float32), (np.float32, jnp.float64)):
    with float64_scope():
      head = _fc(HEAD, given)
      maps = MAPS.astype(given)
      pooled = jnp.asarray(ablation.fc_pooled_maps(head, maps), given)
      assert pooled.dtype == given
      outs = {
          "fc_pooled_maps": ablation.fc_pooled_maps(head, maps, dtype=asked),
          "fc_pre_activation": ablation.fc_pre_activation(head, pooled, dtype=asked),
          "fc_map_contributions": ablation.fc_map_contributions(head, pooled, idx, dtype=asked),
          "fc_embed": ablation.fc_embed(head, jnp.asarray(HEAD[1], given), dtype=asked),
          "fc_embeddings": ablation.fc_embeddings(head, maps, dtype=asked),
      }
      a, d = ablation.fc_contributions(head, maps, dtype=asked)
      outs["fc_contributions a"], outs["fc_contributions d"] = a, d
    for name, out in outs.items():
      assert out.dtype == asked, (name, given, out.dtype)
  # float32 results match the float64 reference to float32 rounding
  with float64_scope():
    e32 = np.asarray(ablation.fc_embeddings(_fc(HEAD), MAPS, dtype=jnp.float32))
  np.testing.assert_allclose(e32, _ref_head(HEAD, MAPS)[1], rtol=1e-5, atol=1e-5)


def test_precision_reaches_every_matmul():
  idx = jnp.array([0, 2])
  head = _fc(HEAD, np.float32)
  maps = MAPS.astype(np.float32)
  pooled = ablation.fc_pooled_maps(head, maps)
  pre = jnp.zeros((2, 5), jnp.float32)
  calls = {
      "fc_pre_activation": (lambda p: ablation.fc_pre_activation(
          head, p, dtype=jnp.float32, precision=HIGHEST), pooled),
      "fc_map_contributions": (lambda p: ablation.fc_map_contributions(
          head, p, idx, dtype=jnp.float32, precision=HIGHEST), pooled),
      "fc_contributions": (lambda m: ablation.fc_contributions(
          head, m, dtype=jnp.float32, precision=HIGHEST), maps),
      "fc_embed": (lambda x: ablation.fc_embed(head, x, dtype=jnp.float32, precision=HIGHEST),
                   pre),
      "fc_embeddings": (lambda m: ablation.fc_embeddings(
          head, m, dtype=jnp.float32, precision=HIGHEST), maps),
  }
  expected_dots = {"fc_pre_activation": 1, "fc_map_contributions": 1, "fc_contributions": 1,
                   "fc_embed": 1, "fc_embeddings": 2}
  for name, (fn, x) in calls.items():
    precisions = _dot_precisions(jax.make_jaxpr(fn)(x))
    assert len(precisions) == expected_dots[name], (name, precisions)
    assert all(p == (HIGHEST, HIGHEST) for p in precisions), (name, precisions)
  # and none asked: the default (None) everywhere
  default = _dot_precisions(jax.make_jaxpr(
      lambda m: ablation.fc_embeddings(head, m, dtype=jnp.float32))(maps))
  assert default == [None, None]


def test_the_dtype_is_the_computation_dtype_of_fc6():
  """dtype float32 computes fc6 in float32 (weights included), not in the weights' float64: a
  weight of 1 + 2**-30 is 1 in float32, so 1 * w - 1 is 0 there and 2**-30 in float64, which
  w2 = 2**30 scales to an embedding of 0 against 1."""
  head = FcHead(w1=np.array([[1.0 + 2.0**-30]]), b1=np.array([-1.0]),
                w2=np.array([[2.0**30]]), b2=np.array([0.0]), pool_window=2)
  maps = np.ones((1, 2, 2, 1))
  with float64_scope():
    assert head.w1.dtype == np.float64
    e32 = ablation.fc_embeddings(head, maps, dtype=jnp.float32)
    e64 = ablation.fc_embeddings(head, maps, dtype=jnp.float64)
    a32, d32 = ablation.fc_contributions(head, maps, dtype=jnp.float32)
    pooled = ablation.fc_pooled_maps(head, maps, dtype=jnp.float32)
    p32 = ablation.fc_pre_activation(head, pooled, dtype=jnp.float32)
  assert e32.dtype == jnp.float32 and float(e32[0, 0]) == 0.0
  assert e64.dtype == jnp.float64 and float(e64[0, 0]) == 1.0
  assert float(a32[0, 0]) == 0.0 and float(d32[0, 0, 0]) == 1.0 and float(p32[0, 0]) == 0.0
