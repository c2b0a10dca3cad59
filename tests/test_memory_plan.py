"""Bounded memory (issue 15): the plan from the budget, and the streamed route giving the same AIS
as the maps held whole (the engine input reduced per batch, maps read back from a file)."""

import numpy as np
import pytest

from ais_jax import ablation, ais, pipeline


def test_plan_keeps_small_cohorts_and_streams_big_ones():
  gib = 2**30
  common = dict(map_shape=(7, 7, 1280), input_shape=(224, 224, 3), head=ablation.PooledHead(),
                batch_size=32, runtime_bytes=int(0.35 * gib))
  small = pipeline.plan_memory(n=92, memory_budget_gb=2.0, **common)
  assert small["keep_maps"] and small["trunk_batch"] == 32
  big = pipeline.plan_memory(n=2000, memory_budget_gb=1.0, **common)
  assert not big["keep_maps"]
  assert big["maps_gb"] == pytest.approx(2000 * 49 * 1280 * 4 / gib)
  assert big["engine_input_gb"] == pytest.approx(2000 * 1280 * 8 / gib)  # pooled float64 only
  free = (1.0 - 0.35) * gib
  assert 1 <= big["trunk_batch"] < 32
  assert big["trunk_batch"] * pipeline.TRUNK_BYTES_PER_INPUT_VALUE * 224 * 224 * 3 <= free / 4
  assert 0 < big["engine_budget_gb"] * gib < free
  # Pooled head, Pearson agreement: the engine splits one map's n x n matrices into row blocks,
  # so its floor is the Gram and human matrices, not 17 n x n intermediates.
  assert big["engine_row_blocks"]
  assert big["engine_one_map_gb"] == pytest.approx(4 * 2000**2 * 8 / gib)
  ranks = pipeline.plan_memory(n=2000, memory_budget_gb=1.0, comparison="spearman", **common)
  assert not ranks["engine_row_blocks"]
  assert ranks["engine_one_map_gb"] == pytest.approx(17 * 2000**2 * 8 / gib)
  # n = 3,000 at 1 GB: row blocks fit (0.27 GB floor), whole matrices do not (1.14 GB).
  n3000 = dict(common, n=3000, memory_budget_gb=1.0)
  assert pipeline.plan_memory(**n3000)["fits"]
  assert not pipeline.plan_memory(**n3000, comparison="spearman")["fits"]
  # A generic head cannot be reduced: its maps are kept whatever the budget.
  generic = pipeline.plan_memory(n=2000, memory_budget_gb=1.0,
                                 **dict(common, head=ablation.GenericHead(embed=None)))
  assert generic["keep_maps"]
  # Maps kept: the batch fits beside the maps and what compiling the trunk leaves (measured: n =
  # 500 at 1 GB kept a 23-image batch and peaked at 1.03 GB before this was counted).
  mid = pipeline.plan_memory(n=500, memory_budget_gb=1.0, **common)
  per_image = pipeline.TRUNK_BYTES_PER_INPUT_VALUE * 224 * 224 * 3
  assert mid["keep_maps"]
  left = free - 500 * 49 * 1280 * 4 - pipeline.TRUNK_COMPILE_BYTES
  assert mid["trunk_batch"] == int(left / 2 // per_image) == 8


def test_streamed_engine_input_gives_the_same_ais(golden):
  maps = np.asarray(golden["F"], np.float32)
  fc = ablation.FcHead(w1=golden["W1"].T, b1=golden["b1"], w2=golden["W2"].T, b2=golden["b2"],
                       pool_window=2)
  for head in (ablation.PooledHead(), fc):
    whole = ais.compute_ais(head, maps, golden["H"])
    reduced = np.concatenate([pipeline.engine_maps(head, maps[i:i + 4], "exact")
                              for i in range(0, len(maps), 4)])
    assert reduced.shape[1:3] == ((1, 1) if head is not fc else (2, 2))
    streamed = ais.compute_ais(pipeline.engine_head(head, keep_maps=False), reduced, golden["H"])
    assert np.max(np.abs(streamed.per_image - whole.per_image)) <= 1e-14
    assert np.max(np.abs(streamed.cohort - whole.cohort)) <= 1e-14
    np.testing.assert_array_equal(streamed.active, whole.active)


def test_map_store_and_npy_images_read_back_slices(tmp_path):
  rng = np.random.default_rng(0)
  maps = rng.random((10, 3, 3, 5)).astype(np.float32)
  store = pipeline.MapStore(str(tmp_path / "spill"), (3, 3, 5))
  for i in range(0, 10, 4):
    store.append(maps[i:i + 4])
  store.close()
  np.testing.assert_array_equal(store.read(3, 9), maps[3:9])
  np.testing.assert_array_equal(np.asarray(store.memmap()), maps)
  images = rng.integers(0, 256, (7, 4, 4, 3), dtype=np.uint8)
  np.save(tmp_path / "im.npy", images)
  lazy = pipeline.NpyImages(str(tmp_path / "im.npy"))
  assert len(lazy) == 7 and lazy.shape == images.shape
  np.testing.assert_array_equal(lazy[2:5], images[2:5])
  np.testing.assert_array_equal(lazy[5:20], images[5:])
  store.remove()
  assert not (tmp_path / "spill").exists()
