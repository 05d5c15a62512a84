"""The anti-collapse options wired into config and train step (jepa_jax/vq/quantizer.py).

Step-level checks run the :tiny model (one compile per test, several options
per compile where they do not interfere); the state transitions of the options
themselves are tested in test_anticollapse.py.
"""
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.results.goal_gaps import ami_sources
from jepa_jax import data as data_lib
from jepa_jax import evaluate
from jepa_jax.config import load as config_lib
from jepa_jax.eval import measure
from jepa_jax.run import files as run_files
from jepa_jax.run import trained
from jepa_jax.train import start as start_state
from jepa_jax.train import step as step_lib
from jepa_jax.vq import anticollapse as ac
from jepa_jax.vq import codebook as vq_lib
from jepa_jax.vq import health as codebook_health
from jepa_jax.vq import quantizer as qz
from conftest import load, set_overrides

AC_CONFIGS = ('ac_cosine', 'ac_lowdim', 'ac_simvq', 'ac_rotation', 'ac_reanchor',
              'ac_entropy', 'ac_fsq')


def _tiny(name='gentle', **overrides):
  """name:tiny at full learning rate from step 0, validated."""
  cfg = set_overrides(load(name, 'tiny'), {'train.warmup_epochs': 0, **overrides})
  config_lib.validate(cfg)
  return cfg


# XLA CPU options that cut the tiny step's compile time ~4x (14.5 s -> 3.7 s
# CPU); they change no semantics (test_parallel.py's FAST_COMPILE flags).
FAST = {'xla_cpu_use_fusion_emitters': False, 'xla_backend_optimization_level': 0}


def _compile(fn, *args):
  return jax.jit(fn).lower(*args).compile(compiler_options=FAST)


def _run(cfg, num_steps=2):
  """(setup, state0, [states after each step], [metrics], dataset, batches)."""
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)
  state0 = jax.tree.map(np.asarray, step_lib.init_state(setup, ds.image_shape, cfg.seed))
  batches = list(data_lib.epoch_batches(ds.train_images, cfg.train.batch_size,
                                        cfg.seed, 0, num_steps))
  step = _compile(step_lib.make_train_step(setup), state0, *batches[0])
  states, metrics, state = [], [], state0
  for images, ids in batches:
    state, m = step(state, images, ids)
    states.append(jax.tree.map(np.asarray, state))
    metrics.append(jax.device_get(m))
  return setup, state0, states, metrics, ds, batches


# --------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------


@pytest.mark.parametrize('name', AC_CONFIGS)
@pytest.mark.parametrize('arg', [None, 'tiny', 'arc', 'arc,tiny'])
def test_ac_configs_are_gentle_plus_their_option_and_take_variant_tokens(name, arg):
  cfg = load(name, arg)
  config_lib.validate(cfg)
  assert cfg.variant == name
  gentle = load('gentle', arg).to_dict()
  flat = lambda d, p='': {f'{p}{k}': v for kk, vv in d.items() for k, v in (  # noqa: E731
      flat(vv, f'{kk}.').items() if isinstance(vv, dict) else [(kk, vv)])}
  changed = {k for k, v in flat(cfg.to_dict()).items() if flat(gentle)[k] != v}
  assert changed - {'variant'} and changed <= {
      'variant', 'vq.l2_normalize', 'vq.codebook_dim', 'vq.simvq', 'vq.ema_decay',
      'vq.refresh_enabled', 'vq.estimator', 'vq.reanchor', 'loss.entropy_weight',
      'loss.entropy_temperature', 'vq.quantizer', 'vq.fsq_levels',
      'vq.commitment_cost'}


@pytest.mark.parametrize('arg', [None, 'tiny', 'arc', 'arc,tiny'])
def test_recommended_configs_take_variant_tokens(arg):
  from jepa_jax.train import stages  # noqa: PLC0415
  cfg = load('anticollapse', arg)
  config_lib.validate(cfg)
  assert (cfg.vq.codebook_dim, cfg.vq.l2_normalize, cfg.vq.refresh_enabled) == (8, True, True)
  assert (cfg.vq.refresh_warmup_steps, cfg.vq.refresh_warmup_interval,
          cfg.vq.refresh_sampling, cfg.vq.refresh_source) == (
              230, 2 if 'tiny' in (arg or '') else 5, 'far', 'full')
  old = load('anticollapse_epoch_refresh', arg)
  config_lib.validate(old)
  assert (old.vq.refresh_warmup_steps, old.vq.refresh_usage_threshold) == (0, 0.01)
  two = load('anticollapse_two_stage', arg)
  for stage in (1, 2):
    config_lib.validate(stages.stage_config(two, stage, init_from='runs/x'))
  s2 = stages.stage_config(two, 2, init_from='runs/x')
  assert (s2.vq.enabled, s2.vq.codebook_dim, s2.vq.l2_normalize, s2.vq.init) == (
      True, 8, True, 'kmeans')
  assert not stages.stage_config(two, 1).vq.enabled


