"""The runs' persistent compilation cache (jepa_jax/train/devices.py,
`train.compilation_cache_dir`): where it goes, off, restored, and a second
run loading what the first compiled with the same results."""
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from jepa_jax.config import load as config_lib
from jepa_jax.run import opening as workdir_config
from jepa_jax.train import devices as compile_cache
from conftest import ROOT, load


def _settings():
  return (jax.config.jax_compilation_cache_dir, jax.config.jax_enable_compilation_cache)


def test_the_key_names_a_folder_or_is_off():
  assert compile_cache.resolve('') is None and compile_cache.resolve(None) is None
  assert compile_cache.resolve('~/c') == os.path.join(os.path.expanduser('~'), 'c')
  with pytest.raises(config_lib.ConfigError, match=r'compilation_cache_dir=3: must be a folder'):
    compile_cache.resolve(3)


def test_a_folder_jax_was_given_stays_and_off_turns_the_cache_off(tmp_path):
  before = _settings()
  assert before[0] and before[1]                 # conftest: the session's cache
  with compile_cache.persistent_cache(str(tmp_path / 'mine')) as used:
    assert used == before[0] and _settings() == before
  with compile_cache.persistent_cache('') as used:
    assert used is None and _settings() == (before[0], False)
  assert _settings() == before
  assert not (tmp_path / 'mine').exists()


def test_without_a_jax_folder_the_run_caches_in_its_own_and_restores(tmp_path):
  before = _settings()
  folder = tmp_path / 'xla'
  min_secs = jax.config.jax_persistent_cache_min_compile_time_secs
  try:
    jax.config.update('jax_compilation_cache_dir', None)
    # Every program is written here, however fast (conftest keeps the slow ones).
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
    jax_cache.reset_cache()
    with compile_cache.persistent_cache(str(folder)) as used:
      assert used == str(folder)
      # A program this process has not compiled yet (a shape of its own).
      jax.jit(lambda x: jnp.sin(x) * 3.25 + 1)(np.ones((7, 13, 3), np.float32)).block_until_ready()
    assert _settings() == (None, before[1])
    assert folder.is_dir() and os.listdir(folder)           # the executable was written
  finally:
    jax.config.update('jax_compilation_cache_dir', before[0])
    jax.config.update('jax_persistent_cache_min_compile_time_secs', min_secs)
    jax_cache.reset_cache()
  assert _settings() == before


def test_the_cache_folder_does_not_make_another_run():
  """A workdir written before the key existed, or with another folder, is the same run."""
  new = workdir_config.config_to_json(load('gentle', 'tiny'))
  assert new['train']['compilation_cache_dir'] == '~/.cache/jepa_jax/xla'
  old = json.loads(json.dumps(new))
  del old['train']['compilation_cache_dir']
  assert workdir_config.config_diff(old, new) == []
  old['train']['compilation_cache_dir'] = ''
  assert workdir_config.config_diff(old, new) == []


def test_a_folder_that_cannot_be_made_is_a_warning_and_no_cache(tmp_path, capfd):
  before = _settings()
  (tmp_path / 'file').write_text('')
  folder = tmp_path / 'file' / 'xla'                # under a file: cannot exist
  try:
    jax.config.update('jax_compilation_cache_dir', None)
    jax_cache.reset_cache()
    with compile_cache.persistent_cache(str(folder)) as used:
      assert used is None and _settings() == (None, False)
  finally:
    jax.config.update('jax_compilation_cache_dir', before[0])
    jax_cache.reset_cache()
  assert _settings() == before
  err = capfd.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(
      f'warning: train.compilation_cache_dir: cannot create {folder} (Not a directory)')


@pytest.mark.slow
def test_a_second_run_loads_the_first_runs_executables_and_computes_the_same(tmp_path):
  # JAX_LOG_COMPILES: JAX says, for each program, whether it came from the cache.
  # Every program is cached, however fast (conftest keeps only the slow ones).
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_LOG_COMPILES='1',
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  env.pop('JAX_COMPILATION_CACHE_DIR')            # the key's folder, not the session's
  cache = tmp_path / 'xla'
  hits = []
  for name in ('first', 'second'):
    out = subprocess.run(
        [sys.executable, '-m', 'jepa_jax.main', '--config=configs/no_vq.py:tiny',
         f'--workdir={tmp_path / name}', f'--config.train.compilation_cache_dir={cache}'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    hits.append(re.findall(r"Persistent compilation cache hit for '(\w+)'", out.stderr))
    if name == 'first':
      entries = set(os.listdir(cache))
      assert entries
  assert set(os.listdir(cache)) == entries       # nothing new to compile
  assert hits[0] == []
  # The train step and validation (and the rest: init, embedding metrics, ...)
  # came from the cache.
  assert {'jit_train_step', 'jit_eval_step'} <= set(hits[1]) and len(hits[1]) >= 5, hits[1]
  for log in ('epoch_metrics.jsonl', 'embedding_metrics.jsonl', 'final_state.msgpack'):
    assert (tmp_path / 'first' / log).read_bytes() == (tmp_path / 'second' / log).read_bytes()
