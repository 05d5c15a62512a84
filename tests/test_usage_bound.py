"""The usage-bound experiment (experiments/usage_bound.py): the two measures it
uses by hand, and one checkpoint of a tiny run end to end."""
import json

import numpy as np
import pytest

from experiments import usage_bound
from jepa_jax import codebook_health as health


def test_expected_usage_by_hand():
  # Two codes of four share the draws equally: each is missed by 2 draws with
  # probability 0.5^2, the other two are never drawn.
  assert health.expected_usage([0.5, 0.5, 0.0, 0.0], 2) == pytest.approx(0.375)
  # Uniform shares over K: 1 - (1 - 1/K)^n.
  assert health.expected_usage(np.full(8, 1 / 8), 8) == pytest.approx(1 - (7 / 8) ** 8)


def test_kmeans_usage_counts_the_centres_val_tokens_reach():
  rng = np.random.default_rng(0)
  centres = np.array([[10, 0], [-10, 0], [0, 10], [0, -10]], np.float32)
  fit = np.concatenate([c + 0.1 * rng.standard_normal((50, 2)) for c in centres])
  val = np.concatenate([centres[0] + 0.1 * rng.standard_normal((5, 2)),
                        centres[2] + 0.1 * rng.standard_normal((5, 2))])
  assert usage_bound.kmeans_usage(fit, val, 4, l2=False) == pytest.approx(0.5)
  # Cosine: the same directions on the unit circle.
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
  assert usage_bound.kmeans_usage(unit(fit), unit(val), 4, l2=True) == pytest.approx(0.5)


@pytest.mark.slow          # a whole (tiny) run
def test_bounds_of_a_tiny_run_checkpoint(tmp_path, capsys):
  from jepa_jax import train  # noqa: PLC0415
  from conftest import load  # noqa: PLC0415
  cfg = load('gentle', 'tiny')            # the program test_train compiles too
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(cfg, workdir)
  out = str(tmp_path / 'bounds.jsonl')
  assert usage_bound.main(['--workdir', workdir, '--steps', '3', '--out', out]) == 0
  rows = [json.loads(line) for line in open(out)]
  assert rows and all(0 < r[k] <= 1 for r in rows
                      for k in ('run', 'kmeans_ctx', 'kmeans_whole', 'sampling'))
  # The recomputed run usage is the metric the run logged at that step.
  logged = {json.loads(line)['step']: json.loads(line)['vq_usage_ratio']
            for line in open(f'{workdir}/embedding_metrics.jsonl')}
  same = [r for r in rows if r['step'] in logged]
  assert same, 'no checkpoint at a measurement point'
  for r in same:
    assert r['run'] == pytest.approx(logged[r['step']])
  with pytest.raises(SystemExit):
    usage_bound.main(['--workdir', workdir, '--steps', '99999'])
  assert 'no checkpoint at step(s) [99999]' in capsys.readouterr().err
