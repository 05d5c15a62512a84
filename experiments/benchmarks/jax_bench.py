"""The jepa_jax side: train step, matmul peak, VQ layer and VQ scaling."""
from __future__ import annotations

import os
import tempfile
import time
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks import common
from jepa_jax import data as data_lib
from jepa_jax.config import load as config_lib
from jepa_jax.train import loop as train
from jepa_jax.train import step as step_lib
from jepa_jax.vq import codebook as vq

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE = 16          # 16x16 single-channel images, patch 2 -> 64 tokens
PATCH = 2


def bench_config(dim: int, depth: int, heads: int, batch: int):
  """The gentle variant at a benchmark size; shared with the PyTorch side."""
  cfg = config_lib.load_config(os.path.join(ROOT, 'configs', 'gentle.py'))
  cfg.model.patch_size = PATCH
  cfg.model.embed_dim, cfg.model.depth, cfg.model.num_heads = dim, depth, heads
  cfg.model.predictor_dim, cfg.model.predictor_depth = dim // 2, 2
  cfg.model.predictor_num_heads = heads
  cfg.masking.num_target_blocks = 4
  cfg.masking.target_block_size = (2, 2)
  cfg.masking.context_block_size = (6, 6)
  cfg.masking.num_context_tokens = 32
  cfg.train.batch_size = batch
  cfg.train.num_epochs = 1
  return cfg


def _random_dataset(batch: int) -> data_lib.Dataset:
  rng = np.random.default_rng(0)
  images = rng.standard_normal((batch, IMAGE, IMAGE, 1)).astype(np.float32)
  return data_lib.Dataset(train_images=images, val_images=images[:2], name='random')


def train_step_call(dim, depth, heads, batch):
  """(run, info): `run()` takes one compiled train step and blocks until it
  is done; info: compile seconds and XLA's FLOPs per step."""
  cfg = bench_config(dim, depth, heads, batch)
  ds = _random_dataset(batch)
  setup = step_lib.make_setup(cfg, ds)
  state = step_lib.init_state(setup, ds.image_shape, cfg.seed)
  images, ids = jnp.asarray(ds.train_images), jnp.arange(batch, dtype=jnp.int32)
  t0 = time.perf_counter()
  compiled = jax.jit(step_lib.make_train_step(setup), donate_argnums=0).lower(
      state, images, ids).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get('flops', float('nan'))) if cost else float('nan')
  holder = {'state': state}

  def run():
    holder['state'], m = compiled(holder['state'], images, ids)
    jax.block_until_ready(m['loss'])

  return run, {'compile_s': compile_s, 'flops_per_step': flops}


def step_stats(stats: Dict[str, object], info: Dict[str, float], batch: int) -> Dict[str, object]:
  """Timing stats of the jax step with its throughput and roofline figures."""
  stats = dict(stats, **info)
  stats.update(samples_per_s=batch / (stats['median_ms'] / 1e3),
               achieved_gflops=info['flops_per_step'] / (stats['median_ms'] / 1e3) / 1e9)
  return stats


def matmul_peak(n: int, reps: int) -> Dict[str, float]:
  """Dense float32 matmul throughput (n x n x n), the machine's practical peak."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n))
  mm = jax.jit(lambda x, y: x @ y)
  stats = common.summarize(common.time_calls(
      lambda: mm(a, b).block_until_ready(), 2, reps))
  stats['gflops'] = 2 * n ** 3 / (stats['min_ms'] / 1e3) / 1e9
  return stats


def vq_layer(tokens, dim, codes, decay, warmup, reps) -> Dict[str, float]:
  """quantize + EMA update of one batch of tokens, jitted, state donated."""
  state = vq.init_state(jax.random.PRNGKey(0), codes, dim)
  z = jax.random.normal(jax.random.PRNGKey(1), (tokens, dim))

  def layer(s, x):
    x_st, c, _ = vq.quantize(s, x)
    return vq.ema_update(s, x, c, decay), x_st

  fn = jax.jit(layer, donate_argnums=0)
  holder = {'state': jax.tree.map(jnp.copy, state)}

  def run():
    holder['state'], out = fn(holder['state'], z)
    out.block_until_ready()

  return common.summarize(common.time_calls(run, warmup, reps))


def vq_scaling(tokens, codes, dim, max_elements, reps) -> Dict[str, float]:
  """Nearest-code search time and XLA's planned peak memory for one call."""
  codebook = jax.random.normal(jax.random.PRNGKey(0), (codes, dim))
  z = jax.random.normal(jax.random.PRNGKey(1), (tokens, dim))
  fn = jax.jit(lambda c, x: vq.nearest_codes(c, x, max_elements=max_elements))
  compiled = fn.lower(codebook, z).compile()
  mem = compiled.memory_analysis()
  peak = None
  if mem is not None:
    peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes
            + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
  stats = common.summarize(common.time_calls(
      lambda: jax.block_until_ready(compiled(codebook, z)), 1, reps))
  stats['peak_bytes'] = peak
  return stats


def overheads(config_spec: str, workdir: str) -> Dict[str, float]:
  """Fraction of a real run's wall time spent outside the compiled step.

  Runs the config through `train.train_and_evaluate`, counting XLA backend
  compiles, then times the same compiled step alone on the same batch size.
  """
  compiles = []

  def listener(event, duration, **kwargs):
    if event == '/jax/core/compile/backend_compile_duration':
      compiles.append(duration)

  jax.monitoring.register_event_duration_secs_listener(listener)
  cfg = config_lib.load_config(config_spec)
  cfg.train.progress_bar = False
  summary = train.train_and_evaluate(cfg, workdir)
  run_compiles = len(compiles)
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)
  state = step_lib.init_state(setup, ds.image_shape, cfg.seed)
  images, ids = next(data_lib.epoch_batches(ds.train_images, cfg.train.batch_size,
                                            cfg.seed, 0, 1))
  images, ids = jnp.asarray(images), jnp.asarray(ids)
  compiled = jax.jit(step_lib.make_train_step(setup), donate_argnums=0).lower(
      state, images, ids).compile()
  holder = {'state': state}

  def run():
    holder['state'], m = compiled(holder['state'], images, ids)
    jax.block_until_ready(m['loss'])

  step_s = common.summarize(common.time_calls(run, 5, 50))['median_ms'] / 1e3
  in_step = summary['steps'] * step_s
  loop_wall = summary['wall_time_s'] - summary['compile_time_s']
  return {'config': config_spec, 'steps': summary['steps'],
          'run_wall_s': summary['wall_time_s'],
          'run_compile_s': summary['compile_time_s'], 'step_median_ms': step_s * 1e3,
          'time_in_step_s': in_step,
          'overhead_fraction': max(0.0, 1.0 - in_step / loop_wall),
          'xla_compiles_in_run': run_compiles}


def tmpdir() -> str:
  return tempfile.mkdtemp(prefix='jepa_bench_')
