"""Probes of frozen features: the protocol of `evaluate` and of the probe
trajectory (`probe_trajectory`), as functions of plain arrays.

  linear probe   multinomial logistic regression (scikit-learn, L2, C=1,
                 lbfgs, max_iter=5000) on standardised features
                 (StandardScaler fitted on the probe's training rows)
  k-NN           majority vote of the k nearest neighbours, cosine distance

`probe_scores` (eval.json) cross-validates both over train and val together
(`NUM_FOLDS` folds, shuffled with seed 0: every image predicted once by a
probe fitted on the other folds), each accuracy p with its 95% interval
1.96 sqrt(p (1 - p) / N). `linear_probe_holdout` (the trajectory, cheaper)
fits the linear probe on train rows and scores it on val rows. `gains` is
how far a trained encoder's probe is above two references, in points.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

NUM_FOLDS = 5


def ci95(p: float, n: int) -> float:
  """1.96 sqrt(p (1 - p) / n): the normal-approximation 95% half-interval."""
  return float(1.96 * np.sqrt(p * (1 - p) / max(n, 1)))


def chance(y) -> float:
  """Accuracy of always answering the most frequent label of `y`."""
  counts = np.bincount(y)
  return float(counts.max() / counts.sum())


def _linear_model():
  from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
  from sklearn.pipeline import make_pipeline  # noqa: PLC0415
  from sklearn.preprocessing import StandardScaler  # noqa: PLC0415
  return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))


def _rows(x) -> np.ndarray:
  return np.asarray(x).reshape(len(x), -1).astype(np.float64)


def probe_scores(train_x, train_y, val_x, val_y, k: int,
                 folds: int = NUM_FOLDS) -> Dict[str, float]:
  """Linear-probe and k-NN (k neighbours, at most the rows a fold fits on)
  accuracy of features, cross-validated over train and val together
  (module docstring): {linear_probe_acc, linear_probe_ci95, knn_acc, knn_ci95}."""
  from sklearn.model_selection import KFold, cross_val_predict  # noqa: PLC0415
  from sklearn.neighbors import KNeighborsClassifier  # noqa: PLC0415
  x = np.concatenate([_rows(train_x), _rows(val_x)])
  y = np.concatenate([train_y, val_y])
  cv = KFold(folds, shuffle=True, random_state=0)
  n_fit = len(x) * (folds - 1) // folds
  out = {}
  for name, model in (
      ('linear_probe', _linear_model()),
      ('knn', KNeighborsClassifier(n_neighbors=min(k, n_fit), metric='cosine'))):
    acc = float(np.mean(cross_val_predict(model, x, y, cv=cv) == y))
    out[f'{name}_acc'], out[f'{name}_ci95'] = acc, ci95(acc, len(y))
  return out


def linear_probe_holdout(train_x, train_y, val_x, val_y) -> float:
  """Accuracy on (val_x, val_y) of the linear probe fitted on (train_x,
  train_y). Labels the training rows lack are mispredicted, never refused;
  a single training class predicts that class."""
  train_y, val_y = np.asarray(train_y), np.asarray(val_y)
  if len(np.unique(train_y)) < 2:               # logistic regression needs two
    return float(np.mean(val_y == train_y[0]))
  model = _linear_model().fit(_rows(train_x), train_y)
  return float(np.mean(model.predict(_rows(val_x)) == val_y))


def subset(num_train: int, num_val: int, max_train: int, max_val: int,
           seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """(train indices, val indices), sorted: at most max_train of range(num_train)
  and max_val of range(num_val), drawn without replacement by
  numpy.random.default_rng(seed) (train first); all when there are fewer."""
  rng = np.random.default_rng(seed)
  tr = np.sort(rng.permutation(num_train)[:max_train])
  va = np.sort(rng.permutation(num_val)[:max_val])
  return tr, va


def gains(trained: Dict[str, Dict[str, float]], pixels: Dict[str, float],
          random_init: Optional[Dict[str, float]]) -> Dict[str, object]:
  """How much the better trained encoder (by linear probe) of `trained`
  ({encoder: probe scores}) is above the pixels' and the random-init
  encoder's probes: 100 x (accuracy - reference accuracy), in points, for
  the linear probe and the k-NN of that encoder."""
  best = max(trained, key=lambda e: trained[e]['linear_probe_acc'])
  acc = trained[best]
  out: Dict[str, object] = {'encoder': best, 'linear_probe_acc': acc['linear_probe_acc'],
                            'knn_acc': acc['knn_acc']}
  for ref_name, ref in (('pixels', pixels), ('random_init', random_init)):
    if ref is None:
      continue
    for probe in ('linear_probe', 'knn'):
      out[f'{probe}_over_{ref_name}_points'] = 100.0 * (
          acc[f'{probe}_acc'] - ref[f'{probe}_acc'])
  return out
