"""The training objective: the JEPA loss on the global batch, with the
quantizer layer's terms (`make_loss_fn`).

It reads only a `step.Setup` (the models, the grid, the masking, the
`LossSpec` defined here, the quantizer's `Spec`), never the config. Loss
terms and their formulas: `losses` (JEPA terms) and `quantizer.losses`
(commitment, codebook, entropy).

The optimizer of the trainables: global-norm clipping, then AdamW on a
warm-up cosine schedule; frozen parameter groups get no update.

The trainables are {'params': {'encoder', 'predictor', 'temperature'}} plus
the quantizer's ('codebook' in gradient mode, 'vq_params'; see
`quantizer.trainables`). Weight decay applies to weight matrices / kernels
only (never biases, norms, the temperature, the mask token, the codebook or
the SimVQ map).

Global batch (`make_loss_fn`): with `axis_name` (inside shard_map / pmap
over a data axis) the forward pass runs on the device's rows, then z, q, pred, tgt and
pool(t_full) are all-gathered (tiled, device order = global batch order)
and every loss is computed on the gathered GLOBAL batch, so InfoNCE
negatives, SIGReg's empirical characteristic function and the relational
similarity matrices do not depend on the device count. Every replica then
holds the same total; the transpose of all_gather sums the replicas'
cotangents, so each replica's gradient is n_dev × its rows' share and the
caller's pmean over the axis gives exactly ∇total. With axis_name=None the
gathers are the identity (the single-device path).

Padded data: every term is restricted to valid rows through 0/1 weights
(context slots: ctx_valid, targets: tgt_valid, pooled samples: at least
one valid row; the flags are gathered with the rows). aux['ctx_weights']
/ aux['ctx_weights_global'] carry the device's / gathered context flags to
the VQ update (None for pixel data).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import optax

from jepa_jax.model import masking
from jepa_jax.model import vit as model_lib
from jepa_jax.objective import losses
from jepa_jax.objective import multiview
from jepa_jax.objective import prototypes
from jepa_jax.vq import quantizer as quantizer_lib


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """The JEPA terms of the loss (`config.loss`): their weights, SIGReg's
  sampling and the learnable temperature's start and bounds."""
  infonce: float
  sigreg: float
  invariance: float
  relational: float
  relational_context: float
  sigreg_num_slices: int
  sigreg_num_points: int
  temperature_init: float
  temperature_min: float
  temperature_max: float
  global_: float = 0.0                # 'global': pooled context -> pooled target MSE
  global_infonce: float = 0.0         # 'global_infonce': the same pair, InfoNCE
  global_dino: float = 0.0            # 'global_dino': DINO on the pair's head scores
  dino_prototypes: int = 0            # the head's prototypes (0 without the term)
  dino_temperatures: Tuple[float, float] = (0.1, 0.04)   # student, teacher
  capi: float = 0.0                   # 'capi': predict the target tokens' clusters
  capi_clusters: int = 0              # their clusters (0 without the term)
  capi_temperatures: Tuple[float, float, float] = (0.12, 0.06, 0.12)  # student, target, clustering
  pixel: float = 0.0                  # 'pixel': MAE's target, the target patches' pixels
  sigreg_input: str = 'tokens'        # SIGReg on the context tokens or their image means
  target_layers: int = 1              # targets: the final norm's tokens, or data2vec's top K
  views: int = 0                      # > 0: LeJEPA's objective on that many views (`multiview`)
  views_lambda: float = 0.02          # its SIGReg weight lambda (prediction: 1 - lambda)
  views_projector: Tuple[int, ...] = ()   # its projector's layer widths
  views_local: int = 0                # its local views (`multiview`): how many,
  views_local_size: int = 16          # their side in pixels,
  views_local_area: Tuple[float, float] = (0.05, 0.3)   # their crops' area shares

  @classmethod
  def from_config(cls, lc) -> 'LossSpec':
    """From `lc`, a config's `loss` group."""
    rel = lc.relational_loss
    return cls(infonce=lc.infonce_weight, sigreg=lc.sigreg_weight,
               invariance=lc.invariance_weight, relational=rel.weight,
               relational_context=rel.context_self_weight,
               sigreg_num_slices=lc.sigreg_num_slices, sigreg_num_points=lc.sigreg_num_points,
               temperature_init=lc.temperature_init,
               temperature_min=lc.temperature_min, temperature_max=lc.temperature_max,
               global_=lc.global_weight, global_infonce=lc.global_infonce_weight,
               global_dino=lc.global_dino_weight,
               dino_prototypes=lc.dino_prototypes if lc.global_dino_weight else 0,
               dino_temperatures=(lc.dino_student_temperature, lc.dino_teacher_temperature),
               capi=lc.capi_weight, pixel=lc.pixel_weight,
               capi_clusters=lc.capi_clusters if lc.capi_weight else 0,
               capi_temperatures=(lc.capi_student_temperature, lc.capi_target_temperature,
                                  lc.capi_clustering_temperature), sigreg_input=lc.sigreg_input,
               target_layers=lc.target_layers, views=lc.views, views_lambda=lc.views_lambda,
               views_projector=tuple(lc.views_projector) if lc.views else (),
               views_local=lc.views_local if lc.views else 0,
               views_local_size=lc.views_local_size,
               views_local_area=tuple(float(a) for a in lc.views_local_area))

  @property
  def weights(self) -> Dict[str, float]:
    if self.views:
      return {'views_pred': 1.0 - self.views_lambda, 'views_sigreg': self.views_lambda}
    return {'infonce': self.infonce, 'sigreg': self.sigreg, 'invariance': self.invariance,
            'relational': self.relational, 'relational_context': self.relational_context,
            **({'global': self.global_} if self.global_ else {}),
            **({'global_infonce': self.global_infonce} if self.global_infonce else {}),
            **({'global_dino': self.global_dino} if self.global_dino else {}),
            **({'capi': self.capi, 'capi_clustering': 1.0} if self.capi else {}),
            **({'pixel': self.pixel} if self.pixel else {})}


