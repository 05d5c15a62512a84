"""Data sources beyond digits: ARC grids, .npz arrays, image folders; bad inputs."""
import os
import subprocess
import sys

import numpy as np
import pytest

from jepa_jax import data
from jepa_jax.config import load as config_lib
from jepa_jax.data import arc
from jepa_jax.train import loop as train
from jepa_jax.train import step as step_lib
from conftest import ROOT, load


def _arc_cfg(**overrides):
  cfg = load('arc_gentle', 'tiny')
  for key, value in overrides.items():
    group, leaf = key.split('.')
    cfg[group][leaf] = value
  return cfg


@pytest.fixture(scope='module')
def arc_dataset():
  return data.load_dataset(_arc_cfg())


def test_arc_grids_padded_and_split_by_task(arc_dataset):
  ds = arc_dataset
  tasks = arc.load_tasks('arc-agi-1')
  all_grids = [g for _, grids in tasks for g in grids]
  assert len(tasks) == 400 and len(all_grids) == 3436
  assert len(ds.train_images) + len(ds.val_images) == len(all_grids)
  assert ds.image_shape == (30, 30, 1) and ds.train_images.dtype == np.float32
  assert ds.num_colours == 10 and ds.train_labels is None
  # Split by task: 15% of the 400 tasks are val, no task on both sides.
  assert len(np.unique(ds.val_groups)) == 60 and len(np.unique(ds.train_groups)) == 340
  assert not set(ds.train_groups.tolist()) & set(ds.val_groups.tolist())
  # Each sample is its task's grid at the top-left of a -1-padded canvas.
  seen = {}
  for img, g in zip(ds.val_images, ds.val_groups):
    k = seen.get(g, 0)
    grid = tasks[g][1][k]
    seen[g] = k + 1
    h, w = grid.shape
    np.testing.assert_array_equal(img[:h, :w, 0], grid)
    assert (img[h:] == -1).all() and (img[:, w:] == -1).all()
    np.testing.assert_array_equal(arc.trim(img), grid)
  assert all(seen[g] == len(tasks[g][1]) for g in seen)   # every grid of a task
  sizes = {arc.trim(img).shape for img in ds.train_images}
  assert (1, 1) in sizes and (30, 30) in sizes


def test_arc_split_follows_split_seed(arc_dataset):
  other = data.load_dataset(_arc_cfg(**{'data.split_seed': 1}))
  assert set(other.val_groups.tolist()) != set(arc_dataset.val_groups.tolist())
  again = data.load_dataset(_arc_cfg())
  np.testing.assert_array_equal(again.val_images, arc_dataset.val_images)


def test_arc_agi_2_and_canvas_too_small():
  assert len(arc.load_tasks('arc-agi-2')) == 1000
  with pytest.raises(config_lib.ConfigError, match='data.canvas_size=20: smaller than'):
    data.load_dataset(_arc_cfg(**{'data.canvas_size': 20}))


def test_arc_config_checks():
  with pytest.raises(config_lib.ConfigError, match='data.arc_version'):
    config_lib.validate(_arc_cfg(**{'data.arc_version': 'arc-agi-9'}))
  cfg = _arc_cfg(**{'model.patch_embed': 'conv'})
  with pytest.raises(config_lib.ConfigError, match="model.patch_embed='conv'.*colour ids"):
    config_lib.check_against_data(cfg, (30, 30, 1), num_colours=10)
  digits = load('gentle', 'tiny')
  digits.model.patch_embed = 'colour'
  with pytest.raises(config_lib.ConfigError, match="pixel values.*use 'conv'"):
    config_lib.check_against_data(digits, (8, 8, 1), num_colours=None)


def _npz_cfg(path, **overrides):
  cfg = load('gentle', 'tiny')
  cfg.data.name, cfg.data.path = 'npz', str(path)
  for key, value in overrides.items():
    group, leaf = key.split('.')
    cfg[group][leaf] = value
  return cfg


