"""The train state a new run starts from: fresh, or with params from another
run's checkpoint (`config.init_from`) and a k-means codebook (`vq.init`).

Start from another run's checkpoint (`config.init_from`): PATH[/STEP] to
the subtrees a run asks for (params, target encoder), every name and shape
checked first, nothing loaded partially.

No silent retraining: a workdir holding a run's outputs but no usable checkpoint.

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
import tempfile
from typing import Any, List, Optional, Tuple

import jax
import numpy as np

from jepa_jax.run import files as run_files
from jepa_jax.train import interrupts
from jepa_jax.run.checkpoint import (CheckpointError, DamagedCheckpoint, RunCheckpoints,
                                 raise_if_mismatched)
from jepa_jax.model import vit as model_lib
from jepa_jax.run import checkpoint as ckpt_lib
from jepa_jax.run.files import CONFIG, OUTPUT_PATTERNS, PREVIOUS
from jepa_jax.train import step as step_lib
from jepa_jax.vq import codebook as vq_lib
from jepa_jax.vq import quantizer as quantizer_lib


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


KMEANS_SEED_TAG = 0x6b6d


def kmeans_images(num_train: int, num_samples: int, seed: int) -> np.ndarray:
  """The train images `kmeans_codebook` encodes: all of them when there are
  at most `num_samples` (`vq.kmeans_num_samples`), else `num_samples` of them
  drawn without replacement by numpy's default_rng([seed, KMEANS_SEED_TAG]),
  sorted: enough for every sampled token to come from its own image, however
  large the (lazy) split is."""
  if num_train <= num_samples:
    return np.arange(num_train)
  rng = np.random.default_rng([seed, KMEANS_SEED_TAG])
  return np.sort(rng.choice(num_train, num_samples, replace=False))


def kmeans_codebook(cfg, setup, dataset, encoder_params, vq_params=None) -> vq_lib.VQState:
  """Codebook from k-means++ (+ Lloyd) on `vq.kmeans_num_samples` token
  embeddings of training images (whole images; at most that many images,
  `kmeans_images`), a function of the config and seed; fitted in the
  quantizer's space (`quantizer.kmeans_state`).
  Padded colour-id data: valid tokens only, encoded with padding masked out
  of attention as in the step."""
  patch = cfg.model.patch_size
  ids = kmeans_images(len(dataset.train_images), cfg.vq.kmeans_num_samples, cfg.seed)

  @jax.jit
  def encode(images):
    valid = model_lib.token_validity(images, patch) if setup.padded else None
    z = setup.encoder.apply(encoder_params, images, None, valid)
    return z, valid

  chunks = []
  for i in range(0, len(ids), 256):               # a lazy split read 256 at a time
    z, valid = jax.device_get(encode(dataset.train_images[ids[i:i + 256]]))
    chunks.append(z[valid] if setup.padded else z.reshape(-1, z.shape[-1]))
  tokens = np.concatenate(chunks)
  key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), KMEANS_SEED_TAG)
  k_pick, k_fit = jax.random.split(key)
  n = min(cfg.vq.kmeans_num_samples, len(tokens))
  picked = tokens[np.asarray(jax.random.permutation(k_pick, len(tokens))[:n])]
  return quantizer_lib.kmeans_state(setup.quantizer, k_fit, picked, vq_params)


def _loaded(path: str, skip, fresh):
  """{'params', 'target_params'} from checkpoint `path`, the groups named in
  `skip` (`config.init_from_skip`) left as in `fresh` and not read."""
  params = {k: v for k, v in fresh['params'].items() if k not in skip}
  subset = {'params': params}
  if 'target_encoder' not in skip:
    subset['target_params'] = fresh['target_params']
  loaded, source = load_params(
      path, ckpt_lib.abstract_of(subset),
      skipped=tuple(f'params/{g}' for g in skip if g in fresh['params']))
  out = {'params': {**fresh['params'], **loaded['params']},
         'target_params': loaded.get('target_params', fresh['target_params'])}
  kept = f' (fresh: {", ".join(skip)})' if skip else ''
  ckpt_lib.say(f'initialised params and target encoder from {source}{kept}')
  return out


def starting_state(cfg, setup, dataset, fresh):
  """The state a run starts from: `fresh`, with params and target encoder
  loaded from `config.init_from` if set and the codebook from k-means if
  `config.vq.init == 'kmeans'`. Fails listing every name/shape mismatch."""
  if not cfg.init_from and not (setup.vq_enabled and cfg.vq.init == 'kmeans'):
    return fresh
  state = dict(fresh)
  if cfg.init_from:
    state.update(_loaded(cfg.init_from, tuple(cfg.init_from_skip), state))
  if setup.vq_enabled and cfg.vq.init == 'kmeans':
    state['vq'] = kmeans_codebook(cfg, setup, dataset, state['params']['encoder'],
                                  state.get('vq_params'))
  state['opt_state'] = setup.tx.init(step_lib.trainables_of(setup, state))
  return ckpt_lib.detached_copy(state)     # every leaf its own (donatable) buffer


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
