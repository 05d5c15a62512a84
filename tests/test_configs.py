"""Config files: the ablation file, the variant-string parser, ordinary imports."""
import os
import subprocess
import sys

import pytest

from jepa_jax.config import base as config_base
from jepa_jax.config import load as config_lib
from conftest import ROOT, load, set_overrides

# The keys each ablation sets on the config it starts from (README, "Anti-collapse
# options"), written out here so a change to configs/ablation.py must match it.
ABLATION_KEYS = {
    'kmeans': ('gentle', {'vq.init': 'kmeans'}),
    'cosine': ('gentle', {'vq.l2_normalize': True}),
    'lowdim': ('gentle', {'vq.codebook_dim': 8}),
    'simvq': ('gentle', {'vq.simvq': True, 'vq.ema_decay': None,
                         'vq.refresh_enabled': False}),
    'rotation': ('gentle', {'vq.estimator': 'rotation'}),
    'reanchor': ('gentle', {'vq.refresh_enabled': False, 'vq.reanchor': True}),
    'entropy': ('gentle', {'loss.entropy_weight': 0.1, 'loss.entropy_temperature': 10.0}),
    'fsq': ('gentle', {'vq.quantizer': 'fsq', 'vq.fsq_levels': (8, 8, 4, 3),
                       'vq.refresh_enabled': False, 'vq.commitment_cost': 0.0}),
    'warmup3': ('anticollapse', {'vq.refresh_warmup_interval': 3}),
}


def _leaves(tree, prefix=''):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_leaves(value, f'{prefix}{key}.'))
    else:
      out[prefix + key] = value
  return out


@pytest.mark.parametrize('name', sorted(ABLATION_KEYS))
@pytest.mark.parametrize('arg', [None, 'tiny', 'arc,tiny'])
def test_each_ablation_is_its_start_config_with_its_keys(name, arg):
  start, keys = ABLATION_KEYS[name]
  cfg = load(f'ac_{name}', arg)          # configs/ablation.py:<name>[,arg]
  assert cfg == config_lib.load_config(
      os.path.join(ROOT, 'configs', 'ablation.py') + f':{name}' + (f',{arg}' if arg else ''))
  base, got = _leaves(load(start, arg).to_dict()), _leaves(cfg.to_dict())
  assert list(got) == list(base)                    # same keys, same order
  want = {'variant': f'ac_{name}', **keys}
  if arg and name == 'fsq':                         # tiny, applied after the keys:
    want['vq.fsq_levels'] = (4, 4, 2)               # its 32 implicit codes
  if arg and name == 'warmup3':
    want['vq.refresh_warmup_interval'] = 2          # its cap of 2 steps
  assert got == {**base, **want}
  for key, value in want.items():
    assert type(got[key]) is type(value), key
  config_lib.validate(cfg)


def test_variant_spec_maps_ablation_names_and_plain_names():
  spec = config_lib.variant_spec('ac_simvq', 'tiny')
  assert spec == os.path.join(ROOT, 'configs', 'ablation.py') + ':simvq,tiny'
  assert config_lib.variant_spec('gentle') == os.path.join(ROOT, 'configs', 'gentle.py')
  assert config_lib.variant_spec('ac_bogus', 'tiny').endswith('configs/ac_bogus.py:tiny')
  with pytest.raises(ValueError, match="unknown ablation 'bogus'.*known: kmeans"):
    config_lib.load_config(os.path.join(ROOT, 'configs', 'ablation.py') + ':bogus')


def test_one_variant_parser_and_tiny_shrinks_stage2():
  base = config_lib.configs_module('base')
  assert base.parse_variant(' arc, ,tiny ') == ('arc', 'tiny')
  assert base.parse_variant(None) == base.parse_variant('') == ()
  with pytest.raises(ValueError, match="unknown config variant 'tyni'"):
    base.parse_variant('tiny,tyni')
  full, tiny = load('two_stage'), load('two_stage', 'tiny')
  assert (full.stage2.train.num_epochs, full.stage2.vq.refresh_interval) == (10, 3000)
  assert (tiny.stage2.train.num_epochs, tiny.stage2.vq.refresh_interval) == (2, 2)
  assert tiny.stage2.train.frozen == full.stage2.train.frozen
  assert sorted(tiny.stage2.vq) == sorted(full.stage2.vq)   # sets only the keys it has
  ac = load('anticollapse_two_stage')
  assert ac.stage2.vq.refresh_interval == 23
  assert load('anticollapse_two_stage', 'tiny').stage2.vq.refresh_interval == 2
  assert load('two_stage_reference', 'tiny').stage2.train.num_epochs == 2


def test_config_files_import_each_other_from_any_working_directory(tmp_path):
  code = ('from jepa_jax.config import load as config_lib; '
          f"c = config_lib.load_config({os.path.join(ROOT, 'configs', 'gradient.py')!r} + ':tiny'); "
          'print(c.variant, c.vq.ema_decay, c.vq.commitment_cost)')
  env = dict(os.environ, PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env,
                       capture_output=True, text=True, check=True)
  assert out.stdout.split() == ['gradient', 'None', '0.15']


