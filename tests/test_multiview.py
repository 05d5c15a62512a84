"""LeJEPA's own objective (`loss.views`, `objective.multiview`,
`configs/lejepa_views.py`): its terms and projector against numpy
re-derivations, the composed loss against one computed by hand from the
encoder's views, where the gradients go, and one training step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load
from jepa_jax import data as data_lib
from jepa_jax.config import load as config_lib
from jepa_jax.objective import losses
from jepa_jax.objective import multiview
from jepa_jax.objective import terms as objective
from jepa_jax.train import step as step_lib


def test_views_prediction_loss_is_the_spread_about_the_views_mean():
  z = np.random.default_rng(0).normal(size=(4, 6, 3))
  centre = z.mean(0, keepdims=True)
  want = np.mean((centre - z) ** 2)
  got = float(losses.views_prediction_loss(jnp.asarray(z, jnp.float32)))
  assert got == pytest.approx(want, rel=1e-5)
  same = np.broadcast_to(z[:1], z.shape)               # identical views: no spread
  assert float(losses.views_prediction_loss(jnp.asarray(same, jnp.float32))) == 0.0


def test_local_views_are_regressed_onto_the_global_views_centre_without_entering_it():
  z = np.random.default_rng(3).normal(size=(5, 6, 3))        # 2 global, 3 local views
  centre = z[:2].mean(0, keepdims=True)
  got = float(losses.views_prediction_loss(jnp.asarray(z, jnp.float32), 2))
  assert got == pytest.approx(np.mean((centre - z) ** 2), rel=1e-5)
  moved = z.copy()
  moved[2:] = centre                  # local views on the centre: only the globals' spread
  got = float(losses.views_prediction_loss(jnp.asarray(moved, jnp.float32), 2))
  assert got == pytest.approx(np.sum((centre - z[:2]) ** 2) / z.size, rel=1e-5)
  assert float(losses.views_prediction_loss(jnp.asarray(z, jnp.float32), 5)) == pytest.approx(
      float(losses.views_prediction_loss(jnp.asarray(z, jnp.float32))), rel=1e-7)


def test_positions_of_a_smaller_view_spread_over_the_full_grid():
  from jepa_jax.model import vit  # noqa: PLC0415
  full = vit.sincos_pos_embed_2d(16, 8, 8)
  np.testing.assert_array_equal(vit.sincos_pos_embed_2d(16, 8, 8, (8, 8)), full)
  small = vit.sincos_pos_embed_2d(16, 4, 4, (8, 8)).reshape(4, 4, 16)
  omega = 1.0 / 10000 ** (np.arange(4) / 4)
  for i in range(4):              # cell i of 4 sits at 2 i + 1/2 on the 8-cell grid
    pos = (i + 0.5) * 2 - 0.5
    want = np.concatenate([np.sin(pos * omega), np.cos(pos * omega)])
    np.testing.assert_allclose(small[i, 0, :8], want, rtol=1e-6, atol=1e-7)    # rows
    np.testing.assert_allclose(small[0, i, 8:], want, rtol=1e-6, atol=1e-7)    # columns
  # the spread grid's mean position is the full grid's (3.5 on 0..7)
  np.testing.assert_allclose(small.reshape(16, 16).mean(0), full.mean(0), atol=0.05)


def test_views_sigreg_is_the_mean_of_each_views_sigreg_with_one_set_of_slices():
  z = jnp.asarray(np.random.default_rng(1).normal(size=(3, 32, 5)), jnp.float32)
  key = jax.random.PRNGKey(4)
  per_view = [float(losses.sigreg_loss(z[v], key, num_slices=16)) for v in range(3)]
  got = float(losses.views_sigreg_loss(z, key, num_slices=16))
  assert got == pytest.approx(np.mean(per_view), rel=1e-5)
  assert len(set(np.round(per_view, 6))) == 3          # the views do differ


def _project_by_hand(params, x):
  """The projector in float64 numpy: hidden layers relu(BN(xW + b)) with the
  rows' own mean and biased variance, eps 1e-5; the last layer linear."""
  n = len(params)
  for i in range(n):
    layer = {k: np.asarray(v, np.float64) for k, v in params[f'layer_{i}'].items()}
    x = x @ layer['kernel'] + layer['bias']
    if i < n - 1:
      x = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) * layer['bn_scale'] + layer['bn_offset']
      x = np.maximum(x, 0.0)
  return x