def test_npz_images_and_labels(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8)
  labels = np.arange(60) % 4
  np.savez(tmp_path / 'd.npz', images=images, labels=labels)
  ds = data.load_dataset(_npz_cfg(tmp_path / 'd.npz'))
  assert ds.image_shape == (8, 8, 3) and len(ds.train_images) + len(ds.val_images) == 60
  assert len(ds.val_images) == 9 and ds.num_colours is None
  np.testing.assert_allclose(ds.train_images.mean(axis=(0, 1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(ds.train_images.std(axis=(0, 1, 2)), 1, atol=1e-4)
  # Labels follow their images through the split.
  tr, va = data.split_indices(60, 0.15, 0)
  np.testing.assert_array_equal(ds.val_labels, labels[va])
  x = images[tr].astype(np.float64)
  std = (x[0] - x.mean(axis=(0, 1, 2))) / x.std(axis=(0, 1, 2))
  np.testing.assert_allclose(ds.train_images[0], std, atol=1e-4)
  # (N, H, W) without labels; trains end to end.
  np.savez(tmp_path / 'g.npz', images=rng.normal(size=(40, 8, 8)).astype(np.float32))
  ds = data.load_dataset(_npz_cfg(tmp_path / 'g.npz'))
  assert ds.image_shape == (8, 8, 1) and ds.train_labels is None


def test_npz_colour_ids_kept_as_ids(tmp_path):
  grids = np.full((30, 6, 6), -1, np.int8)
  grids[:, :4, :5] = np.arange(20).reshape(4, 5) % 10
  np.savez(tmp_path / 'c.npz', images=grids)
  cfg = _npz_cfg(tmp_path / 'c.npz', **{'model.patch_embed': 'colour',
                                        'model.patch_size': 3,
                                        'masking.num_target_blocks': 1,
                                        'masking.target_block_size': (1, 1),
                                        'masking.context_block_size': (2, 2),
                                        'masking.num_context_tokens': 2})
  ds = data.load_dataset(cfg)
  assert ds.num_colours == 10
  np.testing.assert_array_equal(ds.train_images[0, ..., 0], grids[0])
  assert config_lib.check_against_data(cfg, ds.image_shape, ds.num_colours) == (2, 2)


def _write_png(path, size, mode, value):
  from PIL import Image
  arr = np.full(size[::-1] + ((3,) if mode == 'RGB' else ()), value, np.uint8)
  Image.fromarray(arr).save(path)          # 2-D: grayscale, (h, w, 3): RGB


def _folder_cfg(path, **overrides):
  cfg = _npz_cfg(path, **overrides)
  cfg.data.name = 'folder'
  return cfg


def test_folder_of_classes(tmp_path):
  for c, name in enumerate(('zebra', 'ant')):        # labels follow sorted names
    os.makedirs(tmp_path / name)
    for i in range(10):
      size = (12 + i, 7) if i % 2 else (5, 9)         # (width, height), mixed sizes
      _write_png(tmp_path / name / f'{i}.png', size, 'RGB' if i % 3 else 'L',
                 40 * c + i)
  (tmp_path / 'notes.txt').write_text('ignored: not a class folder')
  (tmp_path / 'ant' / 'readme.md').write_text('ignored: not an image')
  cfg = _folder_cfg(tmp_path, **{'data.image_size': (6, 10), 'data.channels': 3,
                                 'data.val_fraction': 0.2})
  ds = data.load_dataset(cfg)
  assert ds.image_shape == (6, 10, 3)
  assert len(ds.train_images) == 16 and len(ds.val_images) == 4
  labels = np.concatenate([ds.train_labels, ds.val_labels])
  assert sorted(labels.tolist()) == [0] * 10 + [1] * 10
  # Uniform images stay uniform after resizing: 'ant' (label 0, samples 0..9)
  # holds 40 + i, 'zebra' (label 1, samples 10..19) holds i.
  tr, _ = data.split_indices(20, 0.2, 0)
  raw = np.array([40 + k if k < 10 else k - 10 for k in range(20)], np.float64)[tr] / 255
  std = (raw - raw.mean()) / raw.std()
  np.testing.assert_allclose(ds.train_images[:, 2, 3, 1], std, atol=1e-4)
  gray = data.load_dataset(_folder_cfg(tmp_path, **{'data.channels': 1}))
  assert gray.image_shape == (32, 32, 1)


def _one_line_data_error(cfg, *fragments):
  with pytest.raises(data.DataError) as err:
    data.load_dataset(cfg)
  msg = str(err.value)
  assert '\n' not in msg
  for f in fragments:
    assert f in msg, msg


@pytest.mark.parametrize('arrays,fragments', [
    ({'labels': np.zeros(4)}, ['no `images` array', 'labels']),
    ({'images': np.zeros(10)}, ['shape (10,)', 'need (N, H, W)']),
    ({'images': np.zeros((10, 8, 8, 1, 1))}, ['shape (10, 8, 8, 1, 1)']),
    ({'images': np.zeros((0, 8, 8))}, ['no empty axis']),
    ({'images': np.zeros((10, 8, 8), bool)}, ['dtype bool']),
    ({'images': np.zeros((10, 8, 8), np.complex64)}, ['dtype complex64']),
    ({'images': np.array([['a'] * 8] * 8)}, ['dtype <U1']),
    ({'images': np.where(np.eye(8)[None] > 0, np.nan, np.ones((10, 8, 8)))[:10]},
     ['NaN or infinite', '10 of 10 images']),
    ({'images': np.ones((10, 8, 8)), 'labels': np.zeros(9, int)}, ['labels', 'need (10,)']),
    ({'images': np.ones((10, 8, 8)), 'labels': np.zeros(10)}, ['labels', 'float64']),
])
def test_npz_bad_inputs_name_the_problem(tmp_path, arrays, fragments):
  path = tmp_path / 'bad.npz'
  np.savez(path, **arrays)
  _one_line_data_error(_npz_cfg(path), str(path), *fragments)


def test_bad_files_and_folders(tmp_path):
  _one_line_data_error(_npz_cfg(tmp_path / 'missing.npz'), 'npz file not found',
                       'missing.npz')
  (tmp_path / 'junk.npz').write_text('not a zip')
  _one_line_data_error(_npz_cfg(tmp_path / 'junk.npz'), 'cannot read', 'junk.npz')
  np.savez(tmp_path / 'obj.npz', images=np.array([None] * 4, dtype=object))
  _one_line_data_error(_npz_cfg(tmp_path / 'obj.npz'), 'obj.npz')
  np.savez(tmp_path / 'ids.npz', images=np.full((10, 6, 6), 12, np.int32))
  _one_line_data_error(_npz_cfg(tmp_path / 'ids.npz', **{'model.patch_embed': 'colour'}),
                       'colour ids span 12..12')
  _one_line_data_error(_folder_cfg(tmp_path / 'nope'), 'image folder not found')
  root = tmp_path / 'imgs'
  os.makedirs(root)
  _one_line_data_error(_folder_cfg(root), 'no class subfolders')
  os.makedirs(root / 'a')
  _one_line_data_error(_folder_cfg(root), 'holds no image files', str(root / 'a'))
  (root / 'a' / 'broken.png').write_bytes(b'\x89PNG not really')
  _one_line_data_error(_folder_cfg(root), 'cannot read image', 'broken.png')
  cfg = _npz_cfg(tmp_path / 'x.npz')
  cfg.data.path = None
  with pytest.raises(config_lib.ConfigError, match='data.path=None'):
    config_lib.validate(cfg)


def test_fewer_samples_than_one_batch(tmp_path):
  np.savez(tmp_path / 'small.npz', images=np.random.default_rng(0).normal(size=(12, 8, 8)))
  cfg = _npz_cfg(tmp_path / 'small.npz')       # batch 16 > 10 training samples
  with pytest.raises(config_lib.ConfigError,
                     match="train.batch_size=16: larger than the 10 training samples of 'npz'"):
    step_lib.make_setup(cfg, data.load_dataset(cfg))
  with pytest.raises(config_lib.ConfigError):
    train.train_and_evaluate(cfg, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')   # nothing written


def test_cli_data_error_is_one_line(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  out = subprocess.run(
      [sys.executable, '-m', 'jepa_jax.main', '--config=configs/gentle.py:tiny',
       f'--workdir={tmp_path / "run"}', '--config.data.name=npz',
       f'--config.data.path={tmp_path / "none.npz"}'],
      capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
  assert out.returncode == 2
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert lines == [f'data error: npz file not found: {tmp_path / "none.npz"}']
  assert not os.path.exists(tmp_path / 'run')
