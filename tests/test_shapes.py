"""The procedural `shapes` source: determinism, lazy = eager, labels that
match the pixels, key validation, and a `:shapes,tiny` run end to end."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from jepa_jax import data
from jepa_jax.config import load as config_lib
from jepa_jax.data import shapes
from jepa_jax.data import shapes_render as render_lib
from conftest import ROOT, load, set_overrides

SMALL = {'data.shapes_train_size': 300, 'data.shapes_val_size': 40}


def _params(**overrides):
  return shapes.Params.from_config(set_overrides(load('no_vq_gentle', 'shapes,tiny'),
                                                 overrides).data)


@pytest.fixture(scope='module')
def small_dataset():
  return data.load_dataset(set_overrides(load('no_vq_gentle', 'shapes,tiny'), SMALL))


def test_same_seed_same_bytes_other_seed_or_split_differs():
  p = _params()
  a, ids = shapes.render_indices(p, 0, 0, range(24))
  b, ids_b = shapes.render_indices(p, 0, 0, range(24))
  assert a.dtype == np.float32 and a.shape == (24, 32, 32, 3)
  assert a.tobytes() == b.tobytes() and ids.tobytes() == ids_b.tobytes()
  for seed, split in ((1, 0), (0, 1)):
    c, _ = shapes.render_indices(p, seed, split, range(24))
    assert all(not np.array_equal(x, y) for x, y in zip(a, c))
  assert 0.0 <= a.min() and a.max() <= 1.0


def test_lazy_access_equals_the_eager_array(small_dataset):
  ds, p = small_dataset, _params(**SMALL)
  train_x = ds.train_images
  assert isinstance(train_x, shapes.ShapesImages) and train_x.shape == (300, 32, 32, 3)
  eager = train_x[:]
  ids = np.array([17, 3, 299, 3, 0])
  assert train_x[ids].tobytes() == eager[ids].tobytes()
  assert np.stack([train_x[int(i)] for i in ids]).tobytes() == eager[ids].tobytes()
  assert train_x[-1].tobytes() == eager[299].tobytes()
  raw, _ = shapes.render_indices(p, 0, shapes.SPLITS['train'], ids)
  np.testing.assert_allclose(eager[ids], (raw - train_x.mean) / train_x.std, rtol=1e-6)
  # The val split in memory is the same images, read lazily.
  val = shapes.ShapesImages(p, 0, shapes.SPLITS['val'], 40, 3, train_x.mean, train_x.std)
  assert val[:].tobytes() == ds.val_images.tobytes()
  # Batches: the memory pipeline and Grain read the same images.
  cfg = set_overrides(load('no_vq_gentle', 'shapes,tiny'), SMALL)
  mem = list(data.train_batches(cfg, train_x, epoch=1, num_steps=3))
  cfg.data.pipeline = 'grain'
  grain = list(data.train_batches(cfg, train_x, epoch=1, num_steps=3))
  for (xm, im), (xg, ig) in zip(mem, grain, strict=True):
    assert xm.tobytes() == xg.tobytes() and np.array_equal(im, ig)
    assert xm.tobytes() == eager[im].tobytes()


def test_dataset_labels_factors_and_standardisation(small_dataset):
  ds, p = small_dataset, _params(**SMALL)
  assert ds.name == 'shapes' and ds.num_colours is None and ds.image_shape == (32, 32, 3)
  assert ds.val_images.shape == (40, 32, 32, 3) and ds.val_images.dtype == np.float32
  assert set(ds.train_factors) == set(shapes.FACTORS) == set(ds.val_factors)
  np.testing.assert_array_equal(ds.train_labels, ds.train_factors['shape'])
  np.testing.assert_array_equal(ds.val_labels, ds.val_factors['shape'])
  want = shapes.split_factors(p, 0, shapes.SPLITS['train'], 300)
  for f in shapes.FACTORS:
    np.testing.assert_array_equal(ds.train_factors[f], want[f])
  assert set(ds.train_labels.tolist()) == set(range(8))
  x = ds.train_images[:]      # the statistics' sample is the whole (small) split
  np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0, atol=1e-4)
  np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1, atol=1e-3)
  grey = data.load_dataset(set_overrides(load('no_vq_gentle', 'shapes,tiny'),
                                         {**SMALL, 'data.channels': 1}))
  assert grey.image_shape == (32, 32, 1)


def _centroid(mask):
  ys, xs = np.nonzero(mask)
  return xs.mean() + 0.5, ys.mean() + 0.5


SYMMETRIC = {'disc', 'ring', 'square', 'plus', 'hexagram', 'bar', 'frame'}


def test_every_label_matches_the_pixels():
  """Labels are read back from the rendered pixels (object ids, colours,
  centroids), not from the draws, for 300 scenes."""
  p, n = _params(), 300
  images, ids = shapes.render_indices(p, 5, 0, range(n))
  f = shapes.split_factors(p, 5, 0, n)
  checked = {k: 0 for k in ('position', 'scale', 'relation', 'flat')}
  for i in range(n):
    scene = shapes.draw_scene(p, 5, 0, i)
    count = f['count'][i]
    # Count: every object is visible, and objects never touch (8-connected
    # regions of object pixels each hold one object).
    assert set(np.unique(ids[i])) - {-1} == set(range(count))
    regions, k = ndimage.label(ids[i] >= 0, structure=np.ones((3, 3)))
    assert all(len(np.unique(ids[i][regions == r])) == 1 for r in range(1, k + 1))
    main = ids[i] == 0
    # Shape: re-rendered alone at the drawn pose, the labelled class covers
    # exactly the main object's pixels.
    o = scene['objects'][0]
    a = render_lib.coverage(render_lib.SHAPES[:p.classes], [f['shape'][i]], [o['cx']],
                            [o['cy']], [o['r']], [o['cos']], [o['sin']], p.size)[0]
    assert np.array_equal(a > 0.5, main)
    # Colour: the main object's inner pixels are its palette colour, scaled.
    inner = ndimage.binary_erosion(main, iterations=1)
    rgb = images[i][inner].mean(axis=0)
    palette = render_lib.PALETTE / np.linalg.norm(render_lib.PALETTE, axis=1, keepdims=True)
    assert np.argmax(palette @ (rgb / np.linalg.norm(rgb))) == f['colour'][i]
    # Background: a flat one is one colour wherever no object is near.
    clear = ~ndimage.binary_dilation(ids[i] >= 0, iterations=3)
    spread = np.ptp(images[i][clear], axis=0).max()
    if render_lib.BACKGROUNDS[f['background'][i]] == 'flat':
      assert spread == 0
      checked['flat'] += 1
    elif render_lib.BACKGROUNDS[f['background'][i]] in ('stripes', 'checker'):
      assert spread > 0
    cls = render_lib.SHAPES[f['shape'][i]]
    if cls in SYMMETRIC:        # the centroid of the pixels is the centre
      cx, cy = _centroid(main)
      r = o['r']
      lo, rows = r + 1.0, p.size[0] - r - 1.0
      edges = [lo + (rows - lo) * t / 3 for t in (1, 2)]
      if min(abs(c - e) for c in (cx, cy) for e in edges) > 0.6:
        col = sum(cx > e for e in edges)
        row = sum(cy > e for e in edges)
        assert f['position'][i] == 3 * row + col
        checked['position'] += 1
    if cls == 'disc':           # the radius from the area
      r_est = math.sqrt(main.sum() / math.pi) / 0.95 / min(p.size)
      lo, hi = p.scale_range
      edges = [lo + (hi - lo) * t / 3 for t in (1, 2)]
      if min(abs(r_est - e) for e in edges) > 0.01:
        assert f['scale'][i] == sum(r_est > e for e in edges)
        checked['scale'] += 1
    if count > 1 and cls in SYMMETRIC:   # left or right of the nearest distractor
      mx, my = _centroid(main)
      near = sorted((math.hypot(x - mx, y - my), x) for x, y in
                    (_centroid(ids[i] == j) for j in range(1, count)))
      if abs(near[0][1] - mx) > 1.5 and (len(near) == 1 or near[1][0] - near[0][0] > 1.5):
        assert f['relation'][i] == int(mx < near[0][1])
        checked['relation'] += 1
    elif count == 1:
      assert f['relation'][i] == 2
  assert min(checked.values()) >= 10, checked


# (key, bad value, words of its one-line error)
BAD = [
    ('data.shapes_train_size', 0, 'must be an integer >= 1'),
    ('data.shapes_val_size', 1, 'must be an integer >= 2'),
    ('data.shapes_classes', 11, 'must be an integer in [2, 10]'),
    ('data.shapes_classes', 1, 'must be an integer in [2, 10]'),
    ('data.shapes_scale_range', (0.3, 0.2), 'must be a pair (lo, hi)'),
    ('data.shapes_scale_range', (0.2, 0.5), 'must be a pair (lo, hi)'),
    ('data.shapes_distractor_scale_range', (0.0, 0.1), 'must be a pair (lo, hi)'),
    ('data.shapes_distractor_scale_range', (0.1, 0.25), 'distractors must be smaller'),
    ('data.shapes_max_rotation', 270.0, 'must be in [0, 180] degrees'),
    ('data.shapes_max_rotation', float('nan'), 'must be a finite number'),
    ('data.shapes_max_distractors', -1, 'must be an integer in [0, 8]'),
    ('data.shapes_max_distractors', 9, 'must be an integer in [0, 8]'),
    ('data.shapes_backgrounds', ('flat', 'plaid'), 'must be a tuple of distinct names'),
    ('data.shapes_backgrounds', (), 'must be a tuple of distinct names'),
    ('data.image_size', (8, 8), 'between 16 and 512 pixels'),
    ('data.channels', 2, 'must be 1 (grayscale) or 3 (RGB)'),
]


@pytest.mark.parametrize('key,value,why', BAD, ids=[f'{k}={v}' for k, v, _ in BAD])
def test_every_key_is_validated_with_one_line_naming_it(key, value, why):
  cfg = set_overrides(load('no_vq_gentle', 'shapes,tiny'), {key: value})
  with pytest.raises(config_lib.ConfigError) as err:
    config_lib.validate(cfg)
  assert err.value.key == key and why in str(err.value)
  assert '\n' not in str(err.value)


def test_variant_on_any_config():
  for name in ('no_vq_gentle', 'gentle', 'early_refresh_settled'):
    cfg = load(name, 'shapes')
    config_lib.validate(cfg)
    assert cfg.data.name == 'shapes' and cfg.model.patch_size == 4
    assert config_lib.check_against_data(cfg, (32, 32, 3)) == (8, 8)
  assert load('gentle', 'shapes,tiny').train.num_epochs == 2
  assert load('no_vq', 'tiny').data.name == 'digits'    # the keys sit unused elsewhere


@pytest.mark.slow
def test_bad_key_on_the_command_line_writes_nothing(tmp_path):
  workdir = tmp_path / 'run'
  out = subprocess.run(
      [sys.executable, '-m', 'jepa_jax.main', '--config=configs/no_vq_gentle.py:shapes,tiny',
       f'--workdir={workdir}', '--config.data.shapes_train_size=0'],
      cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      'config error: config.data.shapes_train_size=0: must be an integer >= 1']
  assert not workdir.exists()


# The shapes variant's end-to-end training (tiny, with and without VQ) is
# tests/test_code_probe.py's `_trained`, which evaluates the runs too.


def test_baselines_script_probes_every_factor():
  from experiments.results.representation import shapes_baselines as sb
  y = np.arange(40) % 2
  x = np.where(y[:, None] == 1, 1.0, -1.0) + np.random.default_rng(0).normal(size=(40, 3))
  assert sb.probe(x[:30], y[:30], x[30:], y[30:]) == 1.0
  assert sb.chance(np.array([0, 1, 1]), np.array([1, 0, 0, 0])) == 0.25
  out = sb.run('configs/no_vq_gentle.py:shapes,tiny', 64, 32, factors=['shape', 'count'])
  assert list(out['probe']) == ['shape', 'count']
  for row in out['probe'].values():
    assert set(row) == {'chance', 'pixels', 'random_encoder'}
    assert all(0.0 <= v <= 1.0 for v in row.values())
  assert sb.table(out).splitlines()[0] == '| factor | chance | pixels | random_encoder |'
  bigger = sb.load('configs/no_vq_gentle.py:shapes,tiny', 64, 32,
                   overrides=['--config.data.shapes_scale_range=(0.3,0.4)'])[0]
  assert tuple(bigger.data.shapes_scale_range) == (0.3, 0.4)
  assert sb.main(['--config=configs/no_vq_gentle.py:shapes,tiny', '--train=64', '--val=32',
                  '--config.data.no_such_key=1']) == 2
  both = sb.run('configs/no_vq_gentle.py:shapes,tiny', 64, 32, factors=['shape'],
                pixels=False, pool='meanmax')
  assert both['pool'] == 'meanmax' and set(both['probe']['shape']) == {'chance',
                                                                       'random_encoder'}


def test_meanmax_features_are_the_tokens_mean_then_their_max():
  import jax  # noqa: PLC0415
  from experiments.results.representation import shapes_baselines as sb
  from jepa_jax import data as data_lib
  from jepa_jax.train import step as step_lib
  cfg = set_overrides(load('no_vq_gentle', 'shapes,tiny'), SMALL)
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)
  params = step_lib.init_state(setup, ds.image_shape, cfg.seed)['target_params']
  images = ds.val_images[:8]
  tokens = np.asarray(jax.jit(lambda p, x: setup.encoder.apply(p, x, None, None))(params, images))
  both = sb.encoder_features(setup, params, images, pool='meanmax')
  d = tokens.shape[-1]
  np.testing.assert_allclose(both[:, :d], tokens.mean(1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(both[:, d:], tokens.max(1), rtol=1e-6)
  np.testing.assert_allclose(sb.encoder_features(setup, params, images), both[:, :d], rtol=1e-6)


def test_object_pool_averages_the_tokens_inside_the_main_object():
  import jax  # noqa: PLC0415
  from experiments.results.representation import shapes_baselines as sb
  from jepa_jax import data as data_lib
  from jepa_jax.data import shapes
  from jepa_jax.train import step as step_lib
  cfg = set_overrides(load('no_vq_gentle', 'shapes,tiny'), SMALL)
  ds = data_lib.load_dataset(cfg)
  w = sb.object_token_weights(cfg, 1, 8)
  patch, gw = cfg.model.patch_size, cfg.data.image_size[1] // cfg.model.patch_size
  p = shapes.Params.from_config(cfg.data)
  for i in range(8):
    np.testing.assert_allclose(w[i].sum(), 1.0, rtol=1e-6)
    o = shapes.draw_scene(p, cfg.data.split_seed, 1, i)['objects'][0]
    for t in np.flatnonzero(w[i]):            # each chosen patch centre is inside the circle
      cy, cx = (t // gw + 0.5) * patch, (t % gw + 0.5) * patch
      assert np.hypot(cx - o['cx'], cy - o['cy']) <= o['r'] or np.count_nonzero(w[i]) == 1
  setup = step_lib.make_setup(cfg, ds)
  params = step_lib.init_state(setup, ds.image_shape, cfg.seed)['target_params']
  images = ds.val_images[:8]
  tokens = np.asarray(jax.jit(lambda p, x: setup.encoder.apply(p, x, None, None))(params, images))
  np.testing.assert_allclose(sb.encoder_features(setup, params, images, pool='object', weights=w),
                             np.einsum('nt,ntd->nd', w, tokens), rtol=1e-5, atol=1e-6)


def test_attentive_probe_finds_the_one_token_that_carries_the_class():
  from experiments.results.representation import attentive_probe as ap
  from jepa_jax.model import vit
  rng = np.random.default_rng(0)
  n, t, d, classes = 600, 16, 8, 4
  y = rng.integers(classes, size=n)
  x = rng.normal(size=(n, t, d)).astype(np.float32)
  where = rng.integers(t, size=n)              # one token per sample, at a random place
  x[np.arange(n), where, :classes] += 6.0 * np.eye(classes, dtype=np.float32)[y]
  x[np.arange(n), where, -1] += 6.0            # ... marked so a query can find it
  assert ap.attentive_probe(x[:400], y[:400], x[400:], y[400:], steps=300) > 0.9
  images = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
  p = vit.patches(images, 2)            # the probe's pixel tokens
  assert p.shape == (2, 4, 12)
  np.testing.assert_array_equal(p[1, 3], images[1, 2:, 2:].reshape(-1))
