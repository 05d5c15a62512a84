"""The training loop: data order, logging points, validation, checkpoints, run outputs.

The pure pieces (train state, jitted step, evaluation functions) live in
`jepa_jax.step`; checkpoint files in `jepa_jax.checkpoint`. This module drives
them and writes the run's files.

Resume: a workdir that holds this run (same config.json) continues from its
latest complete checkpoint. Everything the loop carries between steps is in
the checkpoint: the train state, the data position (epoch, batch within the
epoch), the loop bookkeeping dict (`new_loop_state`: status, epochs done and
the collapse monitor's state, which holds early stopping) and the per-step
metrics of an unfinished epoch; the JSONL logs (metrics and alerts) are
rewound to the checkpoint's step. With no host-side randomness and the data
order a function of (seed, epoch), the resumed run computes exactly what the
uninterrupted one would have.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict, Optional

import jax
import numpy as np

from jepa_jax import checkpoint as ckpt_lib
from jepa_jax import config_lib
from jepa_jax import data as data_lib
from jepa_jax import final_state
from jepa_jax import init_from as init_from_lib
from jepa_jax import interrupts
from jepa_jax import measure
from jepa_jax import model as model_lib
from jepa_jax import monitor
from jepa_jax import parallel
from jepa_jax import quantizer as quantizer_lib
from jepa_jax import records
from jepa_jax import restart as restart_lib
from jepa_jax import run_files
from jepa_jax import step as step_lib
from jepa_jax import timing
from jepa_jax import vq as vq_lib
from jepa_jax import workdir_config
from jepa_jax import workdir_lock
from jepa_jax.step import LOSS_COMPONENTS

from jepa_jax.run_files import (ALERTS, CONFIG, EMBEDDING_METRICS, EPOCH_METRICS,  # noqa: F401
                                 RUN_FILES, STEP_LOGS, SUMMARY)
FINISHED = ('completed', 'early_stopped', 'aborted')


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
  outs = jax.device_get([eval_fn(state, images[i:i + batch_size],
                                 np.arange(i, i + batch_size, dtype=np.int32))
                         for i in range(0, n, batch_size)])
  return {k: float(np.mean(np.stack([o[k] for o in outs]))) for k in outs[0]}


def monitor_to_json(state: monitor.MonitorState) -> Dict[str, Any]:
  """The monitor state as strict JSON (no best val loss yet: None, not inf)."""
  d = state.to_dict()
  d['best_val'] = None if d['best_epoch'] < 0 else d['best_val']
  return json.loads(json.dumps(d, allow_nan=False))     # tuples -> lists


def monitor_from_json(d: Dict[str, Any]) -> monitor.MonitorState:
  d = dict(d)
  d['best_val'] = float('inf') if d['best_val'] is None else d['best_val']
  return monitor.MonitorState.from_dict(d)


def new_loop_state() -> Dict[str, Any]:
  """The loop's bookkeeping: one JSON-able dict, saved in every checkpoint.

  `monitor` is the collapse monitor's state (`jepa_jax.monitor`: alert
  edges, tails, best val loss and epochs since, i.e. early stopping);
  `reason` the red flag that aborted the run.
  """
  return {'status': 'running', 'epochs_completed': 0, 'reason': None,
          'monitor': monitor_to_json(monitor.initial_state())}


class EpochMetrics:
  """Per-step train metrics of the current epoch.

  Step outputs stay on the device until the epoch ends or a checkpoint needs
  them (one host transfer each); a resumed epoch starts from the values its
  checkpoint holds, so epoch means equal the uninterrupted run's bit for bit.
  """

  def __init__(self, saved: Optional[Dict[str, Any]] = None):
    self._host = {k: np.asarray(v['values'], dtype=v['dtype'])
                  for k, v in (saved or {}).items()}
    self._pending = []

  def add(self, metrics) -> None:
    self._pending.append(metrics)

  def fetch(self) -> Dict[str, np.ndarray]:
    if self._pending:             # stacked on the host: no per-length compile
      steps = jax.device_get(self._pending)
      new = {k: np.stack([m[k] for m in steps]) for k in steps[0]}
      self._pending = []
      self._host = {k: np.concatenate([self._host[k], v]) if k in self._host else v
                    for k, v in new.items()}
    return self._host

  def to_json(self) -> Dict[str, Any]:
    return {k: {'dtype': str(v.dtype), 'values': v.tolist()}
            for k, v in self.fetch().items()}


class Preemption:
  """SIGTERM or SIGINT -> save at the next step boundary and stop
  (`jepa_jax.interrupts` records the request; `status` names it).

  Multi-host (jax.distributed initialised): Orbax's preemption sync point
  too, so all hosts stop at the same step.
  """

  def __init__(self):
    self.requested = False

  def install(self) -> None:
    interrupts.set_phase('loop')

  def uninstall(self) -> None:
    interrupts.set_phase('finish')

  @property
  def status(self) -> str:
    return interrupts.requested() or 'preempted'

  def reached(self, ckpts: ckpt_lib.RunCheckpoints, step: int) -> bool:
    self.requested = self.requested or interrupts.requested() is not None
    if jax.process_count() > 1:
      self.requested = self.requested or ckpts.reached_preemption(step)
    return self.requested


def _kmeans_vq(cfg, setup, dataset, encoder_params, vq_params=None) -> vq_lib.VQState:
  """Codebook from k-means++ (+ Lloyd) on the encoder's token embeddings of
  the training images (whole images), a function of the config and seed;
  fitted in the quantizer's space (`quantizer.kmeans_state`).
  Padded colour-id data: valid tokens only, encoded with padding masked out
  of attention as in the step."""
  patch = cfg.model.patch_size

  @jax.jit
  def encode(images):
    valid = model_lib.token_validity(images, patch) if setup.padded else None
    z = setup.encoder.apply(encoder_params, images, None, valid)
    return z, valid

  chunks = []
  for i in range(0, len(dataset.train_images), 256):
    z, valid = jax.device_get(encode(dataset.train_images[i:i + 256]))
    chunks.append(z[valid] if setup.padded else z.reshape(-1, z.shape[-1]))
  tokens = np.concatenate(chunks)
  key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 0x6b6d)
  k_pick, k_fit = jax.random.split(key)
  n = min(cfg.vq.kmeans_num_samples, len(tokens))
  picked = tokens[np.asarray(jax.random.permutation(k_pick, len(tokens))[:n])]
  return quantizer_lib.kmeans_state(setup.quantizer, k_fit, picked, vq_params,
                                    cfg.vq.kmeans_iters, cfg.vq.reanchor)


def starting_state(cfg, setup, dataset, fresh):
  """The state a run starts from: `fresh`, with params and target encoder
  loaded from `config.init_from` if set and the codebook from k-means if
  `config.vq.init == 'kmeans'`. Fails listing every name/shape mismatch."""
  if not cfg.init_from and not (setup.vq_enabled and cfg.vq.init == 'kmeans'):
    return fresh
  state = dict(fresh)
  if cfg.init_from:
    subset = {'params': state['params'], 'target_params': state['target_params']}
    loaded, source = init_from_lib.load_params(cfg.init_from, ckpt_lib.abstract_of(subset))
    state.update(params=loaded['params'], target_params=loaded['target_params'])
    ckpt_lib.say(f'initialised params and target encoder from {source}')
  if setup.vq_enabled and cfg.vq.init == 'kmeans':
    state['vq'] = _kmeans_vq(cfg, setup, dataset, state['params']['encoder'],
                             state.get('vq_params'))
  state['opt_state'] = setup.tx.init(step_lib.trainables_of(setup, state))
  return ckpt_lib.detached_copy(state)     # every leaf its own (donatable) buffer


def _check_workdir_once(plan, workdir, cfg_json, allow_config_change) -> bool:
  """Every process reads the workdir (checkpoints need a shared filesystem);
  process 0's verdict is the one every process acts on."""
  message, holds_run = None, False
  try:
    holds_run = workdir_config.check_workdir(workdir, cfg_json, allow_config_change)
  except ckpt_lib.CheckpointError as err:
    message = str(err)
  message = parallel.broadcast_error(plan, message)
  if message:
    raise ckpt_lib.CheckpointError(message)
  return holds_run