def test_validate_names_a_key_the_config_lacks():
  cfg = load('gentle')
  with cfg.unlocked():
    del cfg.model['attention']
  with pytest.raises(config_lib.ConfigError, match=r'^config\.model\.attention=missing: '
                     'the config lacks this key') as err:
    config_lib.validate(cfg)
  assert err.value.key == 'model.attention'
  config_lib.validate(config_lib.fill_added_keys(cfg))    # an added key: filled


# Each vq / loss.entropy key and a value that differs from the start config's.
SPEC_KEYS = {
    'vq.codebook_size': 64, 'vq.commitment_cost': 0.2, 'vq.ema_decay': 0.9,
    'vq.ema_decay_schedule': 'learning_rate',
    'vq.epsilon': 1e-4, 'vq.init_scale': 0.5, 'vq.loss_reduction': 'mean',
    'vq.refresh_enabled': False, 'vq.refresh_interval': 7,
    'vq.refresh_usage_threshold': 0.2, 'vq.refresh_warmup_steps': 3,
    'vq.refresh_warmup_interval': 2, 'vq.refresh_sampling': 'far',
    'vq.refresh_source': 'full', 'vq.init': 'kmeans', 'vq.kmeans_iters': 3,
    'vq.kmeans_num_samples': 100, 'vq.quantizer': 'fsq', 'vq.fsq_levels': (4, 4),
    'vq.l2_normalize': True, 'vq.codebook_dim': 4, 'vq.simvq': True,
    'vq.estimator': 'rotation', 'vq.identity_gradient': True, 'vq.reanchor': False, 'vq.reanchor_strength': 5.0,
    'vq.reanchor_threshold': 0.5, 'vq.reanchor_decay': 0.5, 'vq.reanchor_steps': 4,
    'vq.assignment': 'sinkhorn', 'vq.sinkhorn_epsilon': 0.5, 'vq.sinkhorn_iters': 3,
    'vq.ibq_temperature': 3.0, 'vq.update_source': 'target', 'vq.placement': 'beside',
    'loss.entropy_weight': 0.3, 'loss.entropy_temperature': 2.0,
}


@pytest.mark.parametrize('key', sorted(SPEC_KEYS))
def test_the_quantizer_spec_carries_every_quantizer_key(key):
  """Below make_spec nothing reads config.vq: each key of the layer changes
  the Spec (vq.enabled: no Spec; vq.codebook_learning_rate: the optimizer's)."""
  from jepa_jax.vq import spec as quantizer_spec  # noqa: PLC0415
  start = {'vq.reanchor': True, 'vq.refresh_warmup_steps': 1}
  if key == 'vq.fsq_levels':
    start['vq.quantizer'] = 'fsq'
  cfg = set_overrides(load('gentle'), start)
  changed = set_overrides(load('gentle'), {**start, key: SPEC_KEYS[key]})
  assert quantizer_spec.make_spec(changed) != quantizer_spec.make_spec(cfg)
  assert set(SPEC_KEYS) | {'vq.enabled', 'vq.codebook_learning_rate'} == {
      f'vq.{k}' for k in cfg.vq} | {'loss.entropy_weight', 'loss.entropy_temperature'}


def test_ijepa_vq_is_ijepa_with_the_recommended_quantizer_and_ijepa_its_baseline():
  """configs/ijepa_vq.py: ijepa.py outside `vq`, early_refresh_settled's
  quantizer inside it but for the 200-step warm-up; the assessment's matched
  baseline of it is ijepa.py."""
  from experiments import report_health
  for arg in (None, 'shapes'):
    vq, ij, ers = (_leaves(load(n, arg).to_dict())
                   for n in ('ijepa_vq', 'ijepa', 'early_refresh_settled'))
    assert {k: v for k, v in vq.items() if not k.startswith('vq.') and k != 'variant'} == {
        k: v for k, v in ij.items() if not k.startswith('vq.') and k != 'variant'}
    assert {k: v for k, v in vq.items() if k.startswith('vq.')} == {
        **{k: v for k, v in ers.items() if k.startswith('vq.')}, 'vq.refresh_warmup_steps': 200}
    assert vq['vq.enabled'] and not ij['vq.enabled']
    assert report_health._matchable(load('ijepa_vq', arg).to_dict()) == report_health._matchable(
        load('ijepa', arg).to_dict())


def _shapes_study_config(variant, seed):
  """The leaves of config.json logged by the codebook_shapes study's run
  logs/VARIANT/seed_SEED (experiments/results/codebook_shapes/)."""
  import json  # noqa: PLC0415
  path = os.path.join(ROOT, 'experiments', 'results', 'codebook_shapes', 'logs', variant,
                      f'seed_{seed}', 'config.json')
  with open(path) as f:
    return _leaves(json.load(f))


