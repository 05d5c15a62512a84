"""Whether a workdir holds this run: its config.json against the run's config.

A workdir is this run's when its config.json equals the run's config up to
result-neutral keys (`RESULT_NEUTRAL_KEYS`), or differs and
`checkpoint.allow_config_change` is set (reported). Run files without a
config.json are refused as an unknown run. Nothing here writes.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from jepa_jax import config_defaults
from jepa_jax import records
from jepa_jax import run_files
from jepa_jax.checkpoint import CheckpointError, say

# Config keys that never change what a run computes: a resumed run may differ
# in them without counting as a different config (a trailing '.': the group).
RESULT_NEUTRAL_KEYS = ('train.progress_bar', 'train.compilation_cache_dir',
                       'data.prefetch_to_device', 'checkpoint.')


def config_to_json(cfg) -> Dict[str, Any]:
  """The config as plain JSON values (tuples become lists), as config.json holds it."""
  return json.loads(json.dumps(records.to_builtin(cfg.to_dict())))


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
    a.setdefault(key, json.loads(json.dumps(records.to_builtin(value))))
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
