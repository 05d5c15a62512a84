"""The supervised ceiling: the run's encoder architecture trained on the labels.

    python -m experiments.results.representation.supervised --config=configs/ijepa.py:shapes \
        [--config.KEY=VALUE ...] [--seed 0] [--probe_every 400] [--cv] [--out FILE.json]

Trains the config's encoder (`step.make_setup(cfg, ds).encoder`, initialised
as a run of that seed starts, `step.init_state`) and a linear head on the
mean of its tokens of whole images, with softmax cross-entropy on the
primary labels (`Dataset.train_labels`), for the config's steps, batches
(`data.epoch_batches`: the same images in the same order as the run of that
seed), learning-rate schedule, weight decay and gradient clipping
(`optimizer.make_tx`, AdamW). Nothing else of the JEPA is used (no masks, no
predictor, no target encoder).

What it measures, by the protocols of the self-supervised runs, on the
encoder's frozen pooled features (the head is discarded):
  trajectory  the holdout linear probe of the run's probe trajectory
              (`probe_trajectory`: the same fixed subset of
              `train.probe_train_images` / `train.probe_val_images`, the
              same seed) at step 0 and every --probe_every steps and the last
  cv          with --cv: evaluate's probe (`probe_set`: at most 10,000
              images, 5-fold cross-validation, linear and k-NN), eval.json's
              numbers for the supervised encoder
and `head_val_acc`, the trained head's own accuracy on the subset's val rows.
Prints one line and writes the JSON to --out (default: stdout only), with
the config file and its `--config.KEY=VALUE` overrides.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jepa_jax import data as data_lib
from jepa_jax import evaluate
from jepa_jax.config import flags as config_flags
from jepa_jax.config import load as config_lib
from jepa_jax.eval import probes
from jepa_jax.eval import trajectory as probe_trajectory
from jepa_jax.model import vit as model_lib
from jepa_jax.objective import terms as optimizer
from jepa_jax.train import step as step_lib


def make_loss(setup):
  """loss(trainables, images, labels) -> (mean cross-entropy, logits) of the
  linear head on the encoder's pooled tokens."""
  enc = setup.encoder

  def pooled(params, images):
    valid = model_lib.token_validity(images, enc.patch_size) if setup.padded else None
    return model_lib.pool_tokens(enc.apply(params, images, None, valid), valid, 1)

  def loss(tr, images, labels):
    logits = pooled(tr['encoder'], images) @ tr['head']['w'] + tr['head']['b']
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

  return loss, pooled


def init_trainables(setup, image_shape, num_classes: int, seed: int):
  """The run's initial encoder (seed `seed`) and a zero head."""
  enc = step_lib.init_state(setup, image_shape, seed)['params']['encoder']
  dim = int(setup.cfg.model.embed_dim)
  return {'encoder': enc, 'head': {'w': jnp.zeros((dim, num_classes), jnp.float32),
                                   'b': jnp.zeros((num_classes,), jnp.float32)}}


def _features(pooled_fn, params, pset) -> np.ndarray:
  """Pooled features of the subset's train rows, then its val rows."""
  feats = np.concatenate([np.asarray(pooled_fn(params, pset.images[i:i + pset.batch]))
                          for i in range(0, len(pset.images), pset.batch)])
  return feats[:pset.num_train + pset.num_val]


def _probe(feats, pset) -> float:
  n = pset.num_train
  return float(np.mean([probes.linear_probe_holdout(feats[:n], ytr, feats[n:], yva)
                        for ytr, yva in pset.labels.values()]))


