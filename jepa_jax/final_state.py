"""The trained weights of a finished run: WORKDIR/final_state.msgpack.

Next to the Orbax checkpoints (`jepa_jax.checkpoint`, the full train state
for resuming), a small file of the weights: at the end of a run
(completed, early stopped or aborted) the trainer writes the final state's
`params`, `target_params` and, with VQ, the `vq` codebook state and the
quantizer's own trainables `vq_params` (projections, SimVQ map; only when the
config has them) as a flax msgpack state dict. `jepa_jax.evaluate` loads it
into a freshly built state of the run's config, which checks every name and
shape; files written before `vq.VQState.usage_ema` existed load as before.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from flax import serialization

from jepa_jax import records
from jepa_jax import run_files

KEYS = ('params', 'target_params', 'vq', 'vq_params')


def save(workdir: str, state) -> str:
  """Writes the weights of `state` (a train-state dict) atomically; returns the path."""
  tree = {k: state[k] for k in KEYS if k in state}
  data = serialization.msgpack_serialize(
      serialization.to_state_dict(jax.device_get(tree)))
  path = os.path.join(workdir, run_files.FINAL_STATE)
  records.write_atomically(path, lambda f: f.write(data), 'wb')
  return path


def load(workdir: str, target):
  """Restores the saved weights into `target` (a train-state dict of the same
  config, arrays or `jax.ShapeDtypeStruct`s, e.g. from `jax.eval_shape`);
  returns a new dict. Raises ValueError naming the file on a mismatch of names
  or shapes."""
  path = os.path.join(workdir, run_files.FINAL_STATE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no final weights (the run did not finish, '
                            'or it predates final_state.msgpack)')
  with open(path, 'rb') as f:
    data = f.read()
  try:
    raw = serialization.msgpack_restore(data)
  except Exception as err:  # pylint: disable=broad-except  (msgpack's own errors)
    raise ValueError(f'{path}: damaged or truncated ({len(data)} bytes; msgpack: '
                     f'{str(err) or type(err).__name__}); retrain or restore the '
                     'file') from None
  if not isinstance(raw, dict):
    raise ValueError(f'{path}: damaged ({type(raw).__name__}, not a state dict)')
  tree = {k: target[k] for k in KEYS if k in target}
  if isinstance(raw.get('vq'), dict):
    raw['vq'].setdefault('usage_ema', None)    # files written before the field
  try:
    restored = serialization.from_state_dict(tree, raw)
  except (ValueError, KeyError, TypeError) as err:
    raise ValueError(f'{path} does not match the run config: {err}') from err
  bad = [f'{jax.tree_util.keystr(p)}: {np.shape(b)} in the file, {tuple(a.shape)} '
         'in the config'
         for (p, a), b in zip(jax.tree_util.tree_leaves_with_path(tree),
                              jax.tree_util.tree_leaves(restored))
         if tuple(a.shape) != np.shape(b)]
  if bad:
    raise ValueError(f'{path} does not match the run config: ' + '; '.join(bad))
  return {**target, **restored}