def _frozen_run_keys(seed):
  """The keys the study's frozen-encoder runs at `seed` set on the command
  line but `train.frozen`: measurement points every 400 steps, stage 1 (the
  last checkpoint of `ijepa.py`'s run at seeds 0-1, of the 8,192-code run's
  at 2-4), every checkpoint kept, the progress bar off."""
  stage1 = 'ijepa' if seed < 2 else 'k8192cw'
  return {'train.probe_every_steps': 400, 'train.embedding_metrics_every_steps': 400,
          'init_from': f'runs/{stage1}/seed_{seed}/checkpoints/2343',
          'checkpoint.keep': 100, 'train.progress_bar': False, 'seed': seed}


def test_ijepa_vq_whole_is_the_logged_context_whole_runs_config_and_ijepa_its_baseline():
  """configs/ijepa_vq_whole.py is, but for its name, the config the study's
  `ijepa_vq_beside_cw` runs logged (experiments/results/codebook_shapes/logs:
  ijepa_vq_beside.py:shapes with vq.update_source='context_whole', seeds
  0-4), so its numbers are those runs'; its matched baseline is ijepa.py."""
  import json  # noqa: PLC0415
  from experiments import report_health  # noqa: PLC0415
  whole = _leaves(load('ijepa_vq_whole', 'shapes').to_dict())
  beside = _leaves(load('ijepa_vq_beside', 'shapes').to_dict())
  assert whole == {**beside, 'variant': 'ijepa_vq_whole', 'vq.update_source': 'context_whole'}
  # The study's command line: measurement points every 400 steps, the seed.
  study = json.loads(json.dumps({**whole, 'train.probe_every_steps': 400,
                                 'train.embedding_metrics_every_steps': 400}))   # tuples -> lists
  for seed in range(5):
    logged = _shapes_study_config('ijepa_vq_beside_cw', seed)
    # Keys added since the runs: read as a run written before them reads them.
    logged = {**json.loads(json.dumps(    # tuples -> lists, as in the logged file
        {k: v for k, v in config_base.added_keys().items() if k in study})), **logged}
    assert {**logged, 'variant': 'ijepa_vq_whole'} == {**study, 'seed': seed}, seed
  assert report_health._matchable(load('ijepa_vq_whole').to_dict()) == report_health._matchable(
      load('ijepa', None).to_dict())


def test_the_frozen_encoder_runs_logged_ijepa_vq_whole_with_the_encoder_held():
  """The study's `ijepa_vq_whole_frozen` runs (seeds 2-3) logged the README's
  command: ijepa_vq_whole.py:shapes (but for its name) started from the
  8,192-code run's last checkpoint with encoder, target encoder and
  predictor frozen, every checkpoint kept, the progress bar off; nothing
  else differs. The `_nearest` runs (seeds 0-4) add nearest codes and a
  k-means++ start (seeds 0-1 from `ijepa.py`'s last checkpoint, whose
  encoder the 8,192-code run's equals), `_nearest_only` (seed 2) nearest
  codes alone."""
  import json  # noqa: PLC0415
  whole = _leaves(load('ijepa_vq_whole', 'shapes').to_dict())
  nearest = {'vq.assignment': 'nearest', 'vq.init': 'kmeans'}
  runs = [('ijepa_vq_whole_frozen', seed, {}) for seed in (2, 3)] + [
      ('ijepa_vq_whole_frozen_nearest', seed, nearest) for seed in (0, 1, 2, 3, 4)] + [
      ('ijepa_vq_whole_frozen_nearest_only', 2, {'vq.assignment': 'nearest'})]
  for folder, seed, extra in runs:
    logged = _shapes_study_config(folder, seed)
    command = json.loads(json.dumps({    # tuples -> lists, as in the logged file
        **whole, **_frozen_run_keys(seed),
        'train.frozen': ('encoder', 'target_encoder', 'predictor'), **extra}))
    assert {**logged, 'variant': 'ijepa_vq_whole'} == command, (folder, seed)


def test_ijepa_two_stage_is_ijepa_then_the_logged_frozen_codebook_runs():
  """configs/ijepa_two_stage.py: stage 1 is ijepa.py but for its name; stage
  2 is, but for its name and the command's measurement keys, the config the
  study's `ijepa_vq_whole_frozen_nearest_decay99` runs logged (seeds 0-4:
  ijepa_vq_whole.py:shapes, the encoder, target encoder and predictor held,
  nearest codes from a k-means++ start, EMA decay 0.99), so its numbers are
  those runs'."""
  import json  # noqa: PLC0415
  from jepa_jax.train import stages  # noqa: PLC0415
  cfg = load('ijepa_two_stage', 'shapes')
  assert _leaves(stages.stage_config(cfg, 1).to_dict()) == {
      **_leaves(load('ijepa', 'shapes').to_dict()), 'variant': 'ijepa_two_stage_stage1', 'stage': 1}
  for seed in range(5):
    keys = _frozen_run_keys(seed)
    s2 = _leaves(stages.stage_config(cfg, 2, init_from=keys['init_from']).to_dict())
    command = json.loads(json.dumps({**s2, **keys}))   # tuples -> lists, as in the logged file
    logged = _shapes_study_config('ijepa_vq_whole_frozen_nearest_decay99', seed)
    assert {**logged, 'variant': 'ijepa_two_stage_stage2', 'stage': 2} == command, seed