def train(cfg, seed: int, probe_every: int, log=print):
  """(dataset, setup, final trainables, trajectory [{step, linear}], head acc)."""
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)
  labels = np.asarray(ds.train_labels)
  num_classes = int(labels.max()) + 1
  loss_fn, pooled = make_loss(setup)
  pooled = jax.jit(pooled)
  tr = init_trainables(setup, ds.image_shape, num_classes, seed)
  tx = optimizer.make_tx(setup.lr_schedule, weight_decay=cfg.train.weight_decay,
                         grad_clip_norm=cfg.train.grad_clip_norm)
  opt = tx.init(tr)

  @jax.jit
  def step(tr, opt, images, y):
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(tr, images, y)
    updates, opt = tx.update(grads, opt, tr)
    return optax.apply_updates(tr, updates), opt, loss

  tc = cfg.train
  pset = probe_trajectory.probe_set(ds, tc.probe_train_images, tc.probe_val_images, seed)
  feats = _features(pooled, tr['encoder'], pset)
  traj = [{'step': 0, 'linear': _probe(feats, pset)}]
  log(f"step 0: probe {traj[-1]['linear']:.3f}")
  done, t0 = 0, time.time()
  for epoch in range(-(-setup.total_steps // setup.steps_per_epoch)):
    n = min(setup.steps_per_epoch, setup.total_steps - done)
    for images, ids in data_lib.epoch_batches(ds.train_images, tc.batch_size, seed,
                                              epoch, n):
      tr, opt, loss = step(tr, opt, images, labels[ids])
      done += 1
      if done % probe_every == 0 or done == setup.total_steps:
        feats = _features(pooled, tr['encoder'], pset)   # the last: the final encoder's
        traj.append({'step': done, 'linear': _probe(feats, pset),
                     'loss': float(loss)})
        log(f"step {done}: loss {float(loss):.3f} probe {traj[-1]['linear']:.3f} "
            f'({time.time() - t0:.0f} s)')
  val = feats[pset.num_train:]
  logits = val @ np.asarray(tr['head']['w']) + np.asarray(tr['head']['b'])
  head_acc = float(np.mean(logits.argmax(1) == pset.labels['label'][1]))
  return ds, setup, tr, traj, head_acc


def cv_scores(ds, setup, params, seed: int, max_images: int = probes.MAX_IMAGES):
  """evaluate's probe protocol (5-fold CV, linear and k-NN) of `params`."""
  sub, info = probes.restrict(ds, max_images, seed)
  tokens, _ = evaluate.encoder_tokens(setup, sub, {'supervised': params}, ('supervised',))
  tr, va = tokens['supervised']
  return {**info, **probes.probe_scores(tr, sub.train_labels, va, sub.val_labels, 20)}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog='python -m experiments.results.representation.supervised',
                               description=__doc__.split('\n')[0])
  ap.add_argument('--config', required=True, help='CONFIG_FILE[:VARIANT]')
  ap.add_argument('--seed', type=int, default=0)
  ap.add_argument('--probe_every', type=int, default=400)
  ap.add_argument('--cv', action='store_true', help="also evaluate's 5-fold probe")
  ap.add_argument('--out', default='')
  args, overrides = ap.parse_known_args(argv)
  for flag in overrides:
    if not flag.startswith('--config.'):
      ap.error(f'unrecognized arguments: {flag}')
  try:      # --config.KEY=VALUE as jepa_jax.main reads them
    cfg = config_flags.config_of(['supervised', f'--config={args.config}', *overrides])
  except config_lib.InputError as err:
    print(f'config error: {err}', file=sys.stderr)
    return 2
  cfg.seed = args.seed
  if cfg.data.name not in ('digits', 'shapes'):
    print(f'error: data.name={cfg.data.name!r}: the supervised ceiling needs class '
          f'labels (digits, shapes)', file=sys.stderr)
    return 2
  t0 = time.time()
  ds, setup, tr, traj, head_acc = train(cfg, args.seed, args.probe_every)
  out = {'config': args.config, 'overrides': overrides, 'seed': args.seed,
         'steps': setup.total_steps,
         'trajectory': traj, 'head_val_acc': head_acc,
         'train_seconds': round(time.time() - t0, 1)}
  if args.cv:
    out['cv'] = cv_scores(ds, setup, tr['encoder'], args.seed)
  line = json.dumps(out)
  print(line)
  if args.out:
    with open(args.out, 'w', encoding='utf-8') as f:
      f.write(line + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
