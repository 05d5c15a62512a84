"""The training loop: open the run, train with periodic actions, finish.

    train_and_evaluate(cfg, workdir)
      open     `run_open.open_run`: workdir and config checks, data, model, the
               state to go on from (a resumed checkpoint, or `start_state`),
               config.json written, logs rewound to that step
      compile  the train step, validation, embedding metrics and the probe
               trajectory's encoding, once each
      loop     a probe point at step 0 (`probe_trajectory`); per epoch: the
               train steps, each followed by the periodic actions due then
               (`periodic`): logging, measurement points, probe points, a
               preemption request, mid-epoch checkpoints; then the epoch
               end: validation, the epoch line, the monitor, the checkpoint
      finish   logs, TensorBoard and checkpoints closed, final weights
               (`final_state`), summary.json (`run_summary`)

The pure pieces (train state, jitted step, evaluation functions) live in
`jepa_jax.train.step`; what a checkpoint carries between steps in
`jepa_jax.train.loop_state`; every file name in `jepa_jax.run.files`.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict

import jax
import numpy as np

from jepa_jax import data as data_lib
from jepa_jax import errors
from jepa_jax.config import load as config_lib
from jepa_jax.eval import measure
from jepa_jax.eval import trajectory as probe_trajectory
from jepa_jax.run import checkpoint as ckpt_lib
from jepa_jax.run import files as run_files
from jepa_jax.run import opening as run_open
from jepa_jax.run import summary as run_summary
from jepa_jax.run import trained as final_state
from jepa_jax.train import devices as parallel
from jepa_jax.train import interrupts
from jepa_jax.train import loop_state
from jepa_jax.train import monitor
from jepa_jax.train import step as step_lib
from jepa_jax.train.loop_state import FINISHED


def train_and_evaluate(cfg, workdir: str) -> Dict[str, Any]:
  """Runs (or resumes) training as configured, writing all outputs to `workdir`.

  Returns the summary dict (also written to summary.json).
  """
  t_start = time.perf_counter()
  timer = loop_state.Sections().start()
  installed = interrupts.install()          # the CLI installed them at its start
  interrupts.set_phase('setup')
  progress = {}                             # set once the run may write the workdir
  try:
    config_lib.validate(cfg)
    config_lib.check_workdir_path(workdir)
    parallel.initialize_distributed(cfg)
    # One process per workdir (process 0 of a multi-process run speaks for all).
    with parallel.persistent_cache(cfg.train.compilation_cache_dir), \
        run_files.hold(workdir, enabled=jax.process_index() == 0):
      try:
        return _train_and_evaluate(cfg, workdir, t_start, timer, progress)
      except interrupts.Stopped as stop:
        if not progress:
          raise                             # nothing of this run written yet
        return run_summary.stopped_in_setup(workdir, stop, progress, t_start)
  finally:
    timer.stop()
    if installed:
      interrupts.uninstall()
    else:
      interrupts.set_phase('startup')


def _train_and_evaluate(cfg, workdir, t_start, timer, progress):
  """Open the run, then train it (unless it had finished) and finish it."""
  timer.switch('startup')
  run = run_open.open_run(cfg, workdir, progress)
  last_epoch_line = run_files.last_line(run.path(run_files.EPOCH_METRICS))
  last_emb = run_files.last_line(run.path(run_files.EMBEDDING_METRICS))
  summary = run_summary.start(cfg, run.setup, run.plan, run.resumed_from_step)
  loop = run.meta['loop']
  if loop['status'] == 'completed' and run.meta['epoch'] < cfg.train.num_epochs:
    loop['status'] = 'running'           # more epochs asked (allow_config_change)
  if loop['status'] in FINISHED:
    interrupts.set_phase('finish')        # a signal now must not mark it stopped
    run.ckpts.close()
    ckpt_lib.say(f'run in {workdir} already finished ({loop["status"]}) at step '
                 f'{run.meta["step"]}')
    run_open.save_final_weights_if_missing(run)
    return run_summary.of_finished_run(run, summary, last_epoch_line, last_emb)
  if run.plan.is_writer:
    run_open.set_aside_stale_eval(workdir)
  training = Training(cfg, run, timer, last_epoch_line, last_emb)
  return training.run(summary, t_start)


class Training:
  """One start of a run's training: the compiled functions, the outputs and
  what the loop carries; `run` trains to the end or to a stop."""

  def __init__(self, cfg, run: run_open.OpenRun, timer, last_epoch_line, last_emb):
    self.cfg, self.opened, self.timer = cfg, run, timer
    self.tc, self.cc = cfg.train, cfg.checkpoint
    self.plan, self.setup, self.ckpts = run.plan, run.setup, run.ckpts
    meta = run.meta
    self.state, self.loop = run.state, meta['loop']
    self.step = self.start_step = meta['step']
    self.epoch, self.step_in_epoch = meta['epoch'], meta['step_in_epoch']
    self.last_epoch_line, self.last_emb = last_epoch_line, last_emb
    self.latest = None                    # the last step's metrics, on the device
    self.stopped_as = None                # a preemption's status
    self._compile()
    self._open_outputs()
    # Every process folds the same (replicated) metrics, so all stop together.
    self.rules = monitor.Rules.from_config(cfg)
    self.mon = loop_state.monitor_from_json(self.loop['monitor'])
    self.epoch_metrics = loop_state.EpochMetrics(meta['partial_epoch'])
    self.schedule = measure.Schedule.from_config(cfg, self.setup.total_steps)
    self.tracker = measure.Tracker(meta.get('measure'), self.schedule.warmup_end)
    self.preemption = loop_state.Preemption()
    self.periodic = self._periodic_actions()

  def _compile(self) -> None:
    """The train step, the eval step and the embedding metrics, ahead of time."""
    cfg, plan, setup, timer, dataset = self.cfg, self.plan, self.setup, self.timer, \
        self.opened.dataset
    tc, vq = self.tc, setup.vq_enabled
    batch0 = next(data_lib.epoch_batches(dataset.train_images, self.tc.batch_size,
                                         cfg.seed, 0, 1, rows=plan.process_rows))
    # The bar's user hears what the first minute is spent on.
    with parallel.compile_notice(tc.progress_bar and plan.is_writer):
      with timer('compile_step'):
        self.train_step, self.compile_time = parallel.compile_train_step(
            plan, setup, self.state, *batch0)
      self.place_batch = parallel.batch_placement(plan)
      timer.switch('loop_setup')
      self.eval_batch = eval_batch = min(self.tc.batch_size, len(dataset.val_images))
      self.emb_images = measure.point_images(dataset, tc.usage_train_images, cfg.seed, vq)
      with timer('compile_eval'):       # ahead of time: one compile each per run
        local = parallel.local_state(plan, self.state)
        self.eval_step = jax.jit(step_lib.make_eval_step(setup, cfg.seed)).lower(
            local, dataset.val_images[:eval_batch],
            np.arange(eval_batch, dtype=np.int32)).compile()
        self.emb_fn = jax.jit(measure.make_device_fn(setup, cfg.seed)).lower(
            local, *self.emb_images).compile()
      with timer('compile_probe'):
        self.prober = probe_trajectory.Prober.compiled(cfg, setup, dataset, local)

  def _open_outputs(self) -> None:
    """The JSONL logs, TensorBoard and the progress bar (other processes: none)."""
    writer, run = self.plan.is_writer, self.opened

    def log_file(name):               # other processes write to /dev/null
      return run_files.JsonlWriter(run.path(name) if writer else os.devnull)

    self.epoch_log = log_file(run_files.EPOCH_METRICS)
    self.emb_log = log_file(run_files.EMBEDDING_METRICS)
    self.probe_log = log_file(run_files.PROBE_METRICS)
    self.alert_log = log_file(run_files.ALERTS)
    # TensorBoard discards the events a resumed run's earlier life logged after
    # the checkpoint (purge_step); the event files themselves keep them.
    resumed = run.resumed_from_step is not None
    self.tb = (run_files.TensorBoardWriter(run.workdir,
                                         purge_step=self.step + 1 if resumed else None)
               if writer else run_files.NullWriter())
    from tqdm import tqdm  # noqa: PLC0415  (progress output only)
    self.bar = tqdm(total=self.setup.total_steps, initial=self.step,
                    disable=not (self.tc.progress_bar and writer),
                    desc=self.cfg.variant, dynamic_ncols=True)

  def _periodic_actions(self) -> loop_state.Periodic:
    """What runs after a train step, in this order, and when (loop_state.py)."""
    inside_epoch = lambda: self.step_in_epoch < self.setup.steps_per_epoch  # noqa: E731
    return (loop_state.Periodic(self.timer)
            .register('logging', lambda s: loop_state.itstime(s, self.tc.log_every_steps),
                      self._log_train)
            .register('embedding_metrics', self.schedule.measures, self._measure)
            .register('probe', self.prober.due, self._probe)
            # The epoch end saves the epoch's last step and checks preemption.
            .register('preemption', lambda s: inside_epoch(), self._stop_if_preempted,
                      section='loop_other')
            .register('checkpoint', lambda s: inside_epoch() and loop_state.itstime(
                s, self.cc.every_steps), self._save_mid_epoch))

  # ------------------------------------------------------------ the loop ----

  def run(self, summary: Dict[str, Any], t_start: float) -> Dict[str, Any]:
    """Trains to the end of the run or to a stop, then finishes (closes,
    final weights, summary.json); returns the summary."""
    self.preemption.install()
    self.timer.switch('loop_other')
    status, error, damaged = 'failed', None, None
    try:
      if self.step == 0 and self.prober.due(0):
        with self.timer('probe'):
          self._probe(0)                  # the state before the first step
      self._epochs()
      status = self._final_status()
    except BaseException as err:  # pylint: disable=broad-except
      error = err                 # raised once everything is closed
      damaged = run_open.damaged_resume(self.opened, self.step, self.tc.log_every_steps, err)
      summary['reason'] = errors.one_line_error(damaged or err)
    cleanup_error = self._finish(status, summary, t_start)
    if damaged is not None:
      run_open.set_aside_resumed(self.opened, self.step)
      raise damaged from error
    if error is not None:
      raise error
    if cleanup_error is not None:
      raise cleanup_error
    return summary

  def _epochs(self) -> None:
    first = self.epoch
    for epoch in range(first, self.tc.num_epochs):
      self.epoch = epoch
      if epoch != first:
        self.epoch_metrics = loop_state.EpochMetrics()
        self.step_in_epoch = 0
      if self._train_epoch(epoch) or self._end_epoch(epoch):
        return

  def _final_status(self) -> str:
    if self.stopped_as:
      return self.stopped_as
    return self.loop['status'] if self.loop['status'] in FINISHED else 'completed'

  def _train_epoch(self, epoch: int) -> bool:
    """The epoch's remaining train steps, each followed by the periodic
    actions due; True when one of them stopped the run. The batches reach
    the devices `data.prefetch_to_device` steps ahead ('data': the wait for
    the next one); those still ahead at a stop are dropped (a resume rebuilds
    the stream from the checkpoint's position)."""
    batches = parallel.prefetch_to_device(data_lib.train_batches(
        self.cfg, self.opened.dataset.train_images, epoch, self.setup.steps_per_epoch,
        start_step=self.step_in_epoch, rows=self.plan.process_rows),
        self.place_batch, self.cfg.data.prefetch_to_device)
    for images, ids in self.timer.iterate('data', batches):
      with self.timer('step'):
        self.state, self.latest = self.train_step(self.state, images, ids)
      self.epoch_metrics.add(self.latest)
      self.step += 1
      self.step_in_epoch += 1
      self.bar.update(1)
      if self.periodic.after_step(self.step):
        return True
    return False

  def _end_epoch(self, epoch: int) -> bool:
    """Validation, the epoch line, the monitor's verdict, the epoch's
    checkpoint; True when the run stops here."""
    self.timer.switch('epoch_end')
    stacked = self.epoch_metrics.fetch()
    loop_state.check_finite(loop_state.mean_metrics(stacked, 'train'), f'in epoch {epoch}')
    with self.timer('validation'):
      val = loop_state.evaluate(self.eval_step, parallel.local_state(self.plan, self.state),
                               self.opened.dataset.val_images, self.eval_batch)
    self.last_epoch_line = line = loop_state.epoch_line(epoch, self.step, stacked, val)
    self.epoch_log.write(line)
    self.tb.write('epoch', line, self.step)
    self.loop['epochs_completed'] = epoch + 1
    decision = self._observe(monitor.observe_epoch, line)
    if decision:                                   # early stopped or aborted
      self.loop['status'], self.loop['reason'] = decision
    elif epoch + 1 == self.tc.num_epochs:
      self.loop['status'] = 'completed'
    self.timer.switch('loop_other')
    ended = self.loop['status'] != 'running'
    preempted = not ended and self.preemption.reached(self.ckpts, self.step)
    if ended or preempted or (epoch + 1) % self.cc.every_epochs == 0:
      self.save(epoch + 1, 0, val_loss=val['loss'])
    if preempted:
      self.stopped_as = self.preemption.status
    return ended or preempted

  # ---------------------------------------------------- periodic actions ----

  def _log_train(self, step: int) -> bool:
    """A logging point (a host sync): the step's metrics to TensorBoard and
    the progress bar; a non-finite loss stops the run."""
    latest = jax.device_get(self.latest)
    loop_state.check_finite({'loss': float(latest['loss'])}, f'at step {step}')
    self.tb.write('train', latest, step)
    post = {'loss': f"{float(latest['loss']):.3f}"}
    if 'vq_usage_ratio' in self.last_emb:
      post['vq_usage'] = f"{self.last_emb['vq_usage_ratio']:.1%}"
    if self.last_emb:
      post['erank'] = f"{self.last_emb['context_effective_rank']:.1f}"
    if self.mon.num_alerts or self.mon.red_flags:
      post['alerts'] = f'{self.mon.num_alerts}+{len(self.mon.red_flags)}!'
    self.bar.set_postfix(post)
    return False

  def _measure(self, step: int) -> bool:
    """A measurement point (measure.py): the embedding metrics of the val
    split, logged and shown to the monitor, which may abort the run here."""
    local = parallel.local_state(self.plan, self.state)
    out, vq_host = jax.device_get((self.emb_fn(local, *self.emb_images), local.get('vq')))
    self.last_emb = measure.record(
        out, vq_host, self.tracker, step=step, epoch=self.epoch,
        num_codes=self.setup.quantizer.num_codes if self.setup.vq_enabled else 0,
        steps_per_epoch=self.setup.steps_per_epoch, window=self.tc.usage_window_steps)
    self.emb_log.write(self.last_emb)
    self.tb.write('embedding', self.last_emb, step)
    decision = self._observe(monitor.observe_embedding, self.last_emb)
    if not decision:
      return False
    self.loop['status'], self.loop['reason'] = decision     # aborted inside the epoch
    self.save(self.epoch, self.step_in_epoch)
    return True

  def _probe(self, step: int) -> bool:
    """A probe-trajectory point (probe_trajectory.py, a host sync): logged."""
    local = parallel.local_state(self.plan, self.state)
    rec = self.prober.point(local, step, self.epoch)
    self.probe_log.write(rec)
    self.tb.write('probe', rec, step)
    return False

  def _stop_if_preempted(self, step: int) -> bool:
    if not self.preemption.reached(self.ckpts, step):
      return False
    self.save(self.epoch, self.step_in_epoch)
    self.stopped_as = self.preemption.status
    return True

  def _save_mid_epoch(self, step: int) -> bool:
    del step
    self._save(self.epoch, self.step_in_epoch)
    return False

  def _observe(self, fold, record):
    """Folds a record into the monitor (kept in `loop` for the checkpoints),
    logs its events; returns the monitor's (status, reason) to stop, or None."""
    self.mon, events = fold(self.mon, record, self.rules)
    self.loop['monitor'] = loop_state.monitor_to_json(self.mon)
    for event in events:
      self.alert_log.write(event)
      if self.plan.is_writer:
        self.bar.write(monitor.format_event(event), file=sys.stderr)
    return monitor.stop_decision(self.mon, self.rules)

  def save(self, epoch: int, step_in_epoch: int, val_loss=None) -> None:
    with self.timer('checkpoint'):
      self._save(epoch, step_in_epoch, val_loss)

  def _save(self, epoch: int, step_in_epoch: int, val_loss=None) -> None:
    """A checkpoint of the state and everything the loop carries (loop_state)."""
    partial = self.epoch_metrics.to_json() if step_in_epoch else {}
    if partial and not np.all(np.isfinite(partial['loss']['values'])):
      loop_state.check_finite({'loss': float('nan')},
                             f'before the checkpoint at step {self.step}')
    snapshot = {'step': self.step, 'epoch': epoch, 'step_in_epoch': step_in_epoch,
                'loop': self.loop, 'partial_epoch': partial,
                'measure': self.tracker.to_json()}
    self.ckpts.save(parallel.local_state(self.plan, self.state),
                    json.loads(json.dumps(snapshot)), self.opened.cfg_json, val_loss)

  # ---------------------------------------------------------- the finish ----

  def _finish(self, status: str, summary: Dict[str, Any], t_start: float):
    """Closes everything (each closer runs whatever the others do: a full
    disk fails them all), writes the final weights of a finished run and
    summary.json; returns the first error, or None."""
    self.timer.switch('finish')
    self.preemption.uninstall()
    run, is_writer = self.opened, self.plan.is_writer
    steps = ([('closing the progress bar', self.bar.close)]
             + [(f'closing {log.path}', log.close)
                for log in (self.epoch_log, self.emb_log, self.alert_log, self.probe_log)]
             + [('closing the TensorBoard writer', self.tb.close),
                ('finishing the checkpoints', self.ckpts.close)])  # waits for saves
    if status in FINISHED and is_writer:
      steps.append(('writing the final weights', lambda: final_state.save(
          run.workdir, parallel.local_state(self.plan, self.state))))
    cleanup_error = run_files.run_each(steps, ckpt_lib.say)
    if cleanup_error is not None and status != 'failed':
      status = 'failed'
      summary['reason'] = errors.one_line_error(cleanup_error)
    self.timer.stop()
    run_summary.fill(summary, self.loop, status, self.step, self.last_epoch_line,
                     self.last_emb)
    run_summary.add_probe(summary, run.workdir if is_writer else None)
    run_summary.add_timings(summary, self.timer, t_start, self.step - self.start_step,
                            self.compile_time)
    if is_writer:
      path = run.path(run_files.SUMMARY)
      summary_error = run_files.run_each(
          [('writing ' + path, lambda: run_files.write_json(path, summary))], ckpt_lib.say)
      cleanup_error = cleanup_error or summary_error
    return cleanup_error
