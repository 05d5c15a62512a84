"""JAX's persistent compilation cache for a run (`train.compilation_cache_dir`).

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

import contextlib
import os
import sys
from typing import Iterator, Optional

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from jepa_jax.config import load as config_lib

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
