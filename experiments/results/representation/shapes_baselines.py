"""Linear-probe baselines of the procedural `shapes` images: how much of each
label raw pixels and an untrained encoder already give.

    python -m experiments.results.representation.shapes_baselines \
        [--config configs/no_vq_gentle.py:shapes] [--config.KEY=VALUE ...]
        [--train 5000] [--val 2000] [--workdir RUN] [--factors shape,count]
        [--no_pixels] [--pool mean|meanmax] [--out FILE.json]

For the primary label (the main object's class, `shape`) and every other
factor (`jepa_jax.data.shapes.FACTORS`), it fits a linear probe
(per-feature standardisation, then scikit-learn's multinomial logistic
regression, lbfgs, at most 500 iterations) on the first `--train` train
images and scores it on the first `--val` val images, for:

  chance          the val share of the most frequent train class
  pixels          the standardised images, flattened
  random_encoder  the config's encoder at initialisation (`step.init_state`
                  with the config's seed): the mean over all tokens of the
                  target encoder's output on the whole image, as
                  `jepa_jax.evaluate` pools features
  trained_encoder with --workdir: the same features from that run's final
                  target encoder (a run of a `shapes` config; its
                  config.json replaces --config)

`--pool meanmax` (a diagnostic; `evaluate` pools by the mean) gives the
encoders' features as the mean and the max over tokens, concatenated: does
the class sit in the tokens but wash out of their mean? `--pool object`
(a diagnostic that reads the scene's ground truth, no encoder could) takes
the mean of the tokens whose patch centre lies inside the main object's
circle (its centre's token when none does): does the class sit in the
object's own tokens?

Only the first --train / --val images are generated: image i of a split is
a function of (seed, split, i) alone, so they are exactly those of the
default-size set. The design target (docs/data.md): pixels and the random
encoder at most 50% on `shape`.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from typing import Dict

import numpy as np

DEFAULT_CONFIG = 'configs/no_vq_gentle.py:shapes'


def probe(train_x, train_y, val_x, val_y) -> float:
  """Val accuracy of a logistic regression on standardised features."""
  from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
  from sklearn.pipeline import make_pipeline  # noqa: PLC0415
  from sklearn.preprocessing import StandardScaler  # noqa: PLC0415
  if len(np.unique(train_y)) < 2:
    return float(np.mean(val_y == train_y[0]))
  model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
  model.fit(train_x.reshape(len(train_x), -1), train_y)
  return float(model.score(val_x.reshape(len(val_x), -1), val_y))


def chance(train_y, val_y) -> float:
  """Val accuracy of always answering the most frequent train class."""
  return float(np.mean(val_y == np.bincount(train_y).argmax()))


POOLS = ('mean', 'meanmax', 'object')


def object_token_weights(cfg, split: int, n: int) -> np.ndarray:
  """(n, T) weights, each row summing to 1, over the tokens whose patch centre
  lies inside image i's main object (radius r around (cx, cy)), or on the
  token holding its centre when no patch centre does (`--pool object`)."""
  from jepa_jax.data import shapes  # noqa: PLC0415
  p = shapes.Params.from_config(cfg.data)
  patch = int(cfg.model.patch_size)
  gh, gw = p.size[0] // patch, p.size[1] // patch
  cy, cx = np.meshgrid((np.arange(gh) + 0.5) * patch, (np.arange(gw) + 0.5) * patch,
                       indexing='ij')
  w = np.zeros((n, gh * gw), np.float32)
  for i in range(n):
    o = shapes.draw_scene(p, int(cfg.data.split_seed), split, i)['objects'][0]
    inside = (np.hypot(cx - o['cx'], cy - o['cy']) <= o['r']).reshape(-1)
    if not inside.any():
      inside[min(int(o['cy']) // patch, gh - 1) * gw + min(int(o['cx']) // patch, gw - 1)] = True
    w[i] = inside / inside.sum()
  return w


def encoder_features(setup, params, images, batch: int = 500,
                     pool: str = 'mean', weights=None) -> np.ndarray:
  """The encoder's output on whole images pooled over tokens: their mean
  (N, D); with pool='meanmax' their mean and max concatenated (N, 2D); with
  pool='object' their mean under `weights` (N, T), `object_token_weights`;
  pool='tokens' leaves them unpooled (N, T, D), for `attentive_probe`."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  def pooled(p, x, w):
    t = setup.encoder.apply(p, x, None, None)
    if pool == 'tokens':
      return t
    if pool == 'object':
      return jnp.einsum('nt,ntd->nd', w, t)
    return t.mean(axis=1) if pool == 'mean' else jnp.concatenate([t.mean(1), t.max(1)], -1)

  encode = jax.jit(pooled)
  if weights is None:
    weights = np.zeros((len(images), 1), np.float32)
  return np.concatenate([np.asarray(encode(params, images[i:i + batch], weights[i:i + batch]))
                         for i in range(0, len(images), batch)])


