"""End to end: every variant trains a few steps and writes its logs; CLI; failures."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa_jax import errors
from jepa_jax.config import load as config_lib
from jepa_jax import data as data_lib
from jepa_jax.eval import measure
from jepa_jax.run import checkpoint
from jepa_jax.run import files as records
from jepa_jax.train import loop as train
from jepa_jax.train import loop_state as epoch_end
from jepa_jax.train import step as step_lib
from jepa_jax.vq import codebook as vq_lib
from conftest import ROOT, load, set_overrides

# One per code path: EMA with refresh, EMA without, no VQ, gradient codebook
# (gentle is sixth_run's path with other values; its tiny run is trained by
# many other tests' fixtures).
VARIANTS = ('sixth_run', 'vq_no_refresh', 'no_vq', 'gradient')
EPOCH_KEYS = {'epoch', 'step', 'train_loss_mean', 'val_loss_mean', 'temperature',
              'learning_rate'} | {f'{s}_{c}_mean' for s in ('train', 'val')
                                  for c in step_lib.LOSS_COMPONENTS}
EMB_KEYS = {'step', 'epoch', 'context_effective_rank', 'target_effective_rank',
            'context_isotropy', 'target_isotropy'}
VQ_KEYS = {'vq_usage_ratio', 'vq_codes_used', 'vq_perplexity'}
PROBE_KEYS = {'step', 'epoch', 'linear_target', 'linear_context'}


@pytest.mark.parametrize('variant', VARIANTS)
def test_variant_trains_and_writes_logs(variant, tmp_path, monkeypatch):
  monkeypatch.setattr(step_lib, '_BUILT', {})    # the config's first run in this process
  cfg = load(variant, 'tiny')
  summary = train.train_and_evaluate(cfg, str(tmp_path))
  assert summary['status'] == 'completed'
  assert summary['steps'] == 6 and summary['epochs_completed'] == 2
  assert json.load(open(tmp_path / 'config.json'))['variant'] == variant
  epochs = records.read_jsonl(tmp_path / 'epoch_metrics.jsonl')
  assert [e['epoch'] for e in epochs] == [0, 1] and [e['step'] for e in epochs] == [3, 6]
  for e in epochs:
    assert EPOCH_KEYS <= set(e)
    assert all(np.isfinite(e[k]) for k in EPOCH_KEYS)
    assert (np.float32(cfg.loss.temperature_min) <= np.float32(e['temperature'])
            <= np.float32(cfg.loss.temperature_max))
  emb = records.read_jsonl(tmp_path / 'embedding_metrics.jsonl')
  # tiny: points every 2 steps; with refresh every 2 steps (steps 1, 3, 5
  # refresh, 0-based) each point moves one step earlier, before the refresh.
  refresh = cfg.vq.enabled and cfg.vq.refresh_enabled and cfg.vq.quantizer == 'vq'
  assert cfg.vq.refresh_interval == 2 or not refresh
  assert [r['step'] for r in emb] == ([1, 3, 5] if refresh else [2, 4, 6])
  want = EMB_KEYS | (VQ_KEYS if cfg.vq.enabled else set())
  for r in emb:
    assert want <= set(r)
    assert 1.0 <= r['context_effective_rank'] <= cfg.model.embed_dim
    if cfg.vq.enabled:
      assert 0 < r['vq_usage_ratio'] <= 1
      assert r['vq_codes_used'] == pytest.approx(r['vq_usage_ratio'] * cfg.vq.codebook_size)
    else:
      assert not VQ_KEYS & set(r)
  # Probe points before the first step and at the last (tiny: every 100 steps).
  probe = records.read_jsonl(tmp_path / 'probe_metrics.jsonl')
  assert [r['step'] for r in probe] == [0, 6] and set(probe[0]) == PROBE_KEYS
  stored = json.load(open(tmp_path / 'summary.json'))
  assert stored['status'] == 'completed' and stored['best_epoch'] in (0, 1)
  assert stored['final_metrics']['val_loss_mean'] == epochs[-1]['val_loss_mean']
  # Each function compiles once, ahead of the loop; nothing compiles in it
  # (a run of the same config again in this process compiles nothing: `step.built`).
  compiles = stored['time_breakdown']['compiles']
  # compile_eval: eval step and embedding metrics (+ the eval keys' PRNG split
  # when this process has not compiled it yet).
  assert compiles['compile_step'] == 1 and compiles['compile_eval'] in (2, 3)
  assert compiles['compile_probe'] == 1          # the probe trajectory's encoding
  loop = ('data', 'step', 'logging', 'embedding_metrics', 'probe', 'validation',
          'epoch_end', 'loop_other')
  assert not set(compiles) & set(loop), compiles
  assert stored['compile_time_s'] >= stored['step_compile_time_s'] > 0


def _setup_and_state(variant, **overrides):
  cfg = load(variant, 'tiny')
  for key, value in overrides.items():
    node = cfg
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)
  state = step_lib.init_state(setup, ds.image_shape, cfg.seed)
  images, ids = next(data_lib.epoch_batches(ds.train_images, cfg.train.batch_size,
                                            cfg.seed, 0, 1))
  return cfg, ds, setup, state, images, ids


def test_a_setup_made_again_from_the_same_config_reuses_its_programs(monkeypatch):
  """init_state, make_train_step and make_eval_step are `built` once per Setup
  signature (the whole config and the data's sizes): a setup made again from
  an equal config traces no new init, train or eval step and gives the same
  state bit for bit; another config (here one masking key, changed after the
  first setup was made) or another split size gets programs of its own, which
  the first setup does not see. The memo holds BUILT_MAX entries at most."""
  monkeypatch.setattr(step_lib, '_BUILT', {})    # whatever other tests built before
  traced = []      # programs lowered (a cache hit still reports a trace of ~0 s)

  def on_event(event, duration, **kw):
    if event.endswith('jaxpr_to_mlir_module_duration'):
      traced.append(kw.get('fun_name', '').removeprefix('jit(').removesuffix(')'))

  cfg = load('gentle', 'tiny')
  ds = data_lib.load_dataset(cfg)
  first = step_lib.make_setup(cfg, ds)
  images, ids = next(data_lib.epoch_batches(ds.train_images, cfg.train.batch_size, 0, 0, 1))

  def programs(setup):
    state = step_lib.init_state(setup, ds.image_shape, 3)
    out = jax.jit(step_lib.make_train_step(setup)).lower(state, images, ids).compile()(
        state, images, ids)
    jax.jit(step_lib.make_eval_step(setup, 3)).lower(state, images, ids).compile()
    return state, out

  jax.monitoring.register_event_duration_secs_listener(on_event)
  try:
    a, stepped = programs(first)
    assert {'init', 'train_step', 'eval_step'} <= set(traced)
    n = len(traced)
    b, stepped_again = programs(step_lib.make_setup(load('gentle', 'tiny'), ds))
    assert traced[n:] == []
    chex.assert_trees_all_equal((a, stepped), (b, stepped_again))
    cfg.masking.num_context_tokens -= 1       # after `first` was made: not its setup
    other = step_lib.make_setup(cfg, ds)
    assert other.signature != first.signature
    assert first.masking.num_context_tokens == cfg.masking.num_context_tokens + 1
    programs(other)
    assert {'init', 'train_step', 'eval_step'} <= set(traced[n:])
    n = len(traced)
    fewer = dataclasses.replace(ds, train_images=ds.train_images[:-1])
    third = step_lib.make_setup(load('gentle', 'tiny'), fewer)
    assert third.signature != first.signature
    chex.assert_trees_all_equal(step_lib.init_state(first, ds.image_shape, 3), a)
    assert traced[n:] == []
    for i in range(step_lib.BUILT_MAX - len(step_lib._BUILT)):
      step_lib._BUILT[('filler', i)] = None
    chex.assert_trees_all_equal(step_lib.init_state(first, ds.image_shape, 3), a)
    assert len(step_lib._BUILT) == step_lib.BUILT_MAX       # a hit keeps a full memo
    step_lib.init_state(third, ds.image_shape, 3)           # a miss empties it first
    assert list(step_lib._BUILT) == [(third.signature, 'init', tuple(ds.image_shape))]
  finally:
    jax.monitoring.unregister_event_duration_listener(on_event)


def test_gradient_mode_codebook_changes_only_through_optimizer():
  cfg, _, setup, state, images, ids = _setup_and_state(
      'gradient', **{'train.warmup_epochs': 0})      # lr > 0 from the first step
  step = jax.jit(step_lib.make_train_step(setup))
  new, _ = step(state, images, ids)
  old_vq, new_vq = state['vq'], new['vq']
  assert not np.allclose(old_vq.codebook, new_vq.codebook)     # the optimizer moved it
  chex.assert_trees_all_equal(old_vq.cluster_size, new_vq.cluster_size)
  chex.assert_trees_all_equal(old_vq.embed_sum, new_vq.embed_sum)
  assert float(new_vq.usage.sum()) == images.shape[0] * cfg.masking.num_context_tokens
  # The codebook is part of the optimizer's tree only in gradient mode.
  assert 'codebook' in step_lib.trainables_of(setup, state)
  _, _, ema_setup, ema_state, _, _ = _setup_and_state('gentle')
  assert 'codebook' not in step_lib.trainables_of(ema_setup, ema_state)


def test_eval_and_embedding_metrics_leave_state_bit_identical():
  cfg, ds, setup, state, images, ids = _setup_and_state('gentle')
  before = jax.tree.map(np.array, state)
  epoch_end.evaluate(jax.jit(step_lib.make_eval_step(setup, 0)), state, ds.val_images, 16)
  jax.jit(measure.make_device_fn(setup, 0))(state, ds.val_images[:32])
  chex.assert_trees_all_equal(before, jax.tree.map(np.array, state))


def test_embedding_metrics_in_chunks_equal_one_pass():
  """The measurement encodes a split in chunks (memory bounded by one chunk):
  codes, masked-context codes (masks keyed by the global image index) and the
  train subset's codes equal one pass over all images; a last chunk that is
  padded (37 = 2 x 16 + 5) drops its padding."""
  cfg, ds, setup, state, images, _ = _setup_and_state('gentle')
  val, train_sub = ds.val_images[:37], images[:21]
  whole = jax.jit(measure.make_device_fn(setup, 0, chunk=4096))(state, val, train_sub)
  cut = jax.jit(measure.make_device_fn(setup, 0, chunk=16))(state, val, train_sub)
  assert set(whole) == set(cut) and {'codes', 'ctx_codes', 'train_codes'} <= set(cut)
  for key in ('codes', 'ctx_codes', 'train_codes'):
    np.testing.assert_array_equal(np.asarray(whole[key]), np.asarray(cut[key]))
  for key in ('ctx_mean', 'tgt_mean'):
    assert cut[key].shape == (37, cfg.model.embed_dim)
    np.testing.assert_allclose(np.asarray(whole[key]), np.asarray(cut[key]),
                               rtol=1e-5, atol=1e-6)


def test_temperature_stays_in_bounds_under_aggressive_updates():
  cfg, _, setup, state, images, ids = _setup_and_state(
      'gentle', **{'train.learning_rate': 5.0, 'train.warmup_epochs': 0,
                   'train.grad_clip_norm': 1e6})
  step = jax.jit(step_lib.make_train_step(setup), donate_argnums=0)
  temps = []
  for _ in range(25):
    state, m = step(state, images, ids)
    temps.append(float(state['params']['temperature']))
  lo, hi = np.float32(cfg.loss.temperature_min), np.float32(cfg.loss.temperature_max)
  assert all(lo <= np.float32(t) <= hi for t in temps)
  assert hi in np.float32(temps) or lo in np.float32(temps)   # the bound was hit
  assert temps[0] != np.float32(cfg.loss.temperature_init)   # it is learned, not frozen


def test_sixth_run_refresh_fires_in_step():
  cfg, _, setup, state, images, ids = _setup_and_state(
      'sixth_run', **{'vq.refresh_interval': 2, 'vq.refresh_usage_threshold': 1.0})
  step = jax.jit(step_lib.make_train_step(setup))
  s1, _ = step(state, images, ids)
  assert float(s1['vq'].usage.sum()) > 0
  s2, _ = step(s1, images, ids)                 # step 2 -> refresh: window reset
  assert float(s2['vq'].usage.sum()) == 0
  dead = np.asarray(vq_lib.dead_codes(s1['vq'], 1.0))
  assert dead.any()


def test_nonfinite_loss_stops_run_with_clear_message(tmp_path, monkeypatch):
  import jax.numpy as jnp
  from jepa_jax.objective import losses
  monkeypatch.setattr(losses, 'infonce_loss', lambda p, t, tau: jnp.nan * tau)
  monkeypatch.setattr(step_lib, '_BUILT', {})   # the patched step lives in this test only
  with pytest.raises(epoch_end.TrainingError, match='non-finite loss'):
    train.train_and_evaluate(load('gentle', 'tiny'), str(tmp_path))
  summary = json.load(open(tmp_path / 'summary.json'))
  assert summary['status'] == 'failed' and 'non-finite' in summary['reason']
  assert records.read_jsonl(tmp_path / 'epoch_metrics.jsonl') == []


def test_early_stopping(tmp_path, monkeypatch):
  calls = iter(range(100))
  monkeypatch.setattr(epoch_end, 'evaluate', lambda *a, **k: {
      c: float(next(calls)) for c in step_lib.LOSS_COMPONENTS})
  cfg = load('no_vq', 'tiny')
  cfg.train.num_epochs, cfg.train.early_stopping_patience = 10, 2
  summary = train.train_and_evaluate(cfg, str(tmp_path))
  assert summary['status'] == 'early_stopped'
  assert summary['epochs_completed'] == 3 and summary['best_epoch'] == 0


def test_stale_eval_json_is_set_aside_when_training_runs_again(tmp_path):
  cfg = load('no_vq', 'tiny')
  cfg.train.num_epochs = 1
  workdir = str(tmp_path)
  train.train_and_evaluate(cfg, workdir)
  (tmp_path / 'eval.json').write_text('{"probe": 1}')
  train.train_and_evaluate(cfg, workdir)          # finished: nothing trains, eval stays
  assert (tmp_path / 'eval.json').read_text() == '{"probe": 1}'
  cfg.train.num_epochs = 2                        # more epochs: trains again
  cfg.checkpoint.allow_config_change = True
  summary = train.train_and_evaluate(cfg, workdir)
  assert summary['status'] == 'completed' and summary['epochs_completed'] == 2
  assert not (tmp_path / 'eval.json').exists()
  assert (tmp_path / 'eval.stale-0.json').read_text() == '{"probe": 1}'


def test_outputs_without_a_checkpoint_are_refused_unless_restart(tmp_path):
  """A finished workdir whose checkpoints/ was deleted: no silent retraining
  over its logs and final weights; checkpoint.restart=True moves them aside."""
  cfg = load('no_vq', 'tiny')
  cfg.train.num_epochs = 1
  workdir = str(tmp_path)
  train.train_and_evaluate(cfg, workdir)
  (tmp_path / 'eval.json').write_text('{"probe": 1}')
  shutil.rmtree(tmp_path / 'checkpoints')
  before = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}
  with pytest.raises(checkpoint.CheckpointError, match=(
      r'holds the outputs of a run \(final_state.msgpack, epoch_metrics.jsonl up to '
      r'step 3, embedding_metrics.jsonl up to step 3, probe_metrics.jsonl up to step 3\) '
      r'but no usable checkpoint.*'
      'checkpoint.restart=True')):
    train.train_and_evaluate(cfg, workdir)
  assert {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)} == before
  cfg.checkpoint.restart = True
  summary = train.train_and_evaluate(cfg, workdir)
  assert summary['status'] == 'completed' and summary['resumed_from_step'] is None
  old = tmp_path / 'previous-0'
  assert {n: (old / n).read_bytes() for n in os.listdir(old)} == before   # all kept
  assert records.read_jsonl(tmp_path / 'epoch_metrics.jsonl') == records.read_jsonl(
      old / 'epoch_metrics.jsonl')                   # the same run again, from step 0
  assert not (tmp_path / 'eval.json').exists()


def test_refuses_workdir_with_files_of_an_unknown_run(tmp_path):
  (tmp_path / 'summary.json').write_text('{}')
  with pytest.raises(checkpoint.CheckpointError, match='holds files of a run without config.json'):
    train.train_and_evaluate(load('gentle', 'tiny'), str(tmp_path))
  assert os.listdir(tmp_path) == ['summary.json']
  assert (tmp_path / 'summary.json').read_text() == '{}'


def _cli(*args, cwd=ROOT):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'jepa_jax.main', *args],
                        capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_cli_bad_config_gives_one_line_error(tmp_path):
  out = _cli('--config=configs/gentle.py:tiny', f'--workdir={tmp_path}',
             '--config.vq.ema_decay=1.5')
  assert out.returncode == 2
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert lines == ["config error: config.vq.ema_decay=1.5: must be in [0, 1), "
                   "or None for gradient updates"]
  assert not os.listdir(tmp_path)               # nothing written


def _disk_full(path):
  def fail(*args, **kwargs):
    raise OSError(28, 'No space left on device', path)
  return fail


def test_a_failing_close_skips_no_other_cleanup_and_the_summary_says_failed(
    tmp_path, monkeypatch, capfd):
  """Every closer runs in its own try: a TensorBoard writer that cannot
  flush still leaves the logs closed, the last checkpoint and the final
  weights written, and summary.json saying failed with the path and error;
  with the space back the same command finishes the run."""
  events = str(tmp_path / 'events.out.tfevents.x')
  monkeypatch.setattr(records.TensorBoardWriter, 'close', _disk_full(events))
  cfg = load('no_vq', 'tiny')
  with pytest.raises(OSError, match='No space left'):
    train.train_and_evaluate(cfg, str(tmp_path))
  assert (f'warning: closing the TensorBoard writer failed: No space left on device: '
          f'{events}') in capfd.readouterr().err
  summary = json.load(open(tmp_path / 'summary.json'))
  assert summary['status'] == 'failed'
  assert summary['reason'] == f'No space left on device: {events}'
  assert (tmp_path / 'final_state.msgpack').exists()
  assert '6' in os.listdir(tmp_path / 'checkpoints')             # the last checkpoint saved
  monkeypatch.undo()
  again = train.train_and_evaluate(cfg, str(tmp_path))
  assert again['status'] == 'completed' and again['steps'] == 6


def test_failing_final_weights_and_summary_writes_are_each_reported(tmp_path, monkeypatch,
                                                                    capfd):
  from jepa_jax.run import trained as final_state
  weights, summary_path = str(tmp_path / 'final_state.msgpack'), str(tmp_path / 'summary.json')
  monkeypatch.setattr(final_state, 'save', _disk_full(weights))
  write_json = records.write_json
  def no_summary(path, obj):
    if path.endswith('summary.json'):
      raise OSError(28, 'No space left on device', path + '.tmp')
    write_json(path, obj)
  monkeypatch.setattr(records, 'write_json', no_summary)
  cfg = load('no_vq', 'tiny')
  cfg.train.num_epochs = 1
  with pytest.raises(OSError) as err:
    train.train_and_evaluate(cfg, str(tmp_path))
  assert errors.one_line_error(err.value) == f'No space left on device: {weights}'
  out = capfd.readouterr().err
  assert f'warning: writing the final weights failed: No space left on device: {weights}' in out
  assert f'warning: writing {summary_path} failed: No space left on device: {summary_path}.tmp' in out
  assert not os.path.exists(tmp_path / '.lock')          # the lock released all the same


def test_a_checkpoint_folder_that_takes_no_writes_fails_at_once_with_its_path(
    tmp_path, monkeypatch):
  """(Root ignores permissions: the read-only folder is an injected EROFS.)"""
  real_open = os.open
  def read_only(path, *args, **kwargs):
    if '.write_probe' in str(path):
      raise OSError(30, 'Read-only file system', path)
    return real_open(path, *args, **kwargs)
  monkeypatch.setattr(checkpoint.os, 'open', read_only)
  cfg = load('no_vq', 'tiny')
  with pytest.raises(OSError) as err:
    train.train_and_evaluate(cfg, str(tmp_path))
  line = errors.one_line_error(err.value)
  assert line.startswith(f'Read-only file system: {tmp_path}/checkpoints/.write_probe_')
  assert not (tmp_path / 'summary.json').exists() and not (tmp_path / '.lock').exists()


def test_a_run_shorter_than_the_measurement_interval_ends_with_one_point(tmp_path):
  """The first-run case: 6 steps with embedding metrics every 50 still log
  one point, at the last step, and diagnose judges the run's VQ usage on it."""
  from jepa_jax import diagnose
  cfg = load('gentle', 'tiny')
  cfg.train.embedding_metrics_every_steps = 50
  cfg.vq.refresh_enabled = False                  # no refresh moves the point
  summary = train.train_and_evaluate(cfg, str(tmp_path))
  assert summary['steps'] == 6
  emb = records.read_jsonl(tmp_path / 'embedding_metrics.jsonl')
  assert [(r['step'], r['epoch']) for r in emb] == [(6, 1)] and 'vq_usage_ratio' in emb[0]
  result = diagnose.check_run(diagnose.load_run(str(tmp_path)))
  usage = result['criteria'][0]
  assert usage['name'] == 'usage_throughout' and usage['status'] != 'n/a'
  assert usage['detail'].endswith('at step 6') and usage['value'] == emb[0]['vq_usage_ratio']


def test_a_start_from_scratch_logs_the_step_0_probe_point_once(tmp_path):
  """A run killed after its step-0 probe point, before any checkpoint, starts
  again from scratch: the probe log holds step 0 once, not twice."""
  cfg = load('no_vq', 'tiny')
  assert train.train_and_evaluate(cfg, str(tmp_path))['status'] == 'completed'
  for name in ('summary.json', 'final_state.msgpack'):
    os.remove(tmp_path / name)
  shutil.rmtree(tmp_path / 'checkpoints')
  for name in ('epoch_metrics.jsonl', 'embedding_metrics.jsonl', 'probe_metrics.jsonl'):
    kept = [r for r in records.read_jsonl(tmp_path / name) if r['step'] == 0]
    (tmp_path / name).write_text(''.join(json.dumps(r) + '\n' for r in kept))
  assert [r['step'] for r in records.read_jsonl(tmp_path / 'probe_metrics.jsonl')] == [0]
  assert train.train_and_evaluate(cfg, str(tmp_path))['status'] == 'completed'
  assert [r['step'] for r in records.read_jsonl(tmp_path / 'probe_metrics.jsonl')] == [0, 6]


def test_colour_jitter_changes_colours_per_sample_keeps_geometry_and_is_keyed():
  from jepa_jax.model import masking
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(64, 8, 8, 3)), jnp.float32)
  ids = jnp.arange(64, dtype=jnp.int32)
  key = jax.random.PRNGKey(3)
  out = np.asarray(masking.colour_jitter(key, ids, images))
  again = np.asarray(masking.colour_jitter(key, ids, images))
  np.testing.assert_array_equal(out, again)                  # a function of key and ids
  assert not np.allclose(out, np.asarray(images))
  # An image's result depends on its id only, not on its place in the batch.
  swapped = np.asarray(masking.colour_jitter(key, ids[::-1], images[::-1]))
  np.testing.assert_allclose(swapped[::-1], out, rtol=1e-6)
  # Per pixel, each output channel is an affine map of one input channel (or
  # of the mean of the affine maps, for grey images): the spatial pattern of
  # some input channel, so geometry is kept.
  x = np.asarray(images)
  grey = np.all(np.isclose(out, out[..., :1]), axis=(1, 2, 3))
  assert 0 < grey.sum() < 64                                  # some grey, not all
  for i in np.flatnonzero(~grey)[:8]:
    for c in range(3):
      corr = [abs(np.corrcoef(out[i, ..., c].ravel(), x[i, ..., d].ravel())[0, 1])
              for d in range(3)]
      assert max(corr) > 0.999


