"""A prototype attentive probe on frozen tokens (a diagnostic of this study,
not an evaluation protocol of the package).

    python -m experiments.results.representation.attentive_probe --workdir RUN \
        [--train 10000] [--val 2000] [--steps 3000] [--out FILE.json]

On the first --train / --val images of a `shapes` run's data (as
`shapes_baselines`), for the raw 4x4-pixel patches, the run's architecture
at initialisation and its final target encoder, it fits on the primary
label (the main object's class):

    k_th = x_t W_k[h],  a_th = softmax_t(q_h . k_th / sqrt(d_k)),
    p_h = sum_t a_th x_t W_v[h],  logits = concat_h(p_h) W_c + b

H = 4 learned queries q_h over the tokens x_t (standardised per feature
with the train tokens' statistics), d_k = max(D / H, 8); AdamW (learning
rate 1e-3, weight decay 1e-4), batches of 256 drawn with the seed, softmax
cross-entropy; the val accuracy after --steps steps. The pooling follows the
attentive probes of V-JEPA (Bardes et al. 2024) and CAPI (Darcet et al.
2025), much reduced (no MLP block, one layer); its settings were fixed before
it was run and not tuned.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

HEADS, LEARNING_RATE, WEIGHT_DECAY, BATCH = 4, 1e-3, 1e-4, 256


def attentive_probe(train_x, train_y, val_x, val_y, steps: int, seed: int = 0) -> float:
  """Val accuracy of the probe of the module docstring fitted on tokens
  train_x (N, T, D) and labels train_y."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import optax  # noqa: PLC0415
  flat = train_x.reshape(-1, train_x.shape[-1])
  mean, std = flat.mean(0), flat.std(0) + 1e-6
  train_x, val_x = (train_x - mean) / std, (val_x - mean) / std
  n, _, d = train_x.shape
  classes, dk = int(max(train_y.max(), val_y.max())) + 1, max(d // HEADS, 8)
  keys = jax.random.split(jax.random.PRNGKey(seed), 3)
  params = {'q': jax.random.normal(keys[0], (HEADS, dk)) * 0.02,
            'wk': jax.random.normal(keys[1], (d, HEADS, dk)) / np.sqrt(d),
            'wv': jax.random.normal(keys[2], (d, HEADS, dk)) / np.sqrt(d),
            'wc': jnp.zeros((HEADS * dk, classes)), 'bc': jnp.zeros((classes,))}

  def logits(p, x):
    scores = jnp.einsum('ntd,dhk,hk->nth', x, p['wk'], p['q']) / np.sqrt(dk)
    pooled = jnp.einsum('nth,ntd,dhk->nhk', jax.nn.softmax(scores, axis=1), x, p['wv'])
    return pooled.reshape(len(x), -1) @ p['wc'] + p['bc']

  opt = optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)

  @jax.jit
  def update(p, state, x, y):
    grads = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
        logits(p, x), y).mean())(p)
    updates, state = opt.update(grads, state, p)
    return optax.apply_updates(p, updates), state

  state, rng = opt.init(params), np.random.default_rng(seed)
  for _ in range(steps):
    rows = rng.choice(n, min(BATCH, n), replace=False)
    params, state = update(params, state, train_x[rows], train_y[rows])
  predict = jax.jit(lambda p, x: jnp.argmax(logits(p, x), -1))
  pred = np.concatenate([np.asarray(predict(params, val_x[i:i + 500]))
                         for i in range(0, len(val_x), 500)])
  return float(np.mean(pred == val_y))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog='python -m experiments.results.representation.attentive_probe',
                               description=__doc__.split('\n')[0])
  ap.add_argument('--workdir', required=True, help='a finished run of a shapes config')
  ap.add_argument('--train', type=int, default=10_000)
  ap.add_argument('--val', type=int, default=2_000)
  ap.add_argument('--steps', type=int, default=3_000)
  ap.add_argument('--out', default='')
  args = ap.parse_args(argv)
  from experiments.results.representation import shapes_baselines  # noqa: PLC0415
  from jepa_jax.model import vit  # noqa: PLC0415
  cfg, ds = shapes_baselines.load(None, args.train, args.val, args.workdir)
  images = (np.asarray(ds.train_images[:]), np.asarray(ds.val_images))
  sets = {'pixels': [vit.patches(im, cfg.model.patch_size) for im in images]}
  sets.update(shapes_baselines.feature_sets(cfg, ds, args.workdir, pixels=False,
                                            pool='tokens'))
  labels = (ds.train_factors['shape'], ds.val_factors['shape'])
  out = {'workdir': args.workdir, 'train': args.train, 'val': args.val, 'steps': args.steps}
  for name, (tr, va) in sets.items():
    out[name] = attentive_probe(tr, labels[0], va, labels[1], args.steps)
    print(f'{name:<16} {out[name]:.3f}', flush=True)
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(out, f, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main())
