"""Opening a run in its workdir: checks, data, model, and the state to go on from.

Nothing is written before the workdir, a resumed checkpoint or init_from
have been checked: a refused run leaves the workdir as it was. The workdir
is checked before the data is loaded. Then the run's config.json is written
and its JSONL logs are rewound to the step it goes on from (a start from
scratch empties them: its step-0 lines, the probe point, are logged anew).

Resume: a workdir that holds this run (same config.json) continues from its
latest complete checkpoint, which holds everything the loop carries between
steps (`jepa_jax.train.loop_state`); with no host-side randomness and the data
order a function of (seed, epoch), the resumed run computes exactly what the
uninterrupted one would have.

Whether a workdir holds this run: its config.json against the run's config.

A workdir is this run's when its config.json equals the run's config up to
result-neutral keys (`RESULT_NEUTRAL_KEYS`), or differs and
`checkpoint.allow_config_change` is set (reported). Run files without a
config.json are refused as an unknown run. Nothing here writes.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional

import numpy as np

from jepa_jax import data as data_lib
from jepa_jax.config import base as config_defaults
from jepa_jax.run import checkpoint as ckpt_lib
from jepa_jax.run import files as run_files
from jepa_jax.run import trained as final_state
from jepa_jax.run.checkpoint import CheckpointError, say
from jepa_jax.train import devices as parallel
from jepa_jax.train import interrupts
from jepa_jax.train import loop_state
from jepa_jax.train import start as start_state
from jepa_jax.train import step as step_lib


# Config keys that never change what a run computes: a resumed run may differ
# in them without counting as a different config (a trailing '.': the group).
RESULT_NEUTRAL_KEYS = ('train.progress_bar', 'train.compilation_cache_dir',
                       'data.prefetch_to_device', 'checkpoint.')


def config_to_json(cfg) -> Dict[str, Any]:
  """The config as plain JSON values (tuples become lists), as config.json holds it."""
  return json.loads(json.dumps(run_files.to_builtin(cfg.to_dict())))


def _flatten(tree, prefix=''):
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      out.update(_flatten(value, name + '.'))
    else:
      out[name] = value
  return out


def config_diff(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
  """'key: old -> new' for every result-relevant key that differs. A key
  added since `old` was written (`config_defaults.ADDED_KEYS`) is compared
  at the value the code of its time ran with, so an older run folder resumes
  unless a setting it ran with really changed."""
  a, b = _flatten(old), _flatten(new)
  for key, value in config_defaults.ADDED_KEYS.items():
    a.setdefault(key, json.loads(json.dumps(run_files.to_builtin(value))))
  missing = object()
  lines = []
  for key in sorted(set(a) | set(b)):
    if key in RESULT_NEUTRAL_KEYS or any(
        key.startswith(p) for p in RESULT_NEUTRAL_KEYS if p.endswith('.')):
      continue
    va, vb = a.get(key, missing), b.get(key, missing)
    if va != vb:
      show = lambda v: '(absent)' if v is missing else json.dumps(v)
      lines.append(f'{key}: {show(va)} -> {show(vb)}')
  return lines


def check_workdir(workdir: str, config: Dict[str, Any], allow_config_change: bool) -> bool:
  """Refuses a workdir holding another run (module docstring); True when it
  holds this run. Writes nothing."""
  path = os.path.join(workdir, run_files.CONFIG)
  if os.path.exists(path):
    with open(path) as f:
      try:
        old = json.load(f)
      except ValueError as err:       # torn or garbled: refuse, touch nothing
        raise CheckpointError(
            f'workdir {workdir!r}: {path} is damaged ({err}); it records the config '
            'of the run there: restore it, or use a new --workdir') from None
    diff = config_diff(old, config)
    if diff and not allow_config_change:
      raise CheckpointError(
          f'workdir {workdir!r} holds a run of a different config ('
          + '; '.join(diff) + '); use a new --workdir, or pass '
          '--config.checkpoint.allow_config_change=True to continue that run '
          'with this config')
    if diff:
      say('warning: continuing with a changed config (allow_config_change): '
          + '; '.join(diff))
    return True
  present = [f for f in run_files.RUN_FILES if os.path.exists(os.path.join(workdir, f))]
  if os.path.isdir(os.path.join(workdir, run_files.CHECKPOINTS)):
    present.append(run_files.CHECKPOINTS)
  if present:
    raise CheckpointError(
        f'workdir {workdir!r} holds files of a run without {run_files.CONFIG} '
        f'({", ".join(present)}); choose a new --workdir so they are not '
        'overwritten')
  return False


@dataclasses.dataclass
class OpenRun:
  """A run ready to train: what it computes with, and where it stands."""
  workdir: str
  plan: Any                       # parallel.Plan
  cfg_json: Dict[str, Any]
  dataset: Any
  setup: Any                      # step.Setup
  state: Any                      # the train state, placed on the devices
  meta: Dict[str, Any]            # checkpoint meta: step, epoch, step_in_epoch, loop, ...
  ckpts: ckpt_lib.RunCheckpoints
  resumed_from_step: Optional[int]

  def path(self, name: str) -> str:
    return os.path.join(self.workdir, name)


def _check_workdir_once(plan, workdir, cfg_json, allow_config_change) -> bool:
  """Every process reads the workdir (checkpoints need a shared filesystem);
  process 0's verdict is the one every process acts on."""
  message, holds_run = None, False
  try:
    holds_run = check_workdir(workdir, cfg_json, allow_config_change)
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


