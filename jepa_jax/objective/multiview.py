"""LeJEPA's own objective (`loss.views` = V > 0; Balestriero & LeCun 2025):
V augmented views of each image through the one encoder, their mean tokens
through a projector, and

    loss = (1 - lambda) * views_prediction_loss(P) + lambda * views_sigreg_loss(P)

on the projections P (V, B, d) of the global batch (`losses`); no predictor,
no teacher, no stop-gradient. It replaces the masked-prediction terms of
`terms` (the config checks that their weights are 0).

Local views (`loss.views_local` = L > 0, the paper's multi-crop: 2 global
and 6 local views in its recommended set-up): L more crops of
`loss.views_local_area` shares at `loss.views_local_size` pixels, through the
same encoder with their positions spread over the full grid; each is
regressed onto the centre of the V global views, which they do not enter,
and SIGReg averages over all V + L views.

What it keeps from the paper's minimal example (rbalestr-lab/lejepa,
MINIMAL.md): V views of one kind, each view's embedding regressed onto the
mean of all V; SIGReg per view with 256 slices and 17 nodes; a projector of
Linear-BatchNorm-ReLU hidden layers and a linear output, its batch norm over
every view of the batch; lambda 0.02. Deviations: the embedding is the
encoder's mean token (this project's encoders have no class token; the
probes read the same mean); the views are `data.context_augment`'s
(`masking.context_view`: crops of 30-100% of the area by default,
`data.crop_area`, resized to the full image, and this project's colour
jitter) rather than crops of 8-100% with blur and solarisation; the
projector's batch norm uses the batch's own statistics and keeps no running
ones (it is used in training only).
"""
from __future__ import annotations

from typing import Dict, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from jepa_jax.model import masking
from jepa_jax.model import vit as model_lib
from jepa_jax.objective import losses

BN_EPS = 1e-5


def init_projector(key, dim: int, sizes: Sequence[int]) -> Dict[str, Dict[str, jax.Array]]:
  """`project`'s params: layer i maps the previous width (first: `dim`) to
  sizes[i] with a kernel (LeCun normal) and a zero bias; every layer but the
  last also has the batch norm's scale (1) and offset (0)."""
  params, fan_in = {}, dim
  for i, out in enumerate(sizes):
    layer = {'kernel': nn.initializers.lecun_normal()(jax.random.fold_in(key, i), (fan_in, out)),
             'bias': jnp.zeros((out,), jnp.float32)}
    if i < len(sizes) - 1:
      layer['bn_scale'] = jnp.ones((out,), jnp.float32)
      layer['bn_offset'] = jnp.zeros((out,), jnp.float32)
    params[f'layer_{i}'] = layer
    fan_in = out
  return params


def project(params, x):
  """The projector, x (R, D) -> (R, d), float32:

      h <- relu(gamma * (hW + b - mu) / sqrt(var + 1e-5) + beta)   hidden layers
      out = hW + b                                                 last layer

  mu and var (biased) are each feature's mean and variance over the R rows:
  batch normalisation in training mode, with no running statistics."""
  x = x.astype(jnp.float32)
  n = len(params)
  for i in range(n):
    layer = params[f'layer_{i}']
    x = x @ layer['kernel'] + layer['bias']
    if i < n - 1:
      mu, var = jnp.mean(x, 0), jnp.var(x, 0)
      x = (x - mu) * jax.lax.rsqrt(var + BN_EPS) * layer['bn_scale'] + layer['bn_offset']
      x = jax.nn.relu(x)
  return x


def view_images(augment: str, key, sample_ids, images, num_views: int, crop_area=None,
                size=None, first: int = 0):
  """(V * b, H, W, C): view v of every image is `masking.context_view`
  under `augment` (crops' area share in `crop_area`, resized to `size`
  (h, w) if given) with the key fold_in(key, first + v), views stacked
  view-major. Local views: `first` = the number of global views, so their
  keys continue the global ones'."""
  return jnp.concatenate([masking.context_view(augment, jax.random.fold_in(key, first + v),
                                               sample_ids, images, crop_area, size)
                          for v in range(num_views)])


def mean_embeddings(setup, params, images, sample_ids, key) -> jax.Array:
  """(V + L, b, D): the mean token of each global view, then of each local
  view (its positions spread over the full image's grid: `pos_span`)."""
  lc, b = setup.loss, images.shape[0]
  views = view_images(setup.context_augment, key, sample_ids, images, lc.views,
                      setup.crop_area)
  runs = [setup.encoder.apply(params['encoder'], views, None, None)]     # (V b, N, D)
  if lc.views_local:
    p = setup.encoder.patch_size
    side = lc.views_local_size
    small = view_images(setup.context_augment, key, sample_ids, images, lc.views_local,
                        lc.views_local_area, (side, side), first=lc.views)
    runs.append(setup.encoder.apply(params['encoder'], small, None, None,
                                    pos_span=(images.shape[1] // p, images.shape[2] // p)))
  return jnp.concatenate([model_lib.pool_tokens(t.astype(jnp.float32), None, 1)
                          for t in runs]).reshape(lc.views + lc.views_local, b, -1)


def loss_terms(setup, params, images, sample_ids, keys, gather) -> Dict[str, jax.Array]:
  """{'views_pred', 'views_sigreg'} on the global batch: the device's views
  through `params['encoder']` (every token), their mean tokens gathered
  (B, V + L, D over devices), projected with the batch norm over all
  (V + L) * B rows; the views' draws from keys[0], SIGReg's slices from
  keys[1]. The centre is the V global views' mean; SIGReg averages all."""
  emb = mean_embeddings(setup, params, images, sample_ids, keys[0])
  emb_g = jnp.swapaxes(gather(jnp.swapaxes(emb, 0, 1)), 0, 1)             # (V + L, B, D)
  v, n, d = emb_g.shape
  lc = setup.loss
  proj = project(params['projector'], emb_g.reshape(v * n, d)).reshape(v, n, -1)
  return {'views_pred': losses.views_prediction_loss(proj, lc.views),
          'views_sigreg': losses.views_sigreg_loss(
              proj, keys[1], lc.sigreg_num_slices, lc.sigreg_num_points)}


def loss_and_aux(setup, params, images, sample_ids, keys, gather):
  """(total, aux) as `terms.make_loss_fn`'s loss_fn returns them: total =
  (1 - lambda) views_pred + lambda views_sigreg (`LossSpec.weights`); aux
  holds the parts and no codes or context weights (no VQ)."""
  parts = loss_terms(setup, params, images, sample_ids, keys, gather)
  total = sum(setup.loss.weights[k] * x for k, x in parts.items())
  return total, {'parts': parts, 'codes': None, 'u': None, 'u_global': None,
                 'ctx_weights': None, 'ctx_weights_global': None}
