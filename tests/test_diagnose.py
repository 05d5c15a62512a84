"""The success-criteria checker on hand-made run folders."""
import json

import numpy as np
import pytest

from jepa_jax import diagnose
from jepa_jax.eval import goals

# The reference's VQ-no-refresh run: usage every 200 steps (17.7% -> 4.4%).
REF_USAGE = [(200, .177), (400, .164), (600, .148), (800, .138), (1000, .113),
             (1200, .095), (1400, .087), (1600, .073), (1800, .059), (2000, .061),
             (2850, .044)]


def make_run(path, usage, ctx, tgt, vals, status='completed', num_epochs=None,
             vq=True, monitor=None):
  """A run folder with the four files a run writes."""
  path.mkdir(parents=True, exist_ok=True)
  num_epochs = num_epochs or len(vals)
  cfg = {'variant': path.name, 'train': {'num_epochs': num_epochs,
                                         'early_stopping_patience': 10}}
  if monitor:
    cfg['monitor'] = monitor
  (path / 'config.json').write_text(json.dumps(cfg))
  (path / 'summary.json').write_text(json.dumps({'status': status}))
  with open(path / 'embedding_metrics.jsonl', 'w') as f:
    for (step, u), c, t in zip(usage, ctx, tgt):
      rec = {'step': step, 'epoch': step // 100, 'context_effective_rank': c,
             'target_effective_rank': t}
      if vq:
        rec.update(vq_usage_ratio=u, vq_codes_used=round(u * 768))
      f.write(json.dumps(rec) + '\n')
  with open(path / 'epoch_metrics.jsonl', 'w') as f:
    for e, v in enumerate(vals):
      f.write(json.dumps({'epoch': e, 'step': 100 * (e + 1), 'val_loss_mean': v,
                          'train_loss_mean': v}) + '\n')
  return str(path)


def statuses(result):
  return {c['name']: c['status'] for c in result['criteria']}


@pytest.fixture
def runs(tmp_path):
  n = len(REF_USAGE)
  steps = [s for s, _ in REF_USAGE]
  healthy = make_run(tmp_path / 'healthy', [(s, 0.30 + 0.001 * (i % 2)) for i, s in
                                            enumerate(steps)],
                     [12.0] * n, [25.0] * n, list(np.linspace(8.5, 7.8, 30)))
  collapsing = make_run(tmp_path / 'collapsing', REF_USAGE,
                        list(np.linspace(3.29, 1.43, n)), list(np.linspace(5.65, 2.94, n)),
                        [8.7, 8.68, 9.1, 9.24, 9.03, 8.99])
  erratic = make_run(tmp_path / 'erratic',
                     [(s, 0.40 if i % 3 == 2 else 0.004) for i, s in enumerate(steps)],
                     [3.5] * n, [4.2] * n, [9.0, 8.5, 8.4], status='early_stopped',
                     num_epochs=80)
  no_vq = make_run(tmp_path / 'no_vq', [(s, 0) for s in steps], [12.7] * n, [24.7] * n,
                   [7.9, 7.75], vq=False)
  return {'healthy': healthy, 'collapsing': collapsing, 'erratic': erratic,
          'no_vq': no_vq}


def test_healthy_run_passes_everything(runs):
  crit = diagnose.Criteria(val_loss_bound=8.5, val_loss_nice_bound=8.0)
  r = diagnose.check_run(diagnose.load_run(runs['healthy']), crit)
  assert {c['status'] for c in r['criteria'] if c['level'] != 'goal'} == {'pass'}
  # Its logs predate train-token counting: the stable-codebook goals cannot
  # be judged, so they fail (and leave the must-haves alone).
  goal = [c for c in r['criteria'] if c['level'] == 'goal']
  assert [c['name'] for c in goal] == ['train_usage', 'window_usage', 'perplexity',
                                       'restarts', 'churn']
  assert all(c['status'] == 'fail' and 'cannot judge' in c['detail'] for c in goal)
  assert r['trajectory']['label'] == 'flat' and r['must_have_passed']
  assert r['red_flags'] == []