BAD = [
    ({'vq.quantizer': 'lfq'}, 'vq.quantizer'),
    ({'vq.estimator': 'gumbel'}, 'vq.estimator'),
    ({'vq.codebook_dim': 17}, 'vq.codebook_dim'),          # tiny embed_dim is 16
    ({'vq.codebook_dim': 0}, 'vq.codebook_dim'),
    ({'vq.fsq_levels': (4, 1, 8)}, 'vq.fsq_levels'),
    ({'vq.reanchor': True, 'vq.reanchor_decay': 1.0}, 'vq.reanchor_decay'),
    ({'vq.reanchor': True, 'vq.reanchor_strength': 0.0}, 'vq.reanchor_strength'),
    ({'loss.entropy_weight': -0.1}, 'loss.entropy_weight'),
    ({'loss.entropy_temperature': 0.0}, 'loss.entropy_temperature'),
    ({'vq.enabled': False, 'loss.entropy_weight': 0.1}, 'loss.entropy_weight'),
    ({'vq.quantizer': 'fsq', 'vq.refresh_enabled': False, 'vq.commitment_cost': 0.0,
      'vq.codebook_size': 64}, 'vq.fsq_levels'),            # (4, 4, 2): 32 codes
    ({'vq.quantizer': 'fsq', 'vq.commitment_cost': 0.0}, 'vq.refresh_enabled'),
    ({'vq.quantizer': 'fsq', 'vq.refresh_enabled': False}, 'vq.commitment_cost'),
    ({'vq.quantizer': 'fsq', 'vq.refresh_enabled': False, 'vq.commitment_cost': 0.0,
      'vq.l2_normalize': True}, 'vq.l2_normalize'),
    ({'vq.quantizer': 'fsq', 'vq.refresh_enabled': False, 'vq.commitment_cost': 0.0,
      'vq.estimator': 'rotation'}, 'vq.estimator'),
    ({'vq.quantizer': 'fsq', 'vq.refresh_enabled': False, 'vq.commitment_cost': 0.0,
      'vq.reanchor': True}, 'vq.reanchor'),
    ({'vq.quantizer': 'fsq', 'vq.refresh_enabled': False, 'vq.commitment_cost': 0.0,
      'vq.codebook_dim': 8}, 'vq.codebook_dim'),
    ({'vq.quantizer': 'fsq', 'vq.refresh_enabled': False, 'vq.commitment_cost': 0.0,
      'loss.entropy_weight': 0.1}, 'loss.entropy_weight'),
    ({'vq.quantizer': 'fsq', 'vq.refresh_enabled': False, 'vq.commitment_cost': 0.0,
      'vq.init': 'kmeans'}, 'vq.init'),
    ({'vq.refresh_warmup_steps': -1}, 'vq.refresh_warmup_steps'),
    ({'vq.refresh_warmup_steps': 50, 'vq.refresh_warmup_interval': 0},
     'vq.refresh_warmup_interval'),
    ({'vq.refresh_warmup_steps': 50, 'vq.refresh_enabled': False},
     'vq.refresh_warmup_steps'),
    ({'vq.refresh_sampling': 'random'}, 'vq.refresh_sampling'),
    ({'vq.simvq': True}, 'vq.ema_decay'),
    ({'vq.simvq': True, 'vq.ema_decay': None, 'vq.refresh_enabled': False,
      'vq.reanchor': True}, 'vq.reanchor'),
]


@pytest.mark.parametrize('overrides,key', BAD)
def test_bad_values_and_combinations_name_the_key(overrides, key):
  cfg = set_overrides(load('gentle', 'tiny'), overrides)
  with pytest.raises(config_lib.ConfigError) as err:
    config_lib.validate(cfg)
  assert err.value.key == key
  assert str(err.value).startswith(f'config.{key}=') and '\n' not in str(err.value)


def test_config_json_of_older_runs_reads_with_every_option_off():
  from ml_collections import ConfigDict  # noqa: PLC0415
  cfg = load('gentle')
  old = json.loads(json.dumps(cfg.to_dict()))
  for key in config_lib.ADDED_KEYS:             # as written before the keys existed
    node = old
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    del node[leaf]
  del old['checkpoint']
  filled = config_lib.fill_added_keys(ConfigDict(old))
  config_lib.validate(filled)
  assert qz.make_spec(filled) == qz.make_spec(cfg)
  for key, value in config_lib.ADDED_KEYS.items():   # the values gentle.py has
    if key in config_lib.NEW_DEFAULTS and key != 'vq.loss_reduction':
      continue                                      # (gentle keeps 'sum')
    node = cfg
    for part in key.split('.'):
      node = node[part]
    assert node == value, key


def test_default_layer_is_exactly_vq_quantize():
  spec = qz.make_spec(load('gentle', 'tiny'))
  assert not (spec.project or spec.l2 or spec.simvq or spec.rotation) and spec.ema
  assert qz.init_params(spec, jax.random.PRNGKey(0)) == {}
  state = qz.init_state(spec, jax.random.PRNGKey(1))
  chex.assert_trees_all_equal(state, qz.with_health(
      vq_lib.init_state(jax.random.PRNGKey(1), 32, 16)))
  z = jax.random.normal(jax.random.PRNGKey(2), (3, 5, 16))
  f = lambda z: qz.quantize(spec, state.codebook, {}, z)        # noqa: E731
  g = lambda z: vq_lib.quantize(state, z)                       # noqa: E731
  (out, codes, aux), (want, want_codes, want_aux) = f(z), g(z)
  chex.assert_trees_all_equal((out, codes, aux['quantized']),
                              (want, want_codes, want_aux['quantized']))
  chex.assert_trees_all_equal(jax.grad(lambda z: f(z)[0].sum())(z),
                              jax.grad(lambda z: g(z)[0].sum())(z))


