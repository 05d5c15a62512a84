"""`vq.update_source` 'target' / 'context_whole': the EMA codebook learns
from the target / context encoder's whole-image tokens (jepa_jax/vq/quantizer.py
`update_state`, jepa_jax/objective/terms.py); and
`vq.placement='beside'`: the codebook is a read-out beside the encoder."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa_jax.config import load as config_lib
from jepa_jax.vq import quantizer as qz
from jepa_jax.vq import codebook as vq_lib
from conftest import load, set_overrides


def _tiny(**overrides):
  cfg = set_overrides(load('gentle', 'tiny'), {'train.warmup_epochs': 0, **overrides})
  config_lib.validate(cfg)
  return cfg


def test_update_state_learns_from_the_given_tokens_and_their_nearest_codes():
  spec = qz.make_spec(_tiny(**{'vq.update_source': 'target', 'vq.refresh_enabled': False}))
  assert spec.update_source == 'target' and spec.ema
  state = qz.init_state(spec, jax.random.PRNGKey(0))
  u = jax.random.normal(jax.random.PRNGKey(1), (24, spec.dim))         # context
  codes = vq_lib.nearest_codes(state.codebook, u)[0]
  t = 0.5 * jax.random.normal(jax.random.PRNGKey(2), (40, spec.dim)) + 1.0   # whole images
  w = np.ones(40, np.float32)
  w[35:] = 0.0                                                          # padding
  new = qz.update_state(spec, state, u=u, codes=codes, u_global=u, step=0,
                        refresh_key=jax.random.PRNGKey(3), update_tokens=t,
                        update_weights=w)
  want = vq_lib.ema_update(state, t, vq_lib.nearest_codes(state.codebook, t)[0],
                           spec.ema_decay, spec.epsilon, weights=w)
  np.testing.assert_array_equal(new.codebook, want.codebook)
  np.testing.assert_array_equal(new.usage, want.usage)
  assert float(new.usage.sum()) == 35.0                     # the valid target tokens
  # Without update tokens: the context tokens, as before.
  old = qz.update_state(spec, state, u=u, codes=codes, u_global=u, step=0,
                        refresh_key=jax.random.PRNGKey(3))
  assert float(old.usage.sum()) == 24.0


def test_with_sinkhorn_assignment_the_target_tokens_get_balanced_codes():
  """vq.assignment='sinkhorn' with target updates: the EMA update learns from
  the target tokens' Sinkhorn codes (assignment.sinkhorn_codes), which here
  differ from their nearest codes (a cloud far from most codes)."""
  from jepa_jax.vq import assignment  # noqa: PLC0415
  spec = qz.make_spec(_tiny(**{'vq.update_source': 'target', 'vq.refresh_enabled': False,
                               'vq.assignment': 'sinkhorn'}))
  state = qz.init_state(spec, jax.random.PRNGKey(0))
  u = jax.random.normal(jax.random.PRNGKey(1), (24, spec.dim))
  t = 0.5 * jax.random.normal(jax.random.PRNGKey(2), (40, spec.dim)) + 1.0
  w = np.ones(40, np.float32)
  w[35:] = 0.0
  new = qz.update_state(spec, state, u=u, codes=vq_lib.nearest_codes(state.codebook, u)[0],
                        u_global=u, step=0, refresh_key=jax.random.PRNGKey(3),
                        update_tokens=t, update_weights=w)
  balanced = assignment.sinkhorn_codes(t, state.codebook, spec.sinkhorn_epsilon,
                                       spec.sinkhorn_iters, w)
  nearest = vq_lib.nearest_codes(state.codebook, t)[0]
  assert len(set(np.asarray(balanced)[:35])) > len(set(np.asarray(nearest)[:35]))
  want = vq_lib.ema_update(state, t, balanced, spec.ema_decay, spec.epsilon, weights=w)
  np.testing.assert_array_equal(new.codebook, want.codebook)
  np.testing.assert_array_equal(new.usage, want.usage)


def test_train_step_counts_the_whole_image_tokens():
  """One JEPA step: the codebook's usage counts every whole-image token of
  the batch (16 images x 16 tokens) with 'target' and 'context_whole', the
  16 x 8 context tokens with 'context'."""
  from test_quantizer import _run  # noqa: PLC0415  (the tiny step runner)
  counts = {}
  for source in ('context', 'target', 'context_whole'):
    cfg = _tiny(**{'vq.update_source': source, 'vq.refresh_enabled': False})
    setup, s0, states, metrics, ds, _ = _run(cfg, num_steps=1)
    assert np.isfinite(metrics[0]['loss'])
    counts[source] = float(states[0]['vq'].usage.sum())
  tokens = (ds.image_shape[0] // cfg.model.patch_size) * (ds.image_shape[1] // cfg.model.patch_size)
  assert counts['context'] == cfg.train.batch_size * cfg.masking.num_context_tokens
  assert counts['target'] == counts['context_whole'] == cfg.train.batch_size * tokens


def test_context_whole_updates_from_the_context_encoders_whole_image_tokens():
  """The loss's update tokens: the context encoder's tokens of the unmasked
  images in the quantizer space ('context_whole'), the target encoder's
  ('target'); told apart at a state whose target encoder differs."""
  from jepa_jax import data as data_lib  # noqa: PLC0415
  from jepa_jax.objective import terms as objective  # noqa: PLC0415
  from jepa_jax.train import step as step_lib  # noqa: PLC0415
  got = {}
  for source in ('context_whole', 'target'):
    cfg = _tiny(**{'vq.update_source': source, 'vq.refresh_enabled': False})
    ds = data_lib.load_dataset(cfg)
    setup = step_lib.make_setup(cfg, ds)
    state = step_lib.init_state(setup, ds.image_shape, cfg.seed)
    state['target_params'] = jax.tree.map(lambda x: 0.9 * x, state['target_params'])
    images, ids = jnp.asarray(ds.train_images[:16]), jnp.arange(16, dtype=jnp.int32)
    _, aux = jax.jit(objective.make_loss_fn(setup))(
        step_lib.trainables_of(setup, state), state, images, ids,
        jax.random.split(jax.random.PRNGKey(7), 3))
    got[source] = np.asarray(aux['update_tokens'])
    by_hand = {name: np.asarray(qz.encode(setup.quantizer, state.get('vq_params'),
                                          setup.encoder.apply(p, images, None, None)))
               for name, p in (('context_whole', state['params']['encoder']),
                               ('target', state['target_params']))}
    np.testing.assert_allclose(got[source], by_hand[source], rtol=1e-5, atol=1e-6)
  assert got['target'].shape == got['context_whole'].shape == (16, 16, setup.quantizer.dim)
  assert not np.allclose(got['target'], got['context_whole'], atol=1e-3)


@pytest.mark.parametrize('overrides', [
    {'vq.update_source': 'full'},
    {'vq.update_source': 'target', 'vq.ema_decay': None},
    {'vq.update_source': 'context_whole', 'vq.ema_decay': None},
])
def test_bad_update_source_is_refused_naming_the_key(overrides):
  cfg = set_overrides(load('gentle', 'tiny'), overrides)
  with pytest.raises(config_lib.ConfigError) as err:
    config_lib.validate(cfg)
  assert err.value.key == 'vq.update_source'


def _grads_and_codebook(name, steps=0):
  """The loss and its gradient for the encoder on one :tiny batch at the
  initial state, and the codebook before and after `steps` train steps."""
  from jepa_jax import data as data_lib  # noqa: PLC0415
  from jepa_jax.objective import terms as objective  # noqa: PLC0415
  from jepa_jax.train import step as step_lib  # noqa: PLC0415
  cfg = set_overrides(load(name, 'tiny'), {'train.warmup_epochs': 0})
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)
  state = step_lib.init_state(setup, ds.image_shape, cfg.seed)
  images, ids = jnp.asarray(ds.train_images[:16]), jnp.arange(16, dtype=jnp.int32)
  keys = jax.random.split(jax.random.PRNGKey(7), 3)
  loss_fn = objective.make_loss_fn(setup)
  (loss, aux), grads = jax.jit(jax.value_and_grad(
      lambda t: loss_fn(t, state, images, ids, keys), has_aux=True))(
          step_lib.trainables_of(setup, state))
  codebooks = None
  if steps:
    step, moved = jax.jit(step_lib.make_train_step(setup)), state
    for i in range(steps):
      moved, _ = step(moved, jnp.asarray(ds.train_images[16 * i:16 * i + 16]),
                      jnp.arange(16 * i, 16 * i + 16, dtype=jnp.int32))
    codebooks = (np.asarray(state['vq'].codebook), np.asarray(moved['vq'].codebook))
  return float(loss), aux['parts'], grads['params']['encoder'], codebooks


def test_a_codebook_beside_the_encoder_leaves_its_loss_and_gradient_unchanged():
  """configs/ijepa_vq_beside.py: the predictor sees the unquantized tokens and
  no VQ term enters the loss, so at the same state and batch its loss and the
  encoder's gradient are ijepa.py's (to float32 rounding: the compiled
  programs differ); the codebook still learns (one step's EMA moves it). The
  same codebook in the encoder's path (ijepa_vq.py) changes both."""
  loss, _, g_base, _ = _grads_and_codebook('ijepa')
  loss_b, parts_b, g_beside, (before, after) = _grads_and_codebook('ijepa_vq_beside', steps=1)
  loss_i, _, g_inside, _ = _grads_and_codebook('ijepa_vq')
  assert loss_b == pytest.approx(loss, rel=1e-6) and 'commitment' not in parts_b
  close = jax.tree.map(lambda a, b: bool(np.allclose(a, b, rtol=1e-4, atol=1e-7)), g_base, g_beside)
  assert all(jax.tree.leaves(close))
  assert np.abs(after - before).max() > 0
  assert loss_i != pytest.approx(loss, rel=1e-3)
  far = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), g_base, g_inside)
  assert max(jax.tree.leaves(far)) > 1e-3


@pytest.mark.parametrize('overrides', [
    {'vq.placement': 'aside', 'vq.codebook_dim': None},
    {'vq.placement': 'beside', 'vq.codebook_dim': 8},        # nothing would train the projection
    {'vq.placement': 'beside', 'vq.codebook_dim': None, 'vq.ema_decay': None},
])
def test_bad_placement_is_refused_naming_the_key(overrides):
  cfg = set_overrides(load('gentle', 'tiny'), overrides)
  with pytest.raises(config_lib.ConfigError) as err:
    config_lib.validate(cfg)
  assert err.value.key == 'vq.placement'
