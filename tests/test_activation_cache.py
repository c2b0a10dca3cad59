"""Activation cache: hits return the trunk's maps bitwise, any changed input misses, corrupt
entries are dropped, and the size bound evicts the least recently used entry."""

import dataclasses
import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

import ais_jax
from ais_jax import models, pipeline
from ais_jax.io import activation_cache as ac


class _TinyTrunk(nn.Module):
  """A stand-in model ([n, 16, 16, 3] -> maps [n, 8, 8, 4] -> pooled embedding [n, 4], no
  classifier) so the cache logic is tested fast."""

  def setup(self):
    self.conv = nn.Conv(4, (3, 3), strides=2)

  def trunk(self, x):
    return nn.relu(self.conv(x))

  def head(self, maps, keep=None):
    maps = maps if keep is None else maps * keep
    return maps.mean(axis=(1, 2)), None


@pytest.fixture(scope="module")
def model():
  spec = dataclasses.replace(models.get("efficientnet_lite0"), name="tiny", input_size=16,
                             map_size=8, num_maps=4)
  module = _TinyTrunk()
  variables = module.init(jax.random.PRNGKey(0), np.zeros((1, 16, 16, 3), np.float32),
                          method="trunk")
  variables = jax.tree_util.tree_map(np.asarray, variables)
  images = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
  return spec, module, variables, images


def _maps(model, cache, images=None, spec=None, variables=None, **kwargs):
  spec0, module, variables0, images0 = model
  timings = {}
  maps = ac.cached_trunk_maps(spec or spec0, module, variables0 if variables is None else variables,
                              images0 if images is None else images, cache=cache, batch_size=2,
                              timings=timings, **kwargs)
  return maps, timings["trunk_cache"]


def _direct(model, images=None, spec=None, variables=None):
  spec0, module, variables0, images0 = model
  return pipeline.trunk_maps(spec or spec0, module, variables0 if variables is None else variables,
                             images0 if images is None else images, batch_size=2)


def test_second_call_hits_without_running_the_trunk(model, tmp_path, monkeypatch):
  cache = ac.ActivationCache(str(tmp_path))
  first, status = _maps(model, cache)
  assert status == "miss"
  np.testing.assert_array_equal(first, _direct(model))

  def no_trunk(*args, **kwargs):
    raise AssertionError("the trunk ran although the maps were cached")

  monkeypatch.setattr(pipeline, "trunk_maps", no_trunk)
  second, status = _maps(model, cache)
  assert status == "hit"
  assert second.dtype == np.float32 and second.shape == (5, 8, 8, 4)
  np.testing.assert_array_equal(second, first)
  assert len(cache.entries()) == 1
  meta = json.load(open(os.path.join(cache.entries()[0].path, ac.META_FILE)))
  assert meta["key"]["arch"] == "tiny" and meta["key"]["jax_version"] == jax.__version__


def test_cache_off_always_runs_the_trunk(model, tmp_path):
  maps, status = _maps(model, None)
  assert status == "off"
  np.testing.assert_array_equal(maps, _direct(model))
  assert not os.listdir(tmp_path)


def _changed_images(model):
  images = model[3].copy()
  images[3, 7, 2, 1] ^= 1  # one pixel of one image
  return {"images": images}


def _changed_preprocessing(model):
  other = "imagenet" if model[0].normalization == "tf_127" else "tf_127"
  return {"spec": dataclasses.replace(model[0], normalization=other)}


def _changed_weights(model):
  variables = jax.tree_util.tree_map(np.copy, model[2])
  variables["params"]["conv"]["bias"][0] += 0.5
  return {"variables": variables}


@pytest.mark.parametrize("change", [_changed_images, _changed_preprocessing, _changed_weights])
def test_changed_input_misses_and_gives_the_new_maps(model, tmp_path, change):
  cache = ac.ActivationCache(str(tmp_path))
  old, _ = _maps(model, cache)
  kwargs = change(model)
  new, status = _maps(model, cache, **kwargs)
  assert status == "miss"
  expected = _direct(model, **kwargs)
  np.testing.assert_array_equal(new, expected)
  assert not np.array_equal(new, old)
  assert len(cache.entries()) == 2
  again, status = _maps(model, cache, **kwargs)
  assert status == "hit"
  np.testing.assert_array_equal(again, expected)


@pytest.mark.parametrize("target, name", [(ais_jax, "__version__"), (jax, "__version__")])
def test_changed_package_or_jax_version_misses(model, tmp_path, monkeypatch, target, name):
  cache = ac.ActivationCache(str(tmp_path))
  _maps(model, cache)
  monkeypatch.setattr(target, name, getattr(target, name) + ".post1")
  _, status = _maps(model, cache)
  assert status == "miss"
  assert len(cache.entries()) == 2


def test_changed_trunk_precision_is_a_different_key(model):
  spec, _, variables, images = model
  keys = [ac.model_key(spec, variables, images, precision=p) for p in ("exact", "fast")]
  assert keys[0]["trunk_precision"] == "float32/HIGHEST"
  # Today every mode runs the trunk in float32 HIGHEST (DESIGN.md section 3): same entry.
  assert keys[0] == keys[1]
  changed = ac.make_key(**{**{k: keys[0][k] for k in ("weights_sha256", "arch", "preprocessing",
                                                       "images_sha256")},
                           "trunk_precision": "float32/DEFAULT"})
  assert ac.key_digest(changed) != ac.key_digest(keys[0])


