"""summary.json: how a run (or this start of it) ended, in one JSON file.

    status, steps, epochs_completed, best_val_loss, best_epoch, alerts,
    red_flags, final_metrics (the last epoch line and measurement point),
    probe (the probe trajectory's start, best and end values,
    `probe_trajectory.summary`; {} without probe records),
    restarts (VQ with refresh bookkeeping: restart events over the whole
    run and / K, split at the warm-up end `measure.warmup_end` into warm-up
    and after, `codebook_health.restart_split`; to the last measurement point),
    reason (why it failed, aborted or stopped), resumed_from_step, and the
    timings of this start: wall_time_s, compile_time_s, step_compile_time_s,
    steps_per_s, time_breakdown (`jepa_jax.train.loop_state`), devices.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict

import jax

from jepa_jax.eval import measure
from jepa_jax.eval import trajectory as probe_trajectory
from jepa_jax.run import checkpoint as ckpt_lib
from jepa_jax.run import files as run_files
from jepa_jax.train import loop_state
from jepa_jax.vq import health as codebook_health


def start(cfg, setup, plan, resumed_from_step) -> Dict[str, Any]:
  """The fields known before the first step."""
  return {'status': 'running', 'variant': cfg.variant,
          'total_steps_planned': setup.total_steps,
          'steps_per_epoch': setup.steps_per_epoch,
          'resumed_from_step': resumed_from_step,
          'codebook_size': setup.quantizer.num_codes if setup.vq_enabled else None,
          'restart_warmup_end_step': measure.Schedule.from_config(
              cfg, setup.total_steps).warmup_end,
          'parallel': plan.describe()}


def fill(summary, loop, status, step, last_epoch_line, last_emb) -> Dict[str, Any]:
  """`summary` with the run's outcome: status, progress, the monitor's verdicts
  and the final metrics; returns it."""
  mon = loop_state.monitor_from_json(loop['monitor'])
  has_best = mon.best_epoch >= 0
  summary.update({
      'status': status, 'epochs_completed': loop['epochs_completed'], 'steps': step,
      'best_val_loss': mon.best_val if has_best else None,
      'best_epoch': mon.best_epoch if has_best else None,
      'alerts': mon.num_alerts, 'red_flags': list(mon.red_flags),
      'final_metrics': {**last_epoch_line, **{f'embedding_{k}' if k in (
          'step', 'epoch') else k: v for k, v in last_emb.items()}},
  })
  if last_emb.get('vq_restarts_total') is not None and summary.get('codebook_size'):
    summary['restarts'] = codebook_health.restart_split(
        last_emb['vq_restarts_total'], last_emb.get('vq_restarts_warmup'),
        summary['restart_warmup_end_step'], summary['codebook_size'])
  if status == 'aborted' and loop.get('reason'):
    summary['reason'] = loop['reason']
  return summary


def add_probe(summary, workdir) -> None:
  """summary['probe']: the probe trajectory of the run folder `workdir`
  (`probe_trajectory.summary`); nothing when `workdir` is None (a process
  that writes no files)."""
  if workdir is not None:
    summary['probe'] = probe_trajectory.summary(run_files.read_jsonl(
        os.path.join(workdir, run_files.PROBE_METRICS)))


def add_timings(summary, timer, t_start, steps_done, step_compile_time) -> None:
  """This start's wall time, compile time and speed (timer stopped)."""
  wall = time.perf_counter() - t_start
  compile_all = max(timer.total_compile_seconds(), step_compile_time)
  summary.update({
      'wall_time_s': wall, 'compile_time_s': compile_all,
      'step_compile_time_s': step_compile_time,
      'steps_per_s': steps_done / max(wall - compile_all, 1e-9),
      'devices': [str(d) for d in jax.devices()],
      'time_breakdown': timer.report(),
  })


def of_finished_run(run, summary, last_epoch_line, last_emb) -> Dict[str, Any]:
  """A run that had already finished: its summary.json if it says so, else a
  new one from its last checkpoint and logs (written by process 0)."""
  loop, step = run.meta['loop'], run.meta['step']
  path = run.path(run_files.SUMMARY)
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if old.get('status') == loop['status'] and old.get('steps') == step:
      return old
  summary = fill(summary, loop, loop['status'], step, last_epoch_line, last_emb)
  add_probe(summary, run.workdir if run.plan.is_writer else None)
  if run.plan.is_writer:
    run_files.write_json(path, summary)
  return summary


def stopped_in_setup(workdir, stop, progress, t_start) -> Dict[str, Any]:
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
    run_files.write_json(os.path.join(workdir, run_files.SUMMARY), summary)
  return summary
