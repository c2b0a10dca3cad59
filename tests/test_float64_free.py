"""The float64-free AIS path (TPU; forced here with AIS_JAX_FLOAT64=0) against float64 references.

References: the float64 golden values (an independent NumPy float64 loop, shared/golden), the
engine's float64 path on the same float32 maps, and NumPy float64 for the compensated kernels.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ais_jax import ablation, ais, precision, rsa
from ais_jax.errors import UserInputError

OPTIONS = [("pearson", "pearson"), ("pearson", "spearman"), ("spearman", "pearson"),
           ("cosine", "pearson"), ("cosine", "spearman")]


@pytest.fixture
def no_float64(monkeypatch):
  monkeypatch.setenv(precision.FLOAT64_ENV, "0")


def _fc_head(golden):
  return ablation.FcHead(w1=golden["W1"].T, b1=golden["b1"], w2=golden["W2"].T, b2=golden["b2"],
                         pool_window=2)


def _both(monkeypatch, head, maps, human, **kwargs):
  monkeypatch.setenv(precision.FLOAT64_ENV, "1")
  ref = ais.compute_ais(head, maps, human, **kwargs)
  monkeypatch.setenv(precision.FLOAT64_ENV, "0")
  got = ais.compute_ais(head, maps, human, **kwargs)
  assert ref.options["float64"] is True and got.options["float64"] is False
  return ref, got


def _max_err(a, b):
  assert np.array_equal(np.isnan(a), np.isnan(b))
  return float(np.nanmax(np.abs(a - b))) if np.isfinite(a).any() else 0.0


def test_env_switch_and_precision_config(monkeypatch):
  monkeypatch.setenv(precision.FLOAT64_ENV, "0")
  assert not precision.float64_enabled()
  assert precision.similarity_dtype() == jnp.float32
  monkeypatch.delenv(precision.FLOAT64_ENV)
  assert precision.float64_enabled("cpu") and not precision.float64_enabled("tpu")
  assert precision.resolve("exact", float64=False).head_dtype == jnp.float32
  assert precision.resolve("exact").head_dtype == jnp.float64


@pytest.mark.parametrize("head_name,path,options", [
    ("fc", None, [("pearson", "pearson")]),
    ("fc", "generic", [("cosine", "spearman")]),
    ("gap", None, [("cosine", "pearson"), ("spearman", "pearson")]),
    ("gap", "pooled_dense", [("pearson", "spearman")])])
def test_golden_every_path(golden, no_float64, head_name, path, options):
  """Against the float64 NumPy golden values (AIS up to 1.0 there; maps rounded to float32)."""
  head = _fc_head(golden) if head_name == "fc" else ablation.PooledHead()
  for sim, cmp in options:
    res = ais.compute_ais(head, golden["F"], golden["H"], similarity=sim, comparison=cmp,
                          path=path)
    assert res.options["float64"] is False
    what = f"{head_name}/{res.options['path']}/{sim}/{cmp}"
    assert _max_err(res.per_image, golden[f"per_image_{head_name}_{sim}_{cmp}"]) <= 1e-6, what
    assert _max_err(res.cohort, golden[f"cohort_{head_name}_{sim}_{cmp}"]) <= 1e-6, what
  if path is None and head_name == "fc":
    r2 = ais.cohort_ais(head, golden["F"], golden["H"], score="r2")
    assert _max_err(r2, golden[f"cohort_r2_{head_name}"]) <= 1e-6


def _lite0_like_maps(n, k, seed=0):
  """Post-ReLU6 maps with about 90% zeros, as EfficientNet-Lite0's head maps."""
  rng = np.random.default_rng(seed)
  maps = np.clip(rng.gamma(0.6, 1.5, size=(n, 3, 3, k)), 0, 6).astype(np.float32)
  return maps * (rng.random((n, 3, 3, k)) < 0.1)


def test_pooled_head_on_the_92_human_matrix_within_1e7(k92, monkeypatch):
  maps = _lite0_like_maps(92, 96)
  ref, got = _both(monkeypatch, ablation.PooledHead(), maps, k92.similarity)
  assert np.nanmax(np.abs(ref.per_image)) > 1e-3  # effects of a realistic size
  assert _max_err(got.per_image, ref.per_image) <= 1e-7
  assert _max_err(got.cohort, ref.cohort) <= 1e-7
  assert _max_err(got.baseline_rows, ref.baseline_rows) <= 1e-6


def test_fc_head_within_1e6(monkeypatch):
  """VGG-type head (smaller widths), He-initialised random weights, 24 images."""
  rng = np.random.default_rng(1)
  k, d1, d2, n = 16, 128, 128, 16
  w1 = rng.standard_normal((k * 49, d1)).astype(np.float32) * np.float32(np.sqrt(2 / (k * 49)))
  w2 = rng.standard_normal((d1, d2)).astype(np.float32) * np.float32(np.sqrt(2 / d1))
  head = ablation.FcHead(w1=w1, b1=np.full(d1, 0.01, np.float32), w2=w2,
                         b2=np.full(d2, 0.01, np.float32), pool_window=2)
  maps = np.maximum(rng.standard_normal((n, 14, 14, k)), 0).astype(np.float32)
  maps *= rng.random((n, 1, 1, k)) > 0.4
  human = rng.standard_normal((n, n))
  human = human + human.T
  ref, got = _both(monkeypatch, head, maps, human)
  assert np.nanmax(np.abs(ref.per_image)) > 1e-3
  assert _max_err(got.per_image, ref.per_image) <= 1e-6
  assert _max_err(got.cohort, ref.cohort) <= 1e-6


