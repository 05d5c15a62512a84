"""The train state a new run starts from: fresh, or with params from another
run's checkpoint (`config.init_from`) and a k-means codebook (`vq.init`)."""
from __future__ import annotations

import jax
import numpy as np

from jepa_jax import checkpoint as ckpt_lib
from jepa_jax import init_from as init_from_lib
from jepa_jax import model as model_lib
from jepa_jax import quantizer as quantizer_lib
from jepa_jax import step as step_lib
from jepa_jax import vq as vq_lib


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
  loaded, source = init_from_lib.load_params(
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