def gather_fn(axis_name):
  """x (b, ...) -> the global batch (n_dev * b, ...) in device order, or x itself."""
  if axis_name is None:
    return lambda x: x
  return lambda x: jax.lax.all_gather(x, axis_name, tiled=True)


def flat(weights):
  return None if weights is None else weights.reshape(-1).astype(jnp.float32)


def _w(weights):
  """Keyword arguments passing `weights` to a loss; none on the unweighted path."""
  return {} if weights is None else {'weights': weights}


def _views(setup, params, target_params, images, sample_ids, mask_key):
  """Masks, the context encoder's tokens z (b, K, D), the target encoder's
  tokens of the whole image t_full (b, N, D, no gradient; with
  `LossSpec.target_layers` K > 1 data2vec's mean of its top K blocks,
  `model.vit.top_layers_mean`) and their target blocks tgt (b, M, T, D);
  with the validity flags of padded data (else None).
  With `setup.context_augment` the context encoder sees `masking.context_view`'s
  images (keys: the mask key folded with a tag), the target the originals,
  or with `setup.target_augment` its own draw of the same augmentation.
  With `LossSpec.global_dino` also both encoders' head scores of their mean
  tokens, z_head and t_head (b, prototypes; else None)."""
  if setup.padded:
    valid = model_lib.token_validity(images, setup.encoder.patch_size)   # (b, N)
    ctx_idx, tgt_idx, ctx_valid, tgt_valid = masking.sample_masks_valid(
        mask_key, sample_ids, setup.grid, setup.masking, valid)
  else:
    valid = ctx_valid = tgt_valid = None
    ctx_idx, tgt_idx = masking.sample_masks(mask_key, sample_ids, setup.grid,
                                            setup.masking)
  ctx_images = masking.context_view(setup.context_augment, mask_key, sample_ids, images,
                                    setup.crop_area)
  heads = bool(setup.loss.global_dino)       # static: the heads' scores too
  z = setup.encoder.apply(params['encoder'], ctx_images, ctx_idx, ctx_valid,
                          with_head=heads)                       # (b, K, D)
  tgt_images = masking.context_view(
      setup.target_augment, jax.random.fold_in(mask_key, masking.TARGET_TAG), sample_ids, images)
  t_full = jax.lax.stop_gradient(setup.encoder.apply(
      target_params, tgt_images, None, valid, with_head=heads,
      top_layers=setup.loss.target_layers))
  (z, z_head), (t_full, t_head) = (z, t_full) if heads else ((z, None), (t_full, None))
  b, m, t = tgt_idx.shape
  tgt = model_lib.gather_tokens(t_full, tgt_idx.reshape(b, m * t))    # t_full (b, N, D)
  return dict(z=z, t_full=t_full, tgt=tgt.reshape(b, m, t, -1), ctx_idx=ctx_idx,
              tgt_idx=tgt_idx, valid=valid, ctx_valid=ctx_valid, tgt_valid=tgt_valid,
              z_head=z_head, t_head=t_head, tgt_images=tgt_images)


