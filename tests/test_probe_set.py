"""The fixed probe set of `evaluate`: drawn once from the seed, read in
batches, every image of data under the cap."""
import numpy as np

from jepa_jax import probe_set


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

