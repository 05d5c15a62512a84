"""A small VQ autoencoder on scikit-learn's digits, to check each anti-collapse
option of `jepa_jax.vq.quantizer` where its paper says it works (issue 15, item 1).

Model (8x8 digits, the project's split: 1,527 train / 270 val images):

  z   = LN(enc(x))          (B, 16, D): a 4x4 grid of tokens, one per 2x2 patch
                            (receptive field 6x6 px); LN optional (`ae.token_norm`),
                            on by default as in the JEPA's encoder
  out, k = quantizer.quantize(spec, E, params, z)   the project's layer
  x^  = dec(out)            (B, 8, 8, 1)

Loss (VQ-VAE, van den Oord et al. 2017, Eq. 3), with u the layer's
quantizer-space input and q = e_k its code:

  L = mean (x^ - x)^2 + beta * R(u - sg(q)) [+ R(sg(u) - q)] [+ w_H * H(u, E)]

  R = 'mean':  mean over all elements of (.)^2       (PyTorch F.mse_loss; Sonnet's
                                                      VectorQuantizer; VQ-VAE code)
  R = 'sum':   mean over tokens of sum over d of (.)^2  (the JEPA's
                                                      `losses.commitment_loss`)

The codebook term is present in gradient mode and for SimVQ
(`Spec.codebook_loss`); H is `anticollapse.assignment_entropy_loss`. Adam on
the model; the codebook (gradient mode) and the SimVQ map have their own
Adam learning rate (`ae.codebook_lr`, default = `ae.lr`). After each step the
codebook state is updated by `quantizer.update_state` (EMA or bookkeeping,
CVQ re-anchoring, l2 normalisation); no dead-code refresh in any method.

Usage: distinct codes among all val tokens (270 x 16 = 4,320) / K, perplexity
exp(H(p)) of their histogram (`vq.usage_stats`); also at the end over all train
tokens (24,432).

CLI: python -m experiments.results.vqae.vqae --methods plain_ema,simvq --seeds 0,1
       --codebook-sizes 768,128 --reductions mean,sum --out experiments/results/vqae
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jepa_jax import data as data_lib
from jepa_jax.config import base as config_defaults
from jepa_jax.vq import anticollapse as ac
from jepa_jax.vq import codebook as vq_lib
from jepa_jax.vq import quantizer as qz
from experiments.results.vqae.vqae_model import (Decoder, Encoder, init_model,  # noqa: F401
                                    patchify, unpatchify)

# Every method is a set of dotted overrides of `base_config`. Base: EMA
# codebook, decay 0.99 (VQ-VAE), N(0, 1) codes, no refresh.
METHODS: Dict[str, Dict[str, Any]] = {
    'plain_ema': {},
    'plain_grad': {'vq.ema_decay': None},
    'kmeans': {'vq.init': 'kmeans'},
    'cosine': {'vq.l2_normalize': True},
    'lowdim': {'vq.codebook_dim': 8},
    'simvq': {'vq.simvq': True, 'vq.ema_decay': None},
    'rotation': {'vq.estimator': 'rotation'},
    'reanchor': {'vq.reanchor': True},
    'entropy': {'loss.entropy_weight': 0.1},
    'fsq': {'vq.quantizer': 'fsq'},
    # Issue 28's remedies (jepa_jax/assignment.py): balanced (Sinkhorn) codes
    # with the EMA or the gradient codebook, and IBQ's gradient to every code.
    'sinkhorn': {'vq.assignment': 'sinkhorn'},
    'sinkhorn_grad': {'vq.assignment': 'sinkhorn', 'vq.ema_decay': None},
    'ibq': {'vq.estimator': 'ibq', 'vq.ema_decay': None},
    'ibq_identity': {'vq.estimator': 'ibq', 'vq.ema_decay': None,
                     'vq.identity_gradient': True},
}
# FSQ levels per implicit codebook size (Mentzer et al. 2023, Table 1 style).
FSQ_LEVELS = {64: (4, 4, 4), 128: (8, 4, 4), 256: (8, 8, 4), 768: (8, 8, 4, 3)}


def base_config() -> ml_collections.ConfigDict:
  """Defaults of one AE run (the `vq` block uses `jepa_jax/config/base.py`'s names)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict({'embed_dim': 64, 'width': 32})
  c.vq = config_defaults.base().vq       # every key, jepa_jax/config/base.py's defaults
  c.vq.update(dict(commitment_cost=0.25, ema_decay=0.99, refresh_enabled=False,
                   refresh_interval=500, refresh_usage_threshold=0.01))
  c.loss = ml_collections.ConfigDict(dict(entropy_weight=0.0, entropy_temperature=10.0))
  c.ae = ml_collections.ConfigDict(dict(
      reduction='mean', steps=1000, batch_size=64, lr=1e-3, codebook_lr=-1.0,
      grad_clip=0.0, token_norm=True, eval_every=50))
  return c


def _parse_value(text: str):
  """'None' -> None, numbers, true/false, else the string."""
  low = text.strip().lower()
  if low == 'none':
    return None
  if low in ('true', 'false'):
    return low == 'true'
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  return text.strip()


def make_config(method: str, codebook_size: int, reduction: str, seed: int,
                overrides: Optional[Dict[str, Any]] = None) -> ml_collections.ConfigDict:
  """base_config + METHODS[method] + K, reduction, seed + `overrides`."""
  c = base_config()
  c.seed, c.vq.codebook_size, c.ae.reduction = seed, codebook_size, reduction
  c.vq.fsq_levels = FSQ_LEVELS[codebook_size] if codebook_size in FSQ_LEVELS else c.vq.fsq_levels
  for key, value in {**METHODS[method], **(overrides or {})}.items():
    node, *path = key.split('.')
    target = c[node]
    for p in path[:-1]:
      target = target[p]
    target[path[-1]] = value
  if c.vq.quantizer == 'fsq' and int(np.prod(c.vq.fsq_levels)) != c.vq.codebook_size:
    raise ValueError(f'FSQ levels {tuple(c.vq.fsq_levels)} give '
                     f'{int(np.prod(c.vq.fsq_levels))} codes, not K = {c.vq.codebook_size}; '
                     f'known sizes: {sorted(FSQ_LEVELS)} (or set vq.fsq_levels)')
  return c


def vq_term(a, b, reduction: str):
  """The squared error of a commitment / codebook term.

    'mean': mean over every element of (a - b)^2  (F.mse_loss, Sonnet)
    'sum' : mean over tokens of sum_d (a - b)^2   (`losses.commitment_loss`)
  The two differ by the factor d, the width of the quantizer space.
  """
  sq = jnp.square(a - b)
  if reduction == 'mean':
    return jnp.mean(sq)
  if reduction == 'sum':
    return jnp.mean(jnp.sum(sq, axis=-1))
  raise ValueError(f'unknown reduction {reduction!r}')


def code_usage(codes, codebook_size: int) -> Dict[str, float]:
  """Distinct codes / K and perplexity exp(-sum p ln p) of `codes` (any shape)."""
  s = vq_lib.usage_stats(jnp.asarray(codes), codebook_size)
  return {'usage': float(s['vq_usage_ratio']), 'codes_used': int(s['vq_codes_used']),
          'perplexity': float(s['vq_perplexity'])}


def load_digits():
  """(train, val) images (N, 8, 8, 1), the project's digits split and scaling."""
  cfg = ml_collections.ConfigDict({'data': {'val_fraction': 0.15, 'split_seed': 0}})
  from jepa_jax.data import digits  # noqa: F401  (registers the source)
  ds = digits.load_digits(cfg)
  return ds.train_images, ds.val_images


class AE:
  """Model, quantizer spec, optimizer and the jitted functions of one config."""

  def __init__(self, cfg):
    self.cfg = cfg
    self.spec = qz.make_spec(cfg)
    self.enc = Encoder(cfg.model.embed_dim, cfg.model.width, cfg.ae.token_norm)
    self.dec = Decoder(cfg.model.width)
    self.tx = self._optimizer()
    self.step = jax.jit(self._step)
    self.evaluate = jax.jit(self._evaluate)
    self.encode_tokens = jax.jit(lambda p, x: self.enc.apply(p, x))

  def _optimizer(self):
    """Adam(lr) on the model; Adam(codebook_lr) on the codebook / SimVQ map."""
    a = self.cfg.ae
    code_lr = a.lr if a.codebook_lr is None or a.codebook_lr <= 0 else a.codebook_lr

    def labels(tree):
      def label(path, _):
        names = [getattr(p, 'key', '') for p in path]
        return 'code' if ('codebook' in names or 'simvq_map' in names) else 'model'
      return jax.tree_util.tree_map_with_path(label, tree)

    tx = optax.multi_transform({'model': optax.adam(a.lr), 'code': optax.adam(code_lr)},
                               labels)
    return optax.chain(optax.clip_by_global_norm(a.grad_clip), tx) if a.grad_clip else tx

  def trainables(self, ts):
    t = {'enc': ts['enc'], 'dec': ts['dec'], 'vq_params': ts['vq_params']}
    if self.spec.codebook_trainable:
      t['codebook'] = ts['vq'].codebook
    return t

  def init(self, train_images) -> Dict[str, Any]:
    """Train state of seed cfg.seed (k-means on the initial tokens if asked)."""
    cfg, spec = self.cfg, self.spec
    k_km = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 5)
    enc, dec, vq_params, vq_state = self._init(jax.random.PRNGKey(cfg.seed))
    if spec.has_state and cfg.vq.init == 'kmeans':
      toks = np.asarray(self.encode_tokens(enc, train_images)).reshape(-1, spec.embed_dim)
      k_pick, k_fit = jax.random.split(k_km)
      n = min(cfg.vq.kmeans_num_samples, len(toks))
      pick = toks[np.asarray(jax.random.permutation(k_pick, len(toks))[:n])]
      vq_state = qz.kmeans_state(spec, k_fit, pick, vq_params)
    ts = {'enc': enc, 'dec': dec, 'vq_params': vq_params, 'vq': vq_state,
          'step': jnp.zeros((), jnp.int32), 'rng': jax.random.PRNGKey(cfg.seed + 7)}
    ts['opt'] = self.tx.init(self.trainables(ts))
    return ts

  def _init(self, key):
    """(encoder, decoder, layer params, codebook state) of PRNG key `key`."""
    k_model, k_vq, k_par = jax.random.split(key, 3)
    m = self.cfg.model
    enc, dec = init_model(m.embed_dim, m.width, self.cfg.ae.token_norm, k_model)
    return (enc, dec, qz.init_params(self.spec, k_par),
            qz.init_state(self.spec, k_vq))

  def _forward(self, tr, vq_state, images, nearest: bool = False):
    """(x^, codes, quantizer aux) with the layer's straight-through output;
    `nearest`: every token its nearest code (evaluation; with
    `vq.assignment='sinkhorn'` training uses the batch's balanced codes)."""
    z = self.enc.apply(tr['enc'], images)
    raw = None
    if self.spec.has_state:
      raw = tr['codebook'] if self.spec.codebook_trainable else vq_state.codebook
    out, codes, aux = qz.quantize(self.spec, raw, tr['vq_params'], z, nearest=nearest)
    return self.dec.apply(tr['dec'], out), codes, aux

  def _loss(self, tr, vq_state, images):
    cfg, spec, sg = self.cfg, self.spec, jax.lax.stop_gradient
    recon, codes, aux = self._forward(tr, vq_state, images)
    parts = {'recon': jnp.mean(jnp.square(recon - images))}
    u, q, red = aux['u'], aux['quantized'], cfg.ae.reduction
    if spec.kind == 'vq':
      parts['commitment'] = vq_term(u, sg(q), red)
      if spec.codebook_loss:
        parts['codebook'] = vq_term(sg(u), q, red)
      if cfg.loss.entropy_weight > 0:
        parts['entropy'] = ac.assignment_entropy_loss(u, aux['codebook'],
                                                      cfg.loss.entropy_temperature)
    w = {'recon': 1.0, 'commitment': cfg.vq.commitment_cost, 'codebook': 1.0,
         'entropy': cfg.loss.entropy_weight}
    total = sum(w[k] * v for k, v in parts.items())
    return total, {'parts': parts, 'codes': codes, 'u': sg(u)}

  def _step(self, ts, images):
    """One Adam step, then `quantizer.update_state` on the codebook state."""
    tr = self.trainables(ts)
    (total, aux), grads = jax.value_and_grad(self._loss, has_aux=True)(
        tr, ts['vq'], images)
    updates, opt = self.tx.update(grads, ts['opt'], tr)
    tr = optax.apply_updates(tr, updates)
    new = dict(ts, enc=tr['enc'], dec=tr['dec'], vq_params=tr['vq_params'], opt=opt,
               step=ts['step'] + 1)
    if self.spec.has_state:
      vq_state = ts['vq']
      if self.spec.codebook_trainable:
        vq_state = vq_state.replace(codebook=tr['codebook'])
      u = aux['u'].reshape(-1, self.spec.dim)
      new['vq'] = qz.update_state(
          self.spec, vq_state, u=u, codes=aux['codes'].reshape(-1),
          u_global=u, step=ts['step'],
          refresh_key=jax.random.fold_in(ts['rng'], ts['step']))
    metrics = dict(aux['parts'], loss=total, grad_norm=optax.tree.norm(grads))
    return new, metrics

  def _evaluate(self, ts, images):
    """(recon MSE, codes (N, 16)) of images with the current model, every
    token snapped to its nearest code (as `quantizer.assign` counts usage)."""
    recon, codes, _ = self._forward(self.trainables(ts), ts['vq'], images, nearest=True)
    return jnp.mean(jnp.square(recon - images)), codes


