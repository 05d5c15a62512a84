"""Matched baselines, health values and the reference table of the report."""
import json

import pytest

from experiments.results.conventions import conventions
from experiments import report_health
from jepa_jax import diagnose


def _run(path, variant, vq=True, temp_max=0.2, emb=(), summary=None, ev=None):
  path.mkdir(parents=True)
  cfg = {'variant': variant, 'vq': {'enabled': vq, 'codebook_size': 100},
         'loss': {'temperature_max': temp_max, 'entropy_weight': 0.5 if vq else 0.0},
         'model': {'embed_dim': 8}, 'masking': {}, 'data': {'name': 'digits'},
         'train': {'batch_size': 64, 'num_epochs': 10, 'embedding_metrics_every_steps': 10}}
  (path / 'config.json').write_text(json.dumps(cfg))
  (path / 'summary.json').write_text(json.dumps(summary or {'status': 'completed'}))
  (path / 'embedding_metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in emb))
  (path / 'epoch_metrics.jsonl').write_text('')
  if ev:
    (path / 'eval.json').write_text(json.dumps(ev))
  return diagnose.load_run(str(path))


def test_matched_baseline_shares_loss_settings(tmp_path):
  runs = {'vq_a': [_run(tmp_path / 'a', 'vq_a')],
          'vq_b': [_run(tmp_path / 'b', 'vq_b', temp_max=0.15)],
          'base_a': [_run(tmp_path / 'c', 'base_a', vq=False)],
          'base_b': [_run(tmp_path / 'd', 'base_b', vq=False, temp_max=0.15)]}
  m = report_health.matched_baselines(runs)
  # The entropy weight is a VQ option: it does not prevent the match.
  assert m == {'vq_a': 'base_a', 'vq_b': 'base_b', 'base_a': None, 'base_b': None}
  del runs['base_b']
  assert report_health.matched_baselines(runs)['vq_b'] is None


def test_a_run_written_before_a_key_existed_still_matches(tmp_path):
  """A baseline whose config.json predates data.pipeline matches a VQ run that
  has it at the value older runs behave as; another value does not match."""
  new = _run(tmp_path / 'new', 'vq_new')
  old = _run(tmp_path / 'old', 'base_old', vq=False)
  new.config['data']['pipeline'] = 'memory'
  assert report_health.matched_baselines({'vq_new': [new], 'base_old': [old]})['vq_new'] == 'base_old'
  new.config['data']['pipeline'] = 'grain'
  assert report_health.matched_baselines({'vq_new': [new], 'base_old': [old]})['vq_new'] is None


def test_restarts_per_epoch_after_the_first_tenth(tmp_path):
  emb = [{'step': s, 'epoch': s // 10, 'vq_usage_ratio': 0.5, 'vq_restarts_total': t}
         for s, t in ((10, 50), (20, 80), (60, 90), (100, 100))]
  run = _run(tmp_path / 'r', 'vq_a', emb=emb,
             summary={'status': 'completed', 'total_steps_planned': 100,
                      'steps_per_epoch': 10})
  v = report_health.health_values(run)
  # After step 10 (10% of 100): 100 - 50 restarts over 9 epochs, K = 100.
  assert v['restarts_per_epoch'] == pytest.approx(50 / 100 / 9)
  assert v['usage_min_judged'] == 0.5 and v['dense'] is False


def test_conventions_row_reads_step_200_and_the_end(tmp_path):
  emb = [{'step': s, 'epoch': s // 95, 'vq_usage_ratio': u, 'vq_window_usage_ratio': w,
          'context_effective_rank': c, 'target_effective_rank': c + 1}
         for s, u, w, c in ((100, .01, .02, 5.), (200, .02, .07, 6.), (400, .03, .03, 7.),
                            (2850, .085, .083, 25.))]
  line = conventions.row('vq_no_refresh', 'mean', _run(tmp_path / 'v', 'vq', emb=emb))
  assert '2.0% / 7.0% -> 8.5% / 8.3%' in line and '6.00 -> 25.00' in line
  assert '7.00 -> 26.00' in line


def test_report_opens_with_does_the_encoder_learn_and_plots_the_trajectories(tmp_path):
  """experiments/report_learning: the gains over pixels and random init from
  eval.json, the trajectory's start / best / end from probe_metrics.jsonl,
  mean over seeds; the plot has one line per run and the references."""
  import matplotlib  # noqa: PLC0415
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # noqa: PLC0415
  from experiments import report, report_learning, report_plots  # noqa: PLC0415
  probe = lambda acc: {'linear_probe_acc': acc, 'linear_probe_ci95': 0.02,  # noqa: E731
                       'knn_acc': acc, 'knn_ci95': 0.02}
  runs = []
  for seed, (tgt, traj) in enumerate(((0.80, (0.83, 0.85, 0.80)), (0.78, (0.81, 0.84, 0.79)))):
    ev = {'target_encoder': probe(tgt), 'context_encoder': probe(0.70),
          'pixels': probe(0.968), 'random_init': probe(0.84)}
    path = tmp_path / f'seed_{seed}'
    _run(path, 'vq_a', ev=ev)
    (path / 'probe_metrics.jsonl').write_text(''.join(
        json.dumps({'step': s, 'linear_target': a, 'linear_context': a}) + '\n'
        for s, a in zip((0, 100, 200), traj)))
    runs.append(diagnose.load_run(str(path)))
  values = {'vq_a': [report.run_values(r) for r in runs]}
  v = values['vq_a'][0]
  assert v['gain_pix'] == pytest.approx(-16.8) and v['gain_rnd'] == pytest.approx(-4.0)
  assert (v['traj_start'], v['traj_best'], v['traj_end']) == (0.83, 0.85, 0.80)
  text = '\n'.join(report_learning.learning_section(['vq_a'], values))
  assert text.startswith('## Does the encoder learn?')
  assert '| **Linear probe, better trained encoder** | 79.0 ± 1.4% (target) |' in text
  assert '| **Gain over random init [points]** | -5.0 ± 1.4 |' in text
  assert '| **Gain over raw pixels [points]** | -17.8 ± 1.4 |' in text
  assert ('| **Linear probe, random-init encoder (same architecture and seed)** | '
          '84.0 ± 0.0% |') in text
  assert '82.0 ± 1.4% → 84.5 ± 0.7% → 79.5 ± 0.7%' in text
  styles = report_plots.line_styles(['vq_a'])
  paths = report_learning.write_plot(str(tmp_path), ['vq_a'], {'vq_a': runs}, styles, plt)
  assert paths == [str(tmp_path / 'probe_trajectory.png')]
  assert open(paths[0], 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
  bare = _run(tmp_path / 'bare', 'vq_b')
  assert report_learning.write_plot(str(tmp_path), ['vq_b'], {'vq_b': [bare]}, styles, plt) == []


def test_baseline_gaps_are_paired_by_seed_with_an_interval_and_the_worst_seed():
  vs = [{'seed': s, 'v': x} for s, x in ((0, 1.1), (1, 1.2), (2, 2.0), (7, 9.0))]
  bs = [{'seed': s, 'v': x} for s, x in ((0, 1.0), (1, 1.0), (2, 2.0), (3, 5.0))]
  g = report_health.paired_gap(vs, bs, 'v', higher_is_better=False)
  # Seeds 0, 1, 2 are paired (7 and 3 have no partner): gaps +10%, +20%, 0%.
  assert g['n'] == 3 and g['mean'] == pytest.approx(0.1)
  assert (g['worst'], g['worst_seed']) == (pytest.approx(0.2), 1)
  assert g['ci'][0] < 0.1 < g['ci'][1]
  assert report_health.paired_gap(vs, [{'seed': 5, 'v': 1.0}], 'v', False) is None


def test_baseline_section_shows_the_paired_val_loss_gap(tmp_path):
  runs = {'vq_a': [_run(tmp_path / 'a', 'vq_a')],
          'base_a': [_run(tmp_path / 'c', 'base_a', vq=False)]}
  values = {'vq_a': [{'seed': s, 'final_val_jepa': x} for s, x in ((0, 1.1), (1, 1.2))],
            'base_a': [{'seed': s, 'final_val_jepa': 1.0} for s in (0, 1)]}
  lines = report_health.baseline_section(['vq_a', 'base_a'], values, runs,
                                         {'vq_a': 'base_a', 'base_a': None})
  row = next(line for line in lines if line.startswith('| vq_a |'))
  assert '1.1500 (Δ +15.0% [+10.0%, +20.0%], worst +20.0% seed 1)' in row
