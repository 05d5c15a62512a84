"""Train state, the jitted step functions and their static setup.

The train state is a plain dict pytree:

  {'step':          int32 scalar, optimizer steps taken,
   'params':        {'encoder', 'predictor', 'temperature'} (trainable),
   'target_params': EMA copy of params['encoder'] (the target encoder),
   'opt_state':     optax state of the trainables,
   'vq':            vq.VQState (only when config.vq.enabled and the
                    quantizer has a codebook, i.e. not FSQ),
   'vq_params':     the quantizer's own trainables (projections, SimVQ map;
                    only when the config asks for them, see `quantizer`),
   'rng':           PRNGKey; the step's key is fold_in(rng, step)}

Setup: `make_setup` is where the config is read, once, into a `Setup` (the
models, the optimizer, the schedule, `objective.LossSpec`, the quantizer's
`quantizer.Spec`); the step functions and the loss (`objective`) read only
the Setup. A loss weight travels in four hops, e.g. the commitment cost:
  1. `vq.commitment_cost` in a config file (jepa_jax/config/base.py's 0.3, or the
     file's own: configs/gentle.py's 0.15);
  2. `quantizer_spec.make_spec` (called by `make_setup`) copies it into
     `Spec.commitment_cost`;
  3. `objective.make_loss_fn` weighs each `quantizer.losses` term by
     `Spec.loss_weights` ('commitment': commitment_cost) in the total;
  4. that term is `losses.commitment_loss(u, q)`.

The trainables are {'params': params} plus the quantizer's
(`quantizer.trainables`: the codebook rows in gradient mode,
`config.vq.ema_decay=None`, and 'vq_params' when present): EMA versus
gradient VQ is only a question of which tree the optimizer sees and which VQ
update the step runs, both decided by the quantizer's Spec. The quantizer
layer (`jepa_jax.vq.quantizer`) does the rest of what `config.vq` selects; with
its options off it is exactly `vq.quantize`.

Frozen groups (`config.train.frozen`, used by stage 2 of a two-stage run):
'encoder', 'predictor' and 'temperature' name subtrees of params; frozen ones
get no gradient (stop_gradient), no update and no weight decay (their optax
label maps to `set_to_zero`) and are carried over bit for bit. 'target_encoder'
frozen skips the EMA update of target_params.

Step-based randomness: key = fold_in(state['rng'], step) is split into the
mask key (per-sample keys fold in the global sample index), the SIGReg slice
key and the refresh key, so a step is a pure function of (state, batch).

Padded categorical data (`model.patch_embed='colour'`, e.g. ARC): token
validity is derived from the images inside the step (`model.token_validity`,
padding cells < 0), masks pick context and targets among valid tokens only
(`masking.sample_masks_valid`) and every loss, VQ update and metric weighs
its rows by their validity, so padding is never context, target, negative,
or a VQ usage. Pixel data takes the unweighted path, unchanged.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jepa_jax import data as data_lib
from jepa_jax.config import checks as config_checks
from jepa_jax.errors import ConfigError
from jepa_jax.model import masking
from jepa_jax.model import vit as model_lib
from jepa_jax.objective import multiview
from jepa_jax.objective import prototypes
from jepa_jax.objective import terms as objective
from jepa_jax.vq import codebook as vq_lib
from jepa_jax.vq import quantizer as quantizer_lib

# Loss components logged per epoch as train_<name>_mean / val_<name>_mean.
LOSS_COMPONENTS = ('loss', 'infonce', 'sigreg', 'invariance', 'relational',
                   'relational_context', 'global', 'global_infonce', 'global_dino',
                   'capi', 'capi_clustering', 'pixel', 'views_pred', 'views_sigreg',
                   'commitment', 'codebook', 'entropy')


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything static about a run: derived once from config and data by
  `make_setup`; the step functions read these fields, never the config."""
  cfg: Any                  # the config it was made from, for the trainer's tools
  grid: tuple
  encoder: nn.Module
  predictor: nn.Module
  tx: optax.GradientTransformation
  lr_schedule: Callable
  peak_learning_rate: float
  warmup_steps: int         # learning-rate warm-up
  steps_per_epoch: int
  total_steps: int
  masking: Any              # config.masking (block sizes, context size)
  loss: objective.LossSpec
  frozen: Tuple[str, ...]   # frozen groups of params (config.train.frozen)
  freeze_target: bool       # 'target_encoder' frozen: no EMA update
  momentum: Tuple[float, float]  # target-encoder EMA momentum, start and end
  quantizer: Any = None     # quantizer.Spec, None without VQ
  context_augment: str = ''  # data.context_augment: the context view's augmentation
  crop_area: Tuple[float, float] = masking.CROP_AREA  # data.crop_area: its crops' area share
  target_augment: str = ''   # data.target_augment: the target view's ('' or 'colour')
  signature: str = ''       # the config and data sizes it was made from (`built`)

  @property
  def vq_enabled(self) -> bool:
    return self.quantizer is not None

  @property
  def padded(self) -> bool:
    """Colour-id data with padding: token validity comes from the images."""
    return self.encoder.patch_embed == 'colour'


