"""Downstream quality of a trained run's frozen features: WORKDIR/eval.json.

    python -m jepa_jax.evaluate --workdir RUN_DIR [--knn_k 20]

Loads the run's config (config.json) and final weights
(`final_state.msgpack`, see `jepa_jax.final_state`), encodes every labelled
image of the run's dataset whole (unmasked) with the frozen context encoder
and the frozen target (EMA) encoder, one feature per image = the mean of its
token embeddings (the same features as the embedding metrics), and measures,
training on the train split and scoring on the val split:

  linear_probe_acc  multinomial logistic regression (scikit-learn, L2, C=1)
                    on standardised features
  knn_acc           k-nearest-neighbour majority vote, cosine distance, k=20

Probes are scored by 5-fold cross-validation over every labelled image
(train and val splits together, folds shuffled with seed 0): each image is
predicted once by a probe fitted on the other folds, so the accuracy rests
on all N images, reported with its 95% interval `*_ci95` = 1.96 sqrt(p (1 -
p) / N) (normal approximation; ~ +/-2 points on the 1,797 digits).

With VQ, how well the discrete codes ground the classes, from the code of
every context-encoder token of the val images (the code the final
quantizer assigns it, `quantizer.assign`) and the label of its image:

  code_label_nmi    normalized mutual information (arithmetic mean
                    normalisation, scikit-learn); 0 when codes say nothing
                    about the class, 1 when they determine it
  code_label_nmi_shuffled
                    the same with the images' labels permuted (mean of 10
                    permutations): what NMI reads by chance with this many
                    codes and tokens
  code_label_ami    adjusted mutual information (scikit-learn's
                    `adjusted_mutual_info_score`): 0 at chance, 1 at a
                    perfect match; the number to compare across variants
  codes_used_val    distinct codes among those tokens, and `codebook` the
                    usage summary of `jepa_jax.codebook_health` with
                    `sorted_counts`, the usage histogram (largest first)

Without VQ, the same code metrics of a k-means baseline (`kmeans`):
K = `vq.codebook_size` centres fitted on the context encoder's tokens of the
train images (at most 20,000, k-means++ init, seed 0), val tokens assigned
to the nearest centre. A VQ variant's codes are compared with the k-means
codes of the no-VQ run that shares its loss settings.

For scale, the same linear probe and k-NN on the raw pixels are reported as
`pixels`, and `chance` is the accuracy of always answering the most frequent
val class.

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
context_encoder, target_encoder, pixels, code_property_nmi}}, and the
top-level `context_encoder`, `target_encoder`, `pixels`, `chance` and
`code_label_nmi` are the means over the properties (`labels`:
'grid_properties'), so the assessment report's downstream table reads them
like class probes.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from jepa_jax import cli
from jepa_jax import codebook_health as health
from jepa_jax import config_lib
from jepa_jax import data as data_lib
from jepa_jax import final_state
from jepa_jax import model as model_lib
from jepa_jax import probe_cache
from jepa_jax import quantizer as quantizer_lib
from jepa_jax import records
from jepa_jax import run_files
from jepa_jax import step as step_lib
from jepa_jax import vq as vq_lib



def run_setup(workdir: str):
  """(cfg, dataset, setup, target) of a run folder: its config.json (keys
  added since filled in), data and `step.Setup`, and the train state's
  structure and shapes (`jax.eval_shape`: no initialisation is computed)."""
  import json  # noqa: PLC0415
  path = os.path.join(workdir, run_files.CONFIG)
  if not os.path.exists(path):
    raise ValueError(f'{workdir}: not a run folder (no config.json)')
  with open(path) as f:
    try:
      cfg = config_lib.fill_added_keys(ConfigDict(json.load(f)))
    except ValueError as err:
      raise ValueError(f'{path}: damaged JSON ({err})') from None
  config_lib.validate(cfg)
  dataset = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, dataset)
  target = jax.eval_shape(lambda: step_lib.init_state(setup, dataset.image_shape,
                                                      cfg.seed))
  return cfg, dataset, setup, target


def load_trained_state(workdir: str):
  """(cfg, dataset, setup, state) of a finished run, weights from its folder."""
  if not os.path.exists(os.path.join(workdir, run_files.CONFIG)):
    raise ValueError(f'{workdir}: not a run folder (no config.json)')
  weights = os.path.join(workdir, run_files.FINAL_STATE)
  if not os.path.exists(weights):
    raise ValueError(f'{weights}: no final weights (a run writes them when it ends; '
                     'this one did not end or predates them)')
  cfg, dataset, setup, target = run_setup(workdir)
  return cfg, dataset, setup, final_state.load(workdir, target)


def _features(encode, params, images, batch=512):
  toks = [np.asarray(encode(params, images[i:i + batch]))
          for i in range(0, len(images), batch)]
  return np.concatenate(toks)                     # (N, tokens, D)


def _pool(tokens, valid):
  """Per-image feature: mean over all tokens, or over valid ones (N, D)."""
  if valid is None:
    return tokens.mean(1)
  w = valid[..., None].astype(np.float64)
  return (tokens * w).sum(1) / np.maximum(w.sum(1), 1.0)


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


def _chance(y):
  counts = np.bincount(y)
  return float(counts.max() / counts.sum())


def _evaluate_properties(ds, setup, feats, val_valid, val_codes, knn_k):
  """Grid-property probes of unlabelled colour-id data (see module docstring)."""
  from jepa_jax.data import grid_properties  # noqa: PLC0415
  train_y = grid_properties.grid_properties(ds.train_images)
  val_y = grid_properties.grid_properties(ds.val_images)
  pixels = _cell_features(setup.cfg, ds.train_images, ds.val_images)
  probes = {}
  for name in grid_properties.NAMES:
    ytr, yva = train_y[name], val_y[name]
    res = {'num_classes': int(len(np.unique(np.concatenate([ytr, yva])))),
           'chance': _chance(np.concatenate([ytr, yva]))}
    for enc, (tr, va) in feats.items():
      res[enc] = probe_scores(tr, ytr, va, yva, knn_k)
    # The reference features depend on the data only: cached across runs.
    res['pixels'] = probe_cache.cached(probe_scores, pixels[0], ytr, pixels[1], yva, k=knn_k)
    if val_codes is not None:
      res.update({f'code_property_{k}': v for k, v in code_metrics(
          val_codes, yva, val_valid).items()})
    probes[name] = res
  mean = lambda f: float(np.mean([f(r) for r in probes.values()]))  # noqa: E731
  out = {'labels': 'grid_properties', 'probes': probes,
         'chance': mean(lambda r: r['chance'])}
  for enc in (*feats, 'pixels'):
    out[enc] = {k: mean(lambda r, k=k, enc=enc: r[enc][k])
                for k in ('linear_probe_acc', 'linear_probe_ci95', 'knn_acc', 'knn_ci95')}
  return out


CODE_METRICS = ('nmi', 'nmi_shuffled', 'ami')
NUM_FOLDS = 5
NUM_SHUFFLES = 10


def code_metrics(codes, labels, valid=None, num_shuffles: int = NUM_SHUFFLES,
                 seed: int = 0) -> Dict[str, float]:
  """NMI, its label-shuffle baseline and AMI of token codes (N, T) against
  per-image labels (N,) (valid (N, T): the tokens counted). The shuffle
  permutes the images' labels (each image keeps its tokens together)."""
  from sklearn.metrics import adjusted_mutual_info_score  # noqa: PLC0415
  from sklearn.metrics import normalized_mutual_info_score  # noqa: PLC0415
  codes = np.asarray(codes)
  keep = np.ones(codes.shape, bool) if valid is None else np.asarray(valid, bool)
  flat = codes[keep]
  tok = lambda y: np.broadcast_to(np.asarray(y)[:, None], codes.shape)[keep]  # noqa: E731
  rng = np.random.default_rng(seed)
  shuffled = [normalized_mutual_info_score(tok(rng.permutation(labels)), flat)
              for _ in range(num_shuffles)]
  return {'nmi': float(normalized_mutual_info_score(tok(labels), flat)),
          'nmi_shuffled': float(np.mean(shuffled)),
          'ami': float(adjusted_mutual_info_score(tok(labels), flat))}


