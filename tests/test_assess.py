"""The one-command assessment on tiny real runs: training, resume/skip,
evaluation, every table and plot of the report."""
import json
import os
import shutil

import pytest

from experiments import assess, report, report_plots
from jepa_jax.run import files as records

# Whole runs or subprocesses: left out of the fast subset (pytest -m 'not slow').
pytestmark = pytest.mark.slow

TABLES = ('## Does the encoder learn?', '### Run completion & stability', '### Final losses',
          '### Embedding quality', '### VQ codebook health', '### VQ usage trajectory',
          '## Success criteria and red flags', '### Red flags (abort criteria) and alerts',
          '## Stable-codebook goals', '### Downstream quality', '### Speed')


@pytest.fixture(scope='module')
def assessment(tmp_path_factory):
  work = tmp_path_factory.mktemp('assessment')
  # An unfinished run (config.json only, no checkpoints) is kept aside, not lost.
  partial = work / 'no_vq' / 'seed_0'
  partial.mkdir(parents=True)
  (partial / 'config.json').write_text('{"note": "interrupted"}')
  args = ['--variants', 'gentle,no_vq,not_a_variant', '--workdir', str(work),
          '--seeds', '0', '--config_arg', 'tiny', '--jobs', '2',
          '--publish', str(work / 'published')]
  assert assess.main(args) == 0
  return work, args


def test_runs_are_trained_evaluated_and_partial_runs_kept(assessment):
  work, _ = assessment
  for var in ('gentle', 'no_vq'):
    run = work / var / 'seed_0'
    assert json.loads((run / 'summary.json').read_text())['status'] == 'completed'
    assert json.loads((run / 'config.json').read_text())['variant'] == var
    assert (run / 'eval.json').exists() and (run / 'final_state.msgpack').exists()
    assert list(run.glob('events.out.tfevents.*'))
  assert json.loads((work / 'no_vq' / 'seed_0.incomplete-0' / 'config.json').read_text()) \
      == {'note': 'interrupted'}


def test_evaluation_probe_beats_chance(assessment):
  work, _ = assessment
  ev = json.loads((work / 'gentle' / 'seed_0' / 'eval.json').read_text())
  assert ev['num_classes'] == 10 and ev['num_val'] == 270
  assert 0.10 <= ev['chance'] < 0.15
  for enc in ('target_encoder', 'context_encoder'):
    assert ev[enc]['linear_probe_acc'] > 2 * ev['chance']
    assert ev[enc]['knn_acc'] > ev['chance']
  assert 0.0 < ev['code_label_nmi'] < 1.0
  assert 1 <= ev['codes_used_val'] <= 32
  # k-means on the VQ run's own tokens, K = its codebook: the AMI goal's reference.
  assert ev['kmeans']['num_codes'] == 32 and -1 <= ev['kmeans']['code_label_ami'] <= 1
  no_vq = json.loads((work / 'no_vq' / 'seed_0' / 'eval.json').read_text())
  assert 'code_label_nmi' not in no_vq


def test_report_has_every_table_and_plot(assessment):
  work, _ = assessment
  text = (work / 'report.md').read_text()
  for heading in TABLES:
    assert heading in text, heading
  assert '`not_a_variant`: no config file configs/not_a_variant.py' in text
  assert '| **VQ usage (end)** |' in text and '| Step | gentle |' in text
  # gentle's losses differ from no_vq's: the goals row names no baseline.
  assert '| gentle (1, fewer than 5) | none |' in text
  # Numbers come from the run folders.
  emb = records.read_jsonl(work / 'gentle' / 'seed_0' / 'embedding_metrics.jsonl')
  last = emb[-1]
  assert f"| {last['step']} | {100 * last['vq_usage_ratio']:.1f}% ({last['vq_codes_used']:.0f}) |" in text
  ev = json.loads((work / 'gentle' / 'seed_0' / 'eval.json').read_text())
  assert f"{100 * ev['target_encoder']['linear_probe_acc']:.1f}%" in text
  assert text.index('## Does the encoder learn?') < text.index('## Findings')
  assert f"{100 * ev['random_init']['linear_probe_acc']:.1f}%" in text
  for plot in (*report_plots.PLOTS, 'probe_trajectory.png'):
    for folder in (work / 'plots', work / 'published' / 'plots'):
      data = (folder / plot).read_bytes()
      assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 10_000
    assert f'(plots/{plot})' in text
  assert (work / 'published' / 'report.md').read_text() == text


def test_rerun_skips_finished_runs(assessment, capsys):
  work, args = assessment
  stamp = os.path.getmtime(work / 'gentle' / 'seed_0' / 'summary.json')
  capsys.readouterr()
  assert assess.main(args) == 0
  out = capsys.readouterr().out
  assert 'training' not in out
  assert os.path.getmtime(work / 'gentle' / 'seed_0' / 'summary.json') == stamp
  assert '0 of 2 runs trained now' in (work / 'report.md').read_text()


def test_seeds_aggregate_to_mean_and_std(assessment, tmp_path):
  work, _ = assessment
  for var in ('gentle', 'no_vq'):
    for seed in (0, 1):
      shutil.copytree(work / var / 'seed_0', tmp_path / var / f'seed_{seed}')
  # Seed 1 of gentle: usage 10 points lower at the last checkpoint.
  path = tmp_path / 'gentle' / 'seed_1' / 'embedding_metrics.jsonl'
  emb = records.read_jsonl(path)
  u0 = emb[-1]['vq_usage_ratio']
  emb[-1]['vq_usage_ratio'] = u0 - 0.1
  path.write_text(''.join(json.dumps(r) + '\n' for r in emb))
  # Seed 2 of gentle is still training (no summary.json): named, not averaged in.
  shutil.copytree(work / 'gentle' / 'seed_0', tmp_path / 'gentle' / 'seed_2')
  (tmp_path / 'gentle' / 'seed_2' / 'summary.json').unlink()
  text = open(report.write_report(str(tmp_path), ['gentle', 'no_vq'], [0, 1, 2], {})).read()
  mean, std = 100 * (u0 - 0.05), 100 * 0.1 / 2 ** 0.5
  assert f'{mean:.1f} ± {std:.1f}%' in text
  assert 'completed 2/2' in text
  assert '`gentle (1 of its seeds)`: unfinished: no summary.json' in text


def test_plot_styles_tell_thirteen_variants_apart():
  # The ARC ablation plots 13 variants; tab10 alone gave the 11th-13th the
  # first three variants' colour and line.
  names = [f'v{i}' for i in range(13)]
  styles = report_plots.line_styles(names)
  assert len(set(styles.values())) == 13
  assert styles['v0'] == (0, '-') and styles['v10'] == (0, '--')
  assert len(set(report_plots.line_styles([f'v{i}' for i in range(40)]).values())) == 40
