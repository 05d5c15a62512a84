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

The trainables are {'params': params} in EMA mode and
{'params': params, 'codebook': vq.codebook} in gradient mode
(`config.vq.ema_decay=None`), plus 'vq_params' when present: EMA versus
gradient VQ is only a question of which tree the optimizer sees and which VQ
update function the step calls. The quantizer layer (`jepa_jax.quantizer`)
does the rest of what `config.vq` selects; with its options off it is
exactly `vq.quantize`.

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
from typing import Any, Callable, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jepa_jax import anticollapse as ac
from jepa_jax import config_checks
from jepa_jax import data as data_lib
from jepa_jax import losses
from jepa_jax import masking
from jepa_jax import metrics as metrics_lib
from jepa_jax import model as model_lib
from jepa_jax import quantizer as quantizer_lib
from jepa_jax import vq as vq_lib
from jepa_jax.errors import ConfigError

# Loss components logged per epoch as train_<name>_mean / val_<name>_mean.
LOSS_COMPONENTS = ('loss', 'infonce', 'sigreg', 'invariance', 'relational',
                   'relational_context', 'commitment', 'codebook', 'entropy')


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything static about a run: derived once from config and data."""
  cfg: Any
  grid: tuple
  encoder: nn.Module
  predictor: nn.Module
  tx: optax.GradientTransformation
  lr_schedule: Callable
  steps_per_epoch: int
  total_steps: int
  quantizer: Any = None     # quantizer.Spec, None without VQ
  warmup_steps: int = 0     # learning-rate warm-up

  @property
  def vq_enabled(self) -> bool:
    return bool(self.cfg.vq.enabled)

  @property
  def gradient_vq(self) -> bool:
    """The codebook rows are trainables (gradient mode, not SimVQ)."""
    return self.vq_enabled and self.quantizer.codebook_trainable

  @property
  def padded(self) -> bool:
    """Colour-id data with padding: token validity comes from the images."""
    return self.cfg.model.patch_embed == 'colour'


FREEZABLE = ('encoder', 'target_encoder', 'predictor', 'temperature')


def frozen_groups(cfg) -> tuple:
  return tuple(cfg.train.get('frozen', ()) or ())


def _frozen_params(cfg) -> tuple:
  """The frozen subtrees of params (target_encoder is not in params)."""
  return tuple(g for g in frozen_groups(cfg) if g != 'target_encoder')


def _freeze_labels(frozen):
  """optax labels: 'frozen' for trainables['params'][g], g in frozen; else 'train'."""
  def labels(trainables):
    def label(path, _):
      names = [getattr(p, 'key', None) for p in path[:2]]
      return 'frozen' if names[0] == 'params' and names[1] in frozen else 'train'
    return jax.tree_util.tree_map_with_path(label, trainables)
  return labels


def _weight_decay_mask(trainables):
  """Decay only weight matrices/kernels; never biases, norms, the temperature,
  the mask token, the codebook or the SimVQ map (the codebook's factor)."""
  def keep(path, leaf):
    names = [getattr(p, 'key', '') for p in path]
    return leaf.ndim >= 2 and 'codebook' not in names and 'simvq_map' not in names
  return jax.tree_util.tree_map_with_path(keep, trainables)


def _codebook_labels(frozen):
  """optax labels: 'codebook' for trainables['codebook'] and ['vq_params'],
  'frozen' for the frozen subtrees of params, else 'train'."""
  def labels(trainables):
    def label(path, _):
      names = [getattr(p, 'key', None) for p in path[:2]]
      if names[0] in ('codebook', 'vq_params'):
        return 'codebook'
      return 'frozen' if names[0] == 'params' and names[1] in frozen else 'train'
    return jax.tree_util.tree_map_with_path(label, trainables)
  return labels


def _make_tx(cfg, schedule, warmup: int, decay_steps: int):
  """The optimizer: global-norm clipping, then AdamW on the warm-up cosine
  schedule; frozen groups get `set_to_zero`.

  `vq.codebook_learning_rate` (the reference's Option C: "may need lower
  learning rate for codebook"): the gradient-trained codebook and the
  quantizer's own trainables (`vq_params`) get their own AdamW whose schedule
  is the same warm-up cosine scaled to that peak (end value
  min_learning_rate x codebook_learning_rate / learning_rate); the clipping
  stays global. None (default): the original single optimizer, unchanged.
  """
  def adamw(sched):
    return optax.adamw(sched, weight_decay=cfg.train.weight_decay, mask=_weight_decay_mask)

  clip = optax.clip_by_global_norm(cfg.train.grad_clip_norm)
  frozen = _frozen_params(cfg)
  codebook_lr = cfg.vq.get('codebook_learning_rate', None)
  if codebook_lr is None:
    tx = optax.chain(clip, adamw(schedule))
    if frozen:
      tx = optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()},
                                 _freeze_labels(frozen))
    return tx
  ratio = codebook_lr / cfg.train.learning_rate
  codebook_schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=codebook_lr, warmup_steps=warmup,
      decay_steps=decay_steps, end_value=cfg.train.min_learning_rate * ratio)
  transforms = {'train': adamw(schedule), 'codebook': adamw(codebook_schedule),
                'frozen': optax.set_to_zero()}
  return optax.chain(clip, optax.multi_transform(transforms, _codebook_labels(frozen)))


