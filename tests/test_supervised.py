"""The supervised ceiling (experiments/results/representation/supervised.py),
run as a user runs it."""
import json
import os
import subprocess
import sys

from conftest import ROOT


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, '-m', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


def test_supervised_ceiling_starts_where_the_jepa_run_starts_and_learns(tmp_path):
  """Its step-0 probe is the JEPA run's (same architecture, seed and probe
  subset); it writes every point and its loss falls below ln(10)."""
  out = tmp_path / 'sup.json'
  sup = _run('experiments.results.representation.supervised', '--config=configs/ijepa.py:tiny',
             '--config.train.num_epochs=3', '--seed', '0', '--probe_every', '2', '--out', str(out))
  assert sup.returncode == 0, sup.stderr[-2000:]
  res = json.loads(out.read_text())
  steps = [p['step'] for p in res['trajectory']]
  assert steps[0] == 0 and steps[-1] == res['steps'] and steps == sorted(set(steps))
  run = _run('jepa_jax.main', '--config=configs/ijepa.py:tiny', f'--workdir={tmp_path / "w"}',
             '--config.train.num_epochs=3', '--config.train.probe_every_steps=2')
  assert run.returncode == 0, run.stderr[-2000:]
  summary = json.loads((tmp_path / 'w' / 'summary.json').read_text())
  assert res['steps'] == summary['steps']          # the override reached both
  assert res['overrides'] == ['--config.train.num_epochs=3']   # and is recorded
  first = json.loads((tmp_path / 'w' / 'probe_metrics.jsonl').read_text().splitlines()[0])
  assert first['step'] == 0
  assert abs(res['trajectory'][0]['linear'] - first['linear_target']) < 1e-9
  assert res['trajectory'][-1]['loss'] < 2.3026 and 0.0 <= res['head_val_acc'] <= 1.0


def test_supervised_ceiling_refuses_data_without_classes_in_one_line(tmp_path):
  sup = _run('experiments.results.representation.supervised', '--config=configs/ijepa.py:arc',
             '--out', str(tmp_path / 'x.json'))
  lines = [l for l in sup.stderr.splitlines() if l.strip()]
  assert sup.returncode == 2 and len(lines) == 1 and 'data.name' in lines[0], sup.stderr
  assert not (tmp_path / 'x.json').exists()


def test_supervised_ceiling_names_a_bad_override_in_one_line(tmp_path, capsys):
  from experiments.results.representation import supervised  # noqa: PLC0415
  out = tmp_path / 'x.json'
  assert supervised.main(['--config=configs/ijepa.py:tiny', '--config.train.no_such_key=1',
                          '--out', str(out)]) == 2
  err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert len(err) == 1 and 'train.no_such_key' in err[0] and not out.exists()


def test_seeds_table_pairs_each_seed_with_its_own_random_init(capsys):
  """The study's seeds table: each probe's gain is trained - random init of
  the same seed, averaged over the seeds, worst seed named (checked by hand
  against the kept files of seeds 0-2: mean token 30.4 - 22.0, 25.7 - 22.0,
  29.4 - 20.2)."""
  from experiments.results.representation import seeds_table
  assert seeds_table.main(['--seeds', '0,1,2']) == 0
  out = capsys.readouterr().out.splitlines()
  row = next(l for l in out if l.startswith('| mean token, 2,000'))
  assert '30.4 vs 22.0 (+8.4)' in row and '25.7 vs 22.0 (+3.7)' in row
  assert row.endswith('(+3.7, seed 1) |') and '| +7.1 [' in row
  # The share of the ceiling: the trajectory's end over the supervised run's
  # end at the same seed (27.7 / 66.2, 25.3 / 66.4, 27.2 / 65.5).
  share = next(l for l in out if l.startswith('| trajectory end, % of the supervised ceiling (`supervised`)'))
  assert '41.8 (27.7 of 66.2)' in share and '38.1 (25.3 of 66.4)' in share
  assert share.endswith('(38.1, seed 1) |')


def test_seeds_table_against_pairs_two_recipes_at_each_probe_point(capsys):
  """`--against`: two recipes' in-run trajectories, paired per seed at each
  shared probe point (checked by hand against the kept files: the target
  EMA screen ends 30.9 / 25.3 / 29.6 against `ijepa.py`'s 27.7 / 25.3 /
  27.2 at seeds 0-2; both start from the same random init)."""
  from experiments.results.representation import seeds_table
  assert seeds_table.main(['--seeds', '0,1,2', '--run', 'ijepa_ema99', '--against', 'ijepa']) == 0
  out = capsys.readouterr().out.splitlines()
  start = next(l for l in out if l.startswith('| target, step 0 |'))
  assert start.endswith('| +0.0 [+0.0, +0.0] (+0.0, seed 0) |')
  end = next(l for l in out if l.startswith('| target, step 2343 |'))
  assert '30.9 vs 27.7 (+3.2)' in end and '25.3 vs 25.3 (+0.0)' in end
  assert end.endswith('(+0.0, seed 1) |') and '| +1.9 [' in end
  assert not any(l.startswith('| target, end') for l in out)   # the last point is shared
