"""No silent retraining: a workdir holding a run's outputs but no usable checkpoint.

Training from step 0 in such a workdir would overwrite its final weights and
rewind its logs to nothing. `check_or_move_aside` refuses that with one line,
unless `checkpoint.restart=True` asks for it; then the old outputs are moved
(renamed, never overwritten or deleted) into `WORKDIR/previous-<n>/` first.
A workdir with only a summary.json (a run that stopped before its first
checkpoint) or with logs of step 0 holds nothing worth keeping.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
from typing import List

from jepa_jax.run_files import CONFIG, OUTPUT_PATTERNS, PREVIOUS


def _last_step(path: str) -> int:
  """The largest `step` of the JSONL log at `path` (0 if none); torn lines skipped."""
  best = 0
  with open(path, errors='replace') as f:
    for line in f:
      try:
        best = max(best, int(json.loads(line).get('step', 0)))
      except (ValueError, TypeError, AttributeError):
        continue
  return best


def outputs_worth_keeping(workdir: str, final_weights: str, step_logs) -> List[str]:
  """The outputs a training from step 0 would destroy: the final weights and
  logs with lines past step 0, as 'NAME' / 'NAME up to step N'."""
  found = []
  if os.path.exists(os.path.join(workdir, final_weights)):
    found.append(final_weights)
  for name in step_logs:
    path = os.path.join(workdir, name)
    step = _last_step(path) if os.path.exists(path) else 0
    if step > 0:
      found.append(f'{name} up to step {step}')
  return found


def move_aside(workdir: str) -> str:
  """Moves every run output of `workdir` into a new `previous-<n>/` (a copy
  of config.json goes with them); returns that folder."""
  n = 0
  while os.path.exists(os.path.join(workdir, PREVIOUS.format(n))):
    n += 1
  dest = os.path.join(workdir, PREVIOUS.format(n))
  os.makedirs(dest)
  for pattern in OUTPUT_PATTERNS:
    for path in sorted(glob.glob(os.path.join(glob.escape(workdir), pattern))):
      os.replace(path, os.path.join(dest, os.path.basename(path)))
  config = os.path.join(workdir, CONFIG)
  if os.path.exists(config):
    shutil.copy2(config, dest)
  return dest
