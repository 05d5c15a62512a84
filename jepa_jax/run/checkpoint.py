"""Orbax checkpoints of a run: save, resume, fallback, name/shape checks.

Next to it: `workdir_config` (whether a workdir holds this run's config),
`init_from` (params of another run's checkpoint), `orbax_noise` (Orbax's
expected warnings, filtered).

Layout of `WORKDIR/checkpoints/<step>/` (one `orbax.checkpoint.CheckpointManager`,
v0 API with `args=`, asynchronous saving; a step folder exists only once its
save is complete, unfinished saves live in temporary folders that are cleaned
up on the next start). The train loop only pays for a device copy of the
state: the Orbax save call itself (host transfer of ~400 leaves, metadata)
runs on one background thread, in order, at most one call queued; its errors
surface at the next save, `wait` or `close`:

  state   the train-state pytree of `jepa_jax.train.step` (params, opt_state,
          target_params, vq, rng, step), bit for bit
  meta    JSON: `step`, `epoch`, `step_in_epoch` (the data position: the next
          batch is batch `step_in_epoch` of epoch `epoch`), `loop` (the loop's
          bookkeeping: status, best val loss, bad epochs, ...) and
          `partial_epoch` (the per-step metrics of the unfinished epoch)
  config  JSON: the config of the run that saved it

Retention: the latest `checkpoint.keep` checkpoints and the one with the best
(lowest) val loss; Orbax deletes old steps only after a newer save finished.

Resume takes the latest checkpoint that reads back; an unreadable one (a file
truncated, missing or unreadable, its metadata included) is moved to
`WORKDIR/corrupt_checkpoints/<step>` with a warning naming the step, and the
previous one is tried. Restoring checks every name and shape against the run
first and fails naming the first few mismatches and their count (all of them
in `WORKDIR/checkpoint_mismatches.txt`; for init-from, in a file in the
system's temporary folder), so nothing is ever loaded partially.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import glob
import os
import shutil
import sys
from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_managers
from orbax.checkpoint._src.multihost import multihost as ocp_multihost

from jepa_jax.run import files as run_files
from jepa_jax.run import integrity
from jepa_jax.run.integrity import DamagedCheckpoint, damaged_files


class CheckpointError(RuntimeError):
  """A checkpoint or workdir cannot be used as asked. One-line message."""


def say(message: str) -> None:
  """Status lines of the checkpoint machinery (stderr, flushed)."""
  print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------ tree specs ----

def _path_name(path) -> str:
  parts = []
  for p in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(p, attr):
        parts.append(str(getattr(p, attr)))
        break
    else:
      parts.append(str(p))
  return '/'.join(parts)


def tree_spec(tree) -> Dict[str, Tuple[tuple, str]]:
  """{'params/encoder/...': (shape, dtype)} for arrays, ShapeDtypeStructs or
  Orbax array metadata."""
  leaves = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, 'shape') and hasattr(x, 'dtype'))[0]
  return {_path_name(path): (tuple(leaf.shape), str(np.dtype(leaf.dtype)))
          for path, leaf in leaves}


def spec_mismatches(found: Dict[str, Tuple], expected: Dict[str, Tuple]) -> List[str]:
  """Every difference between a checkpoint's tree spec and the run's, one line each."""
  out = []
  for name in sorted(set(found) | set(expected)):
    if name not in found:
      out.append(f'{name}: missing from the checkpoint (run has {expected[name][0]} '
                 f'{expected[name][1]})')
    elif name not in expected:
      out.append(f'{name}: in the checkpoint ({found[name][0]} {found[name][1]}) '
                 'but not in this run')
    elif found[name] != expected[name]:
      out.append(f'{name}: checkpoint {found[name][0]} {found[name][1]} vs '
                 f'run {expected[name][0]} {expected[name][1]}')
  return out


SHOWN_MISMATCHES = 5


def raise_if_mismatched(found: Dict[str, Tuple], abstract, what: str,
                        full_list: Optional[str] = None) -> None:
  """CheckpointError naming the first SHOWN_MISMATCHES name/shape mismatches
  of `found` vs `abstract` and their count; every one of them, a line each,
  goes to the file `full_list` when given (process 0 writes it)."""
  bad = spec_mismatches(found, tree_spec(abstract))
  if not bad:
    return
  shown = '; '.join(bad[:SHOWN_MISMATCHES])
  more = len(bad) - SHOWN_MISMATCHES
  if more > 0:
    shown += f'; ... and {more} more'
    if full_list and jax.process_index() == 0:
      try:
        with open(full_list, 'w') as f:
          f.write(f'{what}: {len(bad)} mismatches\n' + '\n'.join(bad) + '\n')
        shown += f' (all of them in {full_list})'
      except OSError as err:
        shown += f' (could not write the full list to {full_list}: {err.strerror})'
  raise CheckpointError(f'{what} does not fit this run ({len(bad)} mismatches): {shown}')


def abstract_of(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def detached_copy(tree):
  """A copy of every array in its own new buffer.

  The train step donates its state, so the buffers handed to an asynchronous
  save are reused by the next step while the save may still be reading them.
  Saving a copy that nothing donates removes that race.
  """
  return _copy_tree(tree)


# One jitted copy per tree structure (outputs of a computation never alias its
# non-donated inputs); compiled once for the run's state.
_copy_tree = jax.jit(lambda tree: jax.tree.map(lambda x: x.copy(), tree))


# ----------------------------------------------------------- the manager ----

def probe_writable(directory: str) -> None:
  """Creates and removes a small file in `directory`; raises its OSError
  (naming the path) at once when the folder does not take writes, rather
  than letting a first save fail or stall in the background."""
  probe = os.path.join(directory, f'.write_probe_{os.getpid()}')
  fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
  try:
    os.write(fd, b'x')
    os.fsync(fd)
  finally:
    os.close(fd)
    os.remove(probe)


def _val_loss(metrics) -> float:
  return float(metrics['val_loss'])


@dataclasses.dataclass
class Restored:
  step: int
  state: Any
  meta: Dict[str, Any]


# Orbax's name for the folder of a save in progress: `<step>.orbax-checkpoint-tmp...`.
_TMP_SUFFIX = '.orbax-checkpoint-tmp'


def _await_tmp_cleanup(manager) -> None:
  """Waits for the clean-up of temporary folders that Orbax's CheckpointManager
  starts on a thread in its constructor: its `close` does not (only `save`
  does), so a run stopped before its first save exited with the thread still
  running, and the thread failed at interpreter shutdown with a traceback."""
  wait = getattr(manager, '_maybe_await_cleanup_tmp_directory', None)
  if wait is not None:
    wait()


class RunCheckpoints:
  """The checkpoints of one run directory (see the module docstring)."""

  def __init__(self, directory: str, keep: int = 3, read_only: bool = False):
    """Several processes (jax.distributed): process 0 alone writes, the others
    open the directory read-only to resume (a shared filesystem)."""
    read_only = read_only or jax.process_index() != 0
    self.directory = os.path.abspath(directory)
    if not read_only:
      os.makedirs(self.directory, exist_ok=True)
      probe_writable(self.directory)
    policy = ocp_managers.AnyPreservationPolicy([
        ocp_managers.LatestN(n=keep),
        ocp_managers.BestN(get_metric_fn=_val_loss, reverse=True, n=1,
                           keep_checkpoints_without_metrics=False)])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, best_fn=_val_loss, best_mode='min',
        create=False, read_only=read_only,
        cleanup_tmp_directories=not read_only, enable_async_checkpointing=True,
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            primary_host=0, active_processes={jax.process_index()}))
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={'state': ocp.PyTreeCheckpointHandler(),
                       'meta': ocp.JsonCheckpointHandler(),
                       'config': ocp.JsonCheckpointHandler(),
                       integrity.ITEM: ocp.JsonCheckpointHandler()})
    self._saver = None            # the background thread, made at the first save
    self._queued = None           # its latest save call (a Future)
    self._failed = False          # a save failed: its temporary folder is removed at close

  def steps(self) -> List[int]:
    self._drain()
    return list(self.manager.all_steps())

  def _drain(self) -> None:
    """Waits for the queued save call (re-raising its error), if any."""
    queued, self._queued = self._queued, None
    if queued is not None:
      with self._write_errors():
        queued.result()

  @contextlib.contextmanager
  def _write_errors(self):
    """A failed save raised in the block is raised as an OSError naming the
    checkpoints folder (`integrity.as_os_error`); the save is remembered
    as failed."""
    try:
      yield
    except Exception as err:  # pylint: disable=broad-except
      self._failed = True
      mapped = integrity.as_os_error(err, self.directory)
      if mapped is err:
        raise
      raise mapped from err

  def save(self, state, meta: Dict[str, Any], config: Dict[str, Any],
           val_loss: Optional[float] = None) -> None:
    """Starts an asynchronous save of `state` at step meta['step'].

    Returns once a device copy of the state is dispatched (and the previous
    save call has returned); the Orbax save runs on the background thread,
    the files are written after it, and the step folder appears when they
    are complete. A failed save is raised by the next save, `wait` or `close`.
    """
    if self.manager._options.read_only:  # pylint: disable=protected-access
      return                               # not process 0: it writes for all
    step = int(meta['step'])
    metrics = None if val_loss is None else {'val_loss': float(val_loss)}
    # Several processes: Orbax refuses process-local device arrays, so process
    # 0 saves host copies of its (replicated) state.
    snapshot = (jax.tree.map(np.array, state) if jax.process_count() > 1
                else detached_copy(state))
    self._drain()                 # back-pressure: one save call queued at most
    if self._saver is None:
      self._saver = concurrent.futures.ThreadPoolExecutor(
          max_workers=1, thread_name_prefix='checkpoint-save')
    self._queued = self._saver.submit(self._save_call, step, snapshot, meta, config,
                                      metrics)

  def _save_call(self, step, snapshot, meta, config, metrics) -> None:
    """On the saver thread: the state's checksums, then Orbax's save."""
    args = ocp.args.Composite(
        state=ocp.args.PyTreeSave(snapshot),
        meta=ocp.args.JsonSave(meta), config=ocp.args.JsonSave(config),
        **{integrity.ITEM: ocp.args.JsonSave({'state': integrity.digests(snapshot)})})
    self.manager.save(step, args=args, metrics=metrics, force=True)

  def wait(self) -> None:
    """Returns once every save started so far is complete on disk."""
    self._drain()
    with self._write_errors():
      self.manager.wait_until_finished()

  def close(self) -> None:
    """Finishes the saves in flight (re-raising a failed one), then closes.
    After a failed save, its unfinished temporary folder is removed: on a
    full disk that space lets the run still write its summary."""
    try:
      self._drain()
    finally:
      if self._saver is not None:
        self._saver.shutdown(wait=True)
        self._saver = None
      try:
        _await_tmp_cleanup(self.manager)
        if self._failed:       # before close: its writes need the manager's executors
          integrity.finish_orbax_threads()
        with self._write_errors():
          self.manager.close()
      finally:
        if self._failed:
          self._remove_unfinished()

  def _remove_unfinished(self) -> None:
    """Removes the temporary folders of unfinished saves (Orbax also does at
    the next start); only complete step folders are checkpoints."""
    if self.manager._options.read_only:  # pylint: disable=protected-access
      return
    for path in glob.glob(os.path.join(glob.escape(self.directory), '*' + _TMP_SUFFIX + '*')):
      shutil.rmtree(path, ignore_errors=True)

  def reached_preemption(self, step: int) -> bool:
    """Orbax's multi-host preemption sync point (needs jax.distributed)."""
    return ocp_multihost.reached_preemption(step)

  def spec(self, step: int) -> Dict[str, Tuple]:
    """The tree spec of checkpoint `step`; DamagedCheckpoint when its files
    are missing or unreadable, or it describes no array at all."""
    self._drain()
    damage = damaged_files(os.path.join(self.directory, str(step)))
    if damage:
      raise DamagedCheckpoint('; '.join(damage[:SHOWN_MISMATCHES]))
    spec = tree_spec(self.manager.item_metadata(step)['state'])
    if not spec:
      raise DamagedCheckpoint('its state metadata describes no array')
    return spec

  def restore_state(self, step: int, abstract, partial: bool):
    """Checkpoint `step`'s state in the structure of `abstract` (`partial`:
    only the subtrees `abstract` has); no name/shape check (`restore` checks).
    DamagedCheckpoint when an array read back differs from its checksum."""
    self._drain()
    if jax.process_count() > 1:       # host arrays; the caller places them
      abstract = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract)
    state = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            item=abstract,
            restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
            partial_restore=partial)))['state']
    if os.path.isdir(os.path.join(self.directory, str(step), integrity.ITEM)):
      saved = self.manager.restore(step, args=ocp.args.Composite(
          **{integrity.ITEM: ocp.args.JsonRestore()}))[integrity.ITEM]['state']
      bad = integrity.mismatches(saved, state)
      if bad:
        raise DamagedCheckpoint(f'checksum mismatch in {len(bad)} array(s): '
                                + ', '.join(bad[:SHOWN_MISMATCHES]))
    return state

  def restore(self, step: int, abstract_state) -> Restored:
    """Restores checkpoint `step` into the structure of `abstract_state`.

    Raises CheckpointError listing every name/shape mismatch; any other
    exception means the checkpoint cannot be read.
    """
    raise_if_mismatched(self.spec(step), abstract_state,
                        f'checkpoint step {step} in {self.directory}',
                        os.path.join(os.path.dirname(self.directory), run_files.MISMATCHES))
    state = self.restore_state(step, abstract_state, partial=False)
    meta = self.manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))['meta']
    if int(meta['step']) != step or int(state['step']) != step:
      raise ValueError(f'step mismatch: folder {step}, meta {meta["step"]}, '
                       f'state {int(state["step"])}')
    return Restored(step=step, state=state, meta=meta)

  def restore_latest(self, abstract_state) -> Optional[Restored]:
    """The latest checkpoint that reads back, or None when there is none.

    An unreadable checkpoint (truncated, a file missing) is moved aside with a
    warning naming its step, then the previous one is tried.
    """
    for step in sorted(self.steps(), reverse=True):
      try:
        return self.restore(step, abstract_state)
      except CheckpointError:
        raise
      except Exception as err:  # pylint: disable=broad-except
        self._quarantine(step, err)
    return None

  def _quarantine(self, step: int, err: Exception) -> None:
    why = f'{type(err).__name__}: {err}'.splitlines()[0][:300]
    set_aside(self.directory, step, f'is unreadable ({why})')
    self.manager.reload()


def set_aside(directory: str, step: int, what: str) -> str:
  """Moves checkpoint `step` of `directory` to WORKDIR/corrupt_checkpoints/
  (process 0) and warns, `what` saying why; returns where it went."""
  dest_root = os.path.join(os.path.dirname(directory), run_files.CORRUPT_CHECKPOINTS)
  dest = os.path.join(dest_root, str(step))
  n = 1
  while os.path.exists(dest):
    dest, n = os.path.join(dest_root, f'{step}.{n}'), n + 1
  if jax.process_index() == 0:
    os.makedirs(dest_root, exist_ok=True)
    shutil.move(os.path.join(directory, str(step)), dest)
  say(f'warning: checkpoint step {step} in {directory} {what}; moved it to {dest}; '
      'falling back to the previous checkpoint')
  return dest