def _target_patches(images, tgt_idx, p):
  """The pixels of the target tokens' patches: images (b, H, W, C), tgt_idx
  (b, M, T) row-major token positions -> (b, M, T, p * p * C)."""
  x = model_lib.patches(images, p)
  return model_lib.gather_tokens(x, tgt_idx.reshape(len(x), -1)).reshape(tgt_idx.shape + (-1,))


def _token_target_terms(setup, params, v, pred_g, gather, tv_g) -> Dict[str, jax.Array]:
  """The targets of the predictions other than the target tokens, on the
  global batch: with `LossSpec.pixel` MAE's normalised pixels of the target
  patches ('pixel', through the linear `pixel_head`); with `LossSpec.capi`
  CAPI's online clusters of the target tokens ('capi', 'capi_clustering').
  `v`: `_views`' dict; pred_g (B, M, T, D) the gathered predictions."""
  parts = {}
  if setup.loss.pixel:
    head = params['pixel_head']
    p = head['bias'].shape[0]
    patches = _target_patches(v['tgt_images'], v['tgt_idx'], setup.encoder.patch_size)
    parts['pixel'] = losses.pixel_loss(
        (pred_g @ head['kernel'] + head['bias']).reshape(-1, p),
        gather(patches).reshape(-1, p), **_w(flat(tv_g)))
  if setup.loss.capi:
    parts.update(prototypes.capi_losses(
        params['capi'], pred_g, gather(v['t_full']), gather(v['tgt_idx']),
        None if v['valid'] is None else gather(v['valid']), tv_g,
        setup.loss.capi_temperatures))
  return parts


def _jepa_terms(setup, temperature, z_g, pred_g, tgt_g, t_pool_g, cv_g, tv_g,
                w_ctx, w_tgt, sig_key, heads_g=None) -> Dict[str, jax.Array]:
  """The JEPA loss terms on the global batch (unweighted; `LossSpec.weights`):
  InfoNCE and MSE of predictions vs targets, SIGReg of the context tokens,
  relational matching of pooled predictions / targets and of the pooled
  context vs the pooled whole-image targets; with `LossSpec.global_` > 0 the
  MSE of the pooled context vs the pooled whole-image targets ('global',
  LeJEPA's prediction term with the masked context as the view); with
  `LossSpec.global_infonce` > 0 the InfoNCE of the same pair over the batch
  ('global_infonce': each image's context view must pick its own whole image
  among the batch's, the instance discrimination of SimCLR / MoCo); with
  `LossSpec.global_dino` > 0 DINO's cross-entropy of the context view's head
  scores against the whole image's, Sinkhorn-centred and sharpened
  ('global_dino'; `heads_g` = the gathered (z_head, t_head))."""
  lc = setup.loss
  d = z_g.shape[-1]
  p_flat, t_flat = pred_g.reshape(-1, d), tgt_g.reshape(-1, d)
  parts = {}
  z_pool = model_lib.pool_tokens(z_g, cv_g, 1)                          # (B, D)
  w_img = None if cv_g is None else flat(cv_g.any(1))
  parts['infonce'] = losses.infonce_loss(p_flat, t_flat, temperature, **_w(w_tgt))
  sig_x, sig_w = ((z_g.reshape(-1, d), w_ctx) if lc.sigreg_input == 'tokens'
                  else (z_pool, w_img))
  parts['sigreg'] = losses.sigreg_loss(
      sig_x, sig_key, num_slices=lc.sigreg_num_slices,
      num_points=lc.sigreg_num_points, **_w(sig_w))
  parts['invariance'] = losses.invariance_loss(p_flat, t_flat, **_w(w_tgt))
  parts['relational'] = losses.relational_loss(
      model_lib.pool_tokens(pred_g, tv_g, (1, 2)), model_lib.pool_tokens(tgt_g, tv_g, (1, 2)),
      **_w(None if tv_g is None else flat(tv_g.any((1, 2)))))
  parts['relational_context'] = losses.relational_loss(z_pool, t_pool_g, **_w(w_img))
  if lc.global_:               # static: runs without the term compute nothing more
    parts['global'] = losses.invariance_loss(z_pool, t_pool_g, **_w(w_img))
  if lc.global_infonce:
    parts['global_infonce'] = losses.infonce_loss(z_pool, t_pool_g, temperature, **_w(w_img))
  if lc.global_dino:
    parts['global_dino'] = prototypes.dino_loss(*heads_g, *lc.dino_temperatures, **_w(w_img))
  return parts


