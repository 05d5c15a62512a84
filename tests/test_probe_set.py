"""The fixed probe set of `evaluate` and the capped image set of the k-means
codebook (`start_state.kmeans_images`): drawn once from the seed, read in
batches, every image of data under the cap."""
import dataclasses

import jax
import numpy as np

from jepa_jax import data as data_lib
from jepa_jax.eval import probes as probe_set
from jepa_jax.train import start as start_state
from jepa_jax.train import step as step_lib
from jepa_jax.vq import quantizer as quantizer_lib
from conftest import load


class CountingImages:
  """An in-memory split that records the index sets it is read with."""

  def __init__(self, images):
    self.images, self.reads = images, []
    self.shape, self.dtype = images.shape, images.dtype

  def __len__(self):
    return len(self.images)

  def __getitem__(self, key):
    ids = np.arange(len(self.images))[key]
    self.reads.append(np.atleast_1d(ids))
    return self.images[key]


def test_choose_keeps_small_data_whole_and_large_data_proportional():
  tr, va = probe_set.choose(1437, 360, 10_000, seed=0)
  assert np.array_equal(tr, np.arange(1437)) and np.array_equal(va, np.arange(360))
  tr, va = probe_set.choose(50_000, 12_800, 10_000, seed=0)
  assert (len(tr), len(va)) == (7962, 2038)          # 10,000 x 50,000 / 62,800
  for ids, n in ((tr, 50_000), (va, 12_800)):
    assert np.all(np.diff(ids) > 0) and ids[0] >= 0 and ids[-1] < n
  again = probe_set.choose(50_000, 12_800, 10_000, seed=0)
  other = probe_set.choose(50_000, 12_800, 10_000, seed=1)
  assert np.array_equal(again[0], tr) and np.array_equal(again[1], va)
  assert not np.array_equal(other[0], tr)


def test_take_reads_only_the_chosen_images_in_batches():
  images = np.random.default_rng(0).normal(size=(2500, 2, 2, 1)).astype(np.float32)
  lazy = CountingImages(images)
  ids = np.sort(np.random.default_rng(1).choice(2500, 2100, replace=False))
  got = probe_set.take(lazy, ids)
  assert np.array_equal(got, images[ids])
  assert max(len(r) for r in lazy.reads) <= probe_set.READ_BATCH
  assert np.array_equal(np.concatenate(lazy.reads), ids)
  assert probe_set.take(images, np.arange(2500)) is images


def test_kmeans_images_cap():
  assert np.array_equal(start_state.kmeans_images(1437, 8192, 0), np.arange(1437))
  ids = start_state.kmeans_images(50_000, 8192, 0)
  assert len(ids) == 8192 and np.all(np.diff(ids) > 0) and ids[-1] < 50_000
  assert np.array_equal(ids, start_state.kmeans_images(50_000, 8192, 0))
  assert not np.array_equal(ids, start_state.kmeans_images(50_000, 8192, 1))


def _kmeans_setup(num_samples):
  cfg = load('gentle', 'tiny')
  cfg.vq.init, cfg.vq.kmeans_num_samples = 'kmeans', num_samples
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)
  params = step_lib.init_state(setup, ds.image_shape, cfg.seed)['params']['encoder']
  return cfg, ds, setup, params


def test_kmeans_codebook_under_the_cap_is_that_of_every_train_image():
  """Digits' 1,437 train images under the cap: the codebook the uncapped
  code computed (every image encoded, jax-permuted tokens picked)."""
  cfg, ds, setup, params = _kmeans_setup(2000)
  assert len(ds.train_images) < 2000
  enc = jax.jit(lambda x: setup.encoder.apply(params, x, None, None))
  tokens = np.concatenate([np.asarray(enc(ds.train_images[i:i + 256])).reshape(
      -1, cfg.model.embed_dim) for i in range(0, len(ds.train_images), 256)])
  key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 0x6b6d)
  k_pick, k_fit = jax.random.split(key)
  picked = tokens[np.asarray(jax.random.permutation(k_pick, len(tokens))[:2000])]
  want = quantizer_lib.kmeans_state(setup.quantizer, k_fit, picked, None)
  got = start_state.kmeans_codebook(cfg, setup, ds, params)
  assert np.array_equal(np.asarray(got.codebook), np.asarray(want.codebook))


def test_kmeans_codebook_over_the_cap_encodes_only_its_images():
  cfg, ds, setup, params = _kmeans_setup(300)
  lazy = CountingImages(ds.train_images)
  vq = start_state.kmeans_codebook(cfg, setup, dataclasses.replace(ds, train_images=lazy),
                                   params)
  assert max(len(r) for r in lazy.reads) <= 256
  want = start_state.kmeans_images(len(ds.train_images), 300, cfg.seed)
  assert np.array_equal(np.concatenate(lazy.reads), want)
  assert np.all(np.isfinite(np.asarray(vq.codebook)))
