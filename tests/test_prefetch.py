"""Prefetch to the devices: the host batches in order, placed as the compiled
train step takes them, `size` batches ahead; training is bit-identical with
and without it (one device here; 'jit' and 'pmap' on 8 simulated devices in
a subprocess, as in test_parallel.py)."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jepa_jax import data as data_lib
from jepa_jax.config import load as config_lib
from jepa_jax.run import files as run_files
from jepa_jax.run import opening as run_open
from jepa_jax.train import devices as parallel
from jepa_jax.train import loop as train
from jepa_jax.train import step as step_lib
from conftest import ROOT, load

FAST_COMPILE = '--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0'


def _host_batches(n, rows=4):
  return [(np.full((rows, 3, 3, 1), i, np.float32), np.arange(rows, dtype=np.int32) + i)
          for i in range(n)]


class _Counting:
  """An iterator over `items` that counts the items pulled from it and
  records whether it was closed."""

  def __init__(self, items):
    self.items, self.pulled, self.closed = list(items), 0, False

  def __iter__(self):
    return self

  def __next__(self):
    if self.pulled == len(self.items):
      raise StopIteration
    self.pulled += 1
    return self.items[self.pulled - 1]

  def close(self):
    self.closed = True


def _single_plan():
  cfg = load('gentle', 'tiny')
  cfg.parallel.num_devices = 1
  return parallel.make_plan(cfg)


@pytest.mark.parametrize('size', [0, 1, 2, 7])
def test_batches_come_in_order_as_placed_arrays_with_their_values(size):
  batches = _host_batches(5)
  out = list(parallel.prefetch_to_device(
      iter(batches), parallel.batch_placement(_single_plan()), size))
  assert len(out) == len(batches)
  for (images, ids), (want_images, want_ids) in zip(out, batches):
    assert isinstance(images, jax.Array) and isinstance(ids, jax.Array)
    assert images.dtype == np.float32 and ids.dtype == np.int32
    np.testing.assert_array_equal(np.asarray(images), want_images)
    np.testing.assert_array_equal(np.asarray(ids), want_ids)


@pytest.mark.parametrize('size', [0, 1, 2, 7])
def test_size_batches_are_pulled_and_placed_ahead_of_the_consumer(size):
  source, placed = _Counting(range(5)), []

  def place(batch):
    placed.append(batch)
    return batch

  seen = []
  for k, batch in enumerate(parallel.prefetch_to_device(source, place, size)):
    assert batch == k
    want = min(k + 1 + size, 5)            # this batch and `size` more
    seen.append((source.pulled, len(placed)))
    assert (source.pulled, len(placed)) == (want, want), (k, seen)
  assert placed == list(range(5))


def test_size_zero_places_each_batch_only_when_asked_for():
  source = _Counting(range(3))
  it = parallel.prefetch_to_device(source, lambda b: ('placed', b), 0)
  assert source.pulled == 0                  # a generator: nothing before next()
  assert next(it) == ('placed', 0) and source.pulled == 1
  assert next(it) == ('placed', 1) and source.pulled == 2


def test_closing_drops_the_batches_ahead_and_closes_the_source():
  source = _Counting(range(6))
  it = parallel.prefetch_to_device(source, lambda b: b, 2)
  assert next(it) == 0 and source.pulled == 3
  it.close()                                 # a run stopping after one step
  assert source.closed and source.pulled == 3


def test_a_negative_size_is_refused():
  with pytest.raises(ValueError, match='>= 0'):
    next(parallel.prefetch_to_device(iter([1]), lambda b: b, -1))


@pytest.mark.parametrize('value', [-1, True, None])
def test_bad_prefetch_to_device_is_a_one_line_config_error(value):
  cfg = load('gentle', 'tiny')
  cfg.data.prefetch_to_device = value
  with pytest.raises(config_lib.ConfigError) as err:
    config_lib.validate(cfg)
  assert err.value.key == 'data.prefetch_to_device' and '\n' not in str(err.value)


def test_prefetch_to_device_is_result_neutral_and_filled_for_old_runs():
  cfg = load('gentle', 'tiny')
  assert cfg.data.prefetch_to_device == 2
  cfg.data.prefetch_to_device = 0
  config_lib.validate(cfg)
  new = run_open.config_to_json(cfg)
  old = json.loads(json.dumps(new))
  del old['data']['prefetch_to_device']      # a run folder from before the key
  assert run_open.config_diff(old, new) == []
  assert config_lib.ADDED_KEYS['data.prefetch_to_device'] == 2


def test_the_single_device_step_takes_placed_batches_without_a_transfer():
  cfg = load('gentle', 'tiny')
  cfg.parallel.num_devices = 1
  plan = parallel.make_plan(cfg)
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)
  batches = list(data_lib.epoch_batches(ds.train_images, cfg.train.batch_size,
                                        cfg.seed, 0, 2))
  state0 = jax.tree.map(np.asarray, step_lib.init_state(setup, ds.image_shape, cfg.seed))
  fresh = lambda: jax.device_put(jax.tree.map(np.copy, state0))  # noqa: E731
  step_fn, _ = parallel.compile_train_step(plan, setup, fresh(), *batches[0])
  want_sharding = step_fn.input_shardings[0][1]

  ref, state = [], fresh()
  for images, ids in batches:               # numpy, placed by the call
    state, metrics = step_fn(state, images, ids)
    ref.append(jax.device_get((state, metrics)))

  state = fresh()
  for k, (images, ids) in enumerate(parallel.prefetch_to_device(
      batches, parallel.batch_placement(plan), 2)):
    assert images.sharding == want_sharding and ids.sharding == want_sharding
    with jax.transfer_guard('disallow_explicit'):   # no transfer at all in the step
      state, metrics = step_fn(state, images, ids)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get((state, metrics)), ref[k])
  with pytest.raises(Exception, match='[Dd]isallowed'), \
      jax.transfer_guard('disallow_explicit'):
    step_fn(state, *batches[0])             # the guard does see a host batch


def _run_outputs(workdir):
  logs = [run_files.read_jsonl(os.path.join(workdir, name)) for name in run_files.STEP_LOGS]
  with open(os.path.join(workdir, run_files.FINAL_STATE), 'rb') as f:
    return logs, f.read()


@pytest.mark.slow
def test_training_is_bit_identical_with_and_without_prefetch(tmp_path):
  """gentle:tiny (2 epochs of 3 steps; 7 ahead reaches past each epoch's end)."""
  outputs, data_calls = {}, {}
  for size in (0, 2, 7):
    cfg = load('gentle', 'tiny')
    cfg.data.prefetch_to_device = size
    workdir = str(tmp_path / f'prefetch{size}')
    summary = train.train_and_evaluate(cfg, workdir)
    assert summary['status'] == 'completed' and summary['steps'] == 6
    outputs[size] = _run_outputs(workdir)
    data_calls[size] = summary['time_breakdown']['calls']['data']
  assert outputs[2] == outputs[0] and outputs[7] == outputs[0]
  assert data_calls == {0: 8, 2: 8, 7: 8}    # one wait per step + each epoch's end


@pytest.mark.slow
def test_jit_and_pmap_steps_take_placed_batches_on_8_devices(tmp_path):
  out = tmp_path / 'record.json'
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count=8 {FAST_COMPILE}',
             PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, 'tests')]))
  proc = subprocess.run(
      [sys.executable, '-c', f'import test_prefetch; test_prefetch.device_worker({str(out)!r})'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  record = json.load(open(out))
  assert record['devices'] == 8
  for layout in ('jit_8', 'pmap_8'):
    assert record[f'{layout}_mode'] == layout.split('_')[0]
    assert record[f'{layout}_sharding_ok'] == [True] * 3, layout
    assert record[f'{layout}_same_as_host_batches'] is True, layout
    assert record[f'{layout}_host_batch_transfers'] is True, layout
  assert record['pmap_8_shapes'] == [[8, 2, 8, 8, 1], [8, 2]]


def device_worker(out):
  """Runs in the 8-device subprocess: for 'jit' and 'pmap' over 8 devices,
  3 steps fed host batches and 3 steps fed prefetched ones from the same
  state, each of the latter under a guard against any transfer; records what
  test_jit_and_pmap_steps_take_placed_batches_on_8_devices asserts."""
  from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: PLC0415
  import parallel_worker  # noqa: PLC0415  (tests/: its tiny config and helpers)
  record = {'devices': jax.device_count()}
  for mode in ('jit', 'pmap'):
    name = f'{mode}_8'
    cfg = parallel_worker.tiny_config(num_devices=8, mode=mode)
    ds = data_lib.load_dataset(cfg)
    setup = step_lib.make_setup(cfg, ds)
    state0 = parallel_worker.host(step_lib.init_state(setup, ds.image_shape, cfg.seed))
    data = parallel_worker.train_order_batches(ds, cfg, 1)
    ref_metrics, ref_state, step_fn, plan = parallel_worker.run(cfg, setup, state0, data)
    record[f'{name}_mode'] = plan.mode
    want = NamedSharding(plan.mesh, P(parallel.DATA_AXIS))
    state = parallel.place_state(plan, jax.tree.map(lambda x: x + 0, state0))
    metrics, ok = [], []
    for images, ids in parallel.prefetch_to_device(data, parallel.batch_placement(plan), 2):
      ok.append(all(x.sharding.is_equivalent_to(want, x.ndim) for x in (images, ids)))
      record[f'{name}_shapes'] = [list(images.shape), list(ids.shape)]
      with jax.transfer_guard('disallow_explicit'):
        state, m = step_fn(state, images, ids)
      metrics.append(parallel_worker.host(m))
    record[f'{name}_sharding_ok'] = ok
    same = all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves((metrics, parallel_worker.host(parallel.local_state(plan, state)))),
        jax.tree.leaves((ref_metrics,
                         parallel_worker.host(parallel.local_state(plan, ref_state))))))
    record[f'{name}_same_as_host_batches'] = same
    try:
      with jax.transfer_guard('disallow_explicit'):
        step_fn(state, *data[0])
      record[f'{name}_host_batch_transfers'] = False
    except Exception as err:  # noqa: BLE001  (the guard's error type varies)
      record[f'{name}_host_batch_transfers'] = 'isallowed' in str(err)
  with open(out, 'w') as f:
    json.dump(record, f)