def test_reference_collapse_fails_the_must_haves(runs):
  crit = diagnose.Criteria(val_loss_bound=8.5, val_loss_nice_bound=8.0)
  r = diagnose.check_run(diagnose.load_run(runs['collapsing']), crit)
  st = statuses(r)
  assert st['usage_throughout'] == st['usage_trajectory'] == 'fail'
  assert st['context_rank'] == st['target_rank'] == st['val_loss'] == 'fail'
  assert st['stable_full_budget'] == 'fail'            # completed, but red flags
  assert r['trajectory']['label'] == 'declining'
  assert r['trajectory']['relative_trend'] < -0.1
  usage_check = r['criteria'][0]
  assert usage_check['value'] == pytest.approx(0.044) and 'step 2850' in usage_check['detail']
  assert r['red_flags'][0] == 'VQ usage 9.5% < 10% at step 1200'
  assert any('context effective rank' in f for f in r['red_flags']) is False  # 1.43 >= 1
  assert r['alerts']['usage_low'] == 1 and r['alerts']['usage_declining'] == 1
  assert not r['must_have_passed']


def test_refresh_spikes_are_erratic_not_growing(runs):
  r = diagnose.check_run(diagnose.load_run(runs['erratic']))
  st = statuses(r)
  assert r['trajectory']['label'] == 'erratic'
  assert st['usage_trajectory'] == 'fail'
  assert st['val_loss'] == 'n/a'                        # no bound given
  assert st['stable_full_budget'] == 'fail'             # early stopped at 3/80


def test_trajectory_definition():
  def traj(us):
    return diagnose.usage_trajectory(
        [{'step': 10 * (i + 1), 'vq_usage_ratio': u} for i, u in enumerate(us)])
  # Only the second half (step >= 100 / 2) counts: the early crash is ignored.
  assert traj([0.9, 0.1, 0.1, 0.2, 0.2, 0.21, 0.2, 0.2, 0.21, 0.2])['label'] == 'flat'
  assert traj([0.2] * 5 + [0.2, 0.22, 0.24, 0.26, 0.28])['label'] == 'growing'
  # Fitted change over steps 50-100 relative to the mean: -5% flat, -11% declining.
  assert traj([0.2] * 5 + [0.2, 0.1975, 0.195, 0.1925, 0.19])['label'] == 'flat'
  assert traj([0.2] * 5 + [0.2, 0.195, 0.19, 0.185, 0.18])['label'] == 'declining'
  assert traj([0.2] * 5 + [0.2, 0.19, 0.18, 0.17, 0.16])['label'] == 'declining'
  assert traj([0.2, 0.2])['label'] == 'n/a'


def test_no_vq_run_has_usage_criteria_not_applicable(runs):
  r = diagnose.check_run(diagnose.load_run(runs['no_vq']))
  st = statuses(r)
  assert st['usage_throughout'] == st['usage_trajectory'] == st['usage_end'] == 'n/a'
  assert st['context_rank'] == st['target_rank'] == 'pass'
  assert r['must_have_passed']


def test_cli_json_baseline_and_strict(runs, capsys):
  rc = diagnose.main([runs['healthy'], runs['collapsing'], '--json',
                      '--baseline', runs['no_vq']])
  assert rc == 0
  out = json.loads(capsys.readouterr().out)
  assert [r['variant'] for r in out] == ['healthy', 'collapsing']
  bound = next(c for c in out[0]['criteria'] if c['name'] == 'val_loss')
  assert bound['threshold'] == pytest.approx(1.1 * 7.75)
  assert bound['status'] == 'pass'            # 7.8 < 8.525
  nice = next(c for c in out[0]['criteria'] if c['name'] == 'val_loss_nice')
  assert nice['threshold'] == pytest.approx(1.03 * 7.75) and nice['status'] == 'pass'
  worse = next(c for c in out[1]['criteria'] if c['name'] == 'val_loss')
  assert worse['status'] == 'fail'            # 8.99 > 8.525
  assert diagnose.main([runs['collapsing'], '--strict']) == 3
  text = capsys.readouterr().out
  assert 'must  FAIL  VQ usage > 15% throughout' in text
  assert 'declining: fitted change' in text
  assert diagnose.main([runs['healthy'], '--strict', '--val_loss_bound', '9']) == 0


def test_cli_names_a_folder_that_is_not_a_run(tmp_path, capsys):
  assert diagnose.main([str(tmp_path)]) == 2
  assert f'{tmp_path}: not a run folder' in capsys.readouterr().err