def test_crop_flip_is_the_image_at_full_area_a_mirror_when_flipped_and_keyed(monkeypatch):
  from jepa_jax.model import masking
  rng = np.random.default_rng(1)
  images = jnp.asarray(rng.normal(size=(16, 8, 8, 3)), jnp.float32)
  ids = jnp.arange(16, dtype=jnp.int32)
  key = jax.random.PRNGKey(5)
  out = np.asarray(masking.crop_flip(key, ids, images))
  assert out.shape == images.shape and not np.allclose(out, np.asarray(images))
  np.testing.assert_array_equal(out, np.asarray(masking.crop_flip(key, ids, images)))
  swapped = np.asarray(masking.crop_flip(key, ids[::-1], images[::-1]))
  np.testing.assert_allclose(swapped[::-1], out, rtol=1e-6)  # per sample id
  # The whole image at aspect 1: the image itself, or its mirror.
  monkeypatch.setattr(masking, 'CROP_AREA', (1.0, 1.0))
  monkeypatch.setattr(masking, 'CROP_RATIO', (1.0, 1.0))
  for flip, expect in ((0.0, images), (1.0, images[:, :, ::-1])):
    monkeypatch.setattr(masking, 'FLIP_PROB', flip)
    np.testing.assert_allclose(np.asarray(masking.crop_flip(key, ids, images)),
                               np.asarray(expect), atol=1e-5)
  # A quarter of the area: a 4x4 window blown up to 8x8, whose pixel means
  # match the window's (bilinear interpolation keeps constant images).
  monkeypatch.setattr(masking, 'CROP_AREA', (0.25, 0.25))
  monkeypatch.setattr(masking, 'FLIP_PROB', 0.0)
  flat = jnp.ones((2, 8, 8, 1)) * jnp.arange(2.0)[:, None, None, None]
  np.testing.assert_allclose(np.asarray(masking.crop_flip(key, ids[:2], flat)),
                             np.asarray(flat), atol=1e-5)
  ramp = jnp.broadcast_to(jnp.arange(8.0)[None, None, :, None], (1, 8, 8, 1))
  row = np.asarray(masking.crop_flip(key, ids[:1], ramp))[0, 0, :, 0]
  assert np.all(np.diff(row) > 0) and row[-1] - row[0] < 5   # a stretched part of the ramp