def make_setup(cfg, dataset: data_lib.Dataset) -> Setup:
  """The Setup of a (validated) config on `dataset`: the composition layer."""
  grid = config_checks.check_against_data(cfg, dataset.image_shape, dataset.num_colours)
  tc = cfg.train
  n_train, n_val = len(dataset.train_images), len(dataset.val_images)
  if tc.batch_size > n_train:
    raise ConfigError('train.batch_size', tc.batch_size,
                      f'larger than the {n_train} training samples of {cfg.data.name!r}')
  if n_val < 2:
    raise ConfigError('data.val_fraction', cfg.data.val_fraction,
                      f'leaves {n_val} validation samples (need >= 2)')
  side = min(dataset.image_shape[:2])
  if cfg.loss.views and cfg.loss.views_local and cfg.loss.views_local_size > side:
    raise ConfigError('loss.views_local_size', cfg.loss.views_local_size,
                      f'larger than the images ({side} pixels a side)')
  spe = data_lib.steps_per_epoch(n_train, tc.batch_size, tc.steps_per_epoch)
  total = spe * tc.num_epochs
  warmup = min(int(round(tc.warmup_epochs * spe)), max(total - 1, 0))
  decay = max(total, warmup + 1)
  schedule = objective.warmup_cosine(tc.learning_rate, tc.min_learning_rate, warmup, decay)
  codebook_lr = cfg.vq.codebook_learning_rate      # Option C: its own schedule
  codebook_schedule = None if codebook_lr is None else objective.warmup_cosine(
      codebook_lr, tc.min_learning_rate * (codebook_lr / tc.learning_rate), warmup, decay)
  frozen = tuple(g for g in tc.frozen if g != 'target_encoder')
  tx = objective.make_tx(schedule, weight_decay=tc.weight_decay,
                         grad_clip_norm=tc.grad_clip_norm, frozen=frozen,
                         codebook_schedule=codebook_schedule)
  loss = objective.LossSpec.from_config(cfg.loss)
  return Setup(cfg=cfg, grid=grid,
               encoder=model_lib.make_encoder(cfg.model, loss.dino_prototypes),
               predictor=model_lib.make_predictor(cfg.model, grid), tx=tx,
               lr_schedule=schedule, peak_learning_rate=tc.learning_rate,
               warmup_steps=warmup, steps_per_epoch=spe, total_steps=total,
               masking=cfg.masking.copy_and_resolve_references(), loss=loss, frozen=frozen,
               freeze_target='target_encoder' in tc.frozen,
               momentum=(tc.ema_momentum_start, tc.ema_momentum_end),
               quantizer=quantizer_lib.make_spec(cfg),
               context_augment=cfg.data.context_augment,
               crop_area=tuple(float(a) for a in cfg.data.crop_area),
               target_augment=cfg.data.target_augment,
               signature=json.dumps([cfg.to_dict(), list(dataset.image_shape), dataset.num_colours,
                                     n_train, n_val], sort_keys=True, default=repr))


def trainables_of(setup: Setup, state) -> Dict[str, Any]:
  """What the optimizer updates: params and the quantizer's trainables."""
  t = {'params': state['params']}
  if setup.vq_enabled:
    t.update(quantizer_lib.trainables(setup.quantizer, state.get('vq'),
                                      state.get('vq_params')))
  return t


_BUILT: Dict[tuple, Any] = {}      # what `built` made, by Setup signature and key
BUILT_MAX = 64                     # bounded: a sweep of many configs in one process


def built(setup: Setup, key: tuple, build: Callable[[], Any]):
  """build() once per (setup.signature, key) in this process, then the same
  object again: a setup made again from an equal config and data (a resume,
  `evaluate`'s baselines, the tests) gets the same step function back, and
  JAX's in-memory caches of its traced, lowered and compiled programs hit
  where a new closure would be traced and lowered again. A Setup without a
  signature (made by hand) is never memoised. As with any jitted function,
  what the step calls is read once, when traced: a test that patches it
  gives the patch a memo of its own (monkeypatch `_BUILT` with {})."""
  if not setup.signature:
    return build()
  key = (setup.signature,) + tuple(key)
  if key not in _BUILT:
    if len(_BUILT) >= BUILT_MAX:
      _BUILT.clear()
    _BUILT[key] = build()
  return _BUILT[key]


