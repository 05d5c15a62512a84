"""Data-parallel execution of the train step: devices, wrappers, batch placement.

One per-device step body (`step.make_train_step(setup, axis_name=DATA_AXIS)`)
runs under one of two wrappers, picked by `config.parallel.mode`:

  'jit'   jax.jit over a 1-D `Mesh` of the devices, with `NamedSharding`s:
          the state replicated (P()), the batch split over its first axis
          (P('data')), and the body inside `jax.shard_map`.
  'pmap'  jax.pmap over the same devices in the same order (in_axes=None /
          out_axes=None for the state, so it stays one replicated array).
  'auto'  'jit' when more than one device is used; on a single device the
          plain jitted step (no collectives), the fast path.

Both wrappers use shard_map's classic collective semantics (check_vma=False,
which is also what jax.pmap runs on): every replica computes the same global
loss on all-gathered tensors, the transpose of all_gather sums the replicas'
cotangents, and the body's pmean of the gradients gives the gradient of the
global loss. So results do not depend on the device count (up to float
reduction order) and every replica holds a bit-identical state.

Device order: devices are sorted by (process_index, id), so each process owns
a contiguous run of the data axis and loads exactly the rows
`plan.process_rows` of every global batch; all_gather then reassembles the
global batch in its original order, on one host or many.

Multi-host: `initialize_distributed(cfg)` calls `jax.distributed.initialize`
when `config.parallel.multihost` is set (cluster auto-detection on SLURM /
Cloud TPU, or explicit `coordinator_address`, `num_processes`, `process_id`).

Host batches placed on the devices ahead of the train step that uses them.

    batches = prefetch_to_device(host_batches, parallel.batch_placement(plan), 2)

JAX dispatches both the train step and the transfers asynchronously, so a
batch whose transfer was started a step or two before it is needed reaches
the devices while earlier steps run, and the step finds its inputs there.
`size` batches are kept placed ahead of the one the consumer holds (memory:
`size` + 1 batches on the devices). The order and values are the host
iterator's; placement changes only where the arrays live.

Batches pulled ahead but never consumed (a run stopping mid-epoch) are
dropped with the generator: resume does not depend on them, since it
rebuilds the host iterator from the checkpoint's data position.

JAX's persistent compilation cache for a run (`train.compilation_cache_dir`).

Compiling the train step, the evaluation and the embedding metrics dominates
short runs and is otherwise paid again on every run. With the cache, XLA's
executables are kept in a folder (default `~/.cache/jepa_jax/xla`) and a run
that compiles the same programs (same config shapes, jax version, XLA flags
and devices) loads them instead. A cached executable is the same program, so
results are unchanged, bit for bit.

`train.compilation_cache_dir`:
  a folder   the run's cache (`~` and `$VARS` expanded, created if need be;
             one that cannot be created is a warning, and the run goes on
             without a cache). When JAX already has a cache folder (the
             environment variable JAX_COMPILATION_CACHE_DIR, or `jax.config`
             set by the calling program, as the test suite does), that one
             is kept.
  '' / None  no persistent cache for this run, whatever JAX was told.

JAX's other cache settings apply as they are; in particular only programs
that took at least `jax_persistent_cache_min_compile_time_secs` (JAX's
default: 1 s) to compile are written. The previous settings are restored when
the run ends, so an embedding program (or the next run in the same process)
sees JAX as it left it.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Optional, Tuple

import jax
import numpy as np
from jax.experimental.compilation_cache import compilation_cache as jax_cache
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jepa_jax.config import load as config_lib
from jepa_jax.train import step as step_lib


DATA_AXIS = 'data'
MODES = ('auto', 'pmap', 'jit')


def initialize_distributed(cfg) -> None:
  """jax.distributed.initialize() for multi-host runs; must run before any
  other JAX call touches the devices. No-op unless parallel.multihost."""
  pc = cfg.parallel
  if not pc.multihost or jax.distributed.is_initialized():
    return
  kwargs = {}
  if pc.coordinator_address:
    kwargs = dict(coordinator_address=pc.coordinator_address,
                  num_processes=pc.num_processes, process_id=pc.process_id)
  jax.distributed.initialize(**kwargs)


@dataclasses.dataclass(frozen=True)
class Plan:
  """How a run uses the devices (derived once from config and the devices)."""
  mode: str                    # 'single', 'pmap' or 'jit' ('auto' resolved)
  devices: Tuple[Any, ...]     # the data axis, in order
  global_batch: int
  process_index: int
  process_count: int

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  @property
  def per_device_batch(self) -> int:
    return self.global_batch // self.num_devices

  @property
  def local_devices(self) -> Tuple[Any, ...]:
    return tuple(d for d in self.devices if d.process_index == self.process_index)

  @property
  def is_writer(self) -> bool:
    """Only process 0 writes logs, summaries and progress bars."""
    return self.process_index == 0

  @property
  def mesh(self) -> Mesh:
    return Mesh(np.array(self.devices), (DATA_AXIS,))

  @property
  def process_rows(self) -> Tuple[int, int]:
    """[start, stop) rows of each global batch that this process loads."""
    pos = [i for i, d in enumerate(self.devices)
           if d.process_index == self.process_index]
    b = self.per_device_batch
    return pos[0] * b, (pos[-1] + 1) * b

  def describe(self) -> dict:
    return {'mode': self.mode, 'num_devices': self.num_devices,
            'num_processes': self.process_count, 'process_index': self.process_index,
            'per_device_batch': self.per_device_batch}


def make_plan(cfg) -> Plan:
  """Resolves config.parallel against the devices; checks the batch divides.

  Raises ConfigError (one line naming the key) when it does not fit.
  """
  pc = cfg.parallel
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  n = len(devices) if pc.num_devices is None else pc.num_devices
  if n > len(devices):
    raise config_lib.ConfigError('parallel.num_devices', n,
                                 f'only {len(devices)} devices are available')
  devices = tuple(devices[:n])
  pid, pcount = jax.process_index(), jax.process_count()
  if pcount > 1 and {d.process_index for d in devices} != set(range(pcount)):
    raise config_lib.ConfigError('parallel.num_devices', n,
                                 f'must include devices of all {pcount} processes')
  mode = pc.mode
  if mode == 'auto':
    mode = 'jit' if n > 1 else 'single'
  batch = cfg.train.batch_size
  if batch % n:
    near = ' or '.join(str(v) for v in (batch // n * n, batch // n * n + n) if v)
    raise config_lib.ConfigError(
        'train.batch_size', batch,
        f'the global batch must divide by the {n} devices in use '
        f'(parallel.mode={pc.mode!r}); nearest: {near}')
  return Plan(mode=mode, devices=devices, global_batch=batch,
              process_index=pid, process_count=pcount)


def place_state(plan: Plan, state):
  """The train state, replicated on every device of the data axis.

  Built from host copies (identical on every process, since the state is a
  function of the seed), so each leaf owns fresh buffers and can be donated.
  """
  if plan.mode == 'single':
    return state
  rep = NamedSharding(plan.mesh, P())
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(rep, np.asarray(x), x.shape),
      state)


def local_state(plan: Plan, state):
  """A single-device view of the (replicated) state on this process's first
  device, for evaluation and embedding metrics (no copy)."""
  if plan.mode == 'single':
    return state
  return jax.tree.map(lambda x: x.addressable_data(0), state)


def replicas(x) -> list:
  """The per-device copies of a replicated array this process holds."""
  return [np.asarray(s.data) for s in x.addressable_shards]


def batch_placement(plan: Plan) -> Callable:
  """place(batch) -> `batch` (a tuple of this process's rows of one global
  batch) on the devices, as `plan`'s compiled train step takes it:

    'single'  each array on the default device (where the step's implicit
              transfer of a numpy argument would put it);
    'jit'     one global array per leaf, split over the data axis
              (NamedSharding P('data'));
    'pmap'    each array reshaped to (local devices, rows per device, ...)
              and split over this process's devices.

  Transfers are dispatched asynchronously; arrays already on the devices (jax
  Arrays) pass through unchanged.
  """
  if plan.mode == 'single':
    put = jax.device_put
  elif plan.mode == 'jit':
    data = NamedSharding(plan.mesh, P(DATA_AXIS))
    put = lambda x: jax.make_array_from_process_local_data(data, x)  # noqa: E731
  elif plan.mode == 'pmap':
    local = plan.local_devices
    split = NamedSharding(Mesh(np.array(local), (DATA_AXIS,)), P(DATA_AXIS))
    put = lambda x: jax.device_put(  # noqa: E731
        np.reshape(x, (len(local), -1) + x.shape[1:]), split)
  else:
    raise ValueError(f'unknown parallel mode {plan.mode!r}')

  def place(batch):
    return jax.tree.map(lambda x: x if isinstance(x, jax.Array) else put(x), batch)

  return place


def compile_train_step(plan: Plan, setup, state, images, sample_ids
                       ) -> Tuple[Callable, float]:
  """Compiles the train step for `plan` once (state donated).

  Args: a placed state and this process's rows of one global batch (numpy),
  used for shapes only. Returns (step_fn, compile_seconds); step_fn(state,
  images, sample_ids) takes this process's rows, as numpy or as placed by
  `batch_placement(plan)`, and returns the new state and the metrics of the
  global batch.
  """
  t0 = time.perf_counter()
  if plan.mode == 'single':
    compiled = jax.jit(step_lib.make_train_step(setup), donate_argnums=0).lower(
        state, images, sample_ids).compile()
    return compiled, time.perf_counter() - t0

  body = step_lib.make_train_step(setup, axis_name=DATA_AXIS)
  mesh, place = plan.mesh, batch_placement(plan)
  if plan.mode == 'jit':
    rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
    mapped = jax.shard_map(body, mesh=mesh,
                           in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS)),
                           out_specs=(P(), P()), check_vma=False)
    jitted = jax.jit(mapped, in_shardings=(rep, data, data),
                     out_shardings=(rep, rep), donate_argnums=0)
    compiled = jitted.lower(state, *place((images, sample_ids))).compile()

    def step_fn(state, images, sample_ids):
      return compiled(state, *place((images, sample_ids)))

    return step_fn, time.perf_counter() - t0

  if plan.mode != 'pmap':
    raise ValueError(f'unknown parallel mode {plan.mode!r}')
  pmapped = jax.pmap(body, axis_name=DATA_AXIS, in_axes=(None, 0, 0),
                     out_axes=(None, None), devices=plan.devices,
                     donate_argnums=0)
  # AOT-compiling fills the compilation cache that the first call then hits.
  pmapped.lower(state, *place((images, sample_ids))).compile()

  def pmap_step(state, images, sample_ids):
    new_state, metrics = pmapped(state, *place((images, sample_ids)))
    if plan.process_count > 1:      # pmap returns host-local arrays
      from jax.experimental import multihost_utils  # noqa: PLC0415
      new_state = multihost_utils.host_local_array_to_global_array(
          new_state, mesh, P())
    return new_state, metrics

  return pmap_step, time.perf_counter() - t0


@contextlib.contextmanager
def compile_notice(talk: bool) -> Iterator[None]:
  """With `talk`, a line on stderr as a run starts compiling (and where the
  programs are cached), one with the seconds it took when done."""
  t0, folder = time.perf_counter(), jax.config.jax_compilation_cache_dir
  if talk:
    print('compiling the train step, evaluation, embedding metrics and probe ('
          + (f'cached in {folder} for the next start' if folder else 'no compilation cache')
          + ')...', file=sys.stderr, flush=True)
  yield
  if talk:
    print(f'compiled in {time.perf_counter() - t0:.0f} s', file=sys.stderr, flush=True)


def broadcast_error(plan: Plan, message: Optional[str]) -> Optional[str]:
  """Process 0's error message (or None), the same on every process."""
  if plan.process_count == 1:
    return message
  from jax.experimental import multihost_utils  # noqa: PLC0415
  encoded = np.zeros((1024,), np.uint8)
  if message:
    raw = message.encode()[:1024]
    encoded[:len(raw)] = np.frombuffer(raw, np.uint8)
  got = np.asarray(multihost_utils.broadcast_one_to_all(encoded))
  text = bytes(got[got > 0].astype(np.uint8)).decode(errors='replace')
  return text or None