def _ci95(p: float, n: int) -> float:
  return float(1.96 * np.sqrt(p * (1 - p) / max(n, 1)))


def probe_scores(train_x, train_y, val_x, val_y, k: int,
                 folds: int = NUM_FOLDS) -> Dict[str, float]:
  """Linear-probe and k-NN accuracy of features, cross-validated over train
  and val together (module docstring), each with its 95% interval."""
  from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
  from sklearn.model_selection import KFold, cross_val_predict  # noqa: PLC0415
  from sklearn.neighbors import KNeighborsClassifier  # noqa: PLC0415
  from sklearn.pipeline import make_pipeline  # noqa: PLC0415
  from sklearn.preprocessing import StandardScaler  # noqa: PLC0415
  x = np.concatenate([train_x.reshape(len(train_x), -1),
                      val_x.reshape(len(val_x), -1)]).astype(np.float64)
  y = np.concatenate([train_y, val_y])
  cv = KFold(folds, shuffle=True, random_state=0)
  n_fit = len(x) * (folds - 1) // folds
  out = {}
  for name, model in (
      ('linear_probe', make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))),
      ('knn', KNeighborsClassifier(n_neighbors=min(k, n_fit), metric='cosine'))):
    acc = float(np.mean(cross_val_predict(model, x, y, cv=cv) == y))
    out[f'{name}_acc'], out[f'{name}_ci95'] = acc, _ci95(acc, len(y))
  return out


