"""Shared fixtures: config loading by variant name; a per-session compilation cache."""
import atexit
import os
import shutil
import tempfile

# Many tests compile the same tiny programs, in this process and in CLI
# subprocesses (which inherit the environment). A persistent compilation cache
# private to this test session makes each program compile once; a cached
# executable is the same program, so results are unchanged.
_JIT_CACHE = tempfile.mkdtemp(prefix='jepa_jax_test_jit_cache_')
atexit.register(shutil.rmtree, _JIT_CACHE, ignore_errors=True)
os.environ['JAX_COMPILATION_CACHE_DIR'] = _JIT_CACHE
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'

import jax  # noqa: E402  (after the environment it reads)

jax.config.update('jax_compilation_cache_dir', _JIT_CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)

import pytest

from jepa_jax import config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name, arg=None):
  spec = os.path.join(ROOT, 'configs', f'{name}.py') + (f':{arg}' if arg else '')
  return config_lib.load_config(spec)


@pytest.fixture
def config_of():
  return load