def _check_same_step_everywhere(plan, restored) -> None:
  """Several processes resume only from one checkpoint all of them can read."""
  if plan.process_count == 1:
    return
  from jax.experimental import multihost_utils  # noqa: PLC0415
  steps = np.asarray(multihost_utils.process_allgather(
      np.asarray(restored.step if restored else -1, np.int64))).reshape(-1)
  if len(set(steps.tolist())) > 1:
    raise ckpt_lib.CheckpointError(
        f'processes found different latest checkpoints ({steps.tolist()}, -1 = none); '
        'resuming on several hosts needs the workdir on a shared filesystem')


def _last_line(path: str) -> Dict[str, Any]:
  lines = records.read_jsonl(path)
  return lines[-1] if lines else {}


def _summary(summary, loop, status, step, last_epoch_line, last_emb):
  mon = monitor_from_json(loop['monitor'])
  has_best = mon.best_epoch >= 0
  summary.update({
      'status': status, 'epochs_completed': loop['epochs_completed'], 'steps': step,
      'best_val_loss': mon.best_val if has_best else None,
      'best_epoch': mon.best_epoch if has_best else None,
      'alerts': mon.num_alerts, 'red_flags': list(mon.red_flags),
      'final_metrics': {**last_epoch_line, **{f'embedding_{k}' if k in (
          'step', 'epoch') else k: v for k, v in last_emb.items()}},
  })
  if status == 'aborted' and loop.get('reason'):
    summary['reason'] = loop['reason']
  return summary


