"""experiments/results/codebook_shapes/code_probe: bags of codes, their probe,
and the same codes and k-means baseline as `evaluate` on a trained run."""
import json

import numpy as np
import pytest

from experiments.results.codebook_shapes import code_probe as cp
from jepa_jax import evaluate
from jepa_jax.train import loop as train
from conftest import load, set_overrides


def test_codes_that_tell_the_class_probe_perfectly_and_random_codes_near_chance():
  rng = np.random.default_rng(0)
  y = np.arange(200) % 4
  # Class c: half the tokens take code 10 + c, the rest random codes 0-9.
  codes = np.where(np.arange(8) < 4, 10 + y[:, None], rng.integers(0, 10, (200, 8)))
  good = cp.scores(codes[:150], y[:150], codes[150:], y[150:], 14)
  assert good['bag_linear_probe_acc'] == 1.0
  noise = rng.integers(0, 14, (200, 8))
  bad = cp.scores(noise[:150], y[:150], noise[150:], y[150:], 14)
  assert bad['bag_linear_probe_acc'] < 0.45                 # chance 0.25, 200 images
  assert good['nmi'] > bad['nmi'] and set(good) == {
      'bag_linear_probe_acc', 'bag_linear_probe_ci95', 'nmi', 'nmi_shuffled', 'ami'}


def test_lloyd_moves_each_code_to_the_mean_of_its_nearest_or_balanced_tokens():
  u = np.array([[0, 0], [0, 2], [10, 0], [10, 2]], np.float32)
  # Nearest: tokens 0-1 go to code 0, 2-3 to code 1; each code moves to their mean.
  np.testing.assert_allclose(cp.lloyd(u, np.array([[0, 1], [1, 1]], np.float32), 1, False),
                             [[0, 1], [10, 1]])
  far = np.array([[0, 1], [100, 1]], np.float32)
  # Every token is nearest code 0 (mean (5, 1)); code 1 gets none and keeps its row.
  np.testing.assert_allclose(cp.lloyd(u, far, 1, False), [[5, 1], [100, 1]])
  # Balanced (Sinkhorn, two tokens a code): the two right tokens go to code 1.
  np.testing.assert_allclose(cp.lloyd(u, far, 1, False, balanced=(0.1, 5)), [[0, 1], [10, 1]])
  # l2: the means, normalised; zero steps: the codebook as given.
  np.testing.assert_allclose(cp.lloyd(u, far, 1, True, balanced=(0.1, 5)),
                             [[0, 1], [10 / np.sqrt(101), 1 / np.sqrt(101)]], rtol=1e-6)
  np.testing.assert_array_equal(cp.lloyd(u, far, 0, False), far)


def _trained(name, path):
  cfg = set_overrides(load(name, 'shapes,tiny'),
                      {'data.shapes_train_size': 300, 'data.shapes_val_size': 40})
  summary = train.train_and_evaluate(cfg, str(path))     # shapes, end to end
  assert summary['status'] == 'completed' and summary['steps'] == 6
  assert np.isfinite(summary['final_metrics']['val_loss_mean'])
  said = []
  ev = evaluate.evaluate_run(str(path), say=said.append)
  scoring = f'scoring the codes ({cfg.vq.codebook_size}): code-label NMI and AMI, ' \
            'bag-of-codes probe...'
  assert (scoring in said) == cfg.vq.enabled          # said before the codes are scored
  return cfg, ev


@pytest.mark.slow
def test_the_runs_codes_and_kmeans_are_those_evaluate_scores(tmp_path, capsys):
  cfg, ev = _trained('gentle', tmp_path)
  out = cp.code_probe(str(tmp_path))
  assert out['images'] == ev['probe_images'] and out['chance'] == ev['chance']
  assert out['run']['ami'] == pytest.approx(ev['code_label_ami'], abs=1e-12)
  assert out['kmeans']['ami'] == pytest.approx(ev['kmeans']['code_label_ami'], abs=1e-12)
  assert out['run']['bag_linear_probe_acc'] == ev['code_label_bag_probe']
  assert out['kmeans']['bag_linear_probe_acc'] == ev['kmeans']['code_label_bag_probe']
  assert 0 <= out['run']['bag_linear_probe_acc'] <= 1
  # gentle's quantizer neither projects nor normalises: its space is the tokens'.
  assert not cfg.vq.l2_normalize and cfg.vq.codebook_dim is None
  assert out['kmeans_space'] == out['kmeans']
  assert cp.main(['--workdir', str(tmp_path)]) == 0
  row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert row['num_codes'] == cfg.vq.codebook_size and 'kmeans_bag_linear_probe_acc' in row
  assert 'lloyd_ami' not in row
  # --refine N: the codebook after N Lloyd steps, nearest and balanced, scored the same way.
  assert cp.main(['--workdir', str(tmp_path), '--refine', '2']) == 0
  refined = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert {k: v for k, v in refined.items() if not k.startswith('lloyd')} == row
  for source in ('lloyd', 'lloyd_balanced'):
    assert 0 <= refined[f'{source}_bag_linear_probe_acc'] <= 1
    assert refined[f'{source}_ami'] <= refined[f'{source}_nmi']


