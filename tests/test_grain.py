"""data.pipeline='grain': the in-memory batches bit for bit, process sharding,
lazy folders, ArrayRecord packing, exact resume mid-epoch."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip('grain')
pytest.importorskip('array_record')

from jepa_jax import data  # noqa: E402
from jepa_jax.config import load as config_lib  # noqa: E402
from jepa_jax.data import grain_pipeline  # noqa: E402
from jepa_jax.data import lazy  # noqa: E402
from jepa_jax.data import pack  # noqa: E402
from jepa_jax.run import files as run_files  # noqa: E402
from jepa_jax.train import loop as train  # noqa: E402
from conftest import ROOT, load  # noqa: E402


def _same_batches(a, b):
  a, b = list(a), list(b)
  assert len(a) == len(b) and a
  for (x, i), (y, j) in zip(a, b):
    assert x.dtype == y.dtype == np.float32 and i.dtype == j.dtype == np.int32
    assert x.shape == y.shape and np.array_equal(x, y) and np.array_equal(i, j)


@pytest.mark.parametrize('variant', ['gentle', 'arc_gentle'])
def test_grain_batches_equal_memory_batches_over_epochs_and_mid_epoch(variant):
  """digits and ARC: several epochs, a mid-epoch start and a process's rows."""
  cfg = load(variant, 'tiny')
  images = data.load_dataset(cfg).train_images
  b, spe = 16, len(images) // 16
  for epoch, start, rows in ((0, 0, None), (1, 0, None), (2, 0, None),
                             (3, spe // 2, None), (4, 7, (8, 16))):
    _same_batches(data.epoch_batches(images, b, 0, epoch, spe, start, rows),
                  grain_pipeline.epoch_batches(images, b, 0, epoch, spe, start, rows,
                                               read_threads=2))
  cfg.data.pipeline = 'grain'     # the dispatcher the loop calls
  _same_batches(data.epoch_batches(images, b, 0, 5, 4, 1),
                data.train_batches(cfg, images, 5, 4, 1))


def test_two_processes_read_disjoint_rows_that_make_up_the_global_batch():
  n, b, steps = 103, 16, 6
  perm = data.epoch_permutation(n, 3, 2)
  halves = [grain_pipeline.sample_positions(n, b, 3, 2, steps, 0, rows).reshape(steps, -1)
            for rows in ((0, 8), (8, 16))]
  assert not set(halves[0].ravel().tolist()) & set(halves[1].ravel().tolist())
  np.testing.assert_array_equal(np.concatenate(halves, 1), perm[:steps * b].reshape(steps, b))
  images = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1)
  got = [list(grain_pipeline.epoch_batches(images, b, 3, 2, steps, 0, rows))
         for rows in ((0, 8), (8, 16))]
  for k in range(steps):
    ids = np.concatenate([got[0][k][1], got[1][k][1]])
    np.testing.assert_array_equal(ids, perm[k * b:(k + 1) * b])


def test_worker_processes_give_the_same_batches():
  images = np.random.default_rng(0).standard_normal((40, 4, 4, 1)).astype(np.float32)
  _same_batches(data.epoch_batches(images, 8, 1, 0, 5, 1),
                grain_pipeline.epoch_batches(images, 8, 1, 0, 5, 1, workers=1))


def _make_folder(root, n_per_class=6, bad=None):
  from PIL import Image
  rng = np.random.default_rng(0)
  for c in ('cat', 'dog'):
    os.makedirs(root / c)
    for k in range(n_per_class):
      pixels = rng.integers(0, 256, (10 + k, 12, 3), dtype=np.uint8)
      ext = 'png' if k % 2 else 'jpg'
      Image.fromarray(pixels).save(root / c / f'{k:02d}.{ext}')
  if bad:
    (root / 'dog' / bad).write_bytes(b'not an image at all')
  return root


def _folder_cfg(path, name='folder', pipeline='memory'):
  cfg = load('gentle', 'tiny')
  cfg.data.name, cfg.data.path, cfg.data.pipeline = name, str(path), pipeline
  cfg.data.image_size, cfg.data.channels, cfg.data.val_fraction = (8, 8), 3, 0.25
  config_lib.validate(cfg)
  return cfg


def _same_dataset(lazy_ds, mem):
  assert isinstance(lazy_ds.train_images, lazy.LazyImages)
  assert lazy_ds.image_shape == mem.image_shape == (8, 8, 3)
  np.testing.assert_array_equal(lazy_ds.train_images.materialize(), mem.train_images)
  np.testing.assert_array_equal(lazy_ds.train_images[[3, 1]], mem.train_images[[3, 1]])
  np.testing.assert_array_equal(lazy_ds.val_images, mem.val_images)
  np.testing.assert_array_equal(lazy_ds.train_labels, mem.train_labels)
  np.testing.assert_array_equal(lazy_ds.val_labels, mem.val_labels)


def test_lazy_folder_and_packed_shards_equal_the_in_memory_folder(tmp_path):
  folder = _make_folder(tmp_path / 'imgs')
  mem = data.load_dataset(_folder_cfg(folder))
  _same_dataset(data.load_dataset(_folder_cfg(folder, pipeline='grain')), mem)
  assert pack.main(['--folder', str(folder), '--out', str(tmp_path / 'ar'),
                    '--shards', '3']) == 0
  assert len([f for f in os.listdir(tmp_path / 'ar') if f.endswith('.array_record')]) == 3
  packed = data.load_dataset(_folder_cfg(tmp_path / 'ar', 'arrayrecord', 'grain'))
  _same_dataset(packed, mem)
  _same_batches(data.epoch_batches(mem.train_images, 4, 0, 1, 2),
                grain_pipeline.epoch_batches(packed.train_images, 4, 0, 1, 2, workers=1))


def test_pack_refuses_a_bad_file_with_one_line_and_leaves_no_shards(tmp_path):
  folder = _make_folder(tmp_path / 'imgs', bad='03b.jpg')
  out = tmp_path / 'ar'
  proc = subprocess.run([sys.executable, '-m', 'jepa_jax.data.pack', '--folder', str(folder),
                         '--out', str(out), '--shards', '2'], cwd=ROOT, capture_output=True,
                        text=True, env=dict(os.environ, PYTHONPATH=ROOT))
  assert proc.returncode == 2 and proc.stdout == ''
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and str(folder / 'dog' / '03b.jpg') in lines[0]
  assert os.listdir(out) == []
  with pytest.raises(data.DataError, match='no index.json'):
    data.load_dataset(_folder_cfg(out, 'arrayrecord', 'grain'))


@pytest.mark.parametrize('key,value', [('data.pipeline', 'tfdata'),
                                       ('data.read_threads', 0), ('data.workers', -1)])
def test_bad_pipeline_keys_are_one_line_errors(key, value):
  cfg = load('gentle', 'tiny')
  cfg.data[key.split('.')[1]] = value
  with pytest.raises(config_lib.ConfigError) as err:
    config_lib.validate(cfg)
  assert err.value.key == key and '\n' not in str(err.value)


def test_grain_run_equals_memory_run_and_resumes_mid_epoch_exactly(tmp_path):
  """digits through Grain: the same weights and logs as the in-memory run;
  the run as it stood at its mid-epoch checkpoint 4 resumes to them too."""
  def cfg(pipeline):
    c = load('gentle', 'tiny')
    c.checkpoint.every_steps, c.data.pipeline = 2, pipeline
    return c

  mem, ref, run = tmp_path / 'mem', tmp_path / 'ref', tmp_path / 'run'
  assert train.train_and_evaluate(cfg('memory'), str(mem))['steps'] == 6
  assert train.train_and_evaluate(cfg('grain'), str(ref))['steps'] == 6
  logs = lambda d: [run_files.read_jsonl(d / n) for n in run_files.STEP_LOGS]
  weights = lambda d: (d / 'final_state.msgpack').read_bytes()
  assert weights(ref) == weights(mem) and logs(ref) == logs(mem)
  shutil.copytree(ref, run)
  shutil.rmtree(run / 'checkpoints' / '6')
  for name in ('summary.json', 'final_state.msgpack'):
    os.remove(run / name)
  summary = train.train_and_evaluate(cfg('grain'), str(run))
  assert summary['resumed_from_step'] == 4 and summary['status'] == 'completed'
  assert weights(run) == weights(ref) and logs(run) == logs(ref)


def test_chunked_statistics_agree_with_the_stacked_ones(monkeypatch):
  x = np.random.default_rng(0).random((300, 5, 5, 3)).astype(np.float32)
  images = lazy.LazyImages(lambda i: x[i], np.arange(300), (5, 5, 3))
  mean, std = lazy.sample_stats(images, 0)
  np.testing.assert_array_equal(mean, x.mean(axis=(0, 1, 2), dtype=np.float64))
  monkeypatch.setattr(lazy, 'STATS_BYTES', 0)
  mean2, std2 = lazy.sample_stats(images, 0)
  np.testing.assert_allclose(mean2, mean, rtol=1e-12)
  np.testing.assert_allclose(std2, std, rtol=1e-12)