def _set_aside_stale_eval(workdir: str) -> None:
  """Training is about to change the weights: an existing eval.json (from a
  finished run whose checkpoints were deleted, or from a checkpoint that
  was not the latest) no longer describes them. It is renamed to
  eval.stale-<n>.json, never deleted, and `jepa_jax.evaluate` writes a new one."""
  old = os.path.join(workdir, run_files.EVAL)
  if not os.path.exists(old):
    return
  n = 0
  while os.path.exists(os.path.join(workdir, run_files.STALE_EVAL.format(n))):
    n += 1
  new = os.path.join(workdir, run_files.STALE_EVAL.format(n))
  os.replace(old, new)
  ckpt_lib.say(f'{old} described weights this run is about to change: moved to {new}')


def _refuse_or_restart(workdir: str, restart: bool, is_writer: bool) -> None:
  """No usable checkpoint in a workdir of this run: refuses to train from step
  0 over its final weights or logs unless `restart`, which moves them aside."""
  found = restart_lib.outputs_worth_keeping(workdir, run_files.FINAL_STATE, STEP_LOGS)
  if not found:
    return
  if not restart:
    raise ckpt_lib.CheckpointError(
        f'workdir {workdir!r} holds the outputs of a run ({", ".join(found)}) but no '
        'usable checkpoint to continue it; pass --config.checkpoint.restart=True to '
        'train again from step 0 (the old outputs are moved to previous-<n>/), '
        'or use a new --workdir')
  if is_writer:
    dest = restart_lib.move_aside(workdir)
    ckpt_lib.say(f'checkpoint.restart: training again from step 0; the old outputs '
                 f'of {workdir} moved to {dest}')


def train_and_evaluate(cfg, workdir: str) -> Dict[str, Any]:
  """Runs (or resumes) training as configured, writing all outputs to `workdir`.

  Returns the summary dict (also written to summary.json).
  """
  t_start = time.perf_counter()
  timer = timing.Sections().start()
  installed = interrupts.install()          # the CLI installed them at its start
  interrupts.set_phase('setup')
  progress = {}                             # set once the run may write the workdir
  try:
    config_lib.validate(cfg)
    config_lib.check_workdir_path(workdir)
    parallel.initialize_distributed(cfg)
    # One process per workdir (process 0 of a multi-process run speaks for all).
    with workdir_lock.hold(workdir, enabled=jax.process_index() == 0):
      try:
        return _train_and_evaluate(cfg, workdir, t_start, timer, progress)
      except interrupts.Stopped as stop:
        if not progress:
          raise                             # nothing of this run written yet
        return _stopped_in_setup(workdir, stop, progress, t_start)
  finally:
    timer.stop()
    if installed:
      interrupts.uninstall()
    else:
      interrupts.set_phase('startup')


