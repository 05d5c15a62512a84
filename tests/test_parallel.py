"""Data-parallel steps: pmap / jit(shard_map) on 1, 2 and 8 simulated devices and
two processes on localhost give the single-device training.

The device-count-dependent work runs in subprocesses, because JAX sees the
simulated devices only when XLA_FLAGS is set before it starts:
`tests/parallel_worker.py` (8 CPU devices) trains every layout from the same
state on the same batches (digits, padded ARC grids for `arc_jit_8`, and the
recommended anti-collapse quantizer of configs/anticollapse.py on 2 devices
for `ac_jit_2`) and
records metrics and states; two `jepa_jax.main`
processes (one CPU device each, gloo collectives) train the same config. All
of them start together (module fixture) and the tests assert on their records.

Subprocesses compile with `--xla_cpu_use_fusion_emitters=false
--xla_backend_optimization_level=0`: that cuts XLA's CPU compile time of the
train step about 5x (10.7 s -> 2.0 s CPU on the 2-core dev machine) and
changes no semantics; every comparison is between runs with the same flags.

Tolerances (float32, eps = 1.2e-7). The parallel step computes every loss on
the all-gathered global batch, i.e. on the same numbers as one device; what
differs is the summation order of the gradient (per-device partial sums,
then a cross-device mean) and of the VQ statistics (psum of per-device sums).
Measured over 6 steps at full learning rate: losses and metrics agree to
<= 5.3e-7 relative (asserted: 2e-6), parameters and Adam moments to <= 6e-8
absolute on values of order 1 (asserted: atol 1e-6, rtol 1e-5), the VQ
embedding sums to 1.9e-6 on values up to 12.7 (rtol 1e-5); counts
(cluster sizes, usage, step) are exact. One exception: an attention layer's
key bias has an identically zero gradient (softmax is invariant to adding
q·b_k to every logit), so its "gradient" is rounding noise that Adam
normalises into steps of up to the learning rate; it differs by up to 5.8e-5
between layouts and is only checked to stay within Adam's step bound.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from jepa_jax import data as data_lib
from jepa_jax.config import load as config_lib
from jepa_jax.run import files as records
from jepa_jax.train import devices as parallel
from conftest import ROOT, load

# Whole runs or subprocesses: left out of the fast subset (pytest -m 'not slow').
pytestmark = pytest.mark.slow

FAST_COMPILE = '--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0'
LAYOUTS = ('ema_pmap_1', 'ema_pmap_8', 'ema_jit_1', 'ema_jit_2',
           'ema_jit_8', 'grad_jit_8', 'arc_jit_8', 'ac_jit_2')
# The worker's tiny_config overrides, as command-line flags.
TWO_PROCESS_FLAGS = ('--config=configs/gentle.py:tiny', '--config.train.warmup_epochs=0',
                     '--config.vq.refresh_usage_threshold=0.5',
                     '--config.parallel.mode=jit', '--config.train.progress_bar=True')
STEP_RTOL = 2e-6
LR, STEPS = 1e-3, 6


def _env(num_devices):
  flags = f'--xla_force_host_platform_device_count={num_devices} {FAST_COMPILE}'
  return dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=flags,
              PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Starts the two-process run, the bad-batch CLI run and the worker together."""
  tmp = tmp_path_factory.mktemp('parallel')
  port = _free_port()
  procs = []
  for pid in (0, 1):
    cmd = [sys.executable, '-m', 'jepa_jax.main', *TWO_PROCESS_FLAGS,
           f'--workdir={tmp / f"process{pid}"}', '--config.parallel.multihost=True',
           f'--config.parallel.coordinator_address=localhost:{port}',
           '--config.parallel.num_processes=2', f'--config.parallel.process_id={pid}']
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=_env(1), text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE))
  bad = subprocess.Popen(
      [sys.executable, '-m', 'jepa_jax.main', '--config=configs/gentle.py:tiny',
       f'--workdir={tmp / "bad"}', '--config.train.batch_size=12'],
      cwd=ROOT, env=_env(8), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  worker = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'tests', 'parallel_worker.py'), str(tmp)],
      cwd=ROOT, env=_env(8), capture_output=True, text=True, timeout=900)
  outs = [p.communicate(timeout=900) for p in procs]
  bad_out = bad.communicate(timeout=300)
  assert worker.returncode == 0, worker.stderr[-3000:]
  return {
      'tmp': tmp,
      'record': json.load(open(tmp / 'record.json')),
      'arrays': dict(np.load(tmp / 'arrays.npz')),
      'processes': [(p.returncode, o, e) for p, (o, e) in zip(procs, outs)],
      'bad': (bad.returncode, *bad_out),
  }