def test_projector_matches_a_numpy_re_derivation_and_normalises_over_the_batch():
  params = multiview.init_projector(jax.random.PRNGKey(0), 6, (10, 10, 4))
  assert [params[f'layer_{i}']['kernel'].shape for i in range(3)] == [(6, 10), (10, 10), (10, 4)]
  assert 'bn_scale' not in params['layer_2']            # the output layer is linear
  rng = np.random.default_rng(2)
  params['layer_0']['bn_scale'] = jnp.asarray(rng.uniform(0.5, 2.0, 10), jnp.float32)
  params['layer_1']['bn_offset'] = jnp.asarray(rng.normal(size=10), jnp.float32)
  x = rng.normal(size=(12, 6)) * 3.0 + 1.0
  got = np.asarray(multiview.project(params, jnp.asarray(x, jnp.float32)))
  np.testing.assert_allclose(got, _project_by_hand(params, x), rtol=1e-4, atol=1e-4)
  # Batch statistics: shifting every row by one vector changes nothing.
  shifted = np.asarray(multiview.project(params, jnp.asarray(x + 5.0, jnp.float32)))
  np.testing.assert_allclose(shifted, got, rtol=1e-3, atol=1e-3)


def _tiny_setup(crop_area=None, **loss):
  cfg = load('lejepa_views', 'tiny')
  cfg.train.warmup_epochs = 0
  if crop_area is not None:
    cfg.data.crop_area = crop_area
  for key, value in loss.items():
    setattr(cfg.loss, key, value)
  config_lib.validate(cfg)
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)
  return cfg, ds, setup, step_lib.init_state(setup, ds.image_shape, cfg.seed)


@pytest.mark.parametrize('crop_area', [None, (0.08, 0.2)])
def test_loss_is_the_weighted_terms_on_the_encoders_views_computed_by_hand(crop_area):
  cfg, ds, setup, state = _tiny_setup(crop_area)
  images = jnp.asarray(ds.train_images[:8])
  ids = jnp.arange(8, dtype=jnp.int32)
  keys = jax.random.split(jax.random.PRNGKey(9), 3)
  total, aux = objective.make_loss_fn(setup)(step_lib.trainables_of(setup, state), state,
                                             images, ids, keys)
  views = multiview.view_images('colour+crop', keys[0], ids, images, 4, crop_area)
  assert views.shape == (32,) + images.shape[1:]
  if crop_area is not None:   # data.crop_area reaches the views: not the default's crops
    assert setup.crop_area == crop_area
    assert not np.allclose(views, multiview.view_images('colour+crop', keys[0], ids, images, 4))
  v = np.asarray(views).reshape(4, 8, -1)
  assert all(not np.allclose(v[i], v[j]) for i in range(4) for j in range(i))  # 4 draws
  tokens = np.asarray(setup.encoder.apply(state['params']['encoder'], views), np.float64)
  proj = _project_by_hand(state['params']['projector'], tokens.mean(1)).reshape(4, 8, -1)
  pred = np.mean((proj.mean(0, keepdims=True) - proj) ** 2)
  sig = float(losses.views_sigreg_loss(jnp.asarray(proj, jnp.float32), keys[1],
                                       cfg.loss.sigreg_num_slices, cfg.loss.sigreg_num_points))
  assert float(aux['parts']['views_pred']) == pytest.approx(pred, rel=1e-3)
  assert float(aux['parts']['views_sigreg']) == pytest.approx(sig, rel=1e-3)
  assert float(total) == pytest.approx(0.98 * pred + 0.02 * sig, rel=1e-3)
  assert set(aux['parts']) == {'views_pred', 'views_sigreg'}


