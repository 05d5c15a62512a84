"""Run-time accounting (jepa_jax/train/loop_state.py): exclusive section times and compiles."""
import time

import jax
import jax.numpy as jnp
import pytest

from jepa_jax.train import loop_state as timing


def test_sections_charge_exclusive_time_and_each_compile_to_the_open_section():
  double = jax.jit(lambda x: 2 * x + 1)
  x = jnp.arange(13.0)                                 # made (and compiled) before
  t0 = time.perf_counter()
  with timing.Sections() as t:
    t.switch('phase')
    time.sleep(0.02)
    with t('outer'):
      time.sleep(0.02)
      with t('inner'):
        double(x).block_until_ready()      # traced and compiled here
        double(x).block_until_ready()      # cached: no compile
      time.sleep(0.02)
    items = list(t.iterate('produce', (time.sleep(0.01) or i for i in range(3))))
  wall = time.perf_counter() - t0
  r = t.report()
  assert items == [0, 1, 2]
  assert r['compiles'] == {'inner': 1}
  assert set(r['compile_seconds']) == {'inner'}
  assert r['compile_seconds']['inner'] <= r['seconds']['inner']
  assert r['seconds']['outer'] >= 0.04 and r['seconds']['phase'] >= 0.02
  assert r['seconds']['produce'] >= 0.03 and r['calls']['produce'] == 4
  assert sum(r['seconds'].values()) == pytest.approx(wall, abs=0.01)   # no double count
  assert set(r['cpu_seconds']) == set(r['seconds'])
  assert t.total_compile_seconds() == pytest.approx(r['compile_seconds']['inner'], abs=1e-3)