@pytest.mark.slow
def test_a_run_without_vq_gets_the_kmeans_baseline_alone(tmp_path):
  _, ev = _trained('no_vq_gentle', tmp_path)
  out = cp.code_probe(str(tmp_path))
  assert 'run' not in out and out['num_codes'] == ev['kmeans']['num_codes']
  assert out['kmeans']['ami'] == pytest.approx(ev['kmeans']['code_label_ami'], abs=1e-12)


def test_a_folder_without_final_weights_is_one_error_line(tmp_path, capsys):
  with pytest.raises(SystemExit) as exc:
    cp.main(['--workdir', str(tmp_path)])
  assert exc.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].endswith(f'--workdir {tmp_path}: no final_state.msgpack (not a finished run)')


def _row(path, **values):
  path.mkdir(parents=True)
  (path / cp.ROW_FILE).write_text(json.dumps(values) + '\n')


def test_the_table_pairs_the_saved_rows_by_seed(tmp_path, capsys):
  for s in (0, 1):
    _row(tmp_path / 'vq' / f'seed_{s}', chance=0.125, run_bag_linear_probe_acc=0.13 + 0.01 * s,
         kmeans_bag_linear_probe_acc=0.21, kmeans_space_bag_linear_probe_acc=0.2, run_nmi=0.17, run_nmi_shuffled=0.168,
         kmeans_nmi=0.14, kmeans_nmi_shuffled=0.134, run_ami=0.166, kmeans_ami=0.136)
    _row(tmp_path / 'base' / f'seed_{s}', chance=0.125, kmeans_bag_linear_probe_acc=0.25,
         kmeans_nmi=0.15, kmeans_nmi_shuffled=0.14, kmeans_ami=0.15)
  assert cp.main(['--workdir', str(tmp_path), '--table', 'vq,base', '--seeds', '0,1']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == '| (vq vs base) | seed 0 | seed 1 | paired Δ: mean [95% CI] (worst) |'
  assert lines[2] == '| chance, % | 12.5 | 12.5 | |'
  assert lines[3].startswith('| bag probe, %: codes vs k-means of the same tokens | 13.0 vs 21.0 '
                             '| 14.0 vs 21.0 | -7.5 [-8.0, -7.0] (-8.0, seed 0) |')
  assert lines[5].startswith("| bag probe, %: codes vs k-means in the quantizer's space | "
                             '13.0 vs 20.0 |')
  assert lines[7] == ('| NMI − shuffled NMI (x100): codes vs k-means of the same tokens | '
                      '0.20 vs 0.60 | 0.20 vs 0.60 | -0.40 [-0.40, -0.40] (-0.40, seed 0) |')
  assert len(lines) == 9                        # no refined rows saved: no refined lines
  # Rows saved with --refine add the refined codebook's lines.
  for s in (0, 1):
    path = tmp_path / 'vq' / f'seed_{s}' / cp.ROW_FILE
    row = json.loads(path.read_text())
    row.update(lloyd_balanced_bag_linear_probe_acc=0.2 + 0.01 * s, lloyd_bag_linear_probe_acc=0.19,
               lloyd_balanced_ami=0.15, lloyd_ami=0.14)
    path.write_text(json.dumps(row) + '\n')
  assert cp.main(['--workdir', str(tmp_path), '--table', 'vq,base', '--seeds', '0,1']) == 0
  refined = capsys.readouterr().out.splitlines()
  assert refined[:9] == lines and len(refined) == 15
  assert refined[9] == ('| bag probe, %: refined (balanced) vs the codes | 20.0 vs 13.0 | '
                        '21.0 vs 14.0 | +7.0 [+7.0, +7.0] (+7.0, seed 0) |')
  assert refined[14] == ('| AMI (x100): refined, balanced vs nearest | 15.00 vs 14.00 | '
                         '15.00 vs 14.00 | +1.00 [+1.00, +1.00] (+1.00, seed 0) |')
  with pytest.raises(SystemExit) as exc:
    cp.main(['--workdir', str(tmp_path), '--table', 'vq,base', '--seeds', '0,2'])
  assert exc.value.code == 2
  assert capsys.readouterr().err.strip().endswith(
      f'{tmp_path}/vq/seed_2/code_probe.jsonl: no saved row '
      f'(run --workdir RUN --out {tmp_path}/vq/seed_2/code_probe.jsonl)')