def _leaves(arrays, name, kind):
  prefix = f'{name}/{kind}/'
  return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


@pytest.mark.parametrize('layout', LAYOUTS)
def test_parallel_step_matches_single_device(runs, layout):
  record, arrays = runs['record'], runs['arrays']
  variant, mode, n = layout.split('_')
  assert record[f'{layout}_mode'] == mode
  assert record[f'{variant}_single_1_mode'] == 'single'
  ref = f'{variant}_single_1'
  metrics, ref_metrics = _leaves(arrays, layout, 'metric'), _leaves(arrays, ref, 'metric')
  assert set(metrics) == set(ref_metrics) and len(metrics['loss']) >= 3
  for k, want in ref_metrics.items():
    np.testing.assert_allclose(metrics[k], want, rtol=STEP_RTOL, atol=1e-7,
                               err_msg=f'{layout} metric {k}')
  state, ref_state = _leaves(arrays, layout, 'state'), _leaves(arrays, ref, 'state')
  assert set(state) == set(ref_state)
  steps = len(metrics['loss'])
  for path, want in ref_state.items():
    got = state[path]
    if "['vq']" in path and any(f'.{c}' in path for c in ('cluster_size', 'usage', 'step')):
      np.testing.assert_array_equal(got, want, err_msg=f'{layout} {path}')
    elif "['params']" in path and "['key']['bias']" in path and 'opt_state' not in path \
        and 'target_params' not in path:
      # Zero-gradient leaf: Adam-normalised rounding noise, |step| <= ~lr.
      bound = 2 * steps * LR
      assert np.max(np.abs(want)) <= bound and np.max(np.abs(got)) <= bound, path
    else:
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6,
                                 err_msg=f'{layout} {path}')
  assert record[f'{layout}_replicas_identical'] is True


def test_replica_check_can_see_differences(runs):
  # The replica comparison reads each device's own buffer: a value that
  # depends on the device index shows up as 8 different replicas.
  assert runs['record']['probe_replicas'] == [float(i) for i in range(8)]


def test_replicas_bit_identical_after_100_steps_with_refresh(runs):
  record = runs['record']
  assert record['long_steps'] == 100
  usage_at_refresh = record['long_refresh_usage_sums']
  assert len(usage_at_refresh) == 50                    # refresh every 2 steps
  assert all(u == [0.0] * 8 for u in usage_at_refresh)  # window reset everywhere
  assert record['long_codebook_replicas_equal'] == [True] * 8
  assert record['long_replicas_identical'] is True      # every leaf, every replica


def test_refresh_picks_the_same_vectors_on_every_replica(runs):
  record, a = runs['record'], runs['arrays']
  assert record['refresh_step'] == 2
  refreshed = a['refresh/single_cluster_size'] == 1.0   # N_k reset to 1
  assert refreshed.sum() >= 3
  assert np.all(a['refresh/single_usage'] == 0)
  books, sizes = a['refresh/p8_codebooks'], a['refresh/p8_cluster_sizes']
  assert books.shape[0] == 8
  for r in range(8):
    np.testing.assert_array_equal(books[r], books[0])
    np.testing.assert_array_equal(sizes[r] == 1.0, refreshed)
  # The replaced rows are new vectors, the ones one device picks.
  assert not np.any(np.all(np.isclose(books[0][refreshed],
                                      a['refresh/before_codebook'][refreshed]), -1))
  np.testing.assert_allclose(books[0][refreshed], a['refresh/single_codebook'][refreshed],
                             rtol=1e-5, atol=1e-6)


def test_non_divisible_batch_gives_one_line_error(runs):
  want = ("config.train.batch_size=12: the global batch must divide by the 8 "
          "devices in use (parallel.mode='auto'); nearest: 8 or 16")
  assert runs['record']['bad_batch_error'] == want
  code, _, stderr = runs['bad']
  assert code == 2
  assert [l for l in stderr.splitlines() if l.strip()] == [f'config error: {want}']
  assert not os.path.exists(runs['tmp'] / 'bad' / 'summary.json')