def init_state(setup: Setup, image_shape, seed: int):
  """Fresh train state (jitted, so every leaf owns its buffer and can be
  donated); its program is `built` once per setup."""
  image_shape = tuple(image_shape)
  init = built(setup, ('init', image_shape), lambda: jax.jit(_init_fn(setup, image_shape)))
  return init(jax.random.PRNGKey(seed))


def _init_fn(setup: Setup, image_shape):
  """init(rng) -> the fresh train state of `setup` (`init_state`)."""
  mc = setup.masking

  def init(rng):
    k_enc, k_pred, k_vq, k_train = jax.random.split(rng, 4)
    images = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
    m, t = mc.num_target_blocks, int(np.prod(mc.target_block_size))
    ctx_idx = jnp.zeros((1, mc.num_context_tokens), jnp.int32)
    tgt_idx = jnp.zeros((1, m, t), jnp.int32)
    enc = setup.encoder.init(k_enc, images, ctx_idx,
                             with_head=bool(setup.encoder.head_prototypes))
    ctx = jnp.zeros((1, mc.num_context_tokens, setup.encoder.embed_dim))
    pred = setup.predictor.init(k_pred, ctx, ctx_idx, tgt_idx)
    params = {'encoder': enc, 'predictor': pred,
              'temperature': jnp.asarray(setup.loss.temperature_init, jnp.float32)}
    if setup.loss.pixel:       # a linear head: predictor output -> patch pixels
      e = setup.encoder
      out = e.patch_size ** 2 * image_shape[-1]
      params['pixel_head'] = {
          'kernel': nn.initializers.xavier_uniform()(jax.random.fold_in(k_pred, 2),
                                                     (e.embed_dim, out)),
          'bias': jnp.zeros((out,), jnp.float32)}
    if setup.loss.views:       # LeJEPA's projector on the mean token
      params['projector'] = multiview.init_projector(
          jax.random.fold_in(k_pred, 3), setup.encoder.embed_dim, setup.loss.views_projector)
    if setup.loss.capi:
      params['capi'] = prototypes.init_capi(jax.random.fold_in(k_pred, 1),
                                            setup.encoder.embed_dim, setup.loss.capi_clusters)
    state = {'step': jnp.zeros((), jnp.int32), 'params': params,
             'target_params': jax.tree.map(lambda x: x + 0.0, enc),
             'rng': k_train}
    if setup.vq_enabled:
      spec = setup.quantizer
      if spec.has_state:
        state['vq'] = quantizer_lib.init_state(spec, k_vq)
      vq_params = quantizer_lib.init_params(spec, jax.random.fold_in(k_vq, 1))
      if vq_params:
        state['vq_params'] = vq_params
    state['opt_state'] = setup.tx.init(trainables_of(setup, state))
    return state

  return init


def _step_keys(rng, step):
  return jax.random.split(jax.random.fold_in(rng, step), 3)


def _refresh_tokens_fn(setup: Setup, encoder_params, vq_params, images, axis_name):
  """() -> the updated context encoder's tokens of the whole images of the
  global batch (all-gathered, as u_global), in the quantizer space, and their
  weights (valid tokens 1, padding 0; None for pixel data): what refresh
  draws from with `Refresh.full` (called inside the refresh branch only)."""
  def refresh_tokens():
    gather = objective.gather_fn(axis_name)
    valid = (model_lib.token_validity(images, setup.encoder.patch_size)
             if setup.padded else None)
    toks = setup.encoder.apply(encoder_params, images, None, valid)
    u = quantizer_lib.encode(setup.quantizer, vq_params, toks)
    return (gather(jax.lax.stop_gradient(u)),
            None if valid is None else objective.flat(gather(valid)))
  return refresh_tokens


def _new_vq_state(setup: Setup, state, new_state, trainables, aux, images, keys,
                  axis_name):
  """The codebook state after the step (`quantizer.update_state`)."""
  spec = setup.quantizer
  refresh_tokens = None
  if spec.refresh is not None and spec.refresh.full:
    refresh_tokens = _refresh_tokens_fn(setup, new_state['params']['encoder'],
                                        new_state.get('vq_params'), images, axis_name)
  return quantizer_lib.update_state(
      spec, quantizer_lib.with_trained(spec, state['vq'], trainables),
      u=aux['u'], codes=aux['codes'], u_global=aux['u_global'], step=state['step'],
      refresh_key=keys[2], axis_name=axis_name, weights=aux['ctx_weights'],
      weights_global=aux['ctx_weights_global'], refresh_tokens=refresh_tokens,
      ema_decay=_ema_decay(setup, state['step']),
      update_tokens=aux.get('update_tokens'), update_weights=aux.get('update_weights'),
      simvq_map=new_state['vq_params']['simvq_map'] if spec.simvq else None)


