"""Start from another run's checkpoint (`config.init_from`): PATH[/STEP] to
the subtrees a run asks for (params, target encoder), every name and shape
checked first, nothing loaded partially."""
from __future__ import annotations

import os
import tempfile
from typing import Any, Optional, Tuple

from jepa_jax import interrupts
from jepa_jax import run_files
from jepa_jax.checkpoint import (CheckpointError, DamagedCheckpoint, RunCheckpoints,
                                 raise_if_mismatched)


def resolve(path: str) -> Tuple[str, Optional[int]]:
  """PATH[/STEP] -> (checkpoints directory, step or None for the latest).

  PATH may be a run's workdir (holding checkpoints/), a checkpoints
  directory, or one step folder inside it.
  """
  path = path.rstrip('/')
  if os.path.isdir(os.path.join(path, run_files.CHECKPOINTS)):
    return os.path.join(path, run_files.CHECKPOINTS), None
  base = os.path.basename(path)
  if base.isdigit() and os.path.isdir(path):
    return os.path.dirname(path), int(base)
  if os.path.isdir(path):
    return path, None
  raise CheckpointError(f'init_from={path!r}: no such checkpoint directory')


def load_params(path: str, abstract_subset, skipped=()) -> Tuple[Any, str]:
  """Loads the subtrees in `abstract_subset` (e.g. params, target_params).

  Checks every name and shape under those subtrees against the checkpoint and
  fails listing all mismatches; only then restores (Orbax partial restore).
  `skipped`: path prefixes (e.g. 'params/predictor') left out of
  `abstract_subset` on purpose; the checkpoint's entries under them are not
  checked or read. Returns (tree, 'DIR step N').
  """
  directory, step = resolve(path)
  ckpts = None
  try:
    with interrupts.deferred():         # a stop in set-up still closes ckpts below
      ckpts = RunCheckpoints(directory, read_only=True)
    steps = ckpts.steps()
    if step is None:
      if not steps:
        raise CheckpointError(f'init_from={path!r}: no complete checkpoint in {directory}')
      step = max(steps)
    elif step not in steps:
      raise CheckpointError(f'init_from={path!r}: no checkpoint step {step} in '
                            f'{directory} (have {steps})')
    groups = tuple(abstract_subset)
    try:
      spec = ckpts.spec(step)
      found = {k: v for k, v in spec.items() if k.split('/')[0] in groups
               and not any(k == p or k.startswith(p + '/') for p in skipped)}
      # The full list of mismatches goes to a temporary file: a refused run
      # writes nothing into its workdir.
      raise_if_mismatched(found, abstract_subset, f'init_from={path!r} (step {step})',
                          os.path.join(tempfile.gettempdir(),
                                       f'jepa_jax_init_from_mismatches_{os.getpid()}.txt'))
      tree = ckpts.restore_state(step, abstract_subset, partial=True)
    except DamagedCheckpoint as err:
      raise CheckpointError(f'init_from={path!r}: checkpoint step {step} in '
                            f'{directory} is damaged ({err})') from None
  finally:
    if ckpts is not None:
      ckpts.close()
  return tree, f'{directory} step {step}'