def test_crop_area_sets_each_crops_share_of_the_image():
  """On images whose two channels are the pixel's row and column, a crop's
  values span h (1 - 1/H) rows and w (1 - 1/W) columns (bilinear sampling of
  a ramp is exact), so each crop's share of the area can be read back."""
  from jepa_jax.model import masking
  hh = ww = 32
  rows, cols = np.meshgrid(np.arange(hh), np.arange(ww), indexing='ij')
  images = jnp.asarray(np.repeat(np.stack([rows, cols], -1)[None], 64, 0), jnp.float32)
  ids, key = jnp.arange(64, dtype=jnp.int32), jax.random.PRNGKey(0)

  def shares(area, size=None):
    out = np.asarray(masking.crop_flip(key, ids, images, area, size))
    oh, ow = size or (hh, ww)
    assert out.shape == (64, oh, ow, 2)
    span = out.max((1, 2)) - out.min((1, 2))                     # (64, 2)
    return span[:, 0] * oh / (oh - 1) * span[:, 1] * ow / (ow - 1) / (hh * ww)

  for a in (0.08, 0.3, 0.5):                 # no side reaches the border's cap
    np.testing.assert_allclose(shares((a, a)), a, atol=0.005)
  for a in (0.05, 0.3):                      # local views: resized to 8 x 8 pixels
    np.testing.assert_allclose(shares((a, a), (8, 8)), a, atol=0.005)
  wide = shares((0.08, 1.0))
  assert wide.min() < 0.2 and wide.max() > 0.8 and wide.min() >= 0.075
  default = shares(None)
  assert default.min() >= masking.CROP_AREA[0] - 0.005
  np.testing.assert_array_equal(np.asarray(masking.crop_flip(key, ids, images)),
                                np.asarray(masking.crop_flip(key, ids, images, masking.CROP_AREA)))


