"""Interleaved A/B of the train step: model.attention='flax' (old) vs 'fused' (new).

    PYTHONPATH=$PWD python -m experiments.benchmarks.ab_attention DIM DEPTH HEADS BATCH REPS

Both steps are compiled in one process, then timed alternately (A,B,B,A,...)
so machine load hits both alike. Prints wall and process-CPU medians/mins,
XLA cost-analysis FLOPs and the first-step loss (equal for both: same params).
"""
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from experiments.benchmarks import jax_bench
from jepa_jax.train import step as step_lib


def main(argv):
  dim, depth, heads, batch, reps = (int(a) for a in argv[:5])
  cfg = jax_bench.bench_config(dim, depth, heads, batch)
  ds = jax_bench._random_dataset(batch)
  images, ids = jnp.asarray(ds.train_images), jnp.arange(batch, dtype=jnp.int32)
  runs = {}
  for name, attention in (('old', 'flax'), ('new', 'fused')):
    cfg.model.attention = attention
    setup = step_lib.make_setup(cfg, ds)
    state = step_lib.init_state(setup, ds.image_shape, cfg.seed)
    compiled = jax.jit(step_lib.make_train_step(setup), donate_argnums=0).lower(
        state, images, ids).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    runs[name] = {'fn': compiled, 'state': state, 'wall': [], 'cpu': [],
                  'flops': cost['flops']}
  for r in runs.values():                      # warm-up; first-step loss
    for i in range(2):
      r['state'], m = r['fn'](r['state'], images, ids)
      if i == 0:
        r['loss0'] = float(m['loss'])
  order = list(runs.values())
  for i in range(reps):
    for r in (order if i % 2 == 0 else order[::-1]):
      c0, t0 = time.process_time(), time.perf_counter()
      r['state'], m = r['fn'](r['state'], images, ids)
      jax.block_until_ready(m['loss'])
      r['wall'].append(time.perf_counter() - t0)
      r['cpu'].append(time.process_time() - c0)
  med = {k: {s: statistics.median(r[s]) for s in ('wall', 'cpu')} for k, r in runs.items()}
  print(f'dim={dim} depth={depth} heads={heads} batch={batch} reps={reps}')
  for k, r in runs.items():
    print(f"{k}: wall median {med[k]['wall'] * 1e3:.0f} ms min {min(r['wall']) * 1e3:.0f} ms"
          f" | cpu median {med[k]['cpu']:.3f} s min {min(r['cpu']):.3f} s"
          f" | speed-up wall {med['old']['wall'] / med[k]['wall']:.3f}"
          f" cpu {med['old']['cpu'] / med[k]['cpu']:.3f}"
          f" | GFLOP/step {r['flops'] / 1e9:.2f} | loss0 {r['loss0']:.6f}")


if __name__ == '__main__':
  main(sys.argv[1:])