def test_undefined_values_follow_the_float64_path(golden, monkeypatch):
  """A map inactive everywhere: AIS exactly 0; an all-zero image (undefined cosine row, so every
  row and the cohort agreement meet a NaN): the same NaN pattern as the float64 path."""
  inactive = np.array(golden["F"], np.float32)
  inactive[..., 2] = 0
  ref, got = _both(monkeypatch, ablation.PooledHead(), inactive, golden["H"])
  assert _max_err(got.per_image, ref.per_image) <= 1e-6
  assert np.all(got.per_image[:, 2] == 0) and got.cohort[2] == 0
  zero_image = np.array(golden["F"], np.float32)
  zero_image[3] = 0
  ref, got = _both(monkeypatch, ablation.PooledHead(), zero_image, golden["H"],
                   similarity="cosine")
  assert np.isnan(got.per_image[3]).all() and np.isnan(got.cohort).all()
  _max_err(got.per_image, ref.per_image)  # same NaN pattern
  assert got.undefined["undefined_baseline_rows"] == ref.undefined["undefined_baseline_rows"]


def _float64_results(jaxpr_text):
  """Primitives whose results are float64 (weak-typed scalar constants fed in are not)."""
  return set(re.findall(r"\w+:f64\[[^\]]*\] = (\w+)", jaxpr_text))


@pytest.mark.parametrize("head_name", ["fc", "gap"])
def test_kernel_computes_nothing_in_float64(golden, head_name):
  """Traced with x64 enabled, so any float64 intermediate would show in the jaxpr."""
  head = _fc_head(golden) if head_name == "fc" else ablation.PooledHead()
  maps = jnp.asarray(golden["F"], jnp.float32)
  for sim in ("pearson", "spearman", "cosine"):
    for path in (None, "generic"):
      plan = ais._plan(head, maps.shape, similarity=sim, comparison="spearman",
                       precision="exact", memory_budget_gb=1.0, mesh=None, path=path,
                       float64=False)
      with jax.enable_x64(True):
        text = str(jax.make_jaxpr(functools.partial(ais._kernel, plan))(
            head, maps, jnp.asarray(golden["H"], jnp.float32)))
      assert _float64_results(text) == set(), (head_name, plan.path, sim)


def test_compensated_einsum_against_float64():
  rng = np.random.default_rng(2)
  a = rng.standard_normal((8, 5000)).astype(np.float32) + 3
  b = rng.standard_normal((5000, 16)).astype(np.float32)
  want = a.astype(np.float64) @ b.astype(np.float64)
  scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
  got = np.asarray(jax.jit(functools.partial(precision.compensated_einsum, "nk,kd->nd"))(a, b))
  assert np.max(np.abs(got - want) / scale) <= 2e-7


def test_correlation_and_similarity_changes_against_float64():
  rng = np.random.default_rng(3)
  x = (0.9 + 0.01 * rng.standard_normal((6, 40))).astype(np.float32)
  dx = (1e-4 * rng.standard_normal((6, 40))).astype(np.float32)
  y = rng.standard_normal(40)
  mask = rng.random((6, 40)) > 0.2
  for kind in ("pearson", "spearman"):
    r, change = rsa.correlation_change(jnp.asarray(x), jnp.asarray(dx),
                                       jnp.asarray(y, jnp.float32), jnp.asarray(mask), kind=kind)
    with precision.float64_scope():
      x64, dx64 = np.float64(x), np.float64(dx)
      want_r = np.asarray(rsa.correlation(x64, y, mask, kind=kind))
      want = np.asarray(rsa.correlation(x64 + dx64, y, mask, kind=kind)) - want_r
    assert np.max(np.abs(np.asarray(r) - want_r)) <= 1e-5, kind
    assert np.max(np.abs(np.asarray(change) - want)) <= 1e-7 * max(1, np.abs(want).max()), kind
  dot, a, b = np.float32(0.5), np.float32(2.0), np.float32(3.0)
  ddot, da, db = np.float32(1e-5), np.float32(-2e-5), np.float32(3e-5)
  got = float(rsa.similarity_change(dot, ddot, a, da, b, db))
  d, dd, a64, da64, b64, db64 = (np.float64(v) for v in (dot, ddot, a, da, b, db))
  want = (d + dd) / np.sqrt((a64 + da64) * (b64 + db64)) - d / np.sqrt(a64 * b64)
  assert abs(got - want) <= 4e-7 * abs(want)  # a float32 difference of s' and s: 1e-2


@pytest.mark.parametrize("float64", ["1", "0"])
def test_nonfinite_maps_name_the_image_and_map(golden, monkeypatch, float64):
  monkeypatch.setenv(precision.FLOAT64_ENV, float64)
  maps = np.array(golden["F"], np.float32)
  maps[2, 1, 0, 5] = np.nan
  maps[7, 0, 0, 1] = np.inf
  with pytest.raises(UserInputError, match=r"\(image 2, map 5\), \(image 7, map 1\)"):
    ais.compute_ais(ablation.PooledHead(), maps, golden["H"])
  human = np.array(golden["H"])
  human[0, 1] = np.inf
  with pytest.raises(UserInputError, match="infinite"):
    ais.compute_ais(ablation.PooledHead(), golden["F"], human)
