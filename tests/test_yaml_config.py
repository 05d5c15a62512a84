"""YAML configs: the reference names, the round trip, the refusals, the CLI."""
import os
import subprocess
import sys

import pytest

from jepa_jax.config import load as config_lib
from jepa_jax.config import yaml_io as yaml_config
from conftest import ROOT, load

YAML_VARIANTS = ('sixth_run', 'vq_no_refresh', 'no_vq', 'no_vq_gentle', 'gentle',
                 'gradient', 'gradient_long')


def _same(a, b):
  """Equal configs, value types included (tuples stay tuples)."""
  assert a.to_dict() == b.to_dict()
  for key in yaml_config.native_keys(a):
    x, y = yaml_config._get(a, key), yaml_config._get(b, key)
    assert type(x) is type(y), (key, x, y)


def _write(tmp_path, text, name='run.yaml'):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def test_reference_names_set_the_mapped_keys(tmp_path):
  path = _write(tmp_path, '\n'.join([
      'commitment_cost: 0.15', 'ema_decay: 0.95', 'vq_refresh_enabled: true',
      'vq_refresh_interval: 3000', 'vq_refresh_usage_threshold: 0.01',
      'temperature_min: 0.05', 'temperature_max: 0.20',
      'relational_loss:', '  weight: 0.025', '  context_self_weight: 0.01',
      'epochs: 30', 'batch_size: 32', 'learning_rate: 3e-4', 'codebook_size: 512',
      'vq.loss_reduction: sum', 'model:', '  depth: 3']))
  cfg = config_lib.load_config(path)
  assert (cfg.vq.commitment_cost, cfg.vq.ema_decay, cfg.vq.refresh_interval,
          cfg.vq.refresh_usage_threshold, cfg.vq.codebook_size) == (0.15, 0.95, 3000,
                                                                     0.01, 512)
  assert (cfg.loss.temperature_min, cfg.loss.temperature_max) == (0.05, 0.2)
  assert cfg.loss.relational_loss.to_dict() == {'weight': 0.025,
                                                'context_self_weight': 0.01}
  assert (cfg.train.num_epochs, cfg.train.batch_size, cfg.train.learning_rate) == (
      30, 32, 3e-4)
  assert (cfg.vq.loss_reduction, cfg.model.depth) == ('sum', 3)
  assert config_lib.load_config(_write(tmp_path, 'ema_decay: null\n', 'g.yaml')).vq.ema_decay is None
  tiny = config_lib.load_config(path + ':tiny')
  assert tiny.train.num_epochs == 2 and tiny.vq.commitment_cost == 0.15


def test_every_jepa_key_of_the_table_exists_and_names_are_one_to_one():
  leaves = yaml_config.native_keys(load('base'))
  assert set(yaml_config.REFERENCE_KEYS.values()) <= set(leaves)
  assert len(set(yaml_config.REFERENCE_KEYS.values())) == len(yaml_config.REFERENCE_KEYS)
  assert not set(yaml_config.NOT_SUPPORTED) & set(yaml_config.REFERENCE_KEYS)
  doc = open(os.path.join(ROOT, 'docs', 'yaml.md')).read()
  for ref, native in yaml_config.REFERENCE_KEYS.items():
    assert f'| `{ref}` | `{native}` |' in doc, ref
  for key in yaml_config.NOT_SUPPORTED:
    assert f'`{key}`' in doc, key


@pytest.mark.parametrize('text, expected', [
    ('commitment_cots: 0.1\n', 'commitment_cots: unknown config key (nearest: '
     'commitment_cost, vq.commitment_cost'),
    ('relational_loss:\n  wieght: 0.1\n', 'relational_loss.wieght: unknown config key '
     '(nearest: relational_loss.weight'),
    ('device: cuda\n', 'device: not supported by jepa_jax (JAX places the run'),
    ('num_workers: 4\n', 'num_workers: not supported by jepa_jax'),
    ('commitment_cost: 0.1\nvq.commitment_cost: 0.2\n',
     'vq.commitment_cost: sets vq.commitment_cost, already set by commitment_cost'),
    ('epochs: [1, 2]\n', 'epochs: [1, 2] is not a value of this key'),
    ('epochs: ten\n', "epochs: 'ten': "),
    ('- a\n- b\n', 'a YAML config is a mapping of keys, not a list'),
    ('epochs: 3\n  bad: [\n', 'line 2: '),
])
def test_refusals_are_one_line_naming_the_key(tmp_path, text, expected):
  path = _write(tmp_path, text)
  with pytest.raises(config_lib.InputError) as err:
    config_lib.load_config_checked(path)
  message = str(err.value)
  assert '\n' not in message and message.startswith(f'--config={path}: ')
  assert expected in message, message