# --------------------------------------------------------------------------
# The step with each option
# --------------------------------------------------------------------------


def test_fsq_step_has_no_codebook_state_and_counts_grid_codes():
  cfg = _tiny('ac_fsq')
  setup, s0, states, metrics, ds, _ = _run(cfg)
  assert 'vq' not in s0 and 'vq' not in states[-1]            # nothing to collapse
  assert setup.quantizer.num_codes == 32 == cfg.vq.codebook_size
  assert s0['vq_params']['proj_in']['kernel'].shape == (16, 3)   # len((4, 4, 2))
  assert not np.allclose(s0['vq_params']['proj_in']['kernel'],
                         states[-1]['vq_params']['proj_in']['kernel'])   # trained
  for m in metrics:
    assert m['commitment'] == 0 and m['codebook'] == 0 and m['entropy'] == 0
  # Embedding metrics count FSQ's grid codes over its 32 implicit codes, the
  # same way as codebook codes: usage_stats of `quantizer.assign`.
  images = ds.val_images[:32]
  emb = _compile(measure.make_device_fn(setup, cfg.seed), states[-1], images)(
      states[-1], images)
  tokens = setup.encoder.apply(states[-1]['params']['encoder'], images, None)
  codes = qz.assign(setup.quantizer, None, states[-1]['vq_params'], tokens)
  u = qz.encode(setup.quantizer, states[-1]['vq_params'], tokens)
  chex.assert_trees_all_equal(codes, ac.fsq_quantize(u, (4, 4, 2))[1])
  chex.assert_trees_all_equal(emb['codes'], codes)
  want = vq_lib.usage_stats(codes, 32)
  got = codebook_health.usage_summary(codebook_health.code_counts(emb['codes'], 32))
  np.testing.assert_allclose(got['vq_codes_used'], want['vq_codes_used'])
  np.testing.assert_allclose(got['vq_perplexity'], want['vq_perplexity'], rtol=1e-6)
  assert 0 <= int(codes.min()) and int(codes.max()) < 32


