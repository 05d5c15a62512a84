"""Where a train step's time goes: per-fusion thread time from a jax.profiler trace.

    PYTHONPATH=$PWD python -m experiments.benchmarks.profile_step DIM DEPTH HEADS BATCH OUTDIR

Compiles the benchmark step, writes its optimized HLO to OUTDIR/step.hlo.txt,
traces 5 steps after warm-up and prints the thread time per step summed over
the XLA worker threads, grouped by fusion kind (name without its .N suffix)
and by fusion kind + the jax op name (block_N for any block).
"""
import collections
import glob
import os
import re
import sys

import jax
import jax.numpy as jnp

from experiments.benchmarks import jax_bench
from jepa_jax.train import step as step_lib

STEPS = 5


def main(argv):
  dim, depth, heads, batch = (int(a) for a in argv[:4])
  out = argv[4]
  os.makedirs(out, exist_ok=True)
  cfg = jax_bench.bench_config(dim, depth, heads, batch)
  ds = jax_bench._random_dataset(batch)
  setup = step_lib.make_setup(cfg, ds)
  state = step_lib.init_state(setup, ds.image_shape, cfg.seed)
  images, ids = jnp.asarray(ds.train_images), jnp.arange(batch, dtype=jnp.int32)
  compiled = jax.jit(step_lib.make_train_step(setup), donate_argnums=0).lower(
      state, images, ids).compile()
  hlo = compiled.as_text()
  with open(os.path.join(out, 'step.hlo.txt'), 'w') as f:
    f.write(hlo)
  for _ in range(3):
    state, m = compiled(state, images, ids)
  jax.block_until_ready(m['loss'])
  jax.profiler.start_trace(os.path.join(out, 'trace'))
  for _ in range(STEPS):
    state, m = compiled(state, images, ids)
    jax.block_until_ready(m['loss'])
  jax.profiler.stop_trace()
  xplane = glob.glob(os.path.join(out, 'trace', '**', '*.xplane.pb'), recursive=True)[0]
  op_name = {m.group(1): m.group(2) for m in re.finditer(
      r'^\s+%?(\S+) = .*?metadata=\{op_name="([^"]*)"', hlo, re.M)}
  per_event = collections.defaultdict(float)
  for plane in jax.profiler.ProfileData.from_file(xplane).planes:
    for line in plane.lines:
      if line.name == 'python':
        continue
      for ev in line.events:
        if not ev.name.startswith(('ThunkExecutor', 'SlinkyThreadPool')):
          per_event[ev.name] += ev.duration_ns / STEPS / 1e6
  total = sum(per_event.values())
  kinds, ops = collections.defaultdict(float), collections.defaultdict(float)
  for name, ms in per_event.items():
    kind = re.sub(r'\.\d+$', '', name)
    kinds[kind] += ms
    ops[(kind, re.sub(r'block_\d+', 'block_N', op_name.get(name, '?')))] += ms
  print(f'thread time per step, all XLA threads: {total:.0f} ms')
  for kind, ms in sorted(kinds.items(), key=lambda kv: -kv[1])[:15]:
    print(f'{ms:8.1f} ms {100 * ms / total:5.1f}%  {kind}')
  print()
  for (kind, op), ms in sorted(ops.items(), key=lambda kv: -kv[1])[:30]:
    print(f'{ms:8.1f} ms {100 * ms / total:5.1f}%  {kind:28s} {op[:110]}')


if __name__ == '__main__':
  main(sys.argv[1:])