@pytest.mark.parametrize('variant', YAML_VARIANTS)
@pytest.mark.parametrize('arg', [None, 'tiny'])
def test_yaml_files_give_the_config_of_their_py(variant, arg):
  spec = os.path.join(ROOT, 'configs', 'yaml', f'{variant}.yaml') + (f':{arg}' if arg else '')
  _same(config_lib.load_config(spec), load(variant, arg))


@pytest.mark.parametrize('variant', YAML_VARIANTS + ('base', 'anticollapse'))
def test_round_trip_is_identical(variant, tmp_path):
  for arg in (None, 'tiny'):
    cfg = load(variant, arg)
    path = _write(tmp_path, yaml_config.to_yaml(cfg, 'header'), f'{variant}.yaml')
    _same(config_lib.load_config(path), cfg)


def test_checked_in_yaml_files_are_what_config_export_writes():
  for variant in YAML_VARIANTS:
    text = open(os.path.join(ROOT, 'configs', 'yaml', f'{variant}.yaml')).read()
    body = [l for l in text.splitlines() if not l.startswith('#')]
    fresh = yaml_config.to_yaml(load(variant))
    assert body == fresh.splitlines(), variant


def test_a_two_stage_config_is_refused_by_the_export():
  with pytest.raises(config_lib.InputError, match='stage'):
    yaml_config.to_yaml(load('two_stage'))


def _run(module, *args):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


def test_config_export_cli_round_trip_and_yaml_overrides(tmp_path):
  out = tmp_path / 'g.yaml'
  res = _run('jepa_jax.config_export', '--config=configs/gentle.py',
             '--config.vq.commitment_cost=0.2', f'--out={out}')
  assert res.returncode == 0, res.stderr[-2000:]
  assert out.read_text().startswith('# jepa_jax config: configs/gentle.py\n')
  cfg = load('gentle')
  cfg.vq.commitment_cost = 0.2
  _same(config_lib.load_config(str(out)), cfg)
  # a YAML --config takes overrides too; its export is itself
  res = _run('jepa_jax.config_export', f'--config={out}', '--config.train.batch_size=8')
  assert res.returncode == 0, res.stderr[-2000:]
  assert 'batch_size: 8\n' in res.stdout and 'commitment_cost: 0.2\n' in res.stdout
  res = _run('jepa_jax.config_export', '--config=configs/two_stage.py')
  assert res.returncode == 2 and res.stderr.startswith('config error: config key stage')


def test_main_trains_from_a_yaml_config_with_overrides(tmp_path):
  path = _write(tmp_path, open(os.path.join(ROOT, 'configs', 'yaml', 'gentle.yaml')).read())
  workdir = tmp_path / 'run'
  res = _run('jepa_jax.main', f'--config={path}:tiny', f'--workdir={workdir}',
             '--config.train.num_epochs=1', '--config.checkpoint.every_steps=1000')
  assert res.returncode == 0, res.stderr[-3000:]
  import json
  saved = json.loads((workdir / 'config.json').read_text())
  assert saved['variant'] == 'gentle' and saved['train']['num_epochs'] == 1
  assert saved['vq']['commitment_cost'] == 0.15
  bad = _write(tmp_path, 'comitment_cost: 0.1\n', 'bad.yaml')
  res = _run('jepa_jax.main', f'--config={bad}', f'--workdir={tmp_path / "bad"}')
  lines = [l for l in res.stderr.splitlines() if l.strip()]
  assert res.returncode == 2 and lines == [
      f'config error: --config={bad}: comitment_cost: unknown config key (nearest: '
      'commitment_cost, vq.commitment_cost)']
  res = _run('jepa_jax.main', f'--config={path}', '--config.vq.comitment_cost=1',
             f'--workdir={tmp_path / "bad"}')
  assert res.returncode == 2 and 'nearest: vq.commitment_cost' in res.stderr
  assert not (tmp_path / 'bad').exists()