def kmeans_codes(train_tokens, val_tokens, num_codes: int, max_fit: int = 20_000,
                 cosine: bool = False):
  """Codes of val tokens (N, T, D) under k-means with `num_codes` centres
  fitted on train tokens (M, D) (at most max_fit of them, seed 0).

  cosine=True: the same fit, then each val token goes to its nearest
  l2-normalised centre (`vq.nearest_codes`, float32), the assignment of a
  layer with l2-normalised codes (`vq.l2_normalize`).
  """
  from sklearn.cluster import KMeans  # noqa: PLC0415
  rng = np.random.default_rng(0)
  fit = train_tokens[rng.permutation(len(train_tokens))[:max_fit]].astype(np.float64)
  km = KMeans(n_clusters=min(num_codes, len(fit)), n_init=1, max_iter=100,
              random_state=0).fit(fit)
  shape, flat = val_tokens.shape[:-1], val_tokens.reshape(-1, val_tokens.shape[-1])
  if not cosine:
    return km.predict(flat.astype(np.float64)).reshape(shape)
  centres = km.cluster_centers_
  centres = centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
  codes = vq_lib.nearest_codes(jnp.asarray(centres, jnp.float32), jnp.asarray(flat))[0]
  return np.asarray(codes).reshape(shape)


def _label_sets(ds, labelled):
  """{name: (train labels, val labels)}: the classes, or ARC's grid properties."""
  if labelled:
    return {'label': (ds.train_labels, ds.val_labels)}
  from jepa_jax.data import grid_properties  # noqa: PLC0415
  tr = grid_properties.grid_properties(ds.train_images)
  va = grid_properties.grid_properties(ds.val_images)
  return {name: (tr[name], va[name]) for name in grid_properties.NAMES}


def _codes_section(codes, valid, label_sets, num_codes) -> Dict[str, Any]:
  """Code metrics of val codes (means over the label sets), usage summary."""
  per = [code_metrics(codes, va, valid) for _, va in label_sets.values()]
  out = {f'code_label_{k}': float(np.mean([p[k] for p in per])) for k in CODE_METRICS}
  counts = health.code_counts(codes, num_codes, valid)
  out['codes_used_val'] = int((counts > 0).sum())
  out['codebook'] = {**health.usage_summary(counts, 'vq'),
                     'sorted_counts': health.sorted_counts(counts)}
  return out


def _train_usage(train_codes, train_valid, val_codes, val_valid, num_codes):
  """Train-split usage and the val usage expected from the train shares
  (`codebook_health.expected_usage`): the ceiling the val split's size puts
  on val usage."""
  train = health.code_counts(train_codes, num_codes, train_valid)
  n_val = int(health.code_counts(val_codes, num_codes, val_valid).sum())
  return {'train_usage_ratio': float((train > 0).mean()),
          'train_perplexity': health.usage_summary(train, 'vq')['vq_perplexity'],
          'val_tokens': n_val,
          'expected_val_usage_ratio': health.expected_usage(train, n_val)}


