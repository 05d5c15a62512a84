"""The quantizer layer a config asks for: `vq.py`'s VQ and the anti-collapse
options of `anticollapse.py`, wired together.

`make_spec(cfg)` reads `config.vq` (and `loss.entropy_*`) once into a static
`Spec`; the functions below take it and are pure and jittable. For encoder
tokens z (..., D) the layer computes

  u   = n(z W_in + b_in)             project in to `codebook_dim` (or the FSQ
                                     width len(fsq_levels)) when asked; n = l2
                                     normalisation when `vq.l2_normalize`
  vq:  E = n(C)  or  n(C W_s)        the codebook; SimVQ: C a frozen random
                                     basis (state), W_s a learned map
       k = argmin_k ||u - E_k||^2,  q = E_k
       q~ = u + sg(q - u)            straight-through (VQ-VAE), or
       q~ = sg(lambda R) u           the rotation trick (`vq.estimator`)
  fsq: q~, k = fsq_quantize(u)       codes index the prod(fsq_levels) grid points
  out = q~ W_out + b_out             project out (back to D) when projected in

and the predictor sees `out`. The commitment / codebook / entropy losses
compare u with q in the quantizer space. With every option off (the default)
u = z, E = C, out = q~ and the computation is exactly `vq.quantize`.

Trainables of the layer (`init_params`, the train state's 'vq_params', absent
when empty): proj_in / proj_out {'kernel', 'bias'} and the SimVQ map
'simvq_map'. Codebook state (`init_state`, the train state's 'vq', absent for
FSQ, which has no codebook): a `vq.VQState` in the quantizer space; with SimVQ
its codebook is the frozen basis C.

After each step `update_state` applies, in this order: the EMA update
(`vq.ema_update`) or the gradient-mode bookkeeping (`vq.count_usage`);
interval refresh (`vq.refresh`, or `anticollapse.refresh_far`; on the
`anticollapse.refresh_due` schedule with a warm-up); CVQ re-anchoring (`anticollapse.update_usage_ema`,
`anticollapse.reanchor`); l2 normalisation of an EMA codebook
(`anticollapse.l2_normalize_state`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Hashable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jepa_jax import anticollapse as ac
from jepa_jax import vq as vq_lib

QUANTIZERS = ('vq', 'fsq')
ESTIMATORS = ('straight_through', 'rotation')


@dataclasses.dataclass(frozen=True)
class Spec:
  """Static description of the quantizer layer (hashable; from `make_spec`)."""
  kind: str               # 'vq' or 'fsq'
  embed_dim: int          # D, the encoder's width
  dim: int                # width of the quantizer space (u, codes)
  num_codes: int          # K (FSQ: prod(levels))
  project: bool           # learned project-in / project-out maps
  l2: bool                # cosine codes and inputs
  simvq: bool             # codebook = frozen basis @ learned map
  rotation: bool          # rotation-trick estimator instead of straight-through
  levels: Tuple[int, ...]  # FSQ levels
  ema: bool               # EMA codebook updates
  init_scale: float = 1.0

  @property
  def has_state(self) -> bool:
    """A codebook state to carry (everything but FSQ)."""
    return self.kind == 'vq'

  @property
  def codebook_trainable(self) -> bool:
    """Gradient mode: the codebook rows themselves are trainables."""
    return self.kind == 'vq' and not self.ema and not self.simvq

  @property
  def codebook_loss(self) -> bool:
    """The VQ-VAE codebook loss is added (gradient mode and SimVQ)."""
    return self.kind == 'vq' and not self.ema


def make_spec(cfg) -> Optional[Spec]:
  """The quantizer of a (validated) config; None when VQ is off."""
  v = cfg.vq
  if not v.enabled:
    return None
  kind = v.get('quantizer', 'vq')
  levels = tuple(int(x) for x in v.get('fsq_levels', (8, 8, 4, 3)))
  d = cfg.model.embed_dim
  cdim = v.get('codebook_dim', None)
  if kind == 'fsq':
    dim, project = len(levels), True
  else:
    dim, project = (d, False) if cdim is None else (int(cdim), True)
  return Spec(kind=kind, embed_dim=d, dim=dim,
              num_codes=int(np.prod(levels)) if kind == 'fsq' else int(v.codebook_size),
              project=project, l2=bool(v.get('l2_normalize', False)),
              simvq=bool(v.get('simvq', False)),
              rotation=v.get('estimator', 'straight_through') == 'rotation',
              levels=levels, ema=kind == 'vq' and v.ema_decay is not None,
              init_scale=float(v.init_scale))


def init_params(spec: Spec, rng) -> Dict[str, Any]:
  """The layer's trainables ({} when it has none).

  proj_in (D, d) and proj_out (d, D): LeCun-normal kernels (variance 1/fan_in,
  so LayerNorm-ed tokens map to about unit variance, where the codes are) and
  zero biases. simvq_map (d, d) starts at the identity, so the initial
  codebook is the basis itself, as in the plain random init.
  """
  params: Dict[str, Any] = {}
  k_in, k_out = jax.random.split(rng)
  if spec.project:
    d, c = spec.embed_dim, spec.dim
    params['proj_in'] = {
        'kernel': jax.random.normal(k_in, (d, c), jnp.float32) / np.sqrt(d),
        'bias': jnp.zeros((c,), jnp.float32)}
    params['proj_out'] = {
        'kernel': jax.random.normal(k_out, (c, d), jnp.float32) / np.sqrt(c),
        'bias': jnp.zeros((d,), jnp.float32)}
  if spec.simvq:
    params['simvq_map'] = jnp.eye(spec.dim, dtype=jnp.float32)
  return params


def with_health(state: vq_lib.VQState) -> vq_lib.VQState:
  """`state` with zeroed codebook-health bookkeeping (last_used, born,
  restarts: (K,) int32, see `vq.VQState`), kept up to date by `update_state`."""
  zeros = lambda: jnp.zeros(state.codebook.shape[:1], jnp.int32)  # noqa: E731
  return state.replace(last_used=zeros(), born=zeros(), restarts=zeros())


def track_health(before: vq_lib.VQState, after: vq_lib.VQState, step,
                 restarted=None) -> vq_lib.VQState:
  """Codebook-health bookkeeping after train step `step` (0-based):

      used_k      = usage_k(after) > usage_k(before)   (assigned this step)
      last_used_k = step + 1 where used_k, else unchanged
      born_k      = step + 1 where restarted_k, else unchanged
      restarts_k += restarted_k

  `before` / `after` bracket the EMA update or usage count (no refresh in
  between, which zeroes usage); `restarted` (K,) bool marks the codes a
  refresh re-initialised this step (None: none). States without the
  bookkeeping (None leaves) come back unchanged.
  """
  if after.last_used is None:
    return after
  t = jnp.asarray(step, jnp.int32) + 1
  used = after.usage > before.usage
  after = after.replace(last_used=jnp.where(used, t, after.last_used))
  if restarted is None:
    return after
  return after.replace(born=jnp.where(restarted, t, after.born),
                       restarts=after.restarts + restarted.astype(jnp.int32))


def state_from_codebook(spec: Spec, codebook) -> vq_lib.VQState:
  """A fresh codebook state around `codebook` (K, d): N = 1, m = e, usage 0;
  unit codes for cosine EMA codebooks; usage_ema = 0 with re-anchoring."""
  codebook = jnp.asarray(codebook, jnp.float32)
  if spec.l2 and spec.ema:
    codebook = ac.l2_normalize(codebook)
  k = codebook.shape[0]
  return with_health(vq_lib.VQState(
      codebook=codebook, cluster_size=jnp.ones((k,), jnp.float32),
      embed_sum=codebook + 0.0, usage=jnp.zeros((k,), jnp.float32),
      step=jnp.zeros((), jnp.int32)))


def init_state(spec: Spec, rng, reanchor: bool = False) -> Optional[vq_lib.VQState]:
  """Codebook state (None for FSQ): `vq.init_state` in the quantizer space
  (e_k ~ N(0, init_scale^2 I)); with re-anchoring, usage_ema = 0 (CVQ-VAE)."""
  if not spec.has_state:
    return None
  if not (spec.l2 and spec.ema):
    state = with_health(vq_lib.init_state(rng, spec.num_codes, spec.dim,
                                          spec.init_scale))
  else:
    state = state_from_codebook(spec, spec.init_scale * jax.random.normal(
        rng, (spec.num_codes, spec.dim), jnp.float32))
  if reanchor:
    state = state.replace(usage_ema=jnp.zeros((spec.num_codes,), jnp.float32))
  return state


def kmeans_state(spec: Spec, rng, tokens, params, num_iters: int,
                 reanchor: bool = False) -> vq_lib.VQState:
  """Codebook state from k-means++ (+ Lloyd, `vq.kmeans_init`) on encoder
  tokens (N, D), fitted where the codes live: u = encode(tokens), so projected
  and / or l2-normalised inputs when the config asks for them.

    centres = kmeans_init(rng, u, K, num_iters)
    state   = state_from_codebook(centres)    (unit codes for cosine EMA
                                               codebooks; N = 1, m = e)
    SimVQ:    the basis C = centres; the map W starts at the identity, so the
              looked-up codes C W are the centres.

  With the options off this is `vq.state_from_codebook(kmeans_init(...))` on
  the tokens themselves. Sources: Arthur & Vassilvitskii 2007 (k-means++);
  codebooks initialised from encoder features: Zeghidour et al. 2021
  (SoundStream), Zhu et al. 2024 (VQGAN-LC).
  """
  u = jax.jit(encode, static_argnums=0)(spec, params, tokens)
  fit = jax.jit(vq_lib.kmeans_init, static_argnums=(2, 3))
  state = state_from_codebook(spec, fit(rng, u, spec.num_codes, num_iters))
  if reanchor:
    state = state.replace(usage_ema=jnp.zeros((spec.num_codes,), jnp.float32))
  return state


def encode(spec: Spec, params, z):
  """u = n(z W_in + b_in): tokens (..., D) -> the quantizer space (..., d)."""
  z = jnp.asarray(z, jnp.float32)
  if spec.project:
    p = params['proj_in']
    z = jnp.matmul(z, p['kernel']) + p['bias']
  if spec.l2:
    z = ac.l2_normalize(z)
  return z


def decode(spec: Spec, params, q):
  """out = q W_out + b_out: the quantizer space (..., d) -> tokens (..., D)."""
  if spec.project:
    p = params['proj_out']
    q = jnp.matmul(q, p['kernel']) + p['bias']
  return q


def codebook(spec: Spec, raw, params):
  """The codes E (K, d) the layer looks up: n(raw) or n(raw W_s) (SimVQ).

  `raw` is the state's codebook (gradient mode: the trainable one). Gradient
  flows to whatever of raw / W_s is traced (never to the SimVQ basis).
  """
  e = ac.simvq_codebook(raw, params['simvq_map']) if spec.simvq else raw
  return ac.l2_normalize(e) if spec.l2 else e


def quantize(spec: Spec, raw_codebook, params, z
             ) -> Tuple[jax.Array, jax.Array, Dict[str, Any]]:
  """(out (..., D), codes (...,) int32, aux) for encoder tokens z (..., D).

  aux: 'u' (the quantizer-space inputs, with gradient), 'quantized' (q, with
  the gradient to the codebook, for the codebook loss; FSQ: its grid values),
  'codebook' (E as looked up, with gradient; None for FSQ). Default spec:
  exactly `vq.quantize`.
  """
  u = encode(spec, params, z)
  if spec.kind == 'fsq':
    q_st, codes, aux = ac.fsq_quantize(u, spec.levels)
    return decode(spec, params, q_st), codes, {'u': u, 'quantized': aux['quantized'],
                                               'codebook': None}
  e = codebook(spec, raw_codebook, params)
  q_st, codes, aux = vq_lib.quantize(
      vq_lib.VQState(codebook=e, cluster_size=None, embed_sum=None, usage=None,
                     step=None), u)
  if spec.rotation:
    q_st = ac.rotation_trick(u, aux['quantized'])
  return decode(spec, params, q_st), codes, {'u': u, 'quantized': aux['quantized'],
                                             'codebook': e}


def assign(spec: Spec, state, params, z) -> jax.Array:
  """Codes (...,) of tokens z (..., D) with the current layer (no gradient,
  state unchanged): the codes the step would choose. Used by the embedding
  metrics and `jepa_jax.evaluate`, so usage is counted the same way for every
  quantizer (FSQ codes index its prod(fsq_levels) grid points)."""
  u = encode(spec, params, jax.lax.stop_gradient(z))
  if spec.kind == 'fsq':
    return ac.fsq_quantize(u, spec.levels)[1]
  return vq_lib.nearest_codes(codebook(spec, state.codebook, params), u)[0]


def update_state(spec: Spec, vq_cfg, state: vq_lib.VQState, *, u, codes, u_global,
                 step, refresh_key, axis_name: Optional[Hashable] = None,
                 weights=None, weights_global=None,
                 refresh_tokens=None, ema_decay=None) -> vq_lib.VQState:
  """The codebook state after one train step (see the module docstring).

  u / codes / weights: this device's quantizer-space inputs, codes and row
  weights; u_global / weights_global: the all-gathered ones (refresh and
  re-anchoring draw from the global batch, so every replica agrees). `state`
  carries the updated trainable codebook in gradient mode. Counts and EMA
  statistics are psum-ed over axis_name inside `vq`. refresh_tokens: None
  (refresh draws from u_global / weights_global), or a function () ->
  (tokens (..., d), weights or None) in the quantizer space that refresh draws
  from instead (`vq.refresh_source='full'`); it is called inside the refresh
  branch of the `lax.cond`, so its work is done on refresh steps only.
  ema_decay: this step's EMA decay (`vq.scheduled_decay`); None: vq_cfg.ema_decay.
  """
  before = state
  if spec.ema:
    decay = vq_cfg.ema_decay if ema_decay is None else ema_decay
    state = vq_lib.ema_update(state, u, codes, decay, vq_cfg.epsilon,
                              axis_name=axis_name, weights=weights)
  else:
    state = vq_lib.count_usage(state, codes, axis_name=axis_name, weights=weights)
  state = track_health(before, state, step)
  if vq_cfg.refresh_enabled:
    due = ac.refresh_due(step, vq_cfg.refresh_interval,
                         vq_cfg.get('refresh_warmup_steps', 0),
                         vq_cfg.get('refresh_warmup_interval', 1))
    restart = (ac.refresh_far if vq_cfg.get('refresh_sampling', 'uniform') == 'far'
               else vq_lib.refresh)

    def do_refresh(s):
      z, w = (u_global, weights_global) if refresh_tokens is None else refresh_tokens()
      dead = vq_lib.dead_codes(s, vq_cfg.refresh_usage_threshold)   # the codes restarted
      new = restart(s, z, refresh_key, vq_cfg.refresh_usage_threshold, weights=w)
      return track_health(new, new, step, restarted=dead)

    state = jax.lax.cond(due, do_refresh, lambda s: s, state)
  if vq_cfg.get('reanchor', False):
    state = ac.update_usage_ema(state, codes, vq_cfg.reanchor_decay,
                                axis_name=axis_name, weights=weights)
    state = ac.reanchor(state, u_global, strength=vq_cfg.reanchor_strength,
                        share=state.usage_ema, threshold=vq_cfg.reanchor_threshold,
                        weights=weights_global)
  if spec.l2 and spec.ema:
    state = ac.l2_normalize_state(state)
  return state
