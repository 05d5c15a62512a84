"""Use a trained run: load its weights, encode images, read their codes.

    import jepa_jax
    run = jepa_jax.load_run('runs/gentle')        # a finished run's folder
    emb = run.encode(images)     # emb.pooled (N, D), emb.tokens (N, T, D)
    codes = run.codes(images)    # (N, T) int32 code ids, -1 at padding tokens

`load_run(workdir)` reads the run's config.json (keys added since filled in,
`config_defaults.fill_added_keys`), its data (for the image shape and, with
`run.dataset`, the images and labels) and its final weights
(`final_state.msgpack`, `jepa_jax.run.trained`) into a `TrainedRun`. Images
are (N, H, W, C) arrays as the run's data gives them (`run.dataset.val_images`).

`encode` runs an encoder on whole images (no mask), `BATCH` at a time: the
context encoder (the one the quantizer reads) or the target (EMA) encoder.
`tokens` is its output per patch token; `pooled` is one vector per image,
the mean over its tokens, over its valid tokens on padded colour-id grids
(ARC; `valid` the (N, T) token validity, else None): the features
`jepa_jax.evaluate` probes. `codes` assigns each context-encoder token its
nearest code with the final quantizer (`quantizer.assign`, the code the
training step would choose); `run.quantizer` is the layer's static settings
(`quantizer_spec.Spec`) and `run.codebook` its codes E (K, d) in the
quantizer space (None for FSQ or without VQ).

A folder that is not a run, or a run without final weights, raises
`errors.InputError` naming it (a command prints it as one line,
`errors.refused`).

The trained weights of a finished run: WORKDIR/final_state.msgpack.

Next to the Orbax checkpoints (`jepa_jax.run.checkpoint`, the full train state
for resuming), a small file of the weights: at the end of a run
(completed, early stopped or aborted) the trainer writes the final state's
`params`, `target_params` and, with VQ, the `vq` codebook state and the
quantizer's own trainables `vq_params` (projections, SimVQ map; only when the
config has them) as a flax msgpack state dict. `jepa_jax.evaluate` loads it
into a freshly built state of the run's config, which checks every name and
shape; files written before `vq.VQState.usage_ema` existed load as before.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Optional

import jax
import numpy as np
from flax import serialization

from jepa_jax import data as data_lib
from jepa_jax.config import load as config_lib
from jepa_jax.errors import InputError
from jepa_jax.model import vit as model
from jepa_jax.run import files as run_files
from jepa_jax.train import step as step_lib
from jepa_jax.vq import quantizer as quantizer_lib


KEYS = ('params', 'target_params', 'vq', 'vq_params')


def save(workdir: str, state) -> str:
  """Writes the weights of `state` (a train-state dict) atomically; returns the path."""
  tree = {k: state[k] for k in KEYS if k in state}
  data = serialization.msgpack_serialize(
      serialization.to_state_dict(jax.device_get(tree)))
  path = os.path.join(workdir, run_files.FINAL_STATE)
  run_files.write_atomically(path, lambda f: f.write(data), 'wb')
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


BATCH = 512                                      # images encoded at once
ENCODERS = ('context', 'target')


def read_config(workdir: str):
  """A run folder's config.json as a validated ConfigDict, keys added since
  filled in; InputError when `workdir` is not a run folder or the file is torn."""
  from ml_collections import ConfigDict  # noqa: PLC0415
  path = os.path.join(workdir, run_files.CONFIG)
  if not os.path.exists(path):
    raise InputError(f'{workdir}: not a run folder (no config.json)')
  with open(path) as f:
    try:
      cfg = config_lib.fill_added_keys(ConfigDict(json.load(f)))
    except ValueError as err:
      raise InputError(f'{path}: damaged JSON ({err})') from None
  config_lib.validate(cfg)
  return cfg


def run_setup(workdir: str):
  """(cfg, dataset, setup, target) of a run folder: its config, data and
  `step.Setup`, and the train state's structure and shapes (`jax.eval_shape`:
  no initialisation is computed), e.g. to restore one of its checkpoints."""
  cfg = read_config(workdir)
  dataset = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, dataset)
  target = jax.eval_shape(lambda: step_lib.init_state(setup, dataset.image_shape,
                                                      cfg.seed))
  return cfg, dataset, setup, target


def load_trained_state(workdir: str):
  """(cfg, dataset, setup, state) of a finished run, weights from its folder."""
  read_config(workdir)                           # a run folder before anything loads
  weights = os.path.join(workdir, run_files.FINAL_STATE)
  if not os.path.exists(weights):
    raise InputError(f'{weights}: no final weights (a run writes them when it ends; '
                     'this one did not end or predates them)')
  cfg, dataset, setup, target = run_setup(workdir)
  return cfg, dataset, setup, load(workdir, target)


def pool(tokens, valid):
  """Per-image feature (N, D): the mean over all tokens (N, T, D), or over the
  valid ones (`valid` (N, T) bool)."""
  if valid is None:
    return tokens.mean(1)
  w = valid[..., None].astype(np.float64)
  return (tokens * w).sum(1) / np.maximum(w.sum(1), 1.0)


def validity(setup, images) -> Optional[np.ndarray]:
  """(N, T) token validity of padded colour-id images, else None."""
  if not setup.padded:
    return None
  return np.asarray(model.token_validity(images, setup.cfg.model.patch_size))


def encoder_fn(setup):
  """jit((params, images) -> tokens (B, T, D)): an encoder on whole images."""
  patch = setup.cfg.model.patch_size

  def encode(params, images):
    valid = model.token_validity(images, patch) if setup.padded else None
    return setup.encoder.apply(params, images, None, valid)

  return jax.jit(encode)                         # one compile per batch shape


def in_batches(encode, params, images, batch=BATCH, pool_fn=None):
  """encode(params, images) `batch` images at a time, concatenated: tokens
  (N, T, D), or with `pool_fn` (tokens, first index -> rows) each batch's
  rows (so the tokens are never all held at once)."""
  out = []
  for i in range(0, len(images), batch):
    toks = np.asarray(encode(params, images[i:i + batch]))
    out.append(toks if pool_fn is None else pool_fn(toks, i))
  return np.concatenate(out)


def label_sets(ds) -> Dict[str, tuple]:
  """{name: (train labels, val labels)} of a dataset: its classes
  ('label'), or, for unlabelled colour-id grids (ARC), the grid properties."""
  if ds.train_labels is not None and ds.val_labels is not None:
    return {'label': (ds.train_labels, ds.val_labels)}
  from jepa_jax.data import grid_properties  # noqa: PLC0415
  tr = grid_properties.grid_properties(ds.train_images)
  va = grid_properties.grid_properties(ds.val_images)
  return {name: (tr[name], va[name]) for name in grid_properties.NAMES}


@dataclasses.dataclass(frozen=True)
class Embeddings:
  """An encoder's output on N images: `pooled` (N, D) per image, `tokens`
  (N, T, D) per patch token (None when not asked for), `valid` (N, T) bool
  token validity of padded data (else None)."""
  pooled: np.ndarray
  tokens: Optional[np.ndarray]
  valid: Optional[np.ndarray]


class TrainedRun:
  """A finished run: `config`, `dataset`, `setup` (`step.Setup`), `state`
  (the final weights: 'params', 'target_params', with VQ 'vq' and
  'vq_params'); `encode`, `codes`, `quantizer`, `codebook` (module docstring)."""

  def __init__(self, workdir: str, config, dataset, setup, state: Dict[str, Any]):
    self.workdir, self.config, self.dataset = workdir, config, dataset
    self.setup, self.state = setup, state
    self._encode = encoder_fn(setup)

  @property
  def quantizer(self):
    """The quantizer's static settings (`quantizer_spec.Spec`), None without VQ."""
    return self.setup.quantizer if self.setup.vq_enabled else None

  @property
  def codebook(self) -> Optional[np.ndarray]:
    """The codes E (K, d) tokens are assigned to, in the quantizer space;
    None without VQ or for FSQ (a fixed grid, no codebook)."""
    spec = self.quantizer
    if spec is None or not spec.has_state:
      return None
    return np.asarray(quantizer_lib.codebook(spec, self.state['vq'].codebook,
                                             self.state.get('vq_params')))

  def params(self, encoder: str = 'context'):
    """The parameters of the 'context' or the 'target' (EMA) encoder."""
    if encoder not in ENCODERS:
      raise InputError(f'encoder={encoder!r}: one of {", ".join(ENCODERS)}')
    return self.state['params']['encoder'] if encoder == 'context' else \
        self.state['target_params']

  def encode(self, images, encoder: str = 'context', tokens: bool = True,
             batch: int = BATCH) -> Embeddings:
    """`Embeddings` of `images` (N, H, W, C) by the context or target encoder;
    tokens=False keeps only the pooled features (less memory)."""
    params, valid = self.params(encoder), validity(self.setup, images)
    if tokens:
      toks = in_batches(self._encode, params, images, batch)
      return Embeddings(pool(toks, valid), toks, valid)
    pooled = in_batches(self._encode, params, images, batch, pool_fn=lambda t, i: pool(
        t, None if valid is None else valid[i:i + len(t)]))
    return Embeddings(pooled, None, valid)

  def codes(self, images, encoder: str = 'context', batch: int = BATCH) -> np.ndarray:
    """(N, T) int32: the code of every token of `images` by the 'context'
    encoder (the tokens the quantizer's layer sees) or the 'target' (EMA)
    encoder (the tokens a codebook beside the encoder learns from;
    `vq.update_source`); -1 at padding tokens. InputError without VQ."""
    if self.quantizer is None:
      raise InputError(f'{self.workdir}: the run has no VQ layer (vq.enabled is False)')
    spec, vq_state, vq_params = self.quantizer, self.state.get('vq'), self.state.get('vq_params')
    assign = jax.jit(lambda t: quantizer_lib.assign(spec, vq_state, vq_params, t))
    params, out = self.params(encoder), []
    for i in range(0, len(images), batch):
      out.append(np.asarray(assign(self._encode(params, images[i:i + batch]))))
    codes = np.concatenate(out).astype(np.int32)
    valid = validity(self.setup, images)
    return codes if valid is None else np.where(valid, codes, -1)


def load_run(workdir: str) -> TrainedRun:
  """The finished run in `workdir` (module docstring); InputError naming the
  folder or file when it is not a run or has no final weights."""
  cfg, dataset, setup, state = load_trained_state(workdir)
  return TrainedRun(workdir, cfg, dataset, setup, state)
