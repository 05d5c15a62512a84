"""Bad inputs: one line naming the key, file or value, exit status 2, nothing written."""
import os
import subprocess
import sys

import pytest

from jepa_jax import evaluate
from jepa_jax.config import load as config_lib
from jepa_jax.run import files as records
from jepa_jax.run import trained as final_state
from conftest import ROOT, load, set_overrides


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, '-m', 'jepa_jax.main', *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)


def _one_line(out):
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert out.returncode == 2 and len(lines) == 1, (out.returncode, out.stderr[-3000:])
  return lines[0]


@pytest.mark.parametrize('args, expected', [
    (('--config=configs/gentle.py', '--config.train.nonexistent=1'),
     'config error: --config.train.nonexistent: unknown config key'),
    (('--config=configs/gentle.py', '--config.trian.num_epochs=1'),
     'config error: --config.trian.num_epochs: unknown config key (nearest: '
     'train.num_epochs'),
    (('--config=configs/missing.py',),
     'config error: --config=configs/missing.py: no such file'),
    (('--config=configs/gentle.py:bogus',),
     "config error: --config=configs/gentle.py:bogus: ValueError: unknown config "
     "variant 'bogus'"),
    (('--config=configs/gentle.py', '--config.train.num_epochs=abc'),
     'error: flag --config.train.num_epochs=abc: invalid literal'),
    (('--config=configs/gentle.py:tiny', '--config.seed=-1'),
     'config error: config.seed=-1: must be an integer in [0, 2**62]'),
    (('--config=configs/lejepa_views.py:tiny', '--config.loss.views=1'),
     'config error: config.loss.views=1: must be 0 (off) or >= 2'),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(args, expected, tmp_path):
  workdir = tmp_path / 'run'
  assert _one_line(_cli(*args, f'--workdir={workdir}')).startswith(expected)
  assert not workdir.exists()


def test_cli_broken_config_file_and_workdir_that_is_a_file(tmp_path):
  broken = tmp_path / 'broken.py'
  broken.write_text('def get_config(arg=None:\n  pass\n')
  line = _one_line(_cli(f'--config={broken}', f'--workdir={tmp_path / "run"}'))
  assert line == f'config error: --config={broken}: {broken} line 1: invalid syntax'
  line = _one_line(_cli('--config=configs/gentle.py:tiny', '--workdir='))
  assert line == "error: workdir='': pass a folder, --workdir=FOLDER"
  afile = tmp_path / 'afile'
  afile.write_text('x')
  line = _one_line(_cli('--config=configs/gentle.py:tiny', f'--workdir={afile}'))
  assert line == f"error: workdir={str(afile)!r}: exists and is not a folder"
  assert afile.read_text() == 'x' and sorted(os.listdir(tmp_path)) == ['afile', 'broken.py']


@pytest.mark.parametrize('overrides, key', [
    ({'seed': -1}, 'seed'),
    ({'data.split_seed': -3}, 'data.split_seed'),
    ({'model.mlp_ratio': 0.0}, 'model.mlp_ratio'),
    ({'model.mlp_ratio': -1.0}, 'model.mlp_ratio'),
    ({'model.mlp_ratio': 0.01}, 'model.mlp_ratio'),        # int(0.01 * 8) = 0 units
    ({'train.min_learning_rate': 1.0}, 'train.min_learning_rate'),
    ({'train.ema_momentum_start': 1.0, 'train.ema_momentum_end': 0.99},
     'train.ema_momentum_start'),
    ({'train.warmup_epochs': 3}, 'train.warmup_epochs'),   # tiny: 2 epochs
    ({'loss.temperature_min': 1e-50, 'loss.temperature_init': 0.1},
     'loss.temperature_min'),
    ({'loss.temperature_max': 1e39}, 'loss.temperature_max'),
    ({'loss.temperature_min': 0.0}, 'loss.temperature_min'),
    ({'loss.entropy_temperature': 1e-45}, 'loss.entropy_temperature'),
    ({'data.context_augment': 'blur'}, 'data.context_augment'),
    ({'loss.capi_clusters': 0}, 'loss.capi_clusters'),
    ({'loss.capi_target_temperature': 0.0}, 'loss.capi_target_temperature'),
    ({'loss.pixel_weight': -1.0}, 'loss.pixel_weight'),
    ({'loss.target_layers': 0}, 'loss.target_layers'),
    ({'loss.target_layers': 2}, 'loss.target_layers'),     # tiny: 1 block
])
def test_validate_refuses_out_of_range_and_misordered_keys(overrides, key):
  cfg = set_overrides(load('gentle', 'tiny'), overrides)
  with pytest.raises(config_lib.ConfigError) as err:
    config_lib.validate(cfg)
  assert err.value.key == key and '\n' not in str(err.value)


def test_validate_accepts_the_edges_of_the_ranges():
  cfg = set_overrides(load('gentle', 'tiny'), {
      'train.warmup_epochs': 2, 'train.min_learning_rate': 1e-3,
      'train.ema_momentum_start': 1.0, 'train.ema_momentum_end': 1.0, 'seed': 0})
  config_lib.validate(cfg)


def test_evaluate_knn_k_out_of_range_is_refused_not_clamped(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_:
    evaluate.main(['--workdir', str(tmp_path / 'none'), '--knn_k', '0'])
  assert exit_.value.code == 2
  assert capsys.readouterr().err == ('error: python -m jepa_jax.evaluate: argument '
                                     '--knn_k: 0 must be >= 1\n')
  # A run folder (untrained weights suffice): more neighbours than examples.
  cfg = load('no_vq', 'tiny')
  records.write_json(str(tmp_path / 'config.json'), cfg.to_dict())
  from jepa_jax import data as data_lib
  from jepa_jax.train import step as step_lib
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)
  final_state.save(str(tmp_path), step_lib.init_state(setup, ds.image_shape, cfg.seed))
  # Probes are cross-validated over train + val: a fold fits on 4/5 of them.
  n = (len(ds.train_images) + len(ds.val_images)) * 4 // 5
  assert evaluate.main(['--workdir', str(tmp_path), '--knn_k', str(n + 1)]) == 2
  assert capsys.readouterr().err == (
      f"error: --knn_k={n + 1}: must be in [1, {n}] (the images a cross-validation "
      "fold of the probe set fits on, dataset 'digits')\n")
  assert not (tmp_path / 'eval.json').exists()


def test_missing_init_from_is_refused_before_the_data_loads(tmp_path, monkeypatch):
  from jepa_jax.run import checkpoint
  from jepa_jax.train import loop as train
  from jepa_jax import data as data_lib
  def no_data(cfg):
    raise AssertionError('data loaded before init_from was checked')
  monkeypatch.setattr(data_lib, 'load_dataset', no_data)
  cfg = load('gentle', 'tiny')
  cfg.init_from = str(tmp_path / 'nowhere')
  with pytest.raises(checkpoint.CheckpointError, match='no such checkpoint directory'):
    train.train_and_evaluate(cfg, str(tmp_path / 'run'))
  assert os.listdir(tmp_path) == []          # the lock's folder removed again


@pytest.mark.parametrize('module, argv, expected', [
    ('jepa_jax.diagnose', ['RUN', '--val_loss_bound', 'nan'],
     "argument --val_loss_bound: 'nan' is not a finite number"),
    ('jepa_jax.diagnose', ['RUN', '--strict=x'],
     'argument --strict: ignored explicit argument'),
    ('experiments.assess', ['--workdir', 'W', '--seeds', '-1'],
     "argument --seeds: '-1': give one or more seeds >= 0"),
    ('experiments.assess', ['--workdir', 'W', '--seeds', 'a,b'],
     "argument --seeds: 'a,b': seeds are integers, e.g. 0,1,2"),
    ('experiments.assess', ['--workdir', 'W', '--jobs', '0'],
     'argument --jobs: 0 must be >= 1'),
    ('experiments.assess', ['--seeds', '0'], 'the following arguments are required: --workdir'),
])
def test_cli_options_of_diagnose_and_assess_are_one_line(module, argv, expected, capsys):
  import importlib
  main = importlib.import_module(module).main
  with pytest.raises(SystemExit) as exit_:
    main(argv)
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and err.startswith(f'error: python -m {module}: {expected}'), err


def test_assess_refuses_a_workdir_that_is_a_file(tmp_path, capsys):
  from experiments import assess
  afile = tmp_path / 'afile'
  afile.write_text('x')
  with pytest.raises(SystemExit):
    assess.main(['--workdir', str(afile), '--variants', 'no_vq'])
  assert capsys.readouterr().err == (f'error: python -m experiments.assess: --workdir '
                                     f'{afile}: exists and is not a folder\n')


def test_an_older_run_folder_resumes_unless_a_setting_it_ran_with_changed():
  """workdir_config.config_diff reads a key added after the run folder was
  written at the value the code of its time used (config_defaults.ADDED_KEYS):
  absent keys whose default is unchanged make no difference; a default that
  changed since (vq.loss_reduction: 'sum' then, 'mean' now) is a real one."""
  import json  # noqa: PLC0415
  from jepa_jax.run import opening as workdir_config  # noqa: PLC0415
  new = workdir_config.config_to_json(load('gentle', 'tiny'))
  old = json.loads(json.dumps(new))
  for group, key in (('data', 'workers'), ('data', 'pipeline'), ('vq', 'reanchor_steps'),
                     ('vq', 'ema_decay_schedule'), ('monitor', 'option_b')):
    del old[group][key]
  assert workdir_config.config_diff(old, new) == []
  old['vq']['reanchor'] = True                          # a key it has: compared
  assert workdir_config.config_diff(old, new) == ['vq.reanchor: true -> false']
  old['vq']['reanchor'] = False
  new_mean = load('stable_codebook', 'tiny')           # element-mean VQ losses
  assert new_mean.vq.loss_reduction == 'mean'
  new = workdir_config.config_to_json(new_mean)
  old = json.loads(json.dumps(new))
  del old['vq']['loss_reduction']
  assert workdir_config.config_diff(old, new) == ['vq.loss_reduction: "sum" -> "mean"']