def test_corrupt_entry_is_removed_and_recomputed(model, tmp_path):
  cache = ac.ActivationCache(str(tmp_path))
  good, _ = _maps(model, cache)
  path = os.path.join(cache.entries()[0].path, ac.MAPS_FILE)
  with open(path, "r+b") as f:  # flip one byte of the data (past the .npy header)
    f.seek(-3, os.SEEK_END)
    byte = f.read(1)
    f.seek(-3, os.SEEK_END)
    f.write(bytes([byte[0] ^ 0xFF]))
  with pytest.warns(UserWarning, match="has sha256"):
    maps, status = _maps(model, cache)
  assert status == "miss"
  np.testing.assert_array_equal(maps, good)
  assert _maps(model, cache)[1] == "hit"


def test_entry_with_another_key_in_its_folder_is_never_returned(tmp_path):
  cache = ac.ActivationCache(str(tmp_path))
  key_a = {"k": "a"}
  cache.put(key_a, np.ones((2, 1, 1, 3), np.float32))
  # Simulate a stale folder: the entry of key b holds key a's files.
  key_b = {"k": "b"}
  os.rename(cache.entry_dir(key_a), cache.entry_dir(key_b))
  with pytest.warns(UserWarning, match="recorded key differs"):
    assert cache.get(key_b) is None
  assert cache.entries() == []


def test_size_bound_evicts_least_recently_used(tmp_path):
  block = np.zeros((256, 256, 4), np.float32)            # 1 MiB of data (+ a small header)
  cache = ac.ActivationCache(str(tmp_path), max_gb=3.5 / 1024)   # room for three entries
  for i, name in enumerate("abc"):
    cache.put({"k": name}, block + i)
    cache._touch(cache.entry_dir({"k": name}), when=1000.0 + i)  # a older than b older than c
  assert cache.get({"k": "a"}) is not None   # a is now the most recently used
  cache.put({"k": "d"}, block + 3)
  present = {e.digest for e in cache.entries()}
  assert present == {ac.key_digest({"k": n}) for n in "acd"}
  assert cache.total_bytes() <= cache.max_bytes
  np.testing.assert_array_equal(cache.get({"k": "a"}), block)


def test_maps_larger_than_the_bound_are_not_stored(tmp_path):
  cache = ac.ActivationCache(str(tmp_path), max_gb=0.5 / 1024)
  with pytest.warns(UserWarning, match="exceed the bound"):
    assert cache.put({"k": "big"}, np.zeros((1024, 1024), np.float32)) is None
  assert cache.entries() == []


def test_hashes_see_order_values_and_paths():
  images = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3)
  assert ac.images_sha256(images) != ac.images_sha256(images[::-1])
  assert ac.images_sha256(images) == ac.images_sha256(images.copy())
  assert ac.images_sha256(list(images)) != ac.images_sha256(images[:, :, :1])
  v = {"params": {"a": np.zeros(3, np.float32), "b": np.ones(2, np.float32)}}
  w = {"params": {"b": np.zeros(3, np.float32), "a": np.ones(2, np.float32)}}
  assert ac.variables_sha256(v) != ac.variables_sha256(w)
  assert ac.variables_sha256(v) == ac.variables_sha256(
      {"params": {"b": np.ones(2, np.float32), "a": np.zeros(3, np.float32)}})


def test_run_ais_reads_the_trunk_from_the_cache(model, tmp_path, monkeypatch):
  """experiments.ais's library call: the second run on the same images skips the trunk and gives
  bitwise the same AIS."""
  spec, module, variables, images = model
  human = np.corrcoef(np.random.default_rng(1).normal(size=(images.shape[0], 4)))
  cache = ac.ActivationCache(str(tmp_path / "cache"))
  loaded = (spec, variables, {}, module)
  first = pipeline.run_ais(weights=loaded, images=images, human=human, trunk_cache=cache,
                           batch_size=2)
  assert first.summary["timings_s"]["trunk_cache"] == "miss"
  monkeypatch.setattr(pipeline, "trunk_maps", lambda *a, **k: pytest.fail("trunk ran"))
  second = pipeline.run_ais(weights=loaded, images=images, human=human, trunk_cache=cache,
                            batch_size=2)
  assert second.summary["timings_s"]["trunk_cache"] == "hit"
  np.testing.assert_array_equal(second.feature_maps, first.feature_maps)
  np.testing.assert_array_equal(second.per_image_ais, first.per_image_ais)


def test_default_root_follows_the_environment(tmp_path, monkeypatch):
  monkeypatch.setenv("AIS_JAX_ACTIVATIONS", str(tmp_path / "scratch"))
  assert ac.ActivationCache().root == str(tmp_path / "scratch")
  monkeypatch.delenv("AIS_JAX_ACTIVATIONS")
  monkeypatch.setenv("AIS_JAX_HOME", str(tmp_path / "home"))
  assert ac.ActivationCache().root == str(tmp_path / "home" / "activations")