def _stopped_in_setup(workdir, stop, progress, t_start) -> Dict[str, Any]:
  """A signal before the first step: summary.json says so (steps: where the
  run stood, nothing trained); the checkpoints are closed first."""
  if progress.get('ckpts') is not None:
    try:
      progress['ckpts'].close()
    except Exception as err:  # pylint: disable=broad-except
      ckpt_lib.say(f'warning: closing the checkpoints: {err}')
  summary = {'status': stop.status, 'steps': progress['step'],
             'epochs_completed': progress['epochs_completed'],
             'best_val_loss': None, 'best_epoch': None,
             'resumed_from_step': progress['resumed_from_step'],
             'reason': f'{stop} (before the first step of this start)',
             'wall_time_s': time.perf_counter() - t_start, 'compile_time_s': 0.0}
  if progress['is_writer']:
    records.write_json(os.path.join(workdir, SUMMARY), summary)
  return summary


def _train_and_evaluate(cfg, workdir, t_start, timer, progress):
  timer.switch('startup')
  plan = parallel.make_plan(cfg)
  tc, cc = cfg.train, cfg.checkpoint
  cfg_json = workdir_config.config_to_json(cfg)
  path = lambda name: os.path.join(workdir, name)

  # Nothing is written before the workdir, a resumed checkpoint or init_from
  # have been checked: a refused run leaves the workdir as it was. The
  # workdir is checked before the data is loaded.
  holds_run = _check_workdir_once(plan, workdir, cfg_json, cc.allow_config_change)
  if cfg.init_from and not holds_run:
    init_from_lib.resolve(cfg.init_from)      # a wrong path fails before the data loads
  dataset = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, dataset)
  fresh = step_lib.init_state(setup, dataset.image_shape, cfg.seed)
  placed = parallel.place_state(plan, fresh)     # replicated on the devices
  ckpts = (ckpt_lib.RunCheckpoints(path(run_files.CHECKPOINTS), cc.keep)
           if holds_run and os.path.isdir(path(run_files.CHECKPOINTS)) else None)
  try:   # checkpoints hold one copy of the state, whatever the device count
    restored = ckpts.restore_latest(ckpt_lib.abstract_of(fresh)) if ckpts else None
  except BaseException:
    ckpts.close()
    raise
  _check_same_step_everywhere(plan, restored)
  if holds_run and not restored:
    _refuse_or_restart(workdir, cc.get('restart', False), plan.is_writer)
  if restored:
    state, meta = parallel.place_state(plan, restored.state), restored.meta
    if meta['loop']['status'] not in FINISHED:
      ckpt_lib.say(f'resuming from checkpoint step {restored.step} (epoch '
                   f'{meta["epoch"]}, batch {meta["step_in_epoch"]}) in {ckpts.directory}')
  else:
    start = starting_state(cfg, setup, dataset, fresh)
    state = placed if start is fresh else parallel.place_state(plan, start)
    meta = {'step': 0, 'epoch': 0, 'step_in_epoch': 0, 'loop': new_loop_state(),
            'partial_epoch': {}}
  del fresh, placed
  progress.update(step=meta['step'], epochs_completed=meta['loop']['epochs_completed'],
                  resumed_from_step=restored.step if restored else None,
                  is_writer=plan.is_writer, ckpts=ckpts)
  if plan.is_writer:
    os.makedirs(workdir, exist_ok=True)
    records.write_json(path(CONFIG), cfg_json)
    for name in STEP_LOGS:
      records.rewind_jsonl(path(name), meta['step'])
  ckpts = progress['ckpts'] = ckpts or ckpt_lib.RunCheckpoints(
      path(run_files.CHECKPOINTS), cc.keep)

  loop, step, start_step = meta['loop'], meta['step'], meta['step']
  last_epoch_line = _last_line(path(EPOCH_METRICS))
  last_emb = _last_line(path(EMBEDDING_METRICS))
  summary = {'status': 'running', 'variant': cfg.variant,
             'total_steps_planned': setup.total_steps,
             'steps_per_epoch': setup.steps_per_epoch,
             'resumed_from_step': restored.step if restored else None,
             'parallel': plan.describe()}
  if loop['status'] == 'completed' and meta['epoch'] < tc.num_epochs:
    loop['status'] = 'running'           # more epochs asked (allow_config_change)
  if loop['status'] in FINISHED:
    interrupts.set_phase('finish')        # a signal now must not mark it stopped
    ckpts.close()
    ckpt_lib.say(f'run in {workdir} already finished ({loop["status"]}) at step {step}')
    if plan.is_writer and not os.path.exists(path(run_files.FINAL_STATE)):
      final_state.save(workdir, parallel.local_state(plan, state))  # killed before it
    if os.path.exists(path(SUMMARY)):
      with open(path(SUMMARY)) as f:
        old = json.load(f)
      if old.get('status') == loop['status'] and old.get('steps') == step:
        return old
    summary = _summary(summary, loop, loop['status'], step, last_epoch_line, last_emb)
    if plan.is_writer:
      records.write_json(path(SUMMARY), summary)
    return summary

  if plan.is_writer:
    _set_aside_stale_eval(workdir)
  rows = plan.process_rows          # this process's shard of every global batch
  batch0 = next(data_lib.epoch_batches(dataset.train_images, tc.batch_size,
                                       cfg.seed, 0, 1, rows=rows))
  with timer('compile_step'):
    train_step, compile_time = parallel.compile_train_step(plan, setup, state, *batch0)
  timer.switch('loop_setup')
  eval_batch = min(tc.batch_size, len(dataset.val_images))
  emb_images = dataset.val_images               # the whole val split
  with timer('compile_eval'):       # ahead of time: one compile each per run
    local = parallel.local_state(plan, state)
    eval_step = jax.jit(step_lib.make_eval_step(setup, cfg.seed)).lower(
        local, dataset.val_images[:eval_batch],
        np.arange(eval_batch, dtype=np.int32)).compile()
    emb_fn = jax.jit(measure.make_device_fn(setup, cfg.seed)).lower(
        local, emb_images).compile()
    del local

  def log_file(name):               # other processes write to /dev/null
    return records.JsonlWriter(path(name) if plan.is_writer else os.devnull)

  epoch_log, emb_log = log_file(EPOCH_METRICS), log_file(EMBEDDING_METRICS)
  alert_log = log_file(ALERTS)
  # TensorBoard discards the events a resumed run's earlier life logged after
  # the checkpoint (purge_step); the event files themselves keep them.
  tb = (records.TensorBoardWriter(workdir, purge_step=step + 1 if restored else None)
        if plan.is_writer else records.NullWriter())
  # Every process folds the same (replicated) metrics, so all stop together.
  rules = monitor.Rules.from_config(cfg)
  mon = monitor_from_json(loop['monitor'])
  epoch_metrics = EpochMetrics(meta['partial_epoch'])
  schedule = measure.Schedule.from_config(cfg, setup.total_steps)
  tracker = measure.Tracker(meta.get('measure'))
  preemption = Preemption()
  preemption.install()

  def save(epoch, step_in_epoch, val_loss=None):
    with timer('checkpoint'):
      _save(epoch, step_in_epoch, val_loss)

  def _save(epoch, step_in_epoch, val_loss):
    partial = epoch_metrics.to_json() if step_in_epoch else {}
    if partial and not np.all(np.isfinite(partial['loss']['values'])):
      _check_finite({'loss': float('nan')}, f'before the checkpoint at step {step}')
    snapshot = {'step': step, 'epoch': epoch, 'step_in_epoch': step_in_epoch,
                'loop': loop, 'partial_epoch': partial, 'measure': tracker.to_json()}
    ckpts.save(parallel.local_state(plan, state), json.loads(json.dumps(snapshot)),
               cfg_json, val_loss)

  from tqdm import tqdm  # noqa: PLC0415  (progress output only)
  bar = tqdm(total=setup.total_steps, initial=step,
             disable=not (tc.progress_bar and plan.is_writer),
             desc=cfg.variant, dynamic_ncols=True)

  def observe(fold, record):
    """Folds a record into the monitor (kept in `loop` for the checkpoints),
    logs its events; returns the monitor's (status, reason) to stop, or None."""
    nonlocal mon
    mon, events = fold(mon, record, rules)
    loop['monitor'] = monitor_to_json(mon)
    for event in events:
      alert_log.write(event)
      if plan.is_writer:
        tqdm.write(monitor.format_event(event), file=sys.stderr)
    return monitor.stop_decision(mon, rules)

  def take_point(epoch):
    local = parallel.local_state(plan, state)
    out, vq_host = jax.device_get((emb_fn(local, emb_images), local.get('vq')))
    return measure.record(
        out, vq_host, tracker, step=step, epoch=epoch,
        num_codes=setup.quantizer.num_codes if setup.vq_enabled else 0,
        steps_per_epoch=setup.steps_per_epoch, window=tc.usage_window_steps)

  status, decision = 'running', None
  timer.switch('loop_other')
  try:
    for epoch in range(meta['epoch'], tc.num_epochs):
      first = meta['step_in_epoch'] if epoch == meta['epoch'] else 0
      if epoch != meta['epoch']:
        epoch_metrics = EpochMetrics()
      for i, (images, ids) in enumerate(timer.iterate('data', data_lib.train_batches(
          cfg, dataset.train_images, epoch, setup.steps_per_epoch,
          start_step=first, rows=rows)), start=first):
        with timer('step'):
          state, m = train_step(state, images, ids)
        epoch_metrics.add(m)
        step += 1
        bar.update(1)
        if step % tc.log_every_steps == 0:           # logging point: host sync
          timer.switch('logging')
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
        timer.switch('loop_other')
        if schedule.measures(step):                  # phase-free (measure.py)
          timer.switch('embedding_metrics')
          last_emb = take_point(epoch)
          emb_log.write(last_emb)
          tb.write('embedding', last_emb, step)
          decision = observe(monitor.observe_embedding, last_emb)
          if decision:                               # aborted inside the epoch
            loop['status'], loop['reason'] = decision
            save(epoch, i + 1)
            break
        timer.switch('loop_other')
        if i + 1 < setup.steps_per_epoch:            # the epoch end saves the last
          preempted = preemption.reached(ckpts, step)
          if preempted or (cc.every_steps and step % cc.every_steps == 0):
            save(epoch, i + 1)
          if preempted:
            status = preemption.status
            break
      if status != 'running' or decision:
        break

      timer.switch('epoch_end')
      stacked = epoch_metrics.fetch()
      train_means = _mean_metrics(stacked, 'train')
      _check_finite(train_means, f'in epoch {epoch}')
      with timer('validation'):
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
      loop['epochs_completed'] = epoch + 1
      decision = observe(monitor.observe_epoch, last_epoch_line)
      if decision:                                   # early stopped or aborted
        loop['status'], loop['reason'] = decision
      elif epoch + 1 == tc.num_epochs:
        loop['status'] = 'completed'
      timer.switch('loop_other')
      preempted = loop['status'] == 'running' and preemption.reached(ckpts, step)
      if (loop['status'] != 'running' or preempted
          or (epoch + 1) % cc.every_epochs == 0):
        save(epoch + 1, 0, val_loss=val['loss'])
      if loop['status'] != 'running':
        break
      if preempted:
        status = preemption.status
        break
    if status == 'running':
      status = loop['status'] if loop['status'] in FINISHED else 'completed'
  except BaseException as err:
    status = 'failed'
    summary['reason'] = records.one_line_error(err)
    raise
  finally:
    timer.switch('finish')
    preemption.uninstall()
    # Each closer runs whatever the others do (a full disk fails them all).
    cleanup_error = records.run_each(
        [('closing the progress bar', bar.close)]
        + [(f'closing {log.path}', log.close) for log in (epoch_log, emb_log, alert_log)]
        + [('closing the TensorBoard writer', tb.close),
           ('finishing the checkpoints', ckpts.close)]      # waits for saves in flight
        + ([('writing the final weights', lambda: final_state.save(
            workdir, parallel.local_state(plan, state)))]
           if status in FINISHED and plan.is_writer else []), ckpt_lib.say)
    if cleanup_error is not None and status != 'failed':
      status = 'failed'
      summary['reason'] = records.one_line_error(cleanup_error)
    timer.stop()
    wall = time.perf_counter() - t_start
    _summary(summary, loop, status, step, last_epoch_line, last_emb)
    compile_all = max(timer.total_compile_seconds(), compile_time)
    summary.update({
        'wall_time_s': wall, 'compile_time_s': compile_all,
        'step_compile_time_s': compile_time,
        'steps_per_s': (step - start_step) / max(wall - compile_all, 1e-9),
        'devices': [str(d) for d in jax.devices()],
        'time_breakdown': timer.report(),
    })
    if plan.is_writer:
      summary_error = records.run_each(
          [('writing ' + path(SUMMARY), lambda: records.write_json(path(SUMMARY), summary))],
          ckpt_lib.say)
      cleanup_error = cleanup_error or summary_error
  if cleanup_error is not None:
    raise cleanup_error
  return summary