def test_crop_area_is_checked_and_needs_a_crop():
  from jepa_jax.model import masking
  cfg = load('lejepa_views', 'tiny')
  assert tuple(cfg.data.crop_area) == masking.CROP_AREA     # base.py's default is the constant's
  for bad in ((0.0, 1.0), (0.5, 0.3), (0.3, 1.2), (0.3,), ('a', 1.0)):
    with pytest.raises(config_lib.ConfigError) as err:
      config_lib.validate(set_overrides(load('lejepa_views', 'tiny'), {'data.crop_area': bad}))
    assert err.value.key == 'data.crop_area' and '0 < lo <= hi <= 1' in str(err.value)
  with pytest.raises(config_lib.ConfigError, match="no effect without 'crop'") as err:
    config_lib.validate(set_overrides(load('ijepa', 'tiny'), {'data.crop_area': (0.08, 1.0)}))
  assert err.value.key == 'data.crop_area'
  config_lib.validate(set_overrides(load('lejepa_views', 'tiny'), {'data.crop_area': (0.08, 1.0)}))


def test_context_augment_changes_the_loss_only_through_the_context_view():
  cfg, ds, setup, state, images, ids = _setup_and_state('no_vq_gentle')
  aug = step_lib.make_setup(set_overrides(cfg, {'data.context_augment': 'colour'}), ds)
  assert aug.context_augment == 'colour' and setup.context_augment == ''
  plain = jax.jit(step_lib.make_train_step(setup))(state, images, ids)[1]['loss']
  jittered = jax.jit(step_lib.make_train_step(aug))(state, images, ids)[1]['loss']
  assert np.isfinite(float(jittered)) and float(jittered) != float(plain)
  lejepa_cfg = set_overrides(load('lejepa', 'tiny'), {'data.context_augment': 'colour+crop'})
  config_lib.validate(lejepa_cfg)
  lejepa = step_lib.make_setup(lejepa_cfg, ds)
  lejepa_state = step_lib.init_state(lejepa, ds.image_shape, lejepa_cfg.seed)
  cropped = jax.jit(step_lib.make_train_step(lejepa))(lejepa_state, images, ids)[1]['loss']
  assert np.isfinite(float(cropped))


