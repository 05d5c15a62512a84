"""The command line explains itself: `--help` (exit 0; configs, variant
strings, key groups), two-stage overrides that reach stage 2, the
assessment refusing to start without what it needs, `--config.KEY=None`, a
default warm-up longer than a short run."""
import json
import os
import re
import subprocess
import sys

import pytest

from experiments import assess
from jepa_jax.config import flags as usage  # the --help text lives with the flags
from jepa_jax.train import stages
from conftest import ROOT, load


def test_help_exits_0_and_lists_configs_variant_strings_and_key_groups():
  for flag in ('--help', '-h', '--helpfull'):
    out = subprocess.run([sys.executable, '-m', 'jepa_jax.main', flag], cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, JAX_PLATFORMS='cpu'))
    assert out.returncode == 0, (flag, out.stderr)
    text = out.stdout
    assert 'configs/gentle.py' in text and 'configs/two_stage.py' in text
    assert 'configs/yaml_config.py' not in text            # an adapter, not a config
    variants = text[text.index('Variant strings'):text.index('Key groups')]
    for variant in ('arc', 'tiny', 'vit_s16', 'vit_b16'):
      assert re.search(rf'^ +({variant}|.*, {variant})\b', variants, re.M), variant
    assert 'train' in text and 'compilation_cache_dir' in text and 'stage2' in text
  assert '--workdir' in text and 'absl' in text.lower()     # --helpfull: absl's flags too


def test_help_text_is_read_from_the_configs():
  text = usage.text('DOC')
  names = [n for n, _ in usage.config_files()]
  # base.py re-exports the package's defaults: not a variant of its own.
  assert names == sorted(names) and 'configs/gentle.py' in names
  assert 'jepa_jax/config/base.py' not in names and 'configs/yaml_config.py' not in names
  for name, doc in usage.config_files():
    assert name in text and doc.split()[0] in text
  groups = dict(usage.key_groups())
  assert set(groups) >= {'', 'data', 'model', 'vq', 'train', 'checkpoint', 'monitor'}
  assert 'num_epochs' in groups['train'] and 'seed' in groups['']
  assert usage.two_stage_keys() == ['stage', 'stage2']
  assert usage.variant_strings().startswith('Variant strings')


def test_help_lists_the_names_of_a_file_of_several_configs(tmp_path, monkeypatch):
  (tmp_path / 'ablation.py').write_text(
      '"""Ablations, one per name."""\nABLATIONS = {"cosine": 1, "fsq": 2}\n')
  (tmp_path / 'gentle.py').write_text('"""Gentle."""\n')
  monkeypatch.setattr(usage, 'CONFIGS', str(tmp_path))
  assert usage.config_files() == [
      ('configs/ablation.py', 'Ablations, one per name. Names '
       '(configs/ablation.py:NAME[,variant]): cosine, fsq.'),
      ('configs/gentle.py', 'Gentle.')]


def test_two_stage_overrides_of_stage2_keys_apply_to_stage_2_too():
  cfg = load('two_stage', 'tiny')
  cfg.train.num_epochs = 5
  cfg.vq.commitment_cost = 0.2
  cfg.train.learning_rate = 3e-4                          # stage 2 does not set it
  carried = stages.carry_overrides_to_stage2(
      cfg, ['train.num_epochs', 'vq.commitment_cost', 'train.learning_rate'])
  assert carried == [('train.num_epochs', 5, 2), ('vq.commitment_cost', 0.2, 0.05)]
  s1, s2 = stages.stage_config(cfg, 1), stages.stage_config(cfg, 2, init_from='x')
  assert (s1.train.num_epochs, s2.train.num_epochs) == (5, 5)
  assert s2.vq.commitment_cost == 0.2
  assert s1.train.learning_rate == s2.train.learning_rate == 3e-4


def test_two_stage_overrides_given_for_each_stage_or_for_stage_1_alone_stay_apart():
  cfg = load('two_stage', 'tiny')
  cfg.train.num_epochs, cfg.stage2.train.num_epochs = 5, 3
  assert stages.carry_overrides_to_stage2(
      cfg, ['train.num_epochs', 'stage2.train.num_epochs']) == []
  assert stages.stage_config(cfg, 2, init_from='x').train.num_epochs == 3
  cfg = load('two_stage', 'tiny')
  cfg.stage, cfg.train.num_epochs = 1, 5                   # stage 1 alone
  assert stages.carry_overrides_to_stage2(cfg, ['train.num_epochs']) == []
  assert cfg.stage2.train.num_epochs == 2
  cfg.stage = 2                                            # stage 2 alone: it takes it
  assert stages.carry_overrides_to_stage2(cfg, ['train.num_epochs']) == [
      ('train.num_epochs', 5, 2)]
  plain = load('gentle', 'tiny')
  assert stages.carry_overrides_to_stage2(plain, ['train.num_epochs']) == []


def test_assess_checks_matplotlib_before_training(tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, 'matplotlib', None)   # `import matplotlib` fails
  trained = []
  monkeypatch.setattr(assess, 'train_and_evaluate', lambda *a, **k: trained.append(a))
  work = tmp_path / 'assessment'
  with pytest.raises(SystemExit) as exit_:
    assess.main(['--variants', 'gentle', '--workdir', str(work), '--config_arg', 'tiny'])
  assert exit_.value.code == 2
  err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
  assert len(err) == 1 and err[0].startswith('error: python -m experiments.assess: '
                                             'matplotlib is missing')
  assert 'pip install' in err[0]
  assert not trained and not work.exists()