def _quantize_context(setup, trainables, state, v, snap):
  """(pred_in, codes, vq_aux): the predictor's input, the context tokens' codes
  and the quantizer's aux; (z, None, None) without VQ. With snap=False the
  input is decode(u), with `placement='beside'` z itself (a read-out)."""
  spec = setup.quantizer
  if not setup.vq_enabled:
    return v['z'], None, None
  pred_in, codes, vq_aux = quantizer_lib.quantize(
      spec, quantizer_lib.raw_codebook(spec, state.get('vq'), trainables),
      trainables.get('vq_params'), v['z'], weights=flat(v['ctx_valid']))
  if not snap:
    pred_in = quantizer_lib.decode(spec, trainables.get('vq_params'), vq_aux['u'])
  return (v['z'] if spec.placement == 'beside' else pred_in), codes, vq_aux


def make_loss_fn(setup, axis_name=None, snap=True):
  """loss_fn(trainables, state, images, sample_ids, keys) -> (total, aux).

  total = w_nce·InfoNCE(pred, tgt; τ) + w_sig·SIGReg(z) + w_inv·MSE(pred, tgt)
        + w_rel·Rel(pool(pred), pool(tgt)) + w_ctx·Rel(pool(z), pool(t_full))
        [+ w_glob·MSE(pool(z), pool(t_full))]
        [+ w_gnce·InfoNCE(pool(z), pool(t_full); τ)]
        [+ w_dino·DINO(head(pool(z)), head_target(pool(t_full)))]
        [+ w_capi·CAPI(pred; clusters(t_full)) + clustering] [+ w_pix·MSE(head(pred), pixels)]
        + β·commit(u, q) [+ codebook(u, q) in gradient mode / SimVQ]
        [+ w_ent·entropy(u, E)]
  where z are the context encoder's tokens (SIGReg reads pool(z), one row
  per image, with `LossSpec.sigreg_input='pooled'`, as LeJEPA regularises
  the views' embeddings), u = z in the quantizer space (unless the config
  projects or normalises, see `quantizer`), q their quantized codes, E the
  codebook (the predictor sees the layer's output when VQ is on), t_full the
  target encoder's tokens of the whole image and tgt their target-block
  subset. The w are `LossSpec.weights`, β and w_ent the quantizer's
  `Spec.loss_weights`. With `vq.placement='beside'` the predictor sees z and
  no VQ term is added (a read-out codebook, learned by its EMA alone).
  With `LossSpec.views` > 0 the loss is LeJEPA's objective alone (`multiview`).

  snap=False (a diagnostic, never used in training): the predictor sees
  decode(u), the tokens' image in the quantizer space without the snap to
  their codes, so the loss tells what the snap costs the same weights
  (`experiments/results/loss_gap/vq_bypass.py`); every term is unchanged.

  aux: 'u' / 'codes' are the device's rows, 'u_global' the gathered u (None
  without VQ); with `vq.update_source` 'target' or 'context_whole' also
  'update_tokens' / 'update_weights': the device's whole-image tokens of that
  encoder (t_full; the context encoder on the unmasked images) in the
  quantizer space, validity.

  The global batch and padded data: the module docstring.
  """
  gather = gather_fn(axis_name)
  spec = setup.quantizer

  def loss_fn(trainables, state, images, sample_ids, keys):
    params = {k: jax.lax.stop_gradient(v) if k in setup.frozen else v
              for k, v in trainables['params'].items()}
    if setup.loss.views:         # LeJEPA's objective alone (no VQ: config checks)
      return multiview.loss_and_aux(setup, params, images, sample_ids, keys, gather)
    v = _views(setup, params, state['target_params'], images, sample_ids, keys[0])
    pred_in, codes, vq_aux = _quantize_context(setup, trainables, state, v, snap)
    pred = setup.predictor.apply(params['predictor'], pred_in, v['ctx_idx'],
                                 v['tgt_idx'], v['ctx_valid'], v['tgt_valid'])

    # Global batch (identity on one device): (B, ...) from here on.
    z_g, pred_g, tgt_g = gather(v['z']), gather(pred), gather(v['tgt'])
    t_pool_g = gather(model_lib.pool_tokens(v['t_full'], v['valid'], 1))   # (B, D)
    cv_g = None if v['ctx_valid'] is None else gather(v['ctx_valid'])      # (B, K)
    tv_g = None if v['tgt_valid'] is None else gather(v['tgt_valid'])      # (B, M, T)
    w_ctx, w_tgt = flat(cv_g), flat(tv_g)
    parts, weights = {}, dict(setup.loss.weights)
    u_g = gather(vq_aux['u']) if setup.vq_enabled else None
    if setup.vq_enabled and spec.placement == 'bottleneck':
      parts.update(quantizer_lib.losses(spec, u_g, gather(vq_aux['quantized']),
                                        vq_aux['codebook'], w_ctx))
      weights.update(spec.loss_weights)
    heads_g = (gather(v['z_head']), gather(v['t_head'])) if setup.loss.global_dino else None
    parts.update(_jepa_terms(setup, params['temperature'], z_g, pred_g, tgt_g,
                             t_pool_g, cv_g, tv_g, w_ctx, w_tgt, keys[1], heads_g))
    parts.update(_token_target_terms(setup, params, v, pred_g, gather, tv_g))
    total = sum(weights[k] * x for k, x in parts.items())
    sg = jax.lax.stop_gradient
    aux = {'parts': parts, 'codes': codes,
           'u': sg(vq_aux['u']) if setup.vq_enabled else None,
           'u_global': None if u_g is None else sg(u_g),
           'ctx_weights': flat(v['ctx_valid']), 'ctx_weights_global': w_ctx}
    if setup.vq_enabled and spec.update_source != 'context':
      # The codebook's EMA update reads an encoder's whole-image tokens.
      whole = v['t_full'] if spec.update_source == 'target' else setup.encoder.apply(
          params['encoder'], images, None, v['valid'])
      aux['update_tokens'] = sg(quantizer_lib.encode(spec, trainables.get('vq_params'), whole))
      aux['update_weights'] = flat(v['valid'])
    return total, aux

  return loss_fn