def test_local_views_enter_the_loss_as_computed_by_hand_and_a_step_trains():
  """2 global views and 2 local ones of 4 x 4 pixels (digits: 8 x 8 images,
  2-pixel patches): the local views through the encoder with their positions
  spread over the 4 x 4 grid, the centre the global views' mean."""
  cfg, ds, setup, state = _tiny_setup(views=2, views_local=2, views_local_size=4)
  images = jnp.asarray(ds.train_images[:8])
  ids = jnp.arange(8, dtype=jnp.int32)
  keys = jax.random.split(jax.random.PRNGKey(3), 3)
  total, aux = objective.make_loss_fn(setup)(step_lib.trainables_of(setup, state), state,
                                             images, ids, keys)
  enc = lambda x, **kw: np.asarray(setup.encoder.apply(state['params']['encoder'], x, **kw),
                                   np.float64).mean(1)
  globals_ = multiview.view_images('colour+crop', keys[0], ids, images, 2)
  local = multiview.view_images('colour+crop', keys[0], ids, images, 2, (0.05, 0.3), (4, 4),
                                first=2)
  assert local.shape == (16, 4, 4, 1)
  # the local views' keys continue the global ones (fold_in(key, 2), fold_in(key, 3))
  from jepa_jax.model import masking  # noqa: PLC0415
  for v in (2, 3):
    np.testing.assert_array_equal(np.asarray(local[(v - 2) * 8:(v - 1) * 8]), np.asarray(
        masking.context_view('colour+crop', jax.random.fold_in(keys[0], v), ids, images,
                             (0.05, 0.3), (4, 4))))
  emb = np.concatenate([enc(globals_), enc(local, pos_span=(4, 4))])
  assert not np.allclose(enc(local), enc(local, pos_span=(4, 4)))    # the positions matter
  proj = _project_by_hand(state['params']['projector'], emb).reshape(4, 8, -1)
  pred = np.mean((proj[:2].mean(0, keepdims=True) - proj) ** 2)
  sig = float(losses.views_sigreg_loss(jnp.asarray(proj, jnp.float32), keys[1],
                                       cfg.loss.sigreg_num_slices, cfg.loss.sigreg_num_points))
  assert float(aux['parts']['views_pred']) == pytest.approx(pred, rel=1e-3)
  assert float(aux['parts']['views_sigreg']) == pytest.approx(sig, rel=1e-3)
  assert float(total) == pytest.approx(0.98 * pred + 0.02 * sig, rel=1e-3)
  new, metrics = jax.jit(step_lib.make_train_step(setup))(state, images, ids)
  assert np.isfinite(float(metrics['loss']))
  assert any(not np.allclose(a, b) for a, b in zip(
      jax.tree.leaves(new['params']['encoder']), jax.tree.leaves(state['params']['encoder'])))


def test_gradient_reaches_the_encoder_and_projector_not_the_predictor_and_a_step_trains():
  cfg, ds, setup, state = _tiny_setup(views_lambda=0.3)
  images = jnp.asarray(ds.train_images[:16])
  ids = jnp.arange(16, dtype=jnp.int32)
  keys = jax.random.split(jax.random.PRNGKey(1), 3)
  grads = jax.jit(jax.grad(lambda t: objective.make_loss_fn(setup)(t, state, images, ids, keys)[0]))(
      step_lib.trainables_of(setup, state))['params']
  largest = lambda tree: max(float(jnp.abs(g).max()) for g in jax.tree.leaves(tree))
  assert largest(grads['encoder']) > 0 and largest(grads['projector']) > 0
  assert largest(grads['predictor']) == 0.0 and float(grads['temperature']) == 0.0
  new, metrics = jax.jit(step_lib.make_train_step(setup))(state, images, ids)
  assert float(metrics['loss']) == pytest.approx(
      0.7 * float(metrics['views_pred']) + 0.3 * float(metrics['views_sigreg']), rel=1e-5)
  assert float(metrics['invariance']) == 0.0
  moved = lambda g: largest(jax.tree.map(lambda a, b: a - b, new['params'][g], state['params'][g]))
  assert moved('encoder') > 0 and moved('projector') > 0
  # EMA momentum 0: the target encoder is the updated encoder itself.
  assert all(bool(jnp.array_equal(a, b)) for a, b in zip(
      jax.tree.leaves(new['target_params']), jax.tree.leaves(new['params']['encoder'])))


