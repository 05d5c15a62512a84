"""The training loop: data order, logging points, validation, run outputs.

The pure pieces (train state, jitted step, evaluation functions) live in
`jepa_jax.step`; this module drives them and writes the run's files.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np

from jepa_jax import config_lib
from jepa_jax import data as data_lib
from jepa_jax import final_state
from jepa_jax import monitor
from jepa_jax import parallel
from jepa_jax import records
from jepa_jax import step as step_lib
from jepa_jax.step import LOSS_COMPONENTS

EPOCH_METRICS = 'epoch_metrics.jsonl'
EMBEDDING_METRICS = 'embedding_metrics.jsonl'
SUMMARY = 'summary.json'
CONFIG = 'config.json'
ALERTS = 'alerts.jsonl'


class TrainingError(RuntimeError):
  """The run cannot go on (non-finite loss, bad data). One-line message."""


def _mean_metrics(stacked: Dict[str, np.ndarray], prefix: str) -> Dict[str, float]:
  return {f'{prefix}_{k}_mean': float(np.mean(stacked[k])) for k in LOSS_COMPONENTS}


def _check_finite(values: Dict[str, float], where: str) -> None:
  bad = {k: v for k, v in values.items() if not np.isfinite(v)}
  if bad:
    names = ', '.join(f'{k}={v}' for k, v in sorted(bad.items()))
    raise TrainingError(f'non-finite loss {where}: {names}; run stopped, '
                        'logs up to the last complete epoch are intact')


def evaluate(eval_fn, state, images, batch_size) -> Dict[str, float]:
  """Mean loss components over the full validation batches (fixed order)."""
  n = (len(images) // batch_size) * batch_size
  outs = [eval_fn(state, images[i:i + batch_size],
                  np.arange(i, i + batch_size, dtype=np.int32))
          for i in range(0, n, batch_size)]
  stacked = jax.device_get(jax.tree.map(lambda *x: jnp.stack(x), *outs))
  return {k: float(np.mean(v)) for k, v in stacked.items()}


def _prepare_workdir(workdir: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  taken = [f for f in (EPOCH_METRICS, EMBEDDING_METRICS, SUMMARY, ALERTS)
           if os.path.exists(os.path.join(workdir, f))]
  if taken:
    raise TrainingError(f'workdir {workdir!r} already holds a run ({", ".join(taken)}); '
                        'choose a new --workdir so existing results are not overwritten')


def _prepare_workdir_once(plan, workdir: str) -> None:
  """Process 0 checks (and creates) the workdir; every process gets its verdict."""
  message = None
  if plan.is_writer:
    try:
      _prepare_workdir(workdir)
    except TrainingError as err:
      message = str(err)
  message = parallel.broadcast_error(plan, message)
  if message:
    raise TrainingError(message)


def train_and_evaluate(cfg, workdir: str) -> Dict[str, Any]:
  """Runs training as configured, writing all outputs to `workdir`.

  Returns the summary dict (also written to summary.json).
  """
  t_start = time.perf_counter()
  config_lib.validate(cfg)
  parallel.initialize_distributed(cfg)
  dataset = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, dataset)
  plan = parallel.make_plan(cfg)
  _prepare_workdir_once(plan, workdir)
  if plan.is_writer:
    records.write_json(os.path.join(workdir, CONFIG), cfg.to_dict())

  tc = cfg.train
  state = parallel.place_state(
      plan, step_lib.init_state(setup, dataset.image_shape, cfg.seed))
  rows = plan.process_rows          # this process's shard of every global batch
  batch0 = next(data_lib.epoch_batches(dataset.train_images, tc.batch_size,
                                       cfg.seed, 0, 1, rows=rows))
  train_step, compile_time = parallel.compile_train_step(plan, setup, state, *batch0)
  eval_batch = min(tc.batch_size, len(dataset.val_images))
  eval_step = jax.jit(step_lib.make_eval_step(setup, cfg.seed))
  emb_fn = jax.jit(step_lib.make_embedding_metrics_fn(setup))
  emb_images = dataset.val_images[:tc.embedding_metrics_num_samples]

  def log_file(name):               # other processes write to /dev/null
    return records.JsonlWriter(os.path.join(workdir, name) if plan.is_writer
                               else os.devnull)

  epoch_log, emb_log = log_file(EPOCH_METRICS), log_file(EMBEDDING_METRICS)
  alert_log = log_file(ALERTS)
  tb = records.TensorBoardWriter(workdir) if plan.is_writer else records.NullWriter()
  summary = {'status': 'running', 'variant': cfg.variant,
             'total_steps_planned': setup.total_steps,
             'steps_per_epoch': setup.steps_per_epoch,
             'parallel': plan.describe()}
  # Every process folds the same (replicated) metrics, so all stop together.
  rules = monitor.Rules.from_config(cfg)
  mon = monitor.initial_state()
  last_epoch_line: Dict[str, Any] = {}
  last_emb: Dict[str, Any] = {}
  step, epochs_done = 0, 0

  from tqdm import tqdm  # noqa: PLC0415  (progress output only)
  bar = tqdm(total=setup.total_steps, disable=not (tc.progress_bar and plan.is_writer),
             desc=cfg.variant, dynamic_ncols=True)

  def report(events):
    for event in events:
      alert_log.write(event)
      if plan.is_writer:
        tqdm.write(monitor.format_event(event), file=sys.stderr)

  try:
    status, decision = 'completed', None
    for epoch in range(tc.num_epochs):
      epoch_metrics = []
      for images, ids in data_lib.epoch_batches(
          dataset.train_images, tc.batch_size, cfg.seed, epoch,
          setup.steps_per_epoch, rows=rows):
        state, m = train_step(state, images, ids)
        epoch_metrics.append(m)
        step += 1
        bar.update(1)
        if step % tc.log_every_steps == 0:           # logging point: host sync
          latest = jax.device_get(m)
          _check_finite({'loss': float(latest['loss'])}, f'at step {step}')
          tb.write('train', latest, step)
          post = {'loss': f"{float(latest['loss']):.3f}"}
          if 'vq_usage_ratio' in last_emb:
            post['vq_usage'] = f"{last_emb['vq_usage_ratio']:.1%}"
          if last_emb:
            post['erank'] = f"{last_emb['context_effective_rank']:.1f}"
          if mon.num_alerts or mon.red_flags:
            post['alerts'] = f'{mon.num_alerts}+{len(mon.red_flags)}!'
          bar.set_postfix(post)
        if step % tc.embedding_metrics_every_steps == 0:
          emb = {k: float(v) for k, v in jax.device_get(
              emb_fn(parallel.local_state(plan, state), emb_images)).items()}
          last_emb = {'step': step, 'epoch': epoch, **emb}
          emb_log.write(last_emb)
          tb.write('embedding', last_emb, step)
          mon, events = monitor.observe_embedding(mon, last_emb, rules)
          report(events)
          decision = monitor.stop_decision(mon, rules)
          if decision:
            break
      if decision:                                   # aborted inside the epoch
        break

      stacked = jax.device_get(jax.tree.map(lambda *x: jnp.stack(x), *epoch_metrics))
      train_means = _mean_metrics(stacked, 'train')
      _check_finite(train_means, f'in epoch {epoch}')
      val = evaluate(eval_step, parallel.local_state(plan, state),
                     dataset.val_images, eval_batch)
      val_means = {f'val_{k}_mean': v for k, v in val.items()}
      _check_finite(val_means, f'in validation after epoch {epoch}')
      last_epoch_line = {'epoch': epoch, 'step': step, **train_means, **val_means,
                         'temperature': float(stacked['temperature'][-1]),
                         'learning_rate': float(stacked['learning_rate'][-1])}
      if 'vq_batch_usage_ratio' in stacked:
        last_epoch_line['train_vq_batch_usage_ratio_mean'] = float(
            np.mean(stacked['vq_batch_usage_ratio']))
      epoch_log.write(last_epoch_line)
      tb.write('epoch', last_epoch_line, step)
      epochs_done = epoch + 1

      mon, events = monitor.observe_epoch(mon, last_epoch_line, rules)
      report(events)
      decision = monitor.stop_decision(mon, rules)
      if decision:
        break
    if decision:
      status, reason = decision
      if reason:
        summary['reason'] = reason
  except BaseException as err:
    status = 'failed'
    summary['reason'] = str(err) or type(err).__name__
    raise
  finally:
    bar.close()
    for log in (epoch_log, emb_log, alert_log, tb):
      log.close()
    if status != 'failed' and plan.is_writer:
      final_state.save(workdir, parallel.local_state(plan, state))
    wall = time.perf_counter() - t_start
    has_best = mon.best_epoch >= 0
    summary.update({
        'status': status, 'epochs_completed': epochs_done, 'steps': step,
        'best_val_loss': mon.best_val if has_best else None,
        'best_epoch': mon.best_epoch if has_best else None,
        'alerts': mon.num_alerts, 'red_flags': list(mon.red_flags),
        'final_metrics': {**last_epoch_line, **{f'embedding_{k}' if k in (
            'step', 'epoch') else k: v for k, v in last_emb.items()}},
        'wall_time_s': wall, 'compile_time_s': compile_time,
        'steps_per_s': step / max(wall - compile_time, 1e-9),
        'devices': [str(d) for d in jax.devices()],
    })
    if plan.is_writer:
      records.write_json(os.path.join(workdir, SUMMARY), summary)
  return summary
