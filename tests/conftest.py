"""Shared fixtures: config loading by variant name; a per-session compilation cache."""
import atexit
import os
import shutil
import tempfile

# Many tests compile the same tiny programs, in this process and in CLI
# subprocesses (which inherit the environment). A persistent compilation cache
# private to this test session makes each program compile once; a cached
# executable is the same program, so results are unchanged. Only programs
# that took >= 0.2 s to compile are kept: over one suite run (2026-12-06,
# JAX's own duration events) 618 of 700 cache hits cost more to read back
# than their compile had taken (36 s lost, 74 s saved by the rest), and each
# of the ~6,000 small programs is written too; eight heavy modules ran in
# 278 / 241 s against 288 / 272 s with every program kept (A B A B).
def _private_folder(var, prefix):
  """A temporary folder private to this process, removed at its exit, and
  the same folder if conftest is imported again in the process (as
  `tests.conftest` beside `conftest`): a second folder would start empty and
  compile every program again (114 programs twice in one suite run)."""
  owner = f'{os.getpid()}:'
  held = os.environ.get(var, '')
  if held.startswith(owner):
    return held[len(owner):]
  path = tempfile.mkdtemp(prefix=prefix)
  atexit.register(shutil.rmtree, path, ignore_errors=True)
  os.environ[var] = owner + path
  return path


_JIT_CACHE = _private_folder('JEPA_JAX_TEST_JIT_CACHE', 'jepa_jax_test_jit_cache_')
os.environ['JAX_COMPILATION_CACHE_DIR'] = _JIT_CACHE
MIN_COMPILE_SECS = '0.2'
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = MIN_COMPILE_SECS
os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
# The tests' programs are tiny: compile time, not run time, dominates. These
# XLA CPU options cut compiles ~4x (test_two_stage.py: 123 s -> 35 s on the
# 2-core dev VM) and change no semantics; CLI subprocesses inherit them.
# test_parallel.py sets the same options for its simulated-device workers.
FAST_COMPILE = '--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0'
os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()
# One thread per test process for XLA's matmuls and numpy / scikit-learn's
# BLAS: the suite runs one pytest-xdist worker per core, and the tests' tiny
# programs gain nothing from a thread the other worker needs (measured on
# the 2-core dev VM: six heavy modules 7% faster, 2 rounds each, A B A B).
# CLI subprocesses inherit it.
os.environ['XLA_FLAGS'] += ' --xla_cpu_multi_thread_eigen=false'
for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
  os.environ.setdefault(_var, '1')
# evaluate's probe-score cache (jepa_jax.eval.probes), private to the session
# too, so no test reads scores another run of the suite stored.
_PROBE_CACHE = _private_folder('JEPA_JAX_TEST_PROBE_CACHE', 'jepa_jax_test_probe_cache_')
os.environ['JEPA_JAX_PROBE_CACHE'] = _PROBE_CACHE

import jax  # noqa: E402  (after the environment it reads)

jax.config.update('jax_compilation_cache_dir', _JIT_CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', float(MIN_COMPILE_SECS))
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)

import pytest

from jepa_jax.config import keys as config_keys
from jepa_jax.config import load as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name, arg=None):
  return config_lib.load_config(config_lib.variant_spec(name, arg or ''))


def set_overrides(cfg, overrides):
  """Sets dotted keys ('vq.commitment_cost': 0.2, ...) in cfg; returns cfg."""
  for key, value in overrides.items():
    config_keys.put(cfg, key, value)
  return cfg


@pytest.fixture
def config_of():
  return load