def make_setup(cfg, dataset: data_lib.Dataset) -> Setup:
  grid = config_checks.check_against_data(cfg, dataset.image_shape, dataset.num_colours)
  n_train, n_val = len(dataset.train_images), len(dataset.val_images)
  if cfg.train.batch_size > n_train:
    raise ConfigError(
        'train.batch_size', cfg.train.batch_size,
        f'larger than the {n_train} training samples of {cfg.data.name!r}')
  if n_val < 2:
    raise ConfigError('data.val_fraction', cfg.data.val_fraction,
                                 f'leaves {n_val} validation samples (need >= 2)')
  spe = data_lib.steps_per_epoch(n_train, cfg.train.batch_size,
                                 cfg.train.steps_per_epoch)
  total = spe * cfg.train.num_epochs
  warmup = min(int(round(cfg.train.warmup_epochs * spe)), max(total - 1, 0))
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.train.learning_rate, warmup_steps=warmup,
      decay_steps=max(total, warmup + 1), end_value=cfg.train.min_learning_rate)
  tx = _make_tx(cfg, schedule, warmup, max(total, warmup + 1))
  return Setup(cfg=cfg, grid=grid, encoder=model_lib.make_encoder(cfg.model),
               predictor=model_lib.make_predictor(cfg.model, grid), tx=tx,
               lr_schedule=schedule, steps_per_epoch=spe, total_steps=total,
               warmup_steps=warmup,
               quantizer=quantizer_lib.make_spec(cfg))


def trainables_of(setup: Setup, state) -> Dict[str, Any]:
  t = {'params': state['params']}
  if setup.gradient_vq:
    t['codebook'] = state['vq'].codebook
  if 'vq_params' in state:
    t['vq_params'] = state['vq_params']
  return t


def init_state(setup: Setup, image_shape, seed: int):
  """Fresh train state (jitted, so every leaf owns its buffer and can be donated)."""
  cfg = setup.cfg

  def init(rng):
    k_enc, k_pred, k_vq, k_train = jax.random.split(rng, 4)
    images = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
    m, t = cfg.masking.num_target_blocks, int(np.prod(cfg.masking.target_block_size))
    ctx_idx = jnp.zeros((1, cfg.masking.num_context_tokens), jnp.int32)
    tgt_idx = jnp.zeros((1, m, t), jnp.int32)
    enc = setup.encoder.init(k_enc, images, ctx_idx)
    ctx = jnp.zeros((1, cfg.masking.num_context_tokens, cfg.model.embed_dim))
    pred = setup.predictor.init(k_pred, ctx, ctx_idx, tgt_idx)
    params = {'encoder': enc, 'predictor': pred,
              'temperature': jnp.asarray(cfg.loss.temperature_init, jnp.float32)}
    state = {'step': jnp.zeros((), jnp.int32), 'params': params,
             'target_params': jax.tree.map(lambda x: x + 0.0, enc),
             'rng': k_train}
    if setup.vq_enabled:
      spec = setup.quantizer
      if spec.has_state:
        state['vq'] = quantizer_lib.init_state(spec, k_vq, cfg.vq.get('reanchor', False))
      vq_params = quantizer_lib.init_params(spec, jax.random.fold_in(k_vq, 1))
      if vq_params:
        state['vq_params'] = vq_params
    state['opt_state'] = setup.tx.init(trainables_of(setup, state))
    return state

  return jax.jit(init)(jax.random.PRNGKey(seed))


