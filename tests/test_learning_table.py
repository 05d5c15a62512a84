"""experiments.learning_table: the seeds' table from eval.json files made by hand."""
import json
import subprocess
import sys

import pytest

from experiments import learning_table


def _eval(target, random_init, pixels, trajectory):
  return {'target_encoder': {'linear_probe_acc': target},
          'context_encoder': {'linear_probe_acc': target - 0.01},
          'random_init': {'linear_probe_acc': random_init},
          'pixels': {'linear_probe_acc': pixels}, 'chance': 0.1,
          'probe_trajectory': [{'step': i, 'linear_target': v} for i, v in enumerate(trajectory)]}


@pytest.fixture
def workdir(tmp_path):
  runs = {0: _eval(0.80, 0.70, 0.90, [0.5, 0.82, 0.80]),
          1: _eval(0.75, 0.72, 0.90, [0.5, 0.75]),
          2: _eval(0.85, 0.71, 0.91, [0.5, 0.90, 0.84])}
  for seed, ev in runs.items():
    d = tmp_path / 'no_vq' / f'seed_{seed}'
    d.mkdir(parents=True)
    (d / 'eval.json').write_text(json.dumps(ev))
  return tmp_path


def test_row_pairs_the_seeds_and_reports_the_worst(workdir):
  r = learning_table.row('no_vq', learning_table.load(str(workdir), 'no_vq'))
  assert r['seeds'] == [0, 1, 2]
  assert r['target']['mean'] == pytest.approx(0.80)
  assert r['over_random_init']['values'] == {0: pytest.approx(0.10), 1: pytest.approx(0.03),
                                             2: pytest.approx(0.14)}
  assert (r['over_random_init']['worst'], r['over_random_init']['worst_seed']) == (
      pytest.approx(0.03), 1)
  assert r['over_pixels']['worst'] == pytest.approx(-0.15)
  # trajectory: end - best = -2, 0, -6 points; the worst is seed 2's -6
  assert r['end_minus_best_points']['values'] == {0: pytest.approx(-2.0), 1: 0.0,
                                                  2: pytest.approx(-6.0)}
  assert r['end_minus_best_points']['worst_seed'] == 2


def test_command_prints_the_table_and_refuses_an_empty_folder(workdir, tmp_path_factory):
  out = subprocess.run([sys.executable, '-m', 'experiments.learning_table',
                        f'--workdir={workdir}'], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  assert '| no_vq | 0,1,2 | 80.0 [' in out.stdout
  empty = tmp_path_factory.mktemp('empty')
  bad = subprocess.run([sys.executable, '-m', 'experiments.learning_table',
                        f'--workdir={empty}'], capture_output=True, text=True)
  assert bad.returncode == 2 and 'no eval.json' in bad.stderr
  assert len(bad.stderr.strip().splitlines()) <= 2 and 'Traceback' not in bad.stderr


def test_versus_pairs_each_variant_with_the_base_at_common_seeds(workdir):
  for seed, target in ((0, 0.70), (1, 0.74), (5, 0.9)):
    d = workdir / 'base' / f'seed_{seed}'
    d.mkdir(parents=True)
    (d / 'eval.json').write_text(json.dumps(_eval(target, 0.7, 0.9, [0.5])))
  evals = {v: learning_table.load(str(workdir), v) for v in ('no_vq', 'base')}
  rows = [learning_table.row(v, ev) for v, ev in evals.items()]
  learning_table.add_versus(rows, evals, 'base')
  assert rows[0]['over_base']['values'] == {0: pytest.approx(0.10), 1: pytest.approx(0.01)}
  assert rows[1]['over_base'] is None
  out = subprocess.run([sys.executable, '-m', 'experiments.learning_table',
                        f'--workdir={workdir}', '--versus=nope'], capture_output=True, text=True)
  assert out.returncode == 2 and '--versus nope' in out.stderr and 'Traceback' not in out.stderr


def test_label_reads_one_labels_probes_and_names_a_missing_one(workdir):
  for seed, shift in ((0, 0.0), (1, 0.02), (2, 0.05)):
    path = workdir / 'no_vq' / f'seed_{seed}' / 'eval.json'
    ev = json.loads(path.read_text())
    ev['probes'] = {'count': {**_eval(0.40 + shift, 0.30, 0.35, [])}}
    path.write_text(json.dumps(ev))
  r = learning_table.row('no_vq', learning_table.for_label(
      learning_table.load(str(workdir), 'no_vq'), 'count'))
  assert r['target']['values'] == {0: pytest.approx(0.40), 1: pytest.approx(0.42),
                                   2: pytest.approx(0.45)}
  assert r['over_random_init']['mean'] == pytest.approx((0.10 + 0.12 + 0.15) / 3)
  assert r['end_minus_best_points'] is None          # the trajectory is the mean's
  out = subprocess.run([sys.executable, '-m', 'experiments.learning_table',
                        f'--workdir={workdir}', '--label=count'], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  assert '| no_vq | 0,1,2 | 42.3 [' in out.stdout
  bad = subprocess.run([sys.executable, '-m', 'experiments.learning_table',
                        f'--workdir={workdir}', '--label=colour'], capture_output=True, text=True)
  assert bad.returncode == 2
  assert "--label colour: seed 0 has no probe of label 'colour' (labels: count)" in bad.stderr
  assert 'Traceback' not in bad.stderr