def _ema_decay(setup: Setup, step):
  """This step's EMA codebook decay: None (the Spec's `ema_decay`), or with
  `vq.ema_decay_schedule='learning_rate'` its step size scaled by the
  learning rate's share of its peak after warm-up (`vq.scheduled_decay`)."""
  spec = setup.quantizer
  if spec.ema_decay_schedule != 'learning_rate' or not spec.ema:
    return None
  rate = setup.lr_schedule(step) / setup.peak_learning_rate
  rate = jnp.where(step < setup.warmup_steps, 1.0, rate)
  return vq_lib.scheduled_decay(spec.ema_decay, rate)


def make_train_step(setup: Setup, axis_name=None):
  """train_step(state, images, sample_ids) -> (state, metrics); pure, jittable.

  axis_name=None: one device holds the whole batch (plain jit). Otherwise the
  function is the per-device body of a data-parallel step (wrapped by
  `jepa_jax.train.devices` in shard_map or pmap) and its explicit collectives over
  `axis_name` keep every replica identical:
    * losses on the all-gathered global batch (see `make_loss_fn`);
    * gradients pmean-ed (= ∇ of the global loss);
    * VQ EMA statistics n_k, s_k (or gradient-mode usage counts) psum-ed
      before the update;
    * refresh draws replacement rows of the gathered z with the shared step
      key, so every replica picks the same vectors;
    * SIGReg slices and masks come from the shared step key (masks fold in
      the global sample index);
    * metrics are global-batch values (usage from psum-ed counts).
  """
  return built(setup, ('train_step', axis_name), lambda: _train_step(setup, axis_name))


def _train_step(setup: Setup, axis_name):
  loss_fn = objective.make_loss_fn(setup, axis_name)
  lc = setup.loss

  def train_step(state, images, sample_ids):
    step = state['step']
    keys = _step_keys(state['rng'], step)
    trainables = trainables_of(setup, state)
    (total, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        trainables, state, images, sample_ids, keys)
    if axis_name is not None:
      grads = jax.lax.pmean(grads, axis_name)
    updates, opt_state = setup.tx.update(grads, state['opt_state'], trainables)
    trainables = optax.apply_updates(trainables, updates)
    params = dict(trainables['params'])
    # Projection after the update keeps τ in bounds without killing its gradient.
    params['temperature'] = jnp.clip(params['temperature'], lc.temperature_min,
                                     lc.temperature_max)
    for group in setup.frozen:               # bit-identical, whatever the update
      params[group] = state['params'][group]
    momentum = model_lib.momentum_schedule(step, setup.total_steps, *setup.momentum)
    target = state['target_params'] if setup.freeze_target else model_lib.ema_params(
        state['target_params'], params['encoder'], momentum)
    new_state = dict(state, step=step + 1, params=params, opt_state=opt_state,
                     target_params=target)
    metrics = {k: aux['parts'].get(k, jnp.zeros(())) for k in LOSS_COMPONENTS[1:]}
    metrics['loss'] = total
    metrics['temperature'] = params['temperature']
    metrics['learning_rate'] = setup.lr_schedule(step)
    metrics['grad_norm'] = optax.tree.norm(grads)
    if 'vq_params' in state:
      new_state['vq_params'] = trainables['vq_params']
    if setup.vq_enabled and setup.quantizer.has_state:
      new_state['vq'] = _new_vq_state(setup, state, new_state, trainables, aux,
                                      images, keys, axis_name)
    if setup.vq_enabled:
      metrics['vq_batch_usage_ratio'] = vq_lib.usage_stats(
          aux['codes'], setup.quantizer.num_codes, axis_name=axis_name,
          weights=aux['ctx_weights'])['vq_usage_ratio']
    return new_state, metrics

  return train_step


def make_eval_step(setup: Setup, seed: int, snap: bool = True):
  """eval_step(state, images, sample_ids) -> loss components. Changes nothing.

  Masks and SIGReg slices come from a fixed key, so every epoch's validation
  loss is measured on the same masked views. snap=False: the predictor sees
  the tokens without their snap to the nearest code (`objective.make_loss_fn`).
  """
  return built(setup, ('eval_step', seed, snap), lambda: _eval_step(setup, seed, snap))


def _eval_step(setup: Setup, seed: int, snap: bool):
  loss_fn = objective.make_loss_fn(setup, snap=snap)
  eval_keys = jax.random.split(jax.random.PRNGKey(seed + 1_000_003), 3)

  def eval_step(state, images, sample_ids):
    total, aux = loss_fn(trainables_of(setup, state), state, images, sample_ids,
                         eval_keys)
    out = {k: aux['parts'].get(k, jnp.zeros(())) for k in LOSS_COMPONENTS[1:]}
    out['loss'] = total
    return out

  return eval_step