@pytest.mark.parametrize('overrides, key', [
    ({'loss.views': 1}, 'loss.views'),
    ({'loss.views': -2}, 'loss.views'),
    ({'loss.views_lambda': 1.0}, 'loss.views_lambda'),
    ({'loss.views_lambda': 0.0}, 'loss.views_lambda'),
    ({'loss.views_projector': ()}, 'loss.views_projector'),
    ({'loss.views_projector': (16, 0)}, 'loss.views_projector'),
    ({'data.context_augment': ''}, 'data.context_augment'),
    ({'vq.enabled': True}, 'vq.enabled'),
    ({'loss.sigreg_weight': 0.05}, 'loss.sigreg_weight'),
    ({'loss.global_weight': 1.0}, 'loss.global_weight'),
    ({'loss.views_local': -1}, 'loss.views_local'),
    ({'loss.views_local': 2, 'loss.views_local_size': 3}, 'loss.views_local_size'),
    ({'loss.views_local': 2, 'loss.views_local_size': 0}, 'loss.views_local_size'),
    ({'loss.views_local': 2, 'loss.views_local_area': (0.3, 0.05)}, 'loss.views_local_area'),
    ({'loss.views_local': 2, 'data.context_augment': 'colour'}, 'data.context_augment'),
    ({'loss.views': 0, 'loss.views_local': 2, 'loss.views_lambda': 0.02}, 'loss.views_local'),
])
def test_bad_views_settings_are_refused_naming_the_key(overrides, key):
  from conftest import set_overrides  # noqa: PLC0415
  cfg = set_overrides(load('lejepa_views', 'tiny'), overrides)
  with pytest.raises(config_lib.ConfigError) as err:
    config_lib.validate(cfg)
  assert err.value.key == key and '\n' not in str(err.value)


def test_two_replicas_see_the_global_batch_as_one_device_does():
  """Split over two replicas (`jax.vmap` with an axis name stands in for the
  devices: the same all_gather), each replica's loss is the one-device loss
  of the whole batch, the projector's batch norm included, and the mean of
  their gradients is the one-device gradient."""
  _, ds, setup, state = _tiny_setup()
  images = jnp.asarray(ds.train_images[:8])
  ids = jnp.arange(8, dtype=jnp.int32)
  keys = jax.random.split(jax.random.PRNGKey(5), 3)
  trainables = step_lib.trainables_of(setup, state)
  one = objective.make_loss_fn(setup)
  two = objective.make_loss_fn(setup, axis_name='data')

  def replica(x, i):
    (total, _), g = jax.value_and_grad(two, has_aux=True)(trainables, state, x, i, keys)
    return total, jax.lax.pmean(g, 'data')

  totals, grads = jax.jit(jax.vmap(replica, axis_name='data'))(
      images.reshape((2, 4) + images.shape[1:]), ids.reshape(2, 4))
  (want, _), want_g = jax.jit(jax.value_and_grad(one, has_aux=True))(
      trainables, state, images, ids, keys)
  np.testing.assert_allclose(np.asarray(totals), [float(want)] * 2, rtol=1e-5)
  for got, ref in zip(jax.tree.leaves(grads), jax.tree.leaves(want_g)):
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(ref), rtol=1e-3, atol=1e-6)