def evaluate_run(workdir: str, knn_k: int = 20) -> Dict[str, Any]:
  """Computes the downstream metrics of a run and writes eval.json."""
  cfg, ds, setup, state = load_trained_state(workdir)
  n_fit = (len(ds.train_images) + len(ds.val_images)) * (NUM_FOLDS - 1) // NUM_FOLDS
  if not 1 <= knn_k <= n_fit:                    # refused, not clamped
    raise ValueError(f'--knn_k={knn_k}: must be in [1, {n_fit}] (the images a '
                     f'cross-validation fold fits on, dataset {cfg.data.name!r})')
  labelled = ds.train_labels is not None and ds.val_labels is not None
  if not labelled and ds.num_colours is None:
    raise ValueError(f'dataset {cfg.data.name!r} has no labels: nothing to probe')
  padded = setup.padded
  patch = cfg.model.patch_size

  def encode_fn(params, images):
    valid = model_lib.token_validity(images, patch) if padded else None
    return setup.encoder.apply(params, images, None, valid)

  def validity(images):
    return np.asarray(model_lib.token_validity(images, patch)) if padded else None

  train_valid, val_valid = validity(ds.train_images), validity(ds.val_images)
  encode = jax.jit(encode_fn)                    # one compile per batch shape
  feats, tokens = {}, None
  for name, params in (('context_encoder', state['params']['encoder']),
                       ('target_encoder', state['target_params'])):
    tr = _features(encode, params, ds.train_images)
    va = _features(encode, params, ds.val_images)
    feats[name] = (_pool(tr, train_valid), _pool(va, val_valid))
    if name == 'context_encoder':
      tokens = (tr, va)
  out: Dict[str, Any] = {
      'weights': run_files.FINAL_STATE, 'dataset': cfg.data.name,
      'num_train': int(len(ds.train_images)), 'num_val': int(len(ds.val_images)),
      'knn_k': knn_k, 'probe_protocol': f'{NUM_FOLDS}-fold CV over train + val'}
  val_codes = None
  if setup.vq_enabled:          # the codes the step would choose (any quantizer)
    val_codes = np.asarray(quantizer_lib.assign(
        setup.quantizer, state.get('vq'), state.get('vq_params'), tokens[1]))
  if not labelled:
    out.update(_evaluate_properties(ds, setup, feats, val_valid, val_codes, knn_k))
  else:
    pixels = (_cell_features(cfg, ds.train_images, ds.val_images) if padded
              else (ds.train_images, ds.val_images))
    out.update({
        'num_classes': int(len(np.unique(ds.train_labels))),
        'chance': _chance(np.concatenate([ds.train_labels, ds.val_labels])),
        'pixels': probe_cache.cached(probe_scores, pixels[0], ds.train_labels,
                                     pixels[1], ds.val_labels, k=knn_k)})
    for name, (tr, va) in feats.items():
      out[name] = probe_scores(tr, ds.train_labels, va, ds.val_labels, knn_k)
  label_sets = _label_sets(ds, labelled)
  if val_codes is not None:
    k = setup.quantizer.num_codes
    out.update(_codes_section(val_codes, val_valid, label_sets, k))
    train_codes = np.asarray(quantizer_lib.assign(
        setup.quantizer, state.get('vq'), state.get('vq_params'), tokens[0]))
    out['codebook'].update(_train_usage(train_codes, train_valid, val_codes, val_valid, k))
  else:                         # no VQ: the k-means baseline of these tokens
    k = int(cfg.vq.codebook_size)
    tr = tokens[0][train_valid] if padded else tokens[0].reshape(-1, tokens[0].shape[-1])
    km = kmeans_codes(tr, tokens[1], k)
    out['kmeans'] = {'num_codes': k, **_codes_section(km, val_valid, label_sets, k)}
  records.write_json(os.path.join(workdir, run_files.EVAL), out)
  return out


def main(argv=None) -> int:
  ap = cli.ArgumentParser(prog='python -m jepa_jax.evaluate',
                               description='Linear-probe / k-NN accuracy and '
                               'code-label NMI of a trained run -> eval.json')
  ap.add_argument('--workdir', required=True)
  ap.add_argument('--knn_k', type=cli.positive_int, default=20)
  args = ap.parse_args(argv)
  try:
    out = evaluate_run(args.workdir, args.knn_k)
  except Exception as err:  # pylint: disable=broad-except
    status = cli.refused(err, also=(ValueError, OSError))
    if status is None:
      raise
    return status
  line = ', '.join(f"{n} probe {out[n]['linear_probe_acc']:.1%} / kNN {out[n]['knn_acc']:.1%}"
                   for n in ('target_encoder', 'context_encoder', 'pixels'))
  nmi = (f", code-label AMI {out['code_label_ami']:.3f} (NMI {out['code_label_nmi']:.3f}, "
         f"shuffled {out['code_label_nmi_shuffled']:.3f})" if 'code_label_ami' in out else '')
  what = ' (means over the grid-property probes)' if 'probes' in out else ''
  print(f'{line}{nmi}{what} -> {os.path.join(args.workdir, run_files.EVAL)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