def load(config: str, n_train: int, n_val: int, workdir=None, overrides=()):
  """(cfg, dataset) of `config` (or of the run in `workdir`: its
  config.json) with the shapes splits cut to n_train / n_val and the
  `--config.KEY=VALUE` strings of `overrides` set (VALUE read as a Python
  literal, else kept as a string)."""
  from jepa_jax import data  # noqa: PLC0415
  from jepa_jax.config import keys as config_keys  # noqa: PLC0415
  from jepa_jax.config import load as config_lib  # noqa: PLC0415
  from jepa_jax.run import files as run_files  # noqa: PLC0415
  if workdir:
    from ml_collections import ConfigDict  # noqa: PLC0415
    with open(os.path.join(workdir, run_files.CONFIG)) as f:
      cfg = config_lib.fill_added_keys(ConfigDict(json.load(f)))
    config = workdir
  else:
    cfg = config_lib.load_config(config)
  for flag in overrides:
    key, _, text = flag[len('--config.'):].partition('=')
    if not config_keys.has(cfg, key):
      raise config_lib.ConfigError(key, text, 'no such key')
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    config_keys.put(cfg, key, value)
  cfg.data.shapes_train_size, cfg.data.shapes_val_size = n_train, n_val
  config_lib.validate(cfg)
  if cfg.data.name != 'shapes':
    raise SystemExit(f'error: --config {config}: data.name is {cfg.data.name!r}, '
                     "not 'shapes' (add the :shapes variant)")
  return cfg, data.load_dataset(cfg)


def feature_sets(cfg, ds, workdir=None, pixels: bool = True,
                 pool: str = 'mean') -> Dict[str, tuple]:
  """{name: (train features, val features)} of the module docstring."""
  from jepa_jax.train import step as step_lib  # noqa: PLC0415
  train_images = ds.train_images[:]
  sets = {'pixels': (train_images, ds.val_images)} if pixels else {}
  setup = step_lib.make_setup(cfg, ds)
  state = step_lib.init_state(setup, ds.image_shape, cfg.seed)
  params = {'random_encoder': state['target_params']}
  if workdir:
    import jax  # noqa: PLC0415
    from jepa_jax.run import trained as final_state  # noqa: PLC0415
    target = jax.eval_shape(lambda: step_lib.init_state(setup, ds.image_shape, cfg.seed))
    params['trained_encoder'] = final_state.load(workdir, target)['target_params']
  weights = ((object_token_weights(cfg, 0, len(train_images)),
              object_token_weights(cfg, 1, len(ds.val_images))) if pool == 'object'
             else (None, None))
  for name, p in params.items():
    sets[name] = (encoder_features(setup, p, train_images, pool=pool, weights=weights[0]),
                  encoder_features(setup, p, ds.val_images, pool=pool, weights=weights[1]))
  return sets


def run(config: str, n_train: int, n_val: int, workdir=None, factors=None,
        pixels: bool = True, pool: str = 'mean', overrides=()) -> Dict:
  cfg, ds = load(config, n_train, n_val, workdir, overrides)
  sets = feature_sets(cfg, ds, workdir, pixels, pool)
  out = {'config': workdir or config, 'overrides': list(overrides), 'train': n_train,
         'val': n_val, 'pool': pool, 'probe': {}}
  for factor in factors or ds.train_factors:
    ty, vy = ds.train_factors[factor], ds.val_factors[factor]
    row = {'chance': chance(ty, vy)}
    for name, (tx, vx) in sets.items():
      start = time.time()
      row[name] = probe(tx, ty, vx, vy)
      print(f'{factor:<11} {name:<16} {row[name]:.3f}  ({time.time() - start:.0f} s)',
            flush=True)
    out['probe'][factor] = row
  return out


def table(result: Dict) -> str:
  """The probe accuracies as a markdown table, one row per factor."""
  names = list(next(iter(result['probe'].values())))
  lines = ['| factor | ' + ' | '.join(names) + ' |', '|---' * (len(names) + 1) + '|']
  for factor, row in result['probe'].items():
    lines.append(f'| {factor} | ' + ' | '.join(f'{100 * row[n]:.1f}%' for n in names) + ' |')
  return '\n'.join(lines)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog='python -m experiments.results.representation.shapes_baselines',
                               description=__doc__.split('\n')[0])
  ap.add_argument('--config', default=DEFAULT_CONFIG)
  ap.add_argument('--train', type=int, default=5000, help='train images the probe fits on')
  ap.add_argument('--val', type=int, default=2000, help='val images it is scored on')
  ap.add_argument('--workdir', default=None,
                  help='also probe the final target encoder of this run (its config is used)')
  ap.add_argument('--factors', default=None,
                  help='comma-separated factors to probe (default: all)')
  ap.add_argument('--no_pixels', action='store_true',
                  help='skip the pixel probes (the slowest: 3,072 features)')
  ap.add_argument('--pool', choices=POOLS, default='mean',
                  help="the encoders' features: the tokens' mean (as evaluate); "
                  'diagnostics: their mean and max concatenated, or the mean of the '
                  "main object's tokens (located from the scene's ground truth)")
  ap.add_argument('--out', default=None, help='write the result as JSON here')
  args, overrides = ap.parse_known_args(argv)
  for flag in overrides:
    if not flag.startswith('--config.'):
      ap.error(f'unrecognized arguments: {flag}')
  for flag, value in (('--train', args.train), ('--val', args.val)):
    if value < 2:
      ap.error(f'argument {flag}: {value} must be >= 2')
  factors = args.factors.split(',') if args.factors else None
  from jepa_jax.data import shapes  # noqa: PLC0415
  for f in factors or ():
    if f not in shapes.FACTORS:
      ap.error(f'argument --factors: {f!r} is not one of {", ".join(shapes.FACTORS)}')
  from jepa_jax.errors import ConfigError, InputError  # noqa: PLC0415
  try:
    result = run(args.config, args.train, args.val, args.workdir, factors,
                 not args.no_pixels, args.pool, overrides)
  except (ConfigError, InputError) as err:   # e.g. --train below the batch size, a bad key
    print(f'config error: {err}', file=sys.stderr)
    return 2
  print(table(result))
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=1)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