def ibq_reach(ae: 'AE', ts, images, temperature: float) -> Dict[str, float]:
  """How far IBQ's softmax spreads over the codes on `images`' tokens:
  p_i = softmax_k(-||u_i - E_k||^2 / T) (the estimator's, `assignment.ibq_estimator`);
  'off_mass': mean_i (1 - max_k p_ik), the share of the gradient weight not on
  the chosen code; 'codes_reached': #{k: max_i p_ik > 1e-3} / K, the codes
  some token passes more than 1e-3 of its weight to."""
  _, _, aux = ae._forward(ae.trainables(ts), ts['vq'], images, True)  # noqa: SLF001
  u = aux['u'].reshape(-1, ae.spec.dim)
  logits = -jnp.sum(jnp.square(u[:, None] - aux['codebook'][None]), -1) / temperature
  p = jax.nn.softmax(logits, axis=-1)
  return {'off_mass': float(jnp.mean(1.0 - p.max(-1))),
          'codes_reached': float(jnp.mean(p.max(0) > 1e-3))}


def train(cfg, train_images, val_images, ae: Optional[AE] = None) -> Dict[str, Any]:
  """Trains one config; returns final val/train usage, perplexity, MSE and the
  val usage curve (every `ae.eval_every` steps, and at step 0)."""
  ae = ae or AE(cfg)
  k = ae.spec.num_codes
  t0 = time.time()
  ts = ae.init(train_images)
  reach = {}
  if ae.spec.ibq:
    reach['ibq_reach_start'] = ibq_reach(ae, ts, val_images, ae.spec.ibq_temperature)
  a = cfg.ae
  per_epoch = len(train_images) // a.batch_size
  curve, history, step = [], [], 0
  while step < a.steps:
    perm = data_lib.epoch_permutation(len(train_images), cfg.seed, step // per_epoch)
    for i in range(per_epoch):
      if step % a.eval_every == 0:
        mse, codes = ae.evaluate(ts, val_images)
        curve.append([step, code_usage(codes, k)['usage'], float(mse)])
      ts, m = ae.step(ts, train_images[perm[i * a.batch_size:(i + 1) * a.batch_size]])
      step += 1
      if step % a.eval_every == 0:
        history.append({kk: float(v) for kk, v in m.items()})
      if step >= a.steps:
        break
  mse, codes = ae.evaluate(ts, val_images)
  val = code_usage(codes, k)
  curve.append([step, val['usage'], float(mse)])
  train_codes = np.concatenate([np.asarray(ae.evaluate(ts, train_images[j:j + 512])[1])
                                for j in range(0, len(train_images), 512)])
  tr = code_usage(train_codes, k)
  out = {'val_usage': val['usage'], 'val_codes_used': val['codes_used'],
         'val_perplexity': val['perplexity'], 'val_mse': float(mse),
         'train_usage': tr['usage'], 'train_perplexity': tr['perplexity'],
         'num_codes': k, 'final_losses': history[-1] if history else {},
         'curve': curve, 'wall_s': time.time() - t0}
  if ae.spec.ibq:
    out.update(reach, ibq_reach_end=ibq_reach(ae, ts, val_images, ae.spec.ibq_temperature))
  if ae.spec.has_state:
    e = np.asarray(qz.codebook(ae.spec, ts['vq'].codebook, ts['vq_params']))
    _, u_codes, aux = ae._forward(ae.trainables(ts), ts['vq'], val_images, True)  # noqa: SLF001
    u = np.asarray(aux['u']).reshape(-1, ae.spec.dim)
    out['code_rms'] = float(np.sqrt(np.mean(e ** 2)))
    out['token_rms'] = float(np.sqrt(np.mean(u ** 2)))
  return out


def run_grid(methods, seeds, sizes, reductions, overrides, log=print):
  """Every (method, K, reduction, seed); the AE (and its compile) is shared over seeds."""
  train_images, val_images = load_digits()
  runs = []
  for method in methods:
    for k in sizes:
      for red in reductions:
        ae = None
        for seed in seeds:
          cfg = make_config(method, k, red, seed, overrides)
          ae = AE(cfg) if ae is None else ae
          ae.cfg = cfg   # seeds differ only in init and data order: no retrace needed
          res = train(cfg, train_images, val_images, ae)
          res.update(method=method, K=k, reduction=red, seed=seed)
          runs.append(res)
          log(f'{method:12s} K={k:4d} {red:4s} seed={seed}: usage {res["val_usage"]:.3f} '
              f'ppl {res["val_perplexity"]:.1f} mse {res["val_mse"]:.4f} '
              f'train-usage {res["train_usage"]:.3f} ({res["wall_s"]:.1f}s)')
  return runs


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--methods', default=','.join(METHODS))
  p.add_argument('--seeds', default='0,1')
  p.add_argument('--codebook-sizes', default='768,128')
  p.add_argument('--reductions', default='mean,sum')
  p.add_argument('--set', default='', help='overrides, e.g. ae.codebook_lr=1e-2;vq.init_scale=0.1')
  p.add_argument('--out', default='experiments/results/vqae')
  args = p.parse_args(argv)
  overrides = dict(kv.split('=', 1) for kv in args.set.split(';') if kv.strip())
  overrides = {k.strip(): _parse_value(v) for k, v in overrides.items()}
  methods = [m for m in args.methods.split(',') if m]
  t0 = time.time()
  runs = run_grid(methods, [int(s) for s in args.seeds.split(',')],
                  [int(k) for k in args.codebook_sizes.split(',')],
                  args.reductions.split(','), overrides)
  from experiments.results.vqae import vqae_report
  os.makedirs(args.out, exist_ok=True)
  meta = vqae_report.metadata(argv, time.time() - t0, overrides)
  with open(os.path.join(args.out, 'results.json'), 'w') as f:
    json.dump({'meta': meta, 'runs': runs}, f, indent=1)
  vqae_report.write(args.out, meta, runs)


if __name__ == '__main__':
  main()
