"""The stable-codebook goals table judges each goal at its threshold."""
from experiments import report_goals as goals


def _vals(**kw):
  v = {'k': 768, 'usage_min': 0.95, 'perplexity_min': 0.6, 'restarts': 0.0, 'churn': 0.03,
       'ctx_rank': 36.0, 'tgt_rank': 33.0, 'val': 3.6, 'probe': 0.78, 'probe_ci': 0.02,
       'ami': 0.16, 'kmeans_ami': None, 'alerts': 0, 'aborted': False,
       'usage_end': 0.9, 'train_usage': 1.0, 'val_ceiling': 0.95}
  v.update(kw)
  return v


BASE = [_vals(ctx_rank=38.0, tgt_rank=35.0, val=3.5, probe=0.79, ami=None, kmeans_ami=0.15)]


def test_a_run_meeting_every_goal_passes_all():
  cells = goals.judge('x', [_vals(), _vals(usage_min=0.93)], BASE, [0.13])
  assert all(c.endswith('✅') for g, c in cells.items() if g != 'end'), cells
  assert cells['end'] == '90.0% / 100.0% (95.0%)'
  assert cells['usage'].startswith('94.0% (worst 93.0%)')
  assert '(-5.3%)' in cells['ctx_rank'] and '(+2.9%)' in cells['val']


def test_each_goal_fails_just_past_its_threshold():
  bad = {'usage': _vals(usage_min=0.899), 'perplexity': _vals(perplexity_min=0.499),
         'restarts': _vals(restarts=0.0101), 'churn': _vals(churn=0.051),
         'ctx_rank': _vals(ctx_rank=0.899 * 38.0), 'tgt_rank': _vals(tgt_rank=0.899 * 35.0),
         'val': _vals(val=3.5 * 1.051), 'probe': _vals(probe=0.769),
         'ami': _vals(ami=0.149), 'alerts': _vals(alerts=1)}
  for goal, vals in bad.items():
    cells = goals.judge('x', [vals], BASE, [0.13])
    assert cells[goal].endswith('❌'), (goal, cells[goal])
    assert all(c.endswith('✅') for g, c in cells.items() if g not in (goal, 'end')), (goal, cells)


def test_large_codebooks_need_80_percent_and_ami_must_beat_other_variants():
  assert goals.judge('x', [_vals(k=8192, usage_min=0.81)], BASE, [])['usage'].endswith('✅')
  assert goals.judge('x', [_vals(k=768, usage_min=0.81)], BASE, [])['usage'].endswith('❌')
  assert goals.judge('x', [_vals(ami=0.16)], BASE, [0.17])['ami'].endswith('❌')


def test_without_a_baseline_the_relative_goals_are_not_judged():
  cells = goals.judge('x', [_vals()], None, [])
  for goal in ('ctx_rank', 'tgt_rank', 'val', 'probe'):
    assert not cells[goal].endswith(('✅', '❌')), cells[goal]
