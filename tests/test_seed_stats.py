"""seed_stats: bootstrap intervals against cases whose answer is known."""
import numpy as np
import pytest

from jepa_jax.eval import metrics as seed_stats


def test_two_values_interval_is_the_exact_resample_range():
  # Resample means of {0, 1} are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4:
  # the 2.5% and 97.5% quantiles are 0 and 1.
  assert seed_stats.bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)


def test_constant_values_give_a_point_interval():
  assert seed_stats.bootstrap_ci([3.5] * 5) == (3.5, 3.5)


def test_large_normal_sample_matches_the_normal_interval():
  x = np.random.default_rng(1).normal(2.0, 3.0, size=2000)
  low, high = seed_stats.bootstrap_ci(x)
  half = 1.96 * x.std() / np.sqrt(x.size)
  assert low == pytest.approx(x.mean() - half, abs=0.02)
  assert high == pytest.approx(x.mean() + half, abs=0.02)


def test_summarize_reports_the_worst_seed_for_each_direction():
  s = seed_stats.summarize([0.8, 0.7, 0.9], seeds=[100, 101, 102])
  assert (s['worst'], s['worst_seed'], s['n']) == (0.7, 101, 3)
  assert s['mean'] == pytest.approx(0.8)
  assert s['ci'][0] <= s['mean'] <= s['ci'][1]
  s = seed_stats.summarize([0.8, 0.7, 0.9], seeds=[100, 101, 102], higher_is_better=False)
  assert (s['worst'], s['worst_seed']) == (0.9, 102)


def test_paired_uses_the_common_seeds_only():
  a = {1: 0.9, 2: 0.8, 3: 0.7}
  b = {2: 0.75, 3: 0.72, 4: 0.1}
  s = seed_stats.paired(a, b)
  assert s['values'] == {2: pytest.approx(0.05), 3: pytest.approx(-0.02)}
  with pytest.raises(ValueError, match='share no seed'):
    seed_stats.paired({1: 0.0}, {2: 0.0})


def test_within_reads_the_far_end_on_the_harmful_side():
  assert seed_stats.within({'ci': [-0.009, 0.03]}, 0.01)
  assert not seed_stats.within({'ci': [-0.011, 0.03]}, 0.01)
  assert seed_stats.within({'ci': [-0.5, 0.049]}, 0.05, higher_is_better=False)
  assert not seed_stats.within({'ci': [0.01, 0.06]}, 0.05, higher_is_better=False)