def test_cosine_lowdim_reanchor_entropy_together():
  cfg = _tiny('ac_lowdim', **{'vq.l2_normalize': True, 'vq.reanchor': True,
                              'vq.refresh_enabled': False, 'loss.entropy_weight': 0.5,
                              'loss.entropy_temperature': 0.1})
  assert cfg.vq.codebook_dim == 8                  # tiny caps ac_lowdim's 8 at 8
  setup, s0, states, metrics, _, _ = _run(cfg, num_steps=3)
  spec = setup.quantizer
  assert spec.dim == 8 and spec.l2 and spec.ema
  for s in [s0, *states]:
    vq = s['vq']
    assert vq.codebook.shape == (32, 8)
    np.testing.assert_allclose(np.linalg.norm(vq.codebook, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(vq.embed_sum, vq.codebook * vq.cluster_size[:, None],
                               rtol=1e-5, atol=1e-6)
  # Projections are trainables, in the optimizer's tree.
  assert set(s0['vq_params']) == {'proj_in', 'proj_out'}
  assert 'vq_params' in step_lib.trainables_of(setup, states[-1])
  assert not np.allclose(s0['vq_params']['proj_out']['kernel'],
                         states[-1]['vq_params']['proj_out']['kernel'])
  # Running usage share: starts at 0 and each step adds (1 - decay) x shares summing to 1.
  np.testing.assert_allclose(s0['vq'].usage_ema, 0.0)
  for t, s in enumerate(states, start=1):
    np.testing.assert_allclose(s['vq'].usage_ema.sum(), 1 - 0.99 ** t, rtol=1e-5)
  # The entropy term is logged, bounded by ±log K, and part of the total.
  for m in metrics:
    assert -np.log(32) - 1e-5 <= m['entropy'] <= np.log(32) + 1e-5 and m['entropy'] != 0
    others = sum(w * m[k] for k, w in (
        ('infonce', 1.0), ('sigreg', cfg.loss.sigreg_weight),
        ('invariance', cfg.loss.invariance_weight),
        ('relational', cfg.loss.relational_loss.weight),
        ('relational_context', cfg.loss.relational_loss.context_self_weight),
        ('commitment', cfg.vq.commitment_cost)))
    np.testing.assert_allclose(m['loss'] - others, 0.5 * m['entropy'], rtol=1e-4, atol=1e-5)


def test_simvq_trains_the_map_and_never_the_basis():
  cfg = _tiny('ac_simvq')
  setup, s0, states, metrics, _, _ = _run(cfg)
  trainables = step_lib.trainables_of(setup, states[-1])
  assert 'codebook' not in trainables and 'simvq_map' in trainables['vq_params']
  np.testing.assert_array_equal(s0['vq_params']['simvq_map'], np.eye(16))
  assert not np.allclose(states[-1]['vq_params']['simvq_map'], np.eye(16))
  for s in states:                                  # the basis is frozen state
    np.testing.assert_array_equal(s['vq'].codebook, s0['vq'].codebook)
    np.testing.assert_array_equal(s['vq'].embed_sum, s0['vq'].embed_sum)
  assert all(m['codebook'] > 0 for m in metrics)
  assert float(states[-1]['vq'].usage.sum()) == 2 * 16 * cfg.masking.num_context_tokens
  # The codes looked up are basis @ map.
  e = qz.codebook(setup.quantizer, s0['vq'].codebook, states[-1]['vq_params'])
  np.testing.assert_allclose(e, s0['vq'].codebook @ states[-1]['vq_params']['simvq_map'],
                             rtol=1e-6)


def test_simvq_refresh_restarts_codes_in_the_code_space():
  # Dead codes restart on batch vectors: their basis rows become v W^+, so the
  # looked-up codes C W equal the vectors; live rows keep their basis bits.
  cfg = _tiny('ac_simvq', **{'vq.refresh_enabled': True, 'vq.refresh_sampling': 'far',
                             'vq.refresh_interval': 1,
                             'vq.refresh_usage_threshold': 1.0})
  spec = qz.make_spec(cfg)
  params = qz.init_params(spec, jax.random.PRNGKey(0))
  w = params['simvq_map'] + 0.3 * jax.random.normal(jax.random.PRNGKey(1), (16, 16))
  state = qz.init_state(spec, jax.random.PRNGKey(2))
  used = jnp.zeros((spec.num_codes,)).at[:4].set(1000.0)   # 0-3 live, the rest dead
  state = state.replace(usage=used)
  u = jax.random.normal(jax.random.PRNGKey(3), (2, 20, 16))
  codes = qz.assign(spec, state, {'simvq_map': w}, u)
  new = qz.update_state(spec, state, u=u, codes=codes, u_global=u, step=0,
                        refresh_key=jax.random.PRNGKey(4), simvq_map=w)
  dead = np.arange(spec.num_codes) >= 4
  np.testing.assert_array_equal(new.codebook[:4], state.codebook[:4])
  looked_up = np.asarray(qz.codebook(spec, new.codebook, {'simvq_map': w}))
  flat = np.asarray(u).reshape(-1, 16)
  for k in np.flatnonzero(dead):          # each restarted code is some batch vector
    assert np.min(np.abs(flat - looked_up[k]).max(1)) < 1e-4
  assert len({tuple(np.round(looked_up[k], 4)) for k in np.flatnonzero(dead)}) == dead.sum()
  assert int(np.asarray(new.restarts).sum()) == dead.sum()


def test_identity_gradient_same_forward_and_the_encoder_gets_the_gradient_too():
  """`vq.identity_gradient`: the layer's output is unchanged; the tokens'
  gradient is the projected path's plus the output's gradient itself."""
  over = {'vq.codebook_dim': 8, 'vq.l2_normalize': True}
  specs = {flag: qz.make_spec(_tiny('gentle', **over, **{'vq.identity_gradient': flag}))
           for flag in (False, True)}
  assert specs[True].identity_gradient and not specs[False].identity_gradient
  params = qz.init_params(specs[False], jax.random.PRNGKey(0))
  state = qz.init_state(specs[False], jax.random.PRNGKey(1))
  z = jax.random.normal(jax.random.PRNGKey(2), (4, 6, 16))
  w = jax.random.normal(jax.random.PRNGKey(3), (4, 6, 16))
  outs, grads = {}, {}
  for flag, spec in specs.items():
    f = lambda z, spec=spec: qz.quantize(spec, state.codebook, params, z)   # noqa: E731
    outs[flag] = f(z)
    grads[flag] = jax.grad(lambda z, f=f: jnp.sum(w * f(z)[0]))(z)
  np.testing.assert_array_equal(outs[True][0], outs[False][0])
  np.testing.assert_array_equal(outs[True][1], outs[False][1])
  np.testing.assert_allclose(grads[True] - grads[False], w, atol=1e-5)
  # Without projection or normalisation the layer passes it already: refused.
  cfg = set_overrides(load('gentle', 'tiny'), {'vq.identity_gradient': True})
  with pytest.raises(config_lib.ConfigError) as err:
    config_lib.validate(cfg)
  assert err.value.key == 'vq.identity_gradient'


def test_rotation_estimator_same_forward_other_gradient():
  """`vq.estimator='rotation'` reaches the layer: the same codes and forward
  value as straight-through, a gradient through sg(lambda R) instead of the
  identity (Jacobian values in test_anticollapse.py)."""
  specs = {est: qz.make_spec(_tiny('gentle', **{'vq.estimator': est}))
           for est in ('straight_through', 'rotation')}
  assert specs['rotation'].rotation and not specs['straight_through'].rotation
  state = qz.init_state(specs['rotation'], jax.random.PRNGKey(0))
  z = jax.random.normal(jax.random.PRNGKey(1), (4, 6, 16))
  w = jax.random.normal(jax.random.PRNGKey(2), (4, 6, 16))
  outs, grads = {}, {}
  for est, spec in specs.items():
    f = lambda z, spec=spec: qz.quantize(spec, state.codebook, {}, z)   # noqa: E731
    outs[est] = f(z)
    grads[est] = jax.grad(lambda z, f=f: jnp.sum(w * f(z)[0]))(z)
  chex.assert_trees_all_equal(outs['rotation'][1], outs['straight_through'][1])
  np.testing.assert_allclose(outs['rotation'][0], outs['straight_through'][0], atol=1e-4)
  np.testing.assert_array_equal(grads['straight_through'], w)        # identity
  assert np.abs(grads['rotation'] - w).max() > 0.1
  # lambda R is a scaled rotation: the gradient of each token keeps its norm
  # up to lambda = ||q|| / ||u||.
  q = outs['rotation'][2]['quantized']
  lam = np.linalg.norm(q, axis=-1) / np.linalg.norm(z, axis=-1)
  np.testing.assert_allclose(np.linalg.norm(grads['rotation'], axis=-1),
                             lam * np.linalg.norm(w, axis=-1), rtol=1e-4)


def test_reanchor_in_the_step_moves_only_under_used_codes():
  """quantizer.update_state in gradient mode (no EMA): codes whose running share
  is >= threshold x uniform stay bit for bit; the others move toward their
  nearest batch vector by exp(-strength K share - 1e-3)."""
  cfg = _tiny('gradient', **{'vq.reanchor': True, 'vq.refresh_enabled': False,
                             'vq.reanchor_strength': 2.0,
                             'vq.reanchor_threshold': 1.0, 'vq.reanchor_decay': 0.5})
  spec = qz.make_spec(cfg)
  k = 4
  state = vq_lib.VQState(
      codebook=jnp.array([[0., 0.], [4., 0.], [0., 4.], [-4., -4.]]),
      cluster_size=jnp.ones(k), embed_sum=jnp.zeros((k, 2)), usage=jnp.zeros(k),
      step=jnp.zeros((), jnp.int32), usage_ema=jnp.array([0.5, 0.3, 0.1, 0.1]))
  u = jnp.array([[0.1, 0.], [0.2, 0.1], [3., 1.], [0.5, 3.]])
  codes = jnp.array([0, 0, 1, 2])
  new = qz.update_state(spec, state, u=u, codes=codes, u_global=u, step=0,
                        refresh_key=jax.random.PRNGKey(0))
  share = 0.5 * state.usage_ema + 0.5 * np.array([0.5, 0.25, 0.25, 0.0])
  np.testing.assert_allclose(new.usage_ema, share, rtol=1e-6)
  # K share = [2.0, 1.1, 0.7, 0.2]: codes 0 and 1 are at >= the uniform share.
  np.testing.assert_array_equal(new.codebook[:2], state.codebook[:2])
  for c, anchor in ((2, [0.5, 3.]), (3, [0.1, 0.])):
    a = np.exp(-2.0 * k * share[c] - 1e-3)
    np.testing.assert_allclose(new.codebook[c], (1 - a) * np.asarray(state.codebook[c])
                               + a * np.asarray(anchor), rtol=1e-5)
  np.testing.assert_array_equal(new.usage, [2., 1., 1., 0.])


def test_reanchor_jumps_are_counted_as_restarts():
  """A re-anchoring step that moves a code at least halfway onto a batch
  feature (alpha_k >= 0.5) is a restart in the health bookkeeping (born,
  restarts); smaller moves are not. K share = [2.0, 1.1, 0.7, 0.2] as above,
  strength 1.5: alpha = [0, 0, exp(-1.05) = 0.35, exp(-0.3) = 0.74]."""
  cfg = _tiny('gradient', **{'vq.reanchor': True, 'vq.refresh_enabled': False,
                             'vq.reanchor_strength': 1.5,
                             'vq.reanchor_threshold': 1.0, 'vq.reanchor_decay': 0.5})
  spec = qz.make_spec(cfg)
  k = 4
  state = qz.with_health(vq_lib.VQState(
      codebook=jnp.array([[0., 0.], [4., 0.], [0., 4.], [-4., -4.]]),
      cluster_size=jnp.ones(k), embed_sum=jnp.zeros((k, 2)), usage=jnp.zeros(k),
      step=jnp.zeros((), jnp.int32), usage_ema=jnp.array([0.5, 0.3, 0.1, 0.1])))
  u = jnp.array([[0.1, 0.], [0.2, 0.1], [3., 1.], [0.5, 3.]])
  new = qz.update_state(spec, state, u=u, codes=jnp.array([0, 0, 1, 2]), u_global=u,
                        step=6, refresh_key=jax.random.PRNGKey(0))
  rates = ac.reanchor_rates(state.replace(usage_ema=new.usage_ema), 1.5,
                            threshold=1.0, share=new.usage_ema)
  np.testing.assert_allclose(rates, [0., 0., np.exp(-1.05 - 1e-3), np.exp(-0.3 - 1e-3)],
                             rtol=1e-5)
  np.testing.assert_array_equal(new.restarts, [0, 0, 0, 1])
  np.testing.assert_array_equal(new.born, [0, 0, 0, 7])
  np.testing.assert_array_equal(new.last_used, [7, 7, 7, 0])
  # The bookkeeping does not touch the codebook: code 3 moved by alpha_3.
  a = float(rates[3])
  np.testing.assert_allclose(new.codebook[3], (1 - a) * np.array([-4., -4.])
                             + a * np.array([0.1, 0.]), rtol=1e-5)


def test_reanchor_steps_limits_re_anchoring_to_the_first_steps():
  """vq.reanchor_steps = 3: step 2 re-anchors the dead code, step 3 leaves the
  codebook as the EMA update made it (the usage share is still tracked)."""
  cfg = _tiny('gentle', **{'vq.reanchor': True, 'vq.refresh_enabled': False,
                           'vq.reanchor_steps': 3})
  spec = qz.make_spec(cfg)
  assert spec.reanchor.steps == 3
  k = 3
  state = qz.with_health(vq_lib.VQState(
      codebook=jnp.array([[0., 0.], [4., 0.], [-9., -9.]]),
      cluster_size=jnp.ones(k), embed_sum=jnp.array([[0., 0.], [4., 0.], [-9., -9.]]),
      usage=jnp.zeros(k), step=jnp.zeros((), jnp.int32), usage_ema=jnp.zeros(k)))
  u = jnp.array([[0.1, 0.], [3.9, 0.]])
  codes = jnp.array([0, 1])
  out = {t: qz.update_state(spec, state, u=u, codes=codes, u_global=u, step=t,
                            refresh_key=jax.random.PRNGKey(0)) for t in (2, 3)}
  assert np.abs(np.asarray(out[2].codebook[2]) - [0.1, 0.]).max() < 0.01  # onto u_0
  np.testing.assert_array_equal(out[2].restarts, [0, 0, 1])
  np.testing.assert_array_equal(out[3].restarts, [0, 0, 0])
  np.testing.assert_allclose(out[3].usage_ema, out[2].usage_ema)
  # Past the limit the code sits where the EMA update left it.
  no_anchor = qz.update_state(qz.make_spec(_tiny('gentle', **{'vq.refresh_enabled': False})),
                              state, u=u, codes=codes, u_global=u, step=3,
                              refresh_key=jax.random.PRNGKey(0))
  np.testing.assert_array_equal(out[3].codebook, no_anchor.codebook)


def test_refresh_warmup_and_far_sampling_in_update_state():
  """quantizer.update_state follows the warm-up schedule (refresh after steps
  1, 3 with interval 2 before step 4, then every 5 steps) and restarts dead
  codes with refresh_far when refresh_sampling='far'."""
  cfg = _tiny('gradient', **{'vq.refresh_interval': 5, 'vq.refresh_warmup_steps': 4,
                             'vq.refresh_warmup_interval': 2,
                             'vq.refresh_usage_threshold': 0.5,
                             'vq.refresh_sampling': 'far'})
  spec = qz.make_spec(cfg)
  cb = jnp.array([[0., 0.], [4., 0.], [0., 4.], [-4., -4.]])
  state = vq_lib.VQState(codebook=cb, cluster_size=jnp.ones(4), embed_sum=cb,
                         usage=jnp.zeros(4), step=jnp.zeros((), jnp.int32))
  u = jnp.array([[0.1, 0.], [0.2, 0.1], [4., 0.5], [-6., 6.]])
  codes = jnp.array([0, 0, 1, 2])
  key = jax.random.PRNGKey(3)
  update = jax.jit(lambda s, t: qz.update_state(spec, s, u=u, codes=codes,
                                                u_global=u, step=t, refresh_key=key))
  fired = []
  for t in range(10):
    new = update(state, jnp.int32(t))
    if not np.any(np.asarray(new.usage)):     # a refresh starts a new window
      fired.append(t)
      # Code 3 (unused) restarts on the farthest-from-live vector, the others stay.
      np.testing.assert_array_equal(new.codebook[3], [-6., 6.])
      np.testing.assert_array_equal(new.codebook[:3], cb[:3])
  assert fired == [1, 3, 4, 9]


def test_kmeans_state_is_fitted_in_the_quantizer_space():
  tokens = jax.random.normal(jax.random.PRNGKey(0), (200, 16))
  key = jax.random.PRNGKey(1)
  fit = lambda u: vq_lib.kmeans_init(key, u, 32, 2)                 # noqa: E731
  # Options off: exactly vq.state_from_codebook(kmeans_init(tokens)).
  spec = qz.make_spec(_tiny('gentle', **{'vq.init': 'kmeans'}))
  chex.assert_trees_all_equal(qz.kmeans_state(spec, key, tokens, {}),
                              qz.with_health(vq_lib.state_from_codebook(fit(tokens))))
  # Projected, cosine, re-anchoring: centres of the unit 8-d inputs, unit codes.
  spec = qz.make_spec(_tiny('ac_lowdim', **{'vq.l2_normalize': True, 'vq.reanchor': True,
                                            'vq.refresh_enabled': False}))
  params = qz.init_params(spec, jax.random.PRNGKey(2))
  state = qz.kmeans_state(spec, key, tokens, params)
  want = ac.l2_normalize(fit(qz.encode(spec, params, tokens)))
  np.testing.assert_allclose(state.codebook, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(state.embed_sum, state.codebook, rtol=1e-6)
  np.testing.assert_array_equal(state.cluster_size, np.ones(32))
  np.testing.assert_array_equal(state.usage_ema, np.zeros(32))
  # SimVQ: the basis is the centres and the map the identity, so the codes too.
  spec = qz.make_spec(_tiny('ac_simvq'))
  params = qz.init_params(spec, jax.random.PRNGKey(2))
  state = qz.kmeans_state(spec, key, tokens, params)
  np.testing.assert_allclose(state.codebook, fit(tokens), rtol=1e-6)
  np.testing.assert_allclose(qz.codebook(spec, state.codebook, params), fit(tokens),
                             rtol=1e-6)


def test_run_start_fits_kmeans_codes_through_the_projection():
  cfg = _tiny('ac_lowdim', **{'vq.l2_normalize': True, 'vq.init': 'kmeans'})
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)
  fresh = step_lib.init_state(setup, ds.image_shape, cfg.seed)
  state = start_state.starting_state(cfg, setup, ds, fresh)
  book = np.asarray(state['vq'].codebook)
  assert book.shape == (32, 8) and not np.allclose(book, fresh['vq'].codebook)
  np.testing.assert_allclose(np.linalg.norm(book, axis=1), 1.0, rtol=1e-5)
  chex.assert_trees_all_equal(state['vq_params'], fresh['vq_params'])
  # The codes sit where the projected tokens are: every code is some tokens' nearest.
  tokens = setup.encoder.apply(state['params']['encoder'], ds.train_images[:256], None)
  codes = qz.assign(setup.quantizer, state['vq'], state['vq_params'], tokens)
  assert len(np.unique(np.asarray(codes))) >= 24


# --------------------------------------------------------------------------
# End to end: logs, final weights, evaluation
# --------------------------------------------------------------------------


def test_checkpoint_round_trip_keeps_projections_and_running_usage(tmp_path):
  from jepa_jax.run import checkpoint  # noqa: PLC0415
  cfg = _tiny('anticollapse', **{'vq.reanchor': True, 'vq.refresh_enabled': False,
                                 'vq.refresh_warmup_steps': 0})
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)
  fresh = step_lib.init_state(setup, ds.image_shape, cfg.seed)
  assert set(fresh['vq_params']) == {'proj_in', 'proj_out'}
  assert fresh['vq'].usage_ema.shape == (32,)
  leaves, treedef = jax.tree.flatten(fresh)
  rng = np.random.default_rng(0)
  state = checkpoint.detached_copy(jax.device_put(jax.tree.unflatten(treedef, [
      rng.standard_normal(x.shape).astype(x.dtype) if x.dtype.kind == 'f'
      else (np.asarray(x) + 3).astype(x.dtype) for x in leaves])))
  ckpts = checkpoint.RunCheckpoints(str(tmp_path / 'checkpoints'), keep=1)
  ckpts.save(state, {'step': 3}, {'seed': 0})
  ckpts.close()
  again = checkpoint.RunCheckpoints(str(tmp_path / 'checkpoints'), keep=1)
  restored = again.restore_latest(checkpoint.abstract_of(fresh))
  again.close()
  chex.assert_trees_all_equal(restored.state, state)


def test_recommended_config_saves_loads_and_evaluates(tmp_path):
  """A few steps of configs/anticollapse.py:tiny, written as a run folder:
  the final weights hold the quantizer's trainables and state and load back
  into the config's state; evaluate scores the codes the layer assigns."""
  cfg = _tiny('anticollapse')
  setup, s0, states, _, ds, _ = _run(cfg)
  run_files.write_json(str(tmp_path / 'config.json'), cfg.to_dict())
  trained.save(str(tmp_path), states[-1])
  _, _, _, loaded = trained.load_trained_state(str(tmp_path))
  for key in trained.KEYS:
    assert (key in s0) == (key in loaded)
    if key in s0:
      chex.assert_trees_all_equal(jax.tree.map(np.asarray, loaded[key]), states[-1][key])
  out = evaluate.evaluate_run(str(tmp_path))
  tokens = setup.encoder.apply(states[-1]['params']['encoder'], ds.val_images, None)
  codes = np.asarray(qz.assign(setup.quantizer, states[-1].get('vq'),
                               states[-1].get('vq_params'), tokens))
  assert out['codes_used_val'] == len(np.unique(codes))
  assert 0 <= out['code_label_nmi'] <= 1
  # experiments/results/goal_gaps/ami_sources (8-d cosine codes): the run's codes score
  # eval.json's AMI; k-means in the quantizer's space assigns normalised centres.
  amis = ami_sources.ami_sources(str(tmp_path))
  assert amis['run'] == pytest.approx(out['code_label_ami'], abs=1e-12)
  assert all(-1 <= amis[k] <= 1 for k in ('kmeans_space', 'kmeans_projected', 'kmeans_raw'))
  # Train usage and the val usage the train shares predict for this many val tokens.
  k = setup.quantizer.num_codes
  train_tokens = setup.encoder.apply(states[-1]['params']['encoder'], ds.train_images, None)
  train_codes = np.asarray(qz.assign(setup.quantizer, states[-1].get('vq'),
                                     states[-1].get('vq_params'), train_tokens))
  cb = out['codebook']
  assert cb['train_usage_ratio'] == len(np.unique(train_codes)) / k
  assert cb['val_tokens'] == codes.size
  p = np.bincount(train_codes.ravel(), minlength=k) / train_codes.size
  assert cb['expected_val_usage_ratio'] == pytest.approx(np.mean(1 - (1 - p) ** codes.size))
  assert json.load(open(tmp_path / 'eval.json'))['code_label_nmi'] == out['code_label_nmi']


def test_refresh_source_full_restarts_codes_on_whole_image_tokens():
  """configs/anticollapse.py's refresh (vq.refresh_source='full', 'far'
  sampling, in the warm-up, here every step): the step's refresh draws the
  updated context encoder's whole-image tokens (in the quantizer space), not
  the context tokens (data parallelism: test_parallel.py runs the recommended
  config on 2 devices)."""
  cfg = _tiny('anticollapse', **{'vq.refresh_warmup_interval': 1})
  assert (cfg.vq.refresh_source, cfg.vq.refresh_sampling) == ('full', 'far')
  setup, s0, states, _, _, batches = _run(cfg, num_steps=1)
  s1 = states[0]
  full = qz.encode(setup.quantizer, s1['vq_params'], setup.encoder.apply(
      s1['params']['encoder'], batches[0][0], None)).reshape(-1, setup.quantizer.dim)
  restarted = np.asarray(s1['vq'].cluster_size) == 1.0        # N_k = 1 after a restart
  assert 0 < restarted.sum() < setup.quantizer.num_codes
  # Each restarted code is (up to the l2 renormalisation) a whole-image token.
  dist = np.min(np.linalg.norm(np.asarray(s1['vq'].codebook)[restarted][:, None]
                               - np.asarray(full)[None], axis=-1), axis=-1)
  np.testing.assert_allclose(dist, 0.0, atol=1e-5)
  assert float(np.max(np.asarray(s1['vq'].usage))) == 0.0     # a new window


def test_ema_decay_schedule_scales_the_codebook_step_by_the_learning_rate():
  """vq.ema_decay_schedule='learning_rate': from the same state at a step T
  after warm-up, both runs assign the same codes (the update comes after the
  lookup), so N_k moves r_T = lr_T / lr_peak as far as with a constant decay:
  N_sched - N = r_T (N_const - N). Within warm-up r = 1 (identical states)."""
  out = {}
  for schedule in ('constant', 'learning_rate'):
    cfg = _tiny('gentle', **{'vq.refresh_enabled': False, 'train.warmup_epochs': 1,
                             'vq.ema_decay_schedule': schedule})
    ds = data_lib.load_dataset(cfg)
    setup = step_lib.make_setup(cfg, ds)
    s0 = jax.tree.map(np.asarray, step_lib.init_state(setup, ds.image_shape, cfg.seed))
    images, ids = next(iter(data_lib.epoch_batches(ds.train_images, cfg.train.batch_size,
                                                   cfg.seed, 0, 1)))
    step = _compile(step_lib.make_train_step(setup), s0, images, ids)
    late = dict(s0, step=np.asarray(setup.total_steps - 1, s0['step'].dtype))
    out[schedule] = (s0, step(s0, images, ids)[0], step(late, images, ids)[0], setup)
  s0, early_c, late_c, setup = out['constant']
  _, early_s, late_s, _ = out['learning_rate']
  assert setup.warmup_steps > 0
  chex.assert_trees_all_equal(early_c['vq'], early_s['vq'])
  r = float(setup.lr_schedule(setup.total_steps - 1)) / setup.cfg.train.learning_rate
  assert 0 < r < 0.5
  n0 = np.asarray(s0['vq'].cluster_size)
  np.testing.assert_allclose(np.asarray(late_s['vq'].cluster_size) - n0,
                             r * (np.asarray(late_c['vq'].cluster_size) - n0),
                             rtol=1e-4, atol=1e-7)


def test_ema_decay_schedule_is_refused_for_a_gradient_codebook():
  with pytest.raises(config_lib.ConfigError, match='vq.ema_decay_schedule'):
    _tiny('gradient', **{'vq.ema_decay_schedule': 'learning_rate'})
  with pytest.raises(config_lib.ConfigError, match='vq.ema_decay_schedule'):
    _tiny('gentle', **{'vq.ema_decay_schedule': 'cosine'})


@pytest.mark.parametrize('arg', [None, 'tiny', 'arc,tiny'])
def test_stable_codebook_configs_are_gentle_plus_their_quantizer(arg):
  """configs/stable_codebook.py, reanchor8.py and simvq8.py: gentle's losses
  (so no_vq_gentle is their matched baseline), 8-d codes, element-mean VQ
  losses, no refresh; stable_codebook = reanchor8 + the scheduled EMA step."""
  gentle = load('gentle', arg)
  cfgs = {n: load(n, arg) for n in ('stable_codebook', 'reanchor8', 'simvq8')}
  for name, cfg in cfgs.items():
    config_lib.validate(cfg)
    assert cfg.variant == name and cfg.loss == gentle.loss and cfg.train == gentle.train
    assert (cfg.vq.loss_reduction, cfg.vq.refresh_enabled) == ('mean', False)
    assert cfg.vq.codebook_dim == 8
  s, r, q = cfgs['stable_codebook'], cfgs['reanchor8'], cfgs['simvq8']
  assert (s.vq.reanchor, s.vq.l2_normalize, s.vq.ema_decay_schedule) == (True, True, 'learning_rate')
  r.vq.ema_decay_schedule = 'learning_rate'
  r.variant = 'stable_codebook'
  assert r.to_dict() == s.to_dict()
  assert (q.vq.simvq, q.vq.ema_decay, q.vq.reanchor) == (True, None, False)