def _step_keys(rng, step):
  return jax.random.split(jax.random.fold_in(rng, step), 3)


def _gather_fn(axis_name):
  """x (b, ...) -> the global batch (n_dev * b, ...) in device order, or x itself."""
  if axis_name is None:
    return lambda x: x
  return lambda x: jax.lax.all_gather(x, axis_name, tiled=True)


def _pool(x, weights, axes):
  """Mean of x over `axes`; with weights (x's shape without the last axis),
  sum w x / max(sum w, tiny) (0 where every weight is 0)."""
  if weights is None:
    return x.mean(axes)
  w = weights.astype(x.dtype)[..., None]
  return (w * x).sum(axes) / jnp.maximum(w.sum(axes), jnp.finfo(x.dtype).tiny)


def _flat(weights):
  return None if weights is None else weights.reshape(-1).astype(jnp.float32)


def _w(weights):
  """Keyword arguments passing `weights` to a loss; none on the unweighted path."""
  return {} if weights is None else {'weights': weights}


def make_loss_fn(setup: Setup, axis_name=None):
  """loss_fn(trainables, state, images, sample_ids, keys) -> (total, aux).

  total = w_nce·InfoNCE(pred, tgt; τ) + w_sig·SIGReg(z) + w_inv·MSE(pred, tgt)
        + w_rel·Rel(pool(pred), pool(tgt)) + w_ctx·Rel(pool(z), pool(t_full))
        + β·commit(u, q) [+ codebook(u, q) in gradient mode / SimVQ]
        [+ w_ent·entropy(u, E)]
  where z are the context encoder's tokens, u = z in the quantizer space
  (u = z unless the config projects or normalises, see `quantizer`), q their
  quantized codes, E the codebook (the predictor sees the layer's output when
  VQ is on), t_full the target encoder's tokens of the whole image and tgt
  their target-block subset.

  Global batch: with `axis_name` (inside shard_map / pmap over a data axis)
  the forward pass runs on the device's rows, then z, q, pred, tgt and
  pool(t_full) are all-gathered (tiled, device order = global batch order)
  and every loss is computed on the gathered GLOBAL batch, so InfoNCE
  negatives, SIGReg's empirical characteristic function and the relational
  similarity matrices do not depend on the device count. Every replica then
  holds the same total; the transpose of all_gather sums the replicas'
  cotangents, so each replica's gradient is n_dev × its rows' share and the
  caller's pmean over the axis gives exactly ∇total. With axis_name=None the
  gathers are the identity (the single-device path).
  aux: 'u' / 'codes' are the device's rows, 'u_global' the gathered u
  (quantizer space; None without VQ).

  Padded data: every term is restricted to valid rows through 0/1 weights
  (context slots: ctx_valid, targets: tgt_valid, pooled samples: at least
  one valid row; the flags are gathered with the rows). aux['ctx_weights']
  / aux['ctx_weights_global'] carry the device's / gathered context flags to
  the VQ update (None for pixel data).
  """
  cfg = setup.cfg
  lc = cfg.loss
  gather = _gather_fn(axis_name)

  frozen = _frozen_params(cfg)

  def loss_fn(trainables, state, images, sample_ids, keys):
    params = {k: jax.lax.stop_gradient(v) if k in frozen else v
              for k, v in trainables['params'].items()}
    mask_key, sig_key = keys[0], keys[1]
    if setup.padded:
      valid = model_lib.token_validity(images, cfg.model.patch_size)   # (b, N)
      ctx_idx, tgt_idx, ctx_valid, tgt_valid = masking.sample_masks_valid(
          mask_key, sample_ids, setup.grid, cfg.masking, valid)
    else:
      valid = ctx_valid = tgt_valid = None
      ctx_idx, tgt_idx = masking.sample_masks(mask_key, sample_ids, setup.grid,
                                              cfg.masking)
    z = setup.encoder.apply(params['encoder'], images, ctx_idx, ctx_valid)  # (b, K, D)
    t_full = jax.lax.stop_gradient(
        setup.encoder.apply(state['target_params'], images, None, valid))  # (b, N, D)
    b, m, t = tgt_idx.shape
    tgt = model_lib.gather_tokens(t_full, tgt_idx.reshape(b, m * t))
    tgt = tgt.reshape(b, m, t, -1)                                     # (b, M, T, D)

    parts = {}
    pred_in, codes = z, None
    spec = setup.quantizer
    if setup.vq_enabled:
      raw = None
      if spec.has_state:
        raw = trainables['codebook'] if setup.gradient_vq else state['vq'].codebook
      pred_in, codes, vq_aux = quantizer_lib.quantize(
          spec, raw, trainables.get('vq_params'), z)
    pred = setup.predictor.apply(params['predictor'], pred_in, ctx_idx, tgt_idx,
                                 ctx_valid, tgt_valid)

    # Global batch (identity on one device): (B, ...) from here on.
    z_g, pred_g, tgt_g = gather(z), gather(pred), gather(tgt)
    t_pool_g = gather(_pool(t_full, valid, 1))                         # (B, D)
    cv_g = None if ctx_valid is None else gather(ctx_valid)            # (B, K)
    tv_g = None if tgt_valid is None else gather(tgt_valid)            # (B, M, T)
    w_ctx, w_tgt = _flat(cv_g), _flat(tv_g)
    u_g = None
    if setup.vq_enabled:
      u_g = gather(vq_aux['u'])
      q_g = gather(vq_aux['quantized'])
      if spec.kind == 'vq':       # FSQ has no codebook to commit to
        parts['commitment'] = losses.commitment_loss(
            u_g, q_g, reduction=cfg.vq.loss_reduction, **_w(w_ctx))
      if spec.codebook_loss:
        parts['codebook'] = losses.codebook_loss(
            u_g, q_g, reduction=cfg.vq.loss_reduction, **_w(w_ctx))
      if lc.get('entropy_weight', 0.0) > 0:
        parts['entropy'] = ac.assignment_entropy_loss(
            u_g, vq_aux['codebook'], lc.entropy_temperature, **_w(w_ctx))

    d = z.shape[-1]
    p_flat, t_flat = pred_g.reshape(-1, d), tgt_g.reshape(-1, d)
    parts['infonce'] = losses.infonce_loss(p_flat, t_flat, params['temperature'],
                                           **_w(w_tgt))
    parts['sigreg'] = losses.sigreg_loss(
        z_g.reshape(-1, d), sig_key, num_slices=lc.sigreg_num_slices,
        num_points=lc.sigreg_num_points, **_w(w_ctx))
    parts['invariance'] = losses.invariance_loss(p_flat, t_flat, **_w(w_tgt))
    parts['relational'] = losses.relational_loss(
        _pool(pred_g, tv_g, (1, 2)), _pool(tgt_g, tv_g, (1, 2)),
        **_w(None if tv_g is None else _flat(tv_g.any((1, 2)))))
    parts['relational_context'] = losses.relational_loss(
        _pool(z_g, cv_g, 1), t_pool_g,
        **_w(None if cv_g is None else _flat(cv_g.any(1))))

    weights = {'infonce': lc.infonce_weight, 'sigreg': lc.sigreg_weight,
               'invariance': lc.invariance_weight,
               'relational': lc.relational_loss.weight,
               'relational_context': lc.relational_loss.context_self_weight,
               'commitment': cfg.vq.commitment_cost, 'codebook': 1.0,
               'entropy': lc.get('entropy_weight', 0.0)}
    total = sum(weights[k] * v for k, v in parts.items())
    sg = jax.lax.stop_gradient
    aux = {'parts': parts, 'codes': codes,
           'u': sg(vq_aux['u']) if setup.vq_enabled else None,
           'u_global': None if u_g is None else sg(u_g),
           'ctx_weights': _flat(ctx_valid), 'ctx_weights_global': w_ctx}
    return total, aux

  return loss_fn


