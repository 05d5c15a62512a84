"""Downstream quality of a trained run's frozen features: WORKDIR/eval.json.

    python -m jepa_jax.evaluate --workdir RUN_DIR [--knn_k 20] [--max_images 10000]

Loads the run's config (config.json) and final weights
(`final_state.msgpack`, see `jepa_jax.run.trained`), draws the probe set
(`probe_set`: at most --max_images labelled images, default 10,000, chosen
from the run's seed with the splits' proportions kept; every image of data
that small, such as digits and ARC), encodes each of its images whole
(unmasked), `trained.BATCH` at a time, with the frozen context encoder
and the frozen target (EMA) encoder, one feature per image = the mean of its
token embeddings (the same features as the embedding metrics), and measures,
training on the train split and scoring on the val split:

  linear_probe_acc  multinomial logistic regression (scikit-learn, L2, C=1)
                    on standardised features
  knn_acc           k-nearest-neighbour majority vote, cosine distance, k=20

Probes are scored by 5-fold cross-validation over the probe set's images
(train and val splits together, folds shuffled with seed 0): each image is
predicted once by a probe fitted on the other folds, so the accuracy rests
on all N of them (eval.json: `probe_images`, `probe_protocol`), reported with its 95% interval `*_ci95` = 1.96 sqrt(p (1 -
p) / N) (normal approximation; ~ +/-2 points on the 1,797 digits).

With VQ, how well the discrete codes ground the classes, from the code of
every context-encoder token of the val images (the code the final
quantizer assigns it, `quantizer.assign`) and the label of its image (the
val images of the probe set: at most --max_images of them):

  code_label_nmi    normalized mutual information (arithmetic mean
                    normalisation, scikit-learn); 0 when codes say nothing
                    about the class, 1 when they determine it
  code_label_nmi_shuffled
                    the same with the images' labels permuted (mean of 10
                    permutations): what NMI reads by chance with this many
                    codes and tokens
  code_label_ami    adjusted mutual information (scikit-learn's
                    `adjusted_mutual_info_score`): 0 at chance, 1 at a
                    perfect match, for independent samples; an image's
                    tokens share its label, so NMI minus its shuffled
                    value, or the bag probe, is the fairer comparison
  code_label_bag_probe
                    the 5-fold linear probe of each image's bag of codes
                    (its share of tokens per code; `probes.bag_of_codes`),
                    over the probe set's train and val images
  codes_used_val    distinct codes among those tokens, and `codebook` the
                    usage summary of `jepa_jax.vq.health` with
                    `sorted_counts`, the usage histogram (largest first)

The same code metrics of a k-means baseline (`kmeans`): K centres (the
quantizer's codes; without VQ `vq.codebook_size`) fitted on the context
encoder's tokens of the probe set's train images (at most 20,000, k-means++ init, seed
0), val tokens assigned to the nearest centre. With VQ it is fitted on the
run's own tokens, so its codes and the quantizer's label the same tokens;
without VQ it is the baseline of the VQ variants matched to the run.

For scale, the same probes (and intervals) of two references: the raw
pixels (`pixels`; their top PIXEL_COMPONENTS principal components when an
image has more values, e.g. shapes' 3,072) and the encoder at its initialisation (`random_init`: the
run's architecture and seed, `step.init_state(setup, image_shape, cfg.seed)`,
whatever the run started from); `chance` is the accuracy of always
answering the most frequent class. `learned`: the better trained encoder by
linear probe and its gains over both references, in points
(`probes.gains`: 100 x (accuracy - reference's), linear probe and k-NN).
`probe_trajectory`: the run's probe trajectory read from its
probe_metrics.jsonl, [{step, linear_target, linear_context}]
(`probe_trajectory`: holdout probes of a fixed subset, [] without one).

Padded colour-id data (`model.patch_embed='colour'`): encoders see their
token validity (attention ignores padding), an image's feature is the mean
over its valid tokens, code statistics cover valid tokens only, and `pixels`
is the one-hot encoding of the cells (padding its own value) projected on its
top `model.embed_dim` principal components (fitted on the train split), the
raw input at the encoder's width (a probe on the 9,900 one-hot columns of an
ARC canvas takes minutes).

Data without class labels but with colour-id grids (ARC): the probes predict
grid properties instead (`data.grid_properties`: num_colours, symmetric,
object_count). eval.json then has `probes`: {property: {num_classes, chance,
context_encoder, target_encoder, random_init, pixels, code_property_nmi}},
and the top-level `context_encoder`, `target_encoder`, `random_init`,
`pixels`, `chance` and `code_label_nmi` are the means over the properties
(`labels`: 'grid_properties'), so the assessment report's downstream table
reads them like class probes.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Dict

import numpy as np

from jepa_jax import errors
from jepa_jax.eval import probes
from jepa_jax.eval import trajectory as probe_trajectory
from jepa_jax.run import files as run_files
from jepa_jax.run import trained
from jepa_jax.train import step as step_lib
from jepa_jax.vq import quantizer as quantizer_lib
# Re-exported: `evaluate.probe_scores`, `evaluate.code_metrics` and
# `evaluate.kmeans_codes` are how callers probe features and score codes.
from jepa_jax.eval.probes import code_metrics, kmeans_codes  # noqa: F401
from jepa_jax.eval.probes import NUM_FOLDS, probe_scores  # noqa: F401


def _one_hot_cells(images, num_colours):
  """(N, H, W, 1) colour ids, padding < 0 -> (N, H*W*(num_colours + 1)) one-hot."""
  ids = np.where(images[..., 0] >= 0, images[..., 0], num_colours).astype(np.int64)
  return np.eye(num_colours + 1, dtype=np.float32)[ids].reshape(len(images), -1)


def _cell_features(cfg, train_images, val_images):
  """Raw-input reference features of colour-id grids: one-hot cells on their
  top `model.embed_dim` principal components of the train split."""
  from sklearn.decomposition import PCA  # noqa: PLC0415
  tr = _one_hot_cells(train_images, cfg.model.num_colours)
  va = _one_hot_cells(val_images, cfg.model.num_colours)
  pca = PCA(n_components=min(cfg.model.embed_dim, *tr.shape), random_state=0).fit(tr)
  return pca.transform(tr), pca.transform(va)


# Raw pixels with more values per image than this are probed on their top
# PIXEL_COMPONENTS principal components (fitted on the probe set's train
# split): 5-fold logistic regression on 10,000 shapes images' 3,072 values
# ran for over half an hour on 2 cores; digits' 64 values are probed whole.
PIXEL_COMPONENTS = 256


def _pixel_features(train_images, val_images):
  """Raw-pixel reference features: the images flattened, or their top
  PIXEL_COMPONENTS principal components when they have more values."""
  if int(np.prod(np.shape(train_images)[1:])) <= PIXEL_COMPONENTS:
    return train_images, val_images
  tr = np.asarray(train_images, np.float32).reshape(len(train_images), -1)
  va = np.asarray(val_images, np.float32).reshape(len(val_images), -1)
  from sklearn.decomposition import PCA  # noqa: PLC0415
  pca = PCA(n_components=min(PIXEL_COMPONENTS, len(tr)), random_state=0).fit(tr)
  return pca.transform(tr), pca.transform(va)


TRAINED = ('context_encoder', 'target_encoder')
# Reference features, probed like the encoders (module docstring).
REFERENCES = ('random_init', 'pixels')


def _score_features(feats, ytr, yva, knn_k):
  """{encoder: probe scores} of `feats` ({name: (train, val) features}). The
  random-init encoder's features are a function of the architecture and seed
  only (many variants share them) and the pixels' of the data only: both are
  read from the probe cache when it holds them (`probe_cache`)."""
  out = {}
  for enc, (tr, va) in feats.items():
    score = probes.cached if enc in REFERENCES else (
        lambda fn, *a, **kw: fn(*a, **kw))
    out[enc] = score(probe_scores, tr, ytr, va, yva, k=knn_k)
  return out


def _evaluate_properties(ds, setup, feats, val_valid, val_codes, knn_k):
  """Grid-property probes of unlabelled colour-id data (see module docstring)."""
  from jepa_jax.data import grid_properties  # noqa: PLC0415
  train_y = grid_properties.grid_properties(ds.train_images)
  val_y = grid_properties.grid_properties(ds.val_images)
  feats = {**feats, 'pixels': _cell_features(setup.cfg, ds.train_images, ds.val_images)}
  per_property = {}
  for name in grid_properties.NAMES:
    ytr, yva = train_y[name], val_y[name]
    res = {'num_classes': int(len(np.unique(np.concatenate([ytr, yva])))),
           'chance': probes.chance(np.concatenate([ytr, yva])),
           **_score_features(feats, ytr, yva, knn_k)}
    if val_codes is not None:
      res.update({f'code_property_{k}': v for k, v in code_metrics(
          val_codes, yva, val_valid).items()})
    per_property[name] = res
  mean = lambda f: float(np.mean([f(r) for r in per_property.values()]))  # noqa: E731
  out = {'labels': 'grid_properties', 'probes': per_property,
         'chance': mean(lambda r: r['chance'])}
  for enc in feats:
    out[enc] = {k: mean(lambda r, k=k, enc=enc: r[enc][k])
                for k in ('linear_probe_acc', 'linear_probe_ci95', 'knn_acc', 'knn_ci95')}
  return out


def random_init_encoder(setup, image_shape, seed: int):
  """The encoder's parameters at initialisation with the run's architecture
  and seed: those of `step.init_state(setup, image_shape, seed)` (the state a
  run from scratch starts from; its target encoder is the same copy)."""
  return step_lib.init_state(setup, image_shape, seed)['params']['encoder']


def encoder_tokens(setup, ds, param_sets, pooled=()):
  """({name: (train tokens, val tokens)} of every whole image of `ds` encoded
  unmasked by each parameter set of `param_sets`, (train validity, val
  validity)): validity None unless the data is padded. Names in `pooled`:
  their per-image features (`trained.pool`) instead, pooled batch by batch
  (their tokens are never all held at once)."""
  encode = trained.encoder_fn(setup)
  splits = tuple((images, trained.validity(setup, images))
                 for images in (ds.train_images, ds.val_images))

  def pool_of(valid):
    return lambda toks, i: trained.pool(toks, None if valid is None else valid[i:i + len(toks)])

  tokens = {name: tuple(trained.in_batches(encode, params, images,
                                           pool_fn=pool_of(valid) if name in pooled else None)
                        for images, valid in splits)
            for name, params in param_sets.items()}
  return tokens, (splits[0][1], splits[1][1])


def _check_probeable(cfg, ds, knn_k) -> bool:
  """Whether `ds` (the probe set) has class labels (else grid properties);
  ValueError when --knn_k does not fit or there is nothing to probe."""
  n_fit = (len(ds.train_images) + len(ds.val_images)) * (NUM_FOLDS - 1) // NUM_FOLDS
  if not 1 <= knn_k <= n_fit:                    # refused, not clamped
    raise ValueError(f'--knn_k={knn_k}: must be in [1, {n_fit}] (the images a '
                     f'cross-validation fold of the probe set fits on, dataset '
                     f'{cfg.data.name!r})')
  labelled = ds.train_labels is not None and ds.val_labels is not None
  if not labelled and ds.num_colours is None:
    raise ValueError(f'dataset {cfg.data.name!r} has no labels: nothing to probe')
  return labelled


def _protocol(info, num_images: int, seed: int) -> str:
  if info['probe_images'] == num_images:
    return f'{NUM_FOLDS}-fold CV over train + val'
  return (f'{NUM_FOLDS}-fold CV over a fixed subset of train + val: '
          f"{info['probe_images']} of {num_images} images "
          f"({info['probe_train_images']} train, {info['probe_val_images']} val; "
          f'numpy default_rng([{seed}, {probes.SEED_TAG:#x}]))')


def evaluate_run(workdir: str, knn_k: int = 20, max_images: int = probes.MAX_IMAGES,
                 say: Callable[[str], None] = lambda line: None) -> Dict[str, Any]:
  """Computes the downstream metrics of a run on its probe set (at most
  `max_images` images, `probe_set`) and writes eval.json; `say` hears a
  line as each long part starts (the command prints them on stderr)."""
  if max_images < 2 * NUM_FOLDS:
    raise ValueError(f'--max_images={max_images}: must be >= {2 * NUM_FOLDS} '
                     f'(two images per cross-validation fold)')
  cfg, ds, setup, state = trained.load_trained_state(workdir)
  num_train, num_val = len(ds.train_images), len(ds.val_images)
  ds, info = probes.restrict(ds, max_images, cfg.seed)
  labelled = _check_probeable(cfg, ds, knn_k)
  padded = setup.padded
  say(f'encoding {len(ds.train_images) + len(ds.val_images)} images with the context, '
      'target and random-init encoders...')
  pooled = ('target_encoder', 'random_init')     # only the context's tokens kept
  tokens, (train_valid, val_valid) = encoder_tokens(setup, ds, {
      'context_encoder': state['params']['encoder'],
      'target_encoder': state['target_params'],
      'random_init': random_init_encoder(setup, ds.image_shape, cfg.seed)}, pooled)
  feats = {name: (tr, va) if name in pooled else (trained.pool(tr, train_valid),
                                                  trained.pool(va, val_valid))
           for name, (tr, va) in tokens.items()}
  tokens = tokens['context_encoder']
  out: Dict[str, Any] = {
      'weights': run_files.FINAL_STATE, 'dataset': cfg.data.name,
      'num_train': int(num_train), 'num_val': int(num_val), 'knn_k': knn_k,
      'max_images': int(max_images), **info,
      'probe_protocol': _protocol(info, num_train + num_val, cfg.seed)}
  val_codes = None
  if setup.vq_enabled:          # the codes the step would choose (any quantizer)
    val_codes = np.asarray(quantizer_lib.assign(
        setup.quantizer, state.get('vq'), state.get('vq_params'), tokens[1]))
  say(f'probing each encoder{"" if not labelled else " and the pixels"} '
      f'({NUM_FOLDS}-fold linear probe and k-NN)...')
  if not labelled:
    out.update(_evaluate_properties(ds, setup, feats, val_valid, val_codes, knn_k))
  else:
    feats['pixels'] = (_cell_features(cfg, ds.train_images, ds.val_images) if padded
                       else _pixel_features(ds.train_images, ds.val_images))
    out.update({
        'num_classes': int(len(np.unique(ds.train_labels))),
        'chance': probes.chance(np.concatenate([ds.train_labels, ds.val_labels])),
        **_score_features(feats, ds.train_labels, ds.val_labels, knn_k)})
  out['learned'] = probes.gains({e: out[e] for e in TRAINED}, out['pixels'],
                                out['random_init'])
  out['probe_trajectory'] = probe_trajectory.points(workdir)
  label_sets = trained.label_sets(ds)
  if val_codes is not None:
    k = setup.quantizer.num_codes
    say(f'scoring the codes ({k}): code-label NMI and AMI, bag-of-codes probe...')
    train_codes = np.asarray(quantizer_lib.assign(
        setup.quantizer, state.get('vq'), state.get('vq_params'), tokens[0]))
    out.update(probes.codes_section(val_codes, val_valid, label_sets, k,
                                    train=(train_codes, train_valid)))
    out['codebook'].update(probes.train_usage(train_codes, train_valid, val_codes,
                                                 val_valid, k))
  # The k-means baseline of these tokens (with VQ: the same tokens the codes label).
  k = setup.quantizer.num_codes if setup.vq_enabled else int(cfg.vq.codebook_size)
  tr = tokens[0][train_valid] if padded else tokens[0].reshape(-1, tokens[0].shape[-1])
  say(f'k-means baseline of the tokens ({k} codes), scored the same way...')
  km_train, km_val = kmeans_codes(tr, tuple(tokens), k)      # one fit, both splits coded
  out['kmeans'] = {'num_codes': k, **probes.codes_section(
      km_val, val_valid, label_sets, k, train=(km_train, train_valid))}
  run_files.write_json(os.path.join(workdir, run_files.EVAL), out)
  return out


def main(argv=None) -> int:
  ap = errors.ArgumentParser(prog='python -m jepa_jax.evaluate',
                             description='Linear-probe / k-NN accuracy and '
                             'code-label NMI of a trained run -> eval.json')
  ap.add_argument('--workdir', required=True)
  ap.add_argument('--knn_k', type=errors.positive_int, default=20)
  ap.add_argument('--max_images', type=errors.positive_int, default=probes.MAX_IMAGES,
                  help='labelled images probed at most (a seed-chosen subset of '
                  'larger data; default %(default)s)')
  args = ap.parse_args(argv)
  try:
    out = evaluate_run(args.workdir, args.knn_k, args.max_images,
                       say=lambda line: print(line, file=sys.stderr, flush=True))
  except Exception as err:  # pylint: disable=broad-except
    status = errors.refused(err, also=(ValueError, OSError))
    if status is None:
      raise
    return status
  line = ', '.join(f"{n} probe {out[n]['linear_probe_acc']:.1%} / kNN {out[n]['knn_acc']:.1%}"
                   for n in ('target_encoder', 'context_encoder', 'random_init', 'pixels'))
  nmi = (f", code-label AMI {out['code_label_ami']:.3f} (NMI {out['code_label_nmi']:.3f}, "
         f"shuffled {out['code_label_nmi_shuffled']:.3f}), bag-of-codes probe "
         f"{out['code_label_bag_probe']:.1%} (k-means {out['kmeans']['code_label_bag_probe']:.1%})"
         if 'code_label_ami' in out else '')
  what = ' (means over the grid-property probes)' if 'probes' in out else ''
  gain = out['learned']
  learned = (f"; {gain['encoder']} vs pixels {gain['linear_probe_over_pixels_points']:+.1f}, "
             f"vs random init {gain['linear_probe_over_random_init_points']:+.1f} points")
  print(f'{line}{nmi}{what}{learned} -> {os.path.join(args.workdir, run_files.EVAL)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