def warmup_cosine(peak: float, end: float, warmup: int, decay_steps: int) -> Callable:
  """Linear warm-up from 0 to `peak` over `warmup` steps, then cosine decay to
  `end` at `decay_steps` (optax.warmup_cosine_decay_schedule)."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=decay_steps,
      end_value=end)


def _weight_decay_mask(trainables):
  """Decay only weight matrices/kernels; never biases, norms, the temperature,
  the mask token, the codebook, the SimVQ map (the codebook's factor) or
  CAPI's clustering (its scale sets the targets' sharpness)."""
  def keep(path, leaf):
    names = [getattr(p, 'key', '') for p in path]
    return leaf.ndim >= 2 and not {'codebook', 'simvq_map', 'clusters'} & set(names)
  return jax.tree_util.tree_map_with_path(keep, trainables)


def _labels(frozen: Sequence[str], codebook_group: bool):
  """optax labels: 'frozen' for trainables['params'][g], g in frozen;
  'codebook' for trainables['codebook'] and ['vq_params'] when
  `codebook_group`; else 'train'."""
  def labels(trainables):
    def label(path, _):
      names = [getattr(p, 'key', None) for p in path[:2]]
      if codebook_group and names[0] in ('codebook', 'vq_params'):
        return 'codebook'
      return 'frozen' if names[0] == 'params' and names[1] in frozen else 'train'
    return jax.tree_util.tree_map_with_path(label, trainables)
  return labels


def make_tx(schedule: Callable, *, weight_decay: float, grad_clip_norm: float,
            frozen: Sequence[str] = (), codebook_schedule: Optional[Callable] = None
            ) -> optax.GradientTransformation:
  """clip_by_global_norm(grad_clip_norm), then AdamW(schedule, weight_decay);
  the groups of params named in `frozen` get `set_to_zero`.

  `codebook_schedule` (the reference's Option C, "may need lower learning
  rate for codebook", `vq.codebook_learning_rate`): the gradient-trained
  codebook and the quantizer's own trainables get their own AdamW on it; the
  clipping stays global. None: the single optimizer.
  """
  def adamw(sched):
    return optax.adamw(sched, weight_decay=weight_decay, mask=_weight_decay_mask)

  clip = optax.clip_by_global_norm(grad_clip_norm)
  if codebook_schedule is None:
    tx = optax.chain(clip, adamw(schedule))
    if frozen:
      tx = optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()},
                                 _labels(frozen, codebook_group=False))
    return tx
  transforms = {'train': adamw(schedule), 'codebook': adamw(codebook_schedule),
                'frozen': optax.set_to_zero()}
  return optax.chain(clip, optax.multi_transform(
      transforms, _labels(frozen, codebook_group=True)))
