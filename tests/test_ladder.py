"""The B -> C -> D decision ladder on tiny configs, the moves forced by
thresholds: B aborts on the Option-B rule, C on a red flag, D passes."""
import dataclasses
import json

import pytest

from experiments import ladder
from jepa_jax import diagnose

# Whole runs or subprocesses: left out of the fast subset (pytest -m 'not slow').
pytestmark = pytest.mark.slow

LENIENT = diagnose.Criteria(usage_min=-1.0, context_rank_min=-1.0, target_rank_min=-1.0,
                            trend_tolerance=float('inf'), trend_scatter=float('inf'))


@pytest.fixture
def forced(monkeypatch):
  b, c, d = ladder.OPTIONS
  monkeypatch.setattr(ladder, 'OPTIONS', (
      dataclasses.replace(b, overrides=b.overrides + ('monitor.option_b_rank=1000.0',)),
      dataclasses.replace(c, overrides=('monitor.abort=True', 'monitor.rank_abort=1000.0')),
      d))
  monkeypatch.setattr(ladder, 'CRITERIA', LENIENT)


def test_the_plan_is_b_then_c_then_d():
  assert [(o.name, o.variant, o.option_b_rule) for o in ladder.OPTIONS] == [
      ('B', 'gentle', True), ('C', 'gradient_long', False),
      ('D', 'two_stage_reference', False)]
  assert set(ladder.OPTIONS[0].overrides) == {'monitor.option_b=True', 'monitor.abort=True'}


def test_ladder_moves_b_to_c_to_d_writes_why_and_resumes(tmp_path, forced, capsys):
  workdir = tmp_path / 'ladder'
  argv = [f'--workdir={workdir}', '--config_arg=tiny', '--no_evaluate']
  assert ladder.main(argv) == 0
  out = json.loads((workdir / 'ladder.json').read_text())
  assert out['passed'] == 'D'
  b, c, d = out['steps']
  assert [s['option'] for s in out['steps']] == ['B', 'C', 'D']
  assert b['result']['status'] == 'aborted' and not b['passed']
  assert b['reasons'][0].startswith('Option B rule fired (VQ usage < 12% or context '
                                    'effective rank < 1000 by epoch 15): Option B rule: '
                                    'context effective rank ')
  assert b['reasons'][0].endswith('; the run aborted on it')
  assert not any(r.startswith('run aborted') for r in b['reasons'])
  assert c['result']['status'] == 'aborted' and 'rank' in c['reasons'][0]
  assert not any('Option B' in r for r in c['reasons'])   # the rule is B's
  assert d['passed'] and d['reasons'] == [] and d['result']['status'] == 'completed'
  assert out['decision'].endswith('Option D passed: it finished and met every '
                                  'must-have criterion.')
  md = (workdir / 'ladder.md').read_text()
  assert '**Result:** B failed (Option B rule fired' in md and '## Option D: Hybrid two-stage' in md
  assert md.count('must-have: ') == 3           # each stage's diagnose report
  for s in out['steps']:
    assert s['trained_now']
  # resumable: a second invocation reuses the finished folders
  assert ladder.main(argv) == 0
  again = json.loads((workdir / 'ladder.json').read_text())
  assert [s['trained_now'] for s in again['steps']] == [False, False, False]
  assert again['decision'] == out['decision']


def test_no_option_passing_is_exit_3(tmp_path, monkeypatch):
  monkeypatch.setattr(ladder, 'OPTIONS', ladder.OPTIONS[:1])
  monkeypatch.setattr(ladder.assess, 'train_and_evaluate',
                      lambda *a, **k: {'trained': False})
  run = tmp_path / 'w' / 'B_gentle'
  run.mkdir(parents=True)
  (run / 'config.json').write_text(json.dumps({'variant': 'gentle'}))
  (run / 'summary.json').write_text(json.dumps({'status': 'failed', 'reason': 'boom'}))
  assert ladder.main([f'--workdir={tmp_path / "w"}']) == 3
  out = json.loads((tmp_path / 'w' / 'ladder.json').read_text())
  assert out['passed'] is None and out['decision'] == (
      'B failed (run failed: boom); no option passed.')