def test_two_stage_folder_is_one_run_with_stages_end_to_end(tmp_path):
  top = tmp_path / 'two_stage'
  make_run(top / 'stage1', [(100, 0), (200, 0), (300, 0)], [12.0] * 3, [25.0] * 3,
           [8.0, 7.9, 7.8], vq=False)
  make_run(top / 'stage2', [(100, 0.30), (200, 0.31)], [12.0] * 2, [25.0] * 2,
           [9.0, 15.0])                       # 15 > 1.5 x 9: a stage-2 red flag
  (top / 'summary.json').write_text(json.dumps({'status': 'completed'}))
  run = diagnose.load_run(str(top))
  assert run.variant == 'stage2' and run.num_epochs == 5 and run.status == 'completed'
  assert [r['step'] for r in run.embedding] == [100, 200, 300, 400, 500]
  assert [(e['epoch'], e['step']) for e in run.epochs] == [
      (0, 100), (1, 200), (2, 300), (3, 400), (4, 500)]
  # Red flags per stage: stage 2's higher loss (commitment term) against
  # stage 1's best is no spike, its own 9 -> 15 is.
  assert diagnose.red_flags(run) == [
      'stage2: val loss 15 > 1.5 x best 9 (epoch 0) at epoch 1']
  r = diagnose.check_run(run)
  assert statuses(r)['usage_throughout'] == 'pass'


def test_a_damaged_jsonl_line_is_named_and_the_intact_lines_are_used(runs, capsys):
  path = runs['healthy']
  whole = diagnose.check_run(diagnose.load_run(path), diagnose.Criteria())
  log = f'{path}/embedding_metrics.jsonl'
  lines = open(log).read().splitlines()
  with open(log, 'w') as f:       # line 3 torn by a kill, the rest intact
    f.write('\n'.join(lines[:2] + [lines[2][:17]] + lines[3:]) + '\n')
  run = diagnose.load_run(path)
  assert len(run.embedding) == len(lines) - 1
  err = capsys.readouterr().err
  assert err.startswith(f'warning: {log} line 3: damaged JSON line (')
  assert err.rstrip().endswith('skipped, the intact lines are used')
  assert diagnose.main([path]) == 0
  assert diagnose.check_run(run, diagnose.Criteria())['trajectory'] == whole['trajectory']


