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
                    context-encoder token of the val images (nearest code of
                    the final codebook) and the label of its image; 0 when
                    codes say nothing about the class, 1 when they determine it
  codes_used_val    distinct codes among those tokens

For scale, the same linear probe and k-NN on the raw pixels are reported as
`pixels`, and `chance` is the accuracy of always answering the most frequent
val class.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict

import jax
import numpy as np
from ml_collections import ConfigDict

from jepa_jax import config_lib
from jepa_jax import data as data_lib
from jepa_jax import final_state
from jepa_jax import records
from jepa_jax import step as step_lib
from jepa_jax import vq as vq_lib

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
    cfg = ConfigDict(json.load(f))
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
  if ds.train_labels is None or ds.val_labels is None:
    raise ValueError(f'dataset {cfg.data.name!r} has no labels: nothing to probe')
  counts = np.bincount(ds.val_labels)
  out: Dict[str, Any] = {
      'weights': final_state.FINAL_STATE, 'dataset': cfg.data.name,
      'num_train': int(len(ds.train_labels)), 'num_val': int(len(ds.val_labels)),
      'num_classes': int(len(np.unique(ds.train_labels))),
      'chance': float(counts.max() / counts.sum()), 'knn_k': knn_k,
      'pixels': probe_scores(ds.train_images, ds.train_labels, ds.val_images,
                             ds.val_labels, knn_k)}
  val_tokens = None
  encode = jax.jit(setup.encoder.apply)          # one compile per batch shape
  for name, params in (('context_encoder', state['params']['encoder']),
                       ('target_encoder', state['target_params'])):
    tr = _features(encode, params, ds.train_images)
    va = _features(encode, params, ds.val_images)
    out[name] = probe_scores(tr.mean(1), ds.train_labels, va.mean(1), ds.val_labels,
                             knn_k)
    if name == 'context_encoder':
      val_tokens = va
  if 'vq' in state:
    codes, _ = vq_lib.nearest_codes(state['vq'].codebook, val_tokens)
    codes = np.asarray(codes)                      # (N_val, tokens)
    labels = np.repeat(ds.val_labels[:, None], codes.shape[1], axis=1)
    out['code_label_nmi'] = float(normalized_mutual_info_score(labels.ravel(),
                                                               codes.ravel()))
    out['codes_used_val'] = int(len(np.unique(codes)))
  records.write_json(os.path.join(workdir, EVAL), out)
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog='python -m jepa_jax.evaluate',
                               description='Linear-probe / k-NN accuracy and '
                               'code-label NMI of a trained run -> eval.json')
  ap.add_argument('--workdir', required=True)
  ap.add_argument('--knn_k', type=int, default=20)
  args = ap.parse_args(argv)
  try:
    out = evaluate_run(args.workdir, args.knn_k)
  except (ValueError, OSError, config_lib.ConfigError) as err:
    print(f'error: {err}', file=sys.stderr)
    return 2
  line = ', '.join(f"{n} probe {out[n]['linear_probe_acc']:.1%} / kNN {out[n]['knn_acc']:.1%}"
                   for n in ('target_encoder', 'context_encoder', 'pixels'))
  nmi = f", code-label NMI {out['code_label_nmi']:.3f}" if 'code_label_nmi' in out else ''
  print(f'{line}{nmi} -> {os.path.join(args.workdir, EVAL)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
