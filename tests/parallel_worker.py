"""Runs the device-count-dependent checks of test_parallel.py in its own process.

JAX must see 8 simulated CPU devices, which is only possible before it starts:
test_parallel.py runs `python tests/parallel_worker.py OUT` with
XLA_FLAGS=--xla_force_host_platform_device_count=8 and asserts on OUT/*.
This file only computes and records; it asserts nothing itself.
"""
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import load, set_overrides  # noqa: E402

from jepa_jax import data as data_lib  # noqa: E402
from jepa_jax.config import load as config_lib  # noqa: E402
from jepa_jax.train import devices as parallel  # noqa: E402
from jepa_jax.train import loop_state as epoch_end  # noqa: E402
from jepa_jax.train import step as step_lib  # noqa: E402

LONG_STEPS = 100       # replica identity, refresh firing every 2 steps
LAYOUTS = (('pmap', 1), ('pmap', 8), ('jit', 1), ('jit', 2), ('jit', 8))   # pmap on 2: pmap on 1 and 8 and jit on 2 cover it
METRICS = ('loss', 'infonce', 'sigreg', 'invariance', 'relational',
           'relational_context', 'commitment', 'codebook', 'entropy', 'grad_norm',
           'vq_batch_usage_ratio', 'temperature')


def tiny_config(num_devices=None, mode='auto', config='gentle', **overrides):
  """gentle:tiny (or `config`:tiny) at full learning rate from step 0 (warmup
  0) and a refresh threshold that marks codes dead every 2 steps;
  test_parallel.py's two-process run uses the same overrides."""
  cfg = load(config, 'tiny')
  cfg.train.warmup_epochs = 0
  cfg.vq.refresh_usage_threshold = 0.5
  cfg.parallel.mode = mode
  cfg.parallel.num_devices = num_devices
  return set_overrides(cfg, overrides)


def train_order_batches(ds, cfg, num_epochs):
  """The batches train_and_evaluate feeds, in its order."""
  return [b for e in range(num_epochs) for b in data_lib.epoch_batches(
      ds.train_images, cfg.train.batch_size, cfg.seed, e, cfg.train.steps_per_epoch)]


def long_batches(ds, cfg, n):
  full = data_lib.steps_per_epoch(len(ds.train_images), cfg.train.batch_size)
  out, epoch = [], 0
  while len(out) < n:
    out += list(data_lib.epoch_batches(ds.train_images, cfg.train.batch_size,
                                       cfg.seed, epoch, full))
    epoch += 1
  return out[:n]


def host(tree):
  return jax.tree.map(np.asarray, tree)


def flat(tree):
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def replicas_identical(state):
  """True when every leaf's per-device copies are bit-identical."""
  return all(all(np.array_equal(r[0], x) for x in r[1:])
             for r in (parallel.replicas(leaf) for leaf in jax.tree.leaves(state)))


def run(cfg, setup, state0, data, on_step=None):
  """Trains on `data` from a copy of state0 with the layout cfg.parallel asks for.

  Returns (per-step host metrics, final state, step_fn, plan).
  on_step(step, state, plan) is called after every step.
  """
  plan = parallel.make_plan(cfg)
  state = parallel.place_state(plan, jax.tree.map(lambda x: x + 0, state0))
  step_fn, _ = parallel.compile_train_step(plan, setup, state, *data[0])
  metrics = []
  for i, (images, ids) in enumerate(data):
    state, m = step_fn(state, images, ids)
    metrics.append(host(m))
    if on_step:
      on_step(i + 1, state, plan)
  return metrics, state, step_fn, plan