def prefetch_to_device(batches: Iterable[Any], place: Callable[[Any], Any],
                       size: int) -> Iterator[Any]:
  """Yields place(batch) for every batch of `batches`, in order.

  When batch k is yielded, batches k+1 .. k+size have already been pulled
  from `batches` and their transfers dispatched (fewer at the end of the
  iterator); size 0 places each batch only when it is asked for. Closing the
  generator closes `batches` when it can be closed.
  """
  if size < 0:
    raise ValueError(f'prefetch size must be >= 0, got {size}')
  it = iter(batches)
  queue = collections.deque()
  try:
    for batch in it:
      queue.append(place(batch))
      if len(queue) > size:
        yield queue.popleft()
    while queue:
      yield queue.popleft()
  finally:
    queue.clear()
    close = getattr(it, 'close', None)
    if close is not None:
      close()


KEY = 'train.compilation_cache_dir'


def resolve(value) -> Optional[str]:
  """The cache folder the key asks for (expanded), or None for off. Raises
  ConfigError for a value that is neither a folder name nor ''/None."""
  if value is None or value == '':
    return None
  if not isinstance(value, str):
    raise config_lib.ConfigError(KEY, value, "must be a folder, or '' for no cache")
  return os.path.expandvars(os.path.expanduser(value))


