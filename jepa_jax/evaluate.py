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

and, with VQ, how well the discrete codes ground the classes:

  code_label_nmi    normalized mutual information (arithmetic mean
                    normalisation, scikit-learn) between the code of every
                    context-encoder token of the val images (the code the
                    final quantizer assigns it, `quantizer.assign`: the
                    nearest code of the final codebook, or its FSQ grid
                    point) and the label of its image; 0 when
                    codes say nothing about the class, 1 when they determine it
  codes_used_val    distinct codes among those tokens

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
import numpy as np
from ml_collections import ConfigDict

from jepa_jax import cli
from jepa_jax import config_lib
from jepa_jax import data as data_lib
from jepa_jax import final_state
from jepa_jax import model as model_lib
from jepa_jax import quantizer as quantizer_lib
from jepa_jax import records
from jepa_jax import step as step_lib

EVAL = 'eval.json'


def load_trained_state(workdir: str):
  """(cfg, dataset, setup, state) of a finished run, weights from its folder."""
  import json  # noqa: PLC0415
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise ValueError(f'{workdir}: not a run folder (no config.json)')
  weights = os.path.join(workdir, final_state.FINAL_STATE)
  if not os.path.exists(weights):
    raise ValueError(f'{weights}: no final weights (a run writes them when it ends; '
                     'this one did not end or predates them)')
  with open(path) as f:
    cfg = config_lib.fill_added_keys(ConfigDict(json.load(f)))
  config_lib.validate(cfg)
  dataset = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, dataset)
  # Only the structure and shapes are needed: no initialisation is computed.
  target = jax.eval_shape(lambda: step_lib.init_state(setup, dataset.image_shape,
                                                      cfg.seed))
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
  from sklearn.metrics import normalized_mutual_info_score  # noqa: PLC0415
  from jepa_jax.data import grid_properties  # noqa: PLC0415
  train_y = grid_properties.grid_properties(ds.train_images)
  val_y = grid_properties.grid_properties(ds.val_images)
  pixels = _cell_features(setup.cfg, ds.train_images, ds.val_images)
  probes = {}
  for name in grid_properties.NAMES:
    ytr, yva = train_y[name], val_y[name]
    res = {'num_classes': int(len(np.unique(np.concatenate([ytr, yva])))),
           'chance': _chance(yva)}
    for enc, (tr, va) in (*feats.items(), ('pixels', pixels)):
      res[enc] = probe_scores(tr, ytr, va, yva, knn_k)
    if val_codes is not None:
      labels = np.broadcast_to(yva[:, None], val_codes.shape)[val_valid]
      res['code_property_nmi'] = float(normalized_mutual_info_score(
          labels, val_codes[val_valid]))
    probes[name] = res
  mean = lambda f: float(np.mean([f(r) for r in probes.values()]))  # noqa: E731
  out = {'labels': 'grid_properties', 'probes': probes,
         'chance': mean(lambda r: r['chance'])}
  for enc in (*feats, 'pixels'):
    out[enc] = {k: mean(lambda r, k=k, enc=enc: r[enc][k])
                for k in ('linear_probe_acc', 'knn_acc')}
  if val_codes is not None:
    out['code_label_nmi'] = mean(lambda r: r['code_property_nmi'])
  return out


def probe_scores(train_x, train_y, val_x, val_y, k: int) -> Dict[str, float]:
  """Linear-probe and k-NN accuracy of features (train split -> val split)."""
  from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
  from sklearn.neighbors import KNeighborsClassifier  # noqa: PLC0415
  from sklearn.pipeline import make_pipeline  # noqa: PLC0415
  from sklearn.preprocessing import StandardScaler  # noqa: PLC0415
  train_x = train_x.reshape(len(train_x), -1).astype(np.float64)
  val_x = val_x.reshape(len(val_x), -1).astype(np.float64)
  probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
  probe.fit(train_x, train_y)
  knn = KNeighborsClassifier(n_neighbors=min(k, len(train_x)), metric='cosine')
  knn.fit(train_x, train_y)
  return {'linear_probe_acc': float(probe.score(val_x, val_y)),
          'knn_acc': float(knn.score(val_x, val_y))}


def evaluate_run(workdir: str, knn_k: int = 20) -> Dict[str, Any]:
  """Computes the downstream metrics of a run and writes eval.json."""
  from sklearn.metrics import normalized_mutual_info_score  # noqa: PLC0415
  cfg, ds, setup, state = load_trained_state(workdir)
  if not 1 <= knn_k <= len(ds.train_images):     # refused, not clamped
    raise ValueError(f'--knn_k={knn_k}: must be in [1, {len(ds.train_images)}] '
                     f'(the training examples of dataset {cfg.data.name!r})')
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
  feats, val_tokens = {}, None
  for name, params in (('context_encoder', state['params']['encoder']),
                       ('target_encoder', state['target_params'])):
    tr = _features(encode, params, ds.train_images)
    va = _features(encode, params, ds.val_images)
    feats[name] = (_pool(tr, train_valid), _pool(va, val_valid))
    if name == 'context_encoder':
      val_tokens = va
  val_codes = None
  if setup.vq_enabled:          # the codes the step would choose (any quantizer)
    val_codes = np.asarray(quantizer_lib.assign(
        setup.quantizer, state.get('vq'), state.get('vq_params'), val_tokens))
  out: Dict[str, Any] = {
      'weights': final_state.FINAL_STATE, 'dataset': cfg.data.name,
      'num_train': int(len(ds.train_images)), 'num_val': int(len(ds.val_images)),
      'knn_k': knn_k}
  if not labelled:
    out.update(_evaluate_properties(ds, setup, feats, val_valid, val_codes, knn_k))
  else:
    pixels = (_cell_features(cfg, ds.train_images, ds.val_images) if padded
              else (ds.train_images, ds.val_images))
    out.update({
        'num_classes': int(len(np.unique(ds.train_labels))),
        'chance': _chance(ds.val_labels),
        'pixels': probe_scores(pixels[0], ds.train_labels, pixels[1], ds.val_labels,
                               knn_k)})
    for name, (tr, va) in feats.items():
      out[name] = probe_scores(tr, ds.train_labels, va, ds.val_labels, knn_k)
    if val_codes is not None:
      keep = np.ones(val_codes.shape, bool) if val_valid is None else val_valid
      labels = np.broadcast_to(ds.val_labels[:, None], val_codes.shape)
      out['code_label_nmi'] = float(normalized_mutual_info_score(labels[keep],
                                                                 val_codes[keep]))
  if val_codes is not None:
    used = val_codes if val_valid is None else val_codes[val_valid]
    out['codes_used_val'] = int(len(np.unique(used)))
  records.write_json(os.path.join(workdir, EVAL), out)
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
  except (ValueError, OSError, config_lib.ConfigError) as err:
    print(f'error: {err}', file=sys.stderr)
    return 2
  line = ', '.join(f"{n} probe {out[n]['linear_probe_acc']:.1%} / kNN {out[n]['knn_acc']:.1%}"
                   for n in ('target_encoder', 'context_encoder', 'pixels'))
  nmi = f", code-label NMI {out['code_label_nmi']:.3f}" if 'code_label_nmi' in out else ''
  what = ' (means over the grid-property probes)' if 'probes' in out else ''
  print(f'{line}{nmi}{what} -> {os.path.join(args.workdir, EVAL)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