def test_target_augment_jitters_the_target_view_with_a_draw_of_its_own():
  """data.target_augment='colour': the target encoder reads its own colour
  jitter of the image (keyed by the mask key folded with TARGET_TAG), not the
  image and not the context's draw; 'crop' is refused (tokens would move)."""
  from jepa_jax.errors import ConfigError
  from jepa_jax.model import masking
  from jepa_jax.objective import terms as objective
  cfg, ds, setup, state, images, ids = _setup_and_state('no_vq_gentle')
  cfg = set_overrides(cfg, {'data.target_augment': 'colour',
                            'data.context_augment': 'colour'})
  aug = step_lib.make_setup(cfg, ds)
  key = jax.random.PRNGKey(5)
  v = objective._views(aug, state['params'], state['target_params'], images, ids, key)
  enc = lambda x: setup.encoder.apply(state['target_params'], x, None, None)
  own = masking.context_view('colour', jax.random.fold_in(key, masking.TARGET_TAG),
                             ids, images)
  np.testing.assert_allclose(np.asarray(v['t_full']), np.asarray(enc(own)), atol=1e-6)
  ctx_draw = masking.colour_jitter(jax.random.fold_in(key, masking.AUGMENT_TAG), ids, images)
  for other in (images, ctx_draw):
    assert np.abs(np.asarray(v['t_full']) - np.asarray(enc(other))).max() > 1e-3
  plain = objective._views(setup, state['params'], state['target_params'], images, ids, key)
  np.testing.assert_array_equal(np.asarray(plain['t_full']), np.asarray(enc(images)))
  with pytest.raises(ConfigError) as err:
    config_lib.validate(set_overrides(cfg, {'data.target_augment': 'crop'}))
  assert err.value.key == 'data.target_augment'