def main(out):
  t_start = time.perf_counter()
  timings, record, arrays = {}, {'devices': jax.device_count()}, {}

  # The replica comparison does see replicas that differ.
  probe = jax.pmap(lambda x, y: x + y + jax.lax.axis_index('data'),
                   axis_name='data', in_axes=(None, 0),
                   out_axes=None)(np.float32(0), np.zeros(8, np.float32))
  record['probe_replicas'] = [float(r) for r in parallel.replicas(probe)]

  try:
    parallel.make_plan(tiny_config(num_devices=8, **{'train.batch_size': 12}))
    record['bad_batch_error'] = None
  except config_lib.ConfigError as err:
    record['bad_batch_error'] = str(err)

  # 'arc': padded ARC grids, whose validity flags are gathered with the rows.
  # 'ac': the recommended anti-collapse quantizer (configs/anticollapse.py) on 2.
  for variant, config, overrides in (('ema', 'gentle', {}),
                                     ('grad', 'gentle', {'vq.ema_decay': None}),
                                     ('arc', 'arc_gentle', {}),
                                     ('ac', 'anticollapse', {})):
    cfg = tiny_config(config=config, **overrides)
    ds = data_lib.load_dataset(cfg)
    setup = step_lib.make_setup(cfg, ds)
    state0 = host(step_lib.init_state(setup, ds.image_shape, cfg.seed))
    data = train_order_batches(ds, cfg, cfg.train.num_epochs)
    if variant == 'ema':
      layouts = (('single', 1),) + LAYOUTS
      eval_fn = jax.jit(step_lib.make_eval_step(setup, cfg.seed))
      eval_batch = min(cfg.train.batch_size, len(ds.val_images))
    elif variant == 'ac':
      layouts, data = (('single', 1), ('jit', 2)), data[:3]
    else:
      layouts, data = (('single', 1), ('jit', 8)), data[:3]
    fns = {}
    for mode, n in layouts:
      t = time.perf_counter()
      name = f'{variant}_{mode}_{n}'
      saved = {}

      def on_step(step, state, plan, name=name):
        if variant == 'ema' and step == 1 and name == 'ema_single_1':
          saved['after_1'] = host(state)        # the refresh check starts here
        if variant == 'ema' and step % cfg.train.steps_per_epoch == 0:
          val = epoch_end.evaluate(eval_fn, parallel.local_state(plan, state),
                               ds.val_images, eval_batch)
          for k, v in val.items():
            arrays.setdefault(f'{name}/val/{k}', []).append(v)

      pcfg = tiny_config(num_devices=n, mode='auto' if mode == 'single' else mode,
                         config=config, **overrides)
      metrics, state, step_fn, plan = run(pcfg, setup, state0, data, on_step)
      fns[name] = step_fn
      record[f'{name}_mode'] = plan.mode
      record[f'{name}_replicas_identical'] = replicas_identical(state)
      for k in METRICS:
        arrays[f'{name}/metric/{k}'] = np.array([m[k] for m in metrics])
      for k, v in flat(host(parallel.local_state(plan, state))).items():
        arrays[f'{name}/state/{k}'] = v
      if 'after_1' in saved:
        after_1 = saved['after_1']

      if name == 'ema_pmap_8':          # 100 more steps on 8 replicas
        t_long = time.perf_counter()
        resets = []
        for i, (images, ids) in enumerate(long_batches(ds, cfg, LONG_STEPS)):
          state, _ = step_fn(state, images, ids)
          if (len(data) + i + 1) % cfg.vq.refresh_interval == 0:
            resets.append([float(u.sum()) for u in parallel.replicas(state['vq'].usage)])
        record['long_steps'] = LONG_STEPS
        record['long_refresh_usage_sums'] = resets
        record['long_replicas_identical'] = replicas_identical(state)
        record['long_codebook_replicas_equal'] = [
            bool(np.array_equal(r, parallel.replicas(state['vq'].codebook)[0]))
            for r in parallel.replicas(state['vq'].codebook)]
        timings['long'] = time.perf_counter() - t_long
      timings[name] = time.perf_counter() - t

    if variant == 'ema':
      # One refresh step (step 2) from the same state on 1 device and on 8.
      single, _ = fns['ema_single_1'](jax.tree.map(lambda x: x + 0, after_1), *data[1])
      plan8 = parallel.make_plan(tiny_config(num_devices=8, mode='pmap'))
      p8, _ = fns['ema_pmap_8'](parallel.place_state(plan8, after_1), *data[1])
      record['refresh_step'] = int(np.asarray(single['step']))
      arrays['refresh/single_codebook'] = np.asarray(single['vq'].codebook)
      arrays['refresh/single_cluster_size'] = np.asarray(single['vq'].cluster_size)
      arrays['refresh/single_usage'] = np.asarray(single['vq'].usage)
      arrays['refresh/p8_codebooks'] = np.stack(parallel.replicas(p8['vq'].codebook))
      arrays['refresh/p8_cluster_sizes'] = np.stack(
          parallel.replicas(p8['vq'].cluster_size))
      arrays['refresh/before_codebook'] = np.asarray(after_1['vq'].codebook)

  timings['total'] = time.perf_counter() - t_start
  record['timings'] = timings
  np.savez(os.path.join(out, 'arrays.npz'),
           **{k: np.asarray(v) for k, v in arrays.items()})
  with open(os.path.join(out, 'record.json'), 'w') as f:
    json.dump(record, f, indent=1)


if __name__ == '__main__':
  main(sys.argv[1])