def make_train_step(setup: Setup, axis_name=None):
  """train_step(state, images, sample_ids) -> (state, metrics); pure, jittable.

  axis_name=None: one device holds the whole batch (plain jit). Otherwise the
  function is the per-device body of a data-parallel step (wrapped by
  `jepa_jax.parallel` in shard_map or pmap) and its explicit collectives over
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
  cfg = setup.cfg
  loss_fn = make_loss_fn(setup, axis_name)
  frozen = _frozen_params(cfg)
  freeze_target = 'target_encoder' in frozen_groups(cfg)

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
    params['temperature'] = jnp.clip(params['temperature'], cfg.loss.temperature_min,
                                     cfg.loss.temperature_max)
    for group in frozen:                     # bit-identical, whatever the update
      params[group] = state['params'][group]
    momentum = model_lib.momentum_schedule(step, setup.total_steps,
                                           cfg.train.ema_momentum_start,
                                           cfg.train.ema_momentum_end)
    target = state['target_params'] if freeze_target else model_lib.ema_params(
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
      vq_state = state['vq']
      if setup.gradient_vq:
        vq_state = vq_state.replace(codebook=trainables['codebook'])
      refresh_tokens = None
      if cfg.vq.get('refresh_source', 'context') == 'full':
        def refresh_tokens():
          """The updated context encoder's tokens of the whole images of the
          global batch (all-gathered, as u_global), in the quantizer space;
          valid tokens weighted 1, padding 0."""
          gather = _gather_fn(axis_name)
          valid = (model_lib.token_validity(images, cfg.model.patch_size)
                   if setup.padded else None)
          toks = setup.encoder.apply(params['encoder'], images, None, valid)
          u = quantizer_lib.encode(setup.quantizer, new_state.get('vq_params'), toks)
          return (gather(jax.lax.stop_gradient(u)),
                  None if valid is None else _flat(gather(valid)))
      new_state['vq'] = quantizer_lib.update_state(
          setup.quantizer, cfg.vq, vq_state, u=aux['u'], codes=aux['codes'],
          u_global=aux['u_global'], step=step, refresh_key=keys[2],
          axis_name=axis_name, weights=aux['ctx_weights'],
          weights_global=aux['ctx_weights_global'], refresh_tokens=refresh_tokens,
          ema_decay=_ema_decay(setup, step))
    if setup.vq_enabled:
      metrics['vq_batch_usage_ratio'] = vq_lib.usage_stats(
          aux['codes'], setup.quantizer.num_codes, axis_name=axis_name,
          weights=aux['ctx_weights'])['vq_usage_ratio']
    return new_state, metrics

  return train_step


def _ema_decay(setup: Setup, step):
  """This step's EMA codebook decay: `vq.ema_decay`, or with
  `vq.ema_decay_schedule='learning_rate'` its step size scaled by the
  learning rate's share of its peak after warm-up (`vq.scheduled_decay`)."""
  v = setup.cfg.vq
  if v.get('ema_decay_schedule', 'constant') != 'learning_rate' or v.ema_decay is None:
    return None
  rate = setup.lr_schedule(step) / setup.cfg.train.learning_rate
  rate = jnp.where(step < setup.warmup_steps, 1.0, rate)
  return vq_lib.scheduled_decay(v.ema_decay, rate)


def make_eval_step(setup: Setup, seed: int):
  """eval_step(state, images, sample_ids) -> loss components. Changes nothing.

  Masks and SIGReg slices come from a fixed key, so every epoch's validation
  loss is measured on the same masked views.
  """
  loss_fn = make_loss_fn(setup)
  eval_keys = jax.random.split(jax.random.PRNGKey(seed + 1_000_003), 3)

  def eval_step(state, images, sample_ids):
    total, aux = loss_fn(trainables_of(setup, state), state, images, sample_ids,
                         eval_keys)
    out = {k: aux['parts'].get(k, jnp.zeros(())) for k in LOSS_COMPONENTS[1:]}
    out['loss'] = total
    return out

  return eval_step
