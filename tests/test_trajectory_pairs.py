"""experiments/results/codebook_shapes/trajectory_pairs: the paired probe
trajectory of a VQ variant against its baseline, checked by hand."""
import json

import pytest

from experiments.results.codebook_shapes import trajectory_pairs


def _write(root, variant, seed, accs):
  d = root / variant / f'seed_{seed}'
  d.mkdir(parents=True)
  with open(d / 'probe_metrics.jsonl', 'w') as f:
    for i, a in enumerate(accs):
      f.write(json.dumps({'step': 400 * i, 'linear_target': a, 'linear_context': a}) + '\n')


def test_paired_end_best_and_fall_match_a_hand_computation(tmp_path, capsys):
  _write(tmp_path, 'vq', 0, [0.20, 0.31, 0.30])      # end 30, best 31
  _write(tmp_path, 'vq', 1, [0.20, 0.25, 0.26])      # end 26, best 26
  _write(tmp_path, 'base', 0, [0.20, 0.28, 0.28])    # end 28
  _write(tmp_path, 'base', 1, [0.20, 0.27, 0.27])    # end 27
  table = {name: (values, d) for name, values, d in trajectory_pairs.rows(
      str(tmp_path), 'vq', 'base', [0, 1])}
  values, d = table['end']
  assert values[0] == pytest.approx((30.0, 28.0)) and values[1] == pytest.approx((26.0, 27.0))
  assert d['mean'] == pytest.approx(0.5) and d['worst'] == pytest.approx(-1.0)
  assert d['worst_seed'] == 1
  assert table['end - best'][0][0] == pytest.approx((-1.0, 0.0))
  assert table['end - step 0'][0][1] == pytest.approx((6.0, 7.0))   # 26 - 20, 27 - 20
  assert table['end - step 0'][1]['mean'] == pytest.approx(0.5)     # (+2 - 1) / 2
  assert trajectory_pairs.main(['--workdir', str(tmp_path), '--variant', 'vq',
                                '--baseline', 'base', '--seeds', '0,1']) == 0
  out = capsys.readouterr().out
  assert '| end | 30.0 vs 28.0 (+2.0) | 26.0 vs 27.0 (-1.0) | +0.5 [' in out
  assert '(-1.0, seed 1) |' in out


def test_a_missing_trajectory_is_one_error_line_and_status_2(tmp_path, capsys):
  _write(tmp_path, 'vq', 0, [0.2, 0.3])
  with pytest.raises(SystemExit) as err:
    trajectory_pairs.main(['--workdir', str(tmp_path), '--variant', 'vq',
                           '--baseline', 'base', '--seeds', '0'])
  assert err.value.code == 2
  captured = capsys.readouterr()
  assert captured.out == ''
  lines = captured.err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ') and 'base/seed_0' in lines[0]