def _settings():
  return (jax.config.jax_compilation_cache_dir, jax.config.jax_enable_compilation_cache)


def _apply(folder: Optional[str], enabled: bool) -> None:
  jax.config.update('jax_compilation_cache_dir', folder)
  jax.config.update('jax_enable_compilation_cache', enabled)
  jax_cache.reset_cache()       # JAX opens its cache once: make it re-read the settings


def _can_create(folder: str) -> bool:
  try:
    os.makedirs(folder, exist_ok=True)
    return True
  except OSError as err:
    print(f'warning: {KEY}: cannot create {folder} ({err.strerror}); this run '
          'compiles without a persistent cache', file=sys.stderr, flush=True)
    return False


@contextlib.contextmanager
def persistent_cache(value) -> Iterator[Optional[str]]:
  """The run's compilation cache while the block runs (module docstring);
  yields the folder in use, or None when the run has none."""
  folder = resolve(value)
  before = _settings()
  configured, enabled = before
  if folder is None:
    wanted = (configured, False)
  elif configured and enabled:
    wanted = before               # JAX was given a folder: it stays
  elif _can_create(folder):
    wanted = (folder, True)
  else:
    wanted = (configured, False)
  changed = wanted != before
  if changed:
    _apply(*wanted)
  try:
    yield wanted[0] if wanted[1] else None
  finally:
    if changed:
      _apply(*before)