def _refuse_or_restart(workdir: str, restart: bool, is_writer: bool) -> None:
  """No usable checkpoint in a workdir of this run: refuses to train from step
  0 over its final weights or logs unless `restart`, which moves them aside."""
  found = start_state.outputs_worth_keeping(workdir, run_files.FINAL_STATE,
                                            run_files.STEP_LOGS)
  if not found:
    return
  if not restart:
    raise ckpt_lib.CheckpointError(
        f'workdir {workdir!r} holds the outputs of a run ({", ".join(found)}) but no '
        'usable checkpoint to continue it; pass --config.checkpoint.restart=True to '
        'train again from step 0 (the old outputs are moved to previous-<n>/), '
        'or use a new --workdir')
  if is_writer:
    dest = start_state.move_aside(workdir)
    ckpt_lib.say(f'checkpoint.restart: training again from step 0; the old outputs '
                 f'of {workdir} moved to {dest}')


def set_aside_stale_eval(workdir: str) -> None:
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


def _restore(plan, workdir, holds_run, abstract, keep):
  """(checkpoints or None, the latest readable checkpoint or None)."""
  folder, ckpts = os.path.join(workdir, run_files.CHECKPOINTS), None
  try:   # checkpoints hold one copy of the state, whatever the device count
    if holds_run and os.path.isdir(folder):
      with interrupts.deferred():        # a signal now is raised once ckpts is set
        ckpts = ckpt_lib.RunCheckpoints(folder, keep)
    restored = ckpts.restore_latest(abstract) if ckpts else None
  except BaseException:
    if ckpts is not None:
      ckpts.close()
    raise
  _check_same_step_everywhere(plan, restored)
  return ckpts, restored


def open_run(cfg, workdir: str, progress: Dict[str, Any]) -> OpenRun:
  """Checks, loads and restores (module docstring); fills `progress` once
  the run may write the workdir (where it stands, for a stop in setup)."""
  plan = parallel.make_plan(cfg)
  cc = cfg.checkpoint
  cfg_json = config_to_json(cfg)
  holds_run = _check_workdir_once(plan, workdir, cfg_json, cc.allow_config_change)
  if cfg.init_from and not holds_run:
    start_state.resolve(cfg.init_from)      # a wrong path fails before the data loads
  dataset = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, dataset)
  fresh = step_lib.init_state(setup, dataset.image_shape, cfg.seed)
  placed = parallel.place_state(plan, fresh)     # replicated on the devices
  ckpts, restored = _restore(plan, workdir, holds_run, ckpt_lib.abstract_of(fresh), cc.keep)
  if holds_run and not restored:
    _refuse_or_restart(workdir, cc.get('restart', False), plan.is_writer)
  if restored:
    state, meta = parallel.place_state(plan, restored.state), restored.meta
    if meta['loop']['status'] not in loop_state.FINISHED:
      ckpt_lib.say(f'resuming from checkpoint step {restored.step} (epoch '
                   f'{meta["epoch"]}, batch {meta["step_in_epoch"]}) in {ckpts.directory}')
  else:
    start = start_state.starting_state(cfg, setup, dataset, fresh)
    state = placed if start is fresh else parallel.place_state(plan, start)
    meta = loop_state.new_meta()
  del fresh, placed
  resumed = restored.step if restored else None
  progress.update(step=meta['step'], epochs_completed=meta['loop']['epochs_completed'],
                  resumed_from_step=resumed, is_writer=plan.is_writer, ckpts=ckpts)
  if plan.is_writer:
    os.makedirs(workdir, exist_ok=True)
    run_files.write_json(os.path.join(workdir, run_files.CONFIG), cfg_json)
    for name in run_files.STEP_LOGS:   # from scratch: step 0's lines go too
      run_files.rewind_jsonl(os.path.join(workdir, name), meta['step'] if restored else -1)
  with interrupts.deferred():   # stopped here, stopped_in_setup closes progress['ckpts']
    ckpts = progress['ckpts'] = ckpts or ckpt_lib.RunCheckpoints(
        os.path.join(workdir, run_files.CHECKPOINTS), cc.keep)
  return OpenRun(workdir=workdir, plan=plan, cfg_json=cfg_json, dataset=dataset,
                 setup=setup, state=state, meta=meta, ckpts=ckpts,
                 resumed_from_step=resumed)


def save_final_weights_if_missing(run: OpenRun) -> None:
  """A finished run killed before it wrote its final weights writes them now."""
  if run.plan.is_writer and not os.path.exists(run.path(run_files.FINAL_STATE)):
    final_state.save(run.workdir, parallel.local_state(run.plan, run.state))


def damaged_resume(run: OpenRun, step: int, window: int, err: BaseException):
  """A non-finite loss within `window` steps (train.log_every_steps) after
  a resume: the checkpoint it resumed from is treated as damaged, rather
  than resumed again by every rerun. Returns the error to report instead of
  `err` (`set_aside_resumed` then moves the checkpoints), or None."""
  resumed = run.resumed_from_step
  if (resumed is None or not isinstance(err, loop_state.NonFiniteLoss)
      or step - resumed > max(window or 0, 1)):
    return None
  return loop_state.TrainingError(
      f'{str(err).split(";")[0]}, {step - resumed} step(s) after resuming from '
      f'checkpoint step {resumed}: that checkpoint is treated as damaged and moved to '
      f'{run_files.CORRUPT_CHECKPOINTS}/; the same command resumes from the previous one')


def set_aside_resumed(run: OpenRun, step: int) -> None:
  """Moves the checkpoint a damaged resume started from, and those this start
  saved after it (they descend from it), aside (checkpoints closed)."""
  folder, resumed = run.ckpts.directory, run.resumed_from_step
  for saved in sorted(int(n) for n in os.listdir(folder) if n.isdigit()):
    if saved >= resumed:
      ckpt_lib.set_aside(folder, saved, (
          f'gave a non-finite loss {step - resumed} step(s) after a resume: treated as damaged'
          if saved == resumed else f'descends from damaged checkpoint step {resumed}'))