def test_codebook_health_of_the_last_point_is_reported(tmp_path):
  path = tmp_path / 'health'
  make_run(path, REF_USAGE[:3], [12.0] * 3, [25.0] * 3, [8.0, 7.9])
  recs = [json.loads(l) for l in open(path / 'embedding_metrics.jsonl')]
  for i, r in enumerate(recs):
    r.update(vq_churn=None if i == 0 else 0.5 / i, vq_restarted_share=0.25,
             vq_young_share=0.125, vq_window_usage_ratio=0.75, vq_context_usage_ratio=0.5)
  (path / 'embedding_metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in recs))
  r = diagnose.check_run(diagnose.load_run(str(path)))
  assert r['codebook'] == {'step': 600, 'since_step': 400, 'vq_churn': 0.25,
                           'vq_restarted_share': 0.25, 'vq_young_share': 0.125,
                           'vq_window_usage_ratio': 0.75, 'vq_context_usage_ratio': 0.5}
  text = diagnose.format_result(r)
  assert 'codebook at step 600 (since step 400): churn 25.0% of val tokens' in text
  assert diagnose.check_run(diagnose.load_run(make_run(
      tmp_path / 'plain', REF_USAGE[:3], [12.0] * 3, [25.0] * 3, [8.0])))['codebook'] == {}


def test_option_b_rule_is_reported_when_on_or_forced(runs, capsys):
  collapsing = diagnose.load_run(runs['collapsing'])
  assert diagnose.check_run(collapsing)['option_b']['applied'] is False
  ob = diagnose.check_run(collapsing, force_option_b=True)['option_b']
  # usage 11.3% at step 1000 (epoch 10) and context rank 3.29 < 4 at step 200
  assert ob['applied'] and ob['fired']
  assert ob['events'][0].startswith('Option B rule: context effective rank 3.29 < 4.0')
  assert any('VQ usage 11.3% < 12%' in e for e in ob['events'])
  healthy = diagnose.check_run(diagnose.load_run(runs['healthy']), force_option_b=True)
  assert healthy['option_b']['applied'] and not healthy['option_b']['fired']
  assert diagnose.main([runs['collapsing'], '--option_b']) == 0
  out = capsys.readouterr().out
  assert ('Option B rule (VQ usage < 12% or context effective rank < 4 by epoch 15): '
          'FIRED, abort and move to Option C or D') in out


def _vq_run_with(path, emb_records, monitor=None):
  """A finished VQ run (config vq.enabled) whose embedding log is `emb_records`."""
  make_run(path, [], [], [], [8.0, 7.9], monitor=monitor)
  config = json.loads((path / 'config.json').read_text())
  config['vq'] = {'enabled': True}
  (path / 'config.json').write_text(json.dumps(config))
  (path / 'embedding_metrics.jsonl').write_text(
      ''.join(json.dumps(r) + '\n' for r in emb_records))
  return str(path)


def test_a_vq_run_without_usage_records_is_never_passed(tmp_path, capsys):
  """The first-run trap: a VQ run whose log holds no usage record was read
  as 'no VQ' and passed. Now its usage thresholds fail as 'cannot judge'."""
  path = _vq_run_with(tmp_path / 'short', [])
  run = diagnose.load_run(path)
  assert run.vq_enabled
  r = diagnose.check_run(run)
  st = statuses(r)
  assert st['usage_throughout'] == 'fail' and st['usage_end'] == 'fail'
  assert st['context_rank'] == st['target_rank'] == 'fail'     # no records at all
  assert 'cannot judge' in r['criteria'][0]['detail']
  assert not r['must_have_passed']
  assert diagnose.main([path, '--strict']) == 3
  assert 'VQ run without a usage record from epoch 1 on: cannot judge' in capsys.readouterr().out


def test_a_vq_run_whose_only_usage_is_before_the_judged_epochs_fails(tmp_path):
  good = {'context_effective_rank': 12.0, 'target_effective_rank': 25.0,
          'vq_usage_ratio': 0.5, 'vq_codes_used': 384}
  path = _vq_run_with(tmp_path / 'early', [{'step': 50, 'epoch': 0, **good}],
                      monitor={'usage_from_epoch': 1})
  r = diagnose.check_run(diagnose.load_run(path))
  assert statuses(r)['usage_throughout'] == 'fail' and not r['must_have_passed']
  # One point in the judged epochs is enough to judge the usage (and pass it).
  path = _vq_run_with(tmp_path / 'judged', [{'step': 50, 'epoch': 1, **good}],
                      monitor={'usage_from_epoch': 1})
  r = diagnose.check_run(diagnose.load_run(path))
  assert statuses(r)['usage_throughout'] == 'pass' and r['must_have_passed']
  assert statuses(r)['usage_trajectory'] == 'n/a'           # 1 record: too short to fit


def test_output_opens_with_does_the_encoder_learn(runs, capsys):
  """The probes of eval.json next to pixels and random init, the gains in
  points (within noise when inside the probe's 95% interval), the probe
  trajectory; and what is missing when a run lacks those files."""
  path = runs['no_vq']
  probe = lambda acc, ci=0.02: {'linear_probe_acc': acc, 'linear_probe_ci95': ci,  # noqa: E731
                                'knn_acc': acc - 0.1, 'knn_ci95': ci}
  ev = {'target_encoder': probe(0.796), 'context_encoder': probe(0.781),
        'pixels': probe(0.968), 'random_init': probe(0.785)}
  with open(f'{path}/eval.json', 'w') as f:
    json.dump(ev, f)
  with open(f'{path}/probe_metrics.jsonl', 'w') as f:
    for step, acc in ((0, 0.83), (200, 0.85), (690, 0.80)):
      f.write(json.dumps({'step': step, 'epoch': step // 23, 'linear_target': acc,
                          'linear_context': acc}) + '\n')
  result = diagnose.check_run(diagnose.load_run(path))
  got = result['learning']
  assert got['eval']['best'] == 'target_encoder'
  assert got['eval']['over_pixels_points'] == pytest.approx(-17.2)
  assert got['eval']['over_random_init_points'] == pytest.approx(1.1)
  assert got['trajectory'] == {'start': 0.83, 'start_step': 0, 'best': 0.85, 'best_step': 200,
                               'end': 0.80, 'end_step': 690, 'points': 3}
  lines = diagnose.format_result(result).splitlines()
  assert lines[1] == '  Does the encoder learn?'
  assert lines[2] == ('    linear probe (eval.json): target 79.6%, context 78.1%; '
                      'pixels 96.8%, random init 78.5%')
  assert lines[3] == ('    best trained (target) vs pixels -17.2 points, vs random init '
                      '+1.1 points (within noise)')
  assert lines[4] == ('    probe trajectory (target, holdout): 83.0% at step 0 -> best '
                      '85.0% at step 200 -> 80.0% at step 690 (3 points)')
  bare = diagnose.format_result(diagnose.check_run(diagnose.load_run(runs['healthy'])))
  assert 'no eval.json: run python -m jepa_jax.evaluate' in bare
  assert 'no probe trajectory (probe_metrics.jsonl)' in bare


def test_stable_codebook_goals_per_run_on_hand_made_records(tmp_path):
  # K = 10, points every 10 steps (an epoch), window 20, warm-up end 30.
  path = make_run(tmp_path / 'goals', [(s, 0.8) for s in range(10, 101, 10)],
                  [12.0] * 10, [25.0] * 10, [8.0] * 10)
  cfg = json.load(open(f'{path}/config.json'))
  cfg.update(vq={'enabled': True, 'codebook_size': 10},
             train={**cfg['train'], 'usage_window_steps': 20})
  (tmp_path / 'goals' / 'config.json').write_text(json.dumps(cfg))
  (tmp_path / 'goals' / 'summary.json').write_text(json.dumps(
      {'status': 'completed', 'total_steps_planned': 100, 'steps_per_epoch': 10,
       'restart_warmup_end_step': 30}))
  recs = []
  for s in range(10, 101, 10):
    recs.append({'step': s, 'epoch': s // 10 - 1, 'vq_usage_ratio': 0.8,
                 'context_effective_rank': 12.0, 'target_effective_rank': 25.0,
                 'vq_train_usage_ratio': 0.5 if s == 10 else (0.92 if s == 70 else 1.0),
                 'vq_train_perplexity_ratio': 0.6,
                 'vq_window_usage_ratio': 0.3 if s == 40 else (0.91 if s == 50 else 0.95),
                 'vq_restarts_total': min(s // 10, 3) * 2 + (6 if s == 100 else 0),
                 'vq_churn': None if s == 10 else 0.04})
  with open(f'{path}/embedding_metrics.jsonl', 'w') as f:
    f.write(''.join(json.dumps(r) + '\n' for r in recs))
  r = diagnose.check_run(diagnose.load_run(path))
  goal = {c['name']: c for c in r['criteria'] if c['level'] == 'goal'}
  # Epoch 0 (step 10) is not judged; the window ending at 40 starts before 30.
  assert goal['train_usage']['value'] == 0.92 and goal['train_usage']['status'] == 'pass'
  assert 'step 70' in goal['train_usage']['detail']
  assert goal['window_usage']['value'] == 0.91 and goal['window_usage']['status'] == 'pass'
  assert goal['perplexity']['status'] == 'pass' and goal['churn']['status'] == 'pass'
  # 6 restarts up to step 30, 12 in all: 1.2 x K fails; 0.6 x K after warm-up.
  assert goal['restarts']['value'] == pytest.approx(1.2)
  assert goal['restarts']['status'] == 'fail'
  assert '0.60 x K after the warm-up end (step 30)' in goal['restarts']['detail']
  assert r['must_have_passed']            # goals are not must-haves
  assert 'restarts over the whole run <= 1 x K' in diagnose.format_result(r)
  # With the epoch churn logged, the goal judges it (since step 80, the
  # previous epoch's last point), not the churn since the point before.
  recs[-1].update(vq_churn_epoch=0.08, vq_churn_epoch_since=80)
  with open(f'{path}/embedding_metrics.jsonl', 'w') as f:
    f.write(''.join(json.dumps(x) + '\n' for x in recs))
  churn = next(c for c in diagnose.check_run(diagnose.load_run(path))['criteria']
               if c['name'] == 'churn')
  assert churn['value'] == 0.08 and churn['status'] == 'fail'
  assert goals.run_values(diagnose.load_run(path))['churn_span_epochs'] == 2.0