def test_two_processes_match_one_process_with_two_devices(runs):
  (code0, out0, err0), (code1, out1, err1) = runs['processes']
  assert code0 == 0, err0[-3000:]
  assert code1 == 0, err1[-3000:]
  tmp, a = runs['tmp'], runs['arrays']
  # Only process 0 writes logs, checkpoints, the summary, the report line and
  # the progress bar.
  files = sorted(os.listdir(tmp / 'process0'))
  assert [f for f in files if not f.startswith('events.out.tfevents.')] == [
      'alerts.jsonl', 'checkpoints', 'config.json', 'embedding_metrics.jsonl',
      'epoch_metrics.jsonl', 'final_state.msgpack', 'probe_metrics.jsonl', 'summary.json']
  assert sum(f.startswith('events.out.tfevents.') for f in files) == 1   # TensorBoard
  assert sorted(os.listdir(tmp / 'process0' / 'checkpoints')) == ['3', '6']
  assert not os.path.exists(tmp / 'process1')
  assert 'completed' in out0 and 'completed' not in out1   # (gloo prints a line)
  assert '6/6' in err0 and '6/6' not in err1
  summary = json.load(open(tmp / 'process0' / 'summary.json'))
  assert summary['parallel'] == {'mode': 'jit', 'num_devices': 2, 'num_processes': 2,
                                 'process_index': 0, 'per_device_batch': 8}
  epochs = records.read_jsonl(tmp / 'process0' / 'epoch_metrics.jsonl')
  assert [e['epoch'] for e in epochs] == [0, 1]
  metric, val = _leaves(a, 'ema_jit_2', 'metric'), _leaves(a, 'ema_jit_2', 'val')
  for e, line in enumerate(epochs):
    rows = slice(3 * e, 3 * e + 3)
    for c in ('loss', 'infonce', 'sigreg', 'relational', 'commitment'):
      assert line[f'train_{c}_mean'] == pytest.approx(
          float(np.mean(metric[c][rows])), rel=STEP_RTOL), (e, c)
      assert line[f'val_{c}_mean'] == pytest.approx(float(val[c][e]), rel=STEP_RTOL)
    assert line['temperature'] == pytest.approx(float(metric['temperature'][rows][-1]),
                                                rel=STEP_RTOL)


# ---------------------------------------------------------------------------
# In-process (one device): config keys, plans, process shards of a batch.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('key,value,match', [
    ('parallel.mode', 'dp', 'parallel.mode'),
    ('parallel.num_devices', 0, 'parallel.num_devices'),
    ('parallel.num_processes', 2, 'parallel.num_processes'),
])
def test_bad_parallel_config_names_the_key(key, value, match):
  cfg = load('gentle', 'tiny')
  node, leaf = cfg.parallel, key.split('.')[1]
  node[leaf] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(cfg)


def test_coordinator_needs_process_count_and_id():
  cfg = load('gentle', 'tiny')
  cfg.parallel.multihost = True
  cfg.parallel.coordinator_address = 'localhost:1234'
  with pytest.raises(config_lib.ConfigError, match='parallel.num_processes'):
    config_lib.validate(cfg)
  cfg.parallel.num_processes, cfg.parallel.process_id = 2, 2
  with pytest.raises(config_lib.ConfigError, match='parallel.process_id'):
    config_lib.validate(cfg)
  cfg.parallel.process_id = 1
  config_lib.validate(cfg)


def test_single_device_plan_is_the_plain_step():
  import jax
  cfg = load('gentle', 'tiny')
  cfg.parallel.num_devices = 1
  plan = parallel.make_plan(cfg)
  assert plan.mode == 'single' and plan.process_rows == (0, cfg.train.batch_size)
  assert plan.is_writer
  cfg.parallel.num_devices = jax.device_count() + 1
  with pytest.raises(config_lib.ConfigError, match='parallel.num_devices'):
    parallel.make_plan(cfg)


def test_process_shards_reassemble_the_global_batch():
  images = np.arange(40, dtype=np.float32).reshape(40, 1, 1, 1)
  full = list(data_lib.epoch_batches(images, 8, 3, 1, 4))
  shards = [list(data_lib.epoch_batches(images, 8, 3, 1, 4, rows=r))
            for r in ((0, 4), (4, 8))]
  for i, (imgs, ids) in enumerate(full):
    np.testing.assert_array_equal(np.concatenate([s[i][1] for s in shards]), ids)
    np.testing.assert_array_equal(np.concatenate([s[i][0] for s in shards]), imgs)