def _run(module, *args, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_none_on_the_command_line_sets_a_key_that_may_be_none():
  """docs/configs.md: `steps_per_epoch` (`None` = full epochs); absl's int
  parser alone refuses 'None'. A key that may not be None still is refused."""
  out = _run('jepa_jax.config_export', '--config=configs/gentle.py:tiny',
             '--config.train.steps_per_epoch=None', '--config.vq.ema_decay=None')
  assert out.returncode == 0, out.stderr[-2000:]
  body = [l for l in out.stdout.splitlines() if not l.startswith('#')]
  assert 'ema_decay: null' in body and not any('steps_per_epoch' in l for l in body)
  tiny = _run('jepa_jax.config_export', '--config=configs/gentle.py:tiny').stdout
  assert 'train.steps_per_epoch: 3' in tiny.splitlines()       # what None replaced
  out = _run('jepa_jax.config_export', '--config=configs/gentle.py:tiny',
             '--config.train.num_epochs=None')
  assert out.returncode == 2 and out.stderr.splitlines() == [
      "error: flag --config.train.num_epochs=None: invalid literal for int() with base 10: "
      "'None'"], out.stderr


def test_flag_parsing_config_of_reads_none_as_main_does():
  from jepa_jax.config import flags as flag_parsing  # noqa: PLC0415
  cfg = flag_parsing.config_of(['x', '--config=configs/gentle.py:tiny',
                                '--config.train.steps_per_epoch=None'])
  assert cfg.train.steps_per_epoch is None


def test_a_fractional_warmup_from_the_command_line_is_rounded_to_steps():
  """`train.warmup_epochs` takes a fraction of an epoch (a warm-up shorter
  than one epoch): parsed as given, then rounded to steps by the setup."""
  from jepa_jax import data as data_lib  # noqa: PLC0415
  from jepa_jax.config import flags as flag_parsing  # noqa: PLC0415
  from jepa_jax.train import step as step_lib  # noqa: PLC0415
  cfg = flag_parsing.config_of(['x', '--config=configs/gentle.py:tiny',
                                '--config.train.steps_per_epoch=10',
                                '--config.train.warmup_epochs=0.46'])
  assert cfg.train.warmup_epochs == 0.46
  setup = step_lib.make_setup(cfg, data_lib.load_dataset(cfg))
  assert (setup.steps_per_epoch, setup.warmup_steps) == (10, 5)
  peak = cfg.train.learning_rate
  assert float(setup.lr_schedule(4)) < peak
  assert float(setup.lr_schedule(5)) == pytest.approx(peak)


def test_the_ladder_shortens_a_default_warmup_as_main_does():
  """A smoke ladder with one epoch per run: the configs' default warm-up (2
  epochs) no longer refuses it; an explicit one still does."""
  from experiments import ladder  # noqa: PLC0415
  from jepa_jax.config import load as config_lib  # noqa: PLC0415
  ladder.check_options('', 0, ['--config.train.num_epochs=1'])
  with pytest.raises(config_lib.ConfigError, match='train.warmup_epochs=2.0: longer than'):
    ladder.check_options('', 0, ['--config.train.num_epochs=1',
                                 '--config.train.warmup_epochs=2'])


@pytest.mark.slow
def test_a_default_warmup_longer_than_the_run_is_shortened_with_a_note(tmp_path):
  """A new user's smoke test (`--config.train.num_epochs=1` on a config that
  warms up for 3 epochs) runs, with one note naming the key to set."""
  cfg = tmp_path / 'warm.py'
  cfg.write_text('from configs import gentle\n\n\ndef get_config(arg=None):\n'
                 '  c = gentle.get_config(arg)\n  c.train.warmup_epochs = 3\n  return c\n')
  w = tmp_path / 'run'
  out = _run('jepa_jax.main', f'--config={cfg}:tiny', f'--workdir={w}',
             '--config.train.num_epochs=1', timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  notes = [l for l in out.stderr.splitlines() if l.startswith('note: ')]
  assert notes == ['note: train.warmup_epochs=3 is longer than the run (train.num_epochs=1): '
                   'shortened to 0; --config.train.warmup_epochs sets it'], out.stderr
  assert json.loads((w / 'config.json').read_text())['train']['warmup_epochs'] == 0


@pytest.mark.slow
def test_a_run_with_its_progress_bar_says_it_is_compiling_before_the_bar(tmp_path):
  """The first minute of a run (compiling) used to be silent: with the bar
  on, one line says what is compiling and one how long it took, before the
  bar's first update (runs without the bar print neither: the refusal
  tests count their stderr lines)."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, '-m', 'jepa_jax.main', '--config=configs/gentle.py:tiny',
                        f'--workdir={tmp_path / "w"}', '--config.train.progress_bar=True',
                        '--config.vq.commitment_cost=0.2'],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  # The run completes and a --config.KEY=VALUE override reaches the config.
  assert 'completed' in out.stdout
  assert json.load(open(tmp_path / 'w' / 'config.json'))['vq']['commitment_cost'] == 0.2
  err = out.stderr
  said, done = err.find('compiling the train step'), re.search(r'compiled in \d+ s\n', err)
  assert 0 <= said < done.start() < err.find('%|'), err[-3000:]
