"""Fast checks of the VQ autoencoder experiment (experiments/results/vqae/vqae.py)."""
import math

import jax
import numpy as np
import pytest

from experiments.results.vqae import vqae


def test_code_usage_counts_distinct_codes_by_hand():
  # Codes 0 once, 1 twice, 3 three times; K = 8.
  codes = np.array([[0, 1, 1], [3, 3, 3]])
  out = vqae.code_usage(codes, 8)
  assert out['codes_used'] == 3
  assert out['usage'] == pytest.approx(3 / 8)
  p = np.array([1, 2, 3]) / 6
  assert out['perplexity'] == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-5)


def test_vq_term_mean_and_sum_differ_by_width():
  a = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 10
  b = np.ones_like(a)
  sq = (a - b) ** 2
  assert float(vqae.vq_term(a, b, 'mean')) == pytest.approx(sq.mean(), rel=1e-6)
  assert float(vqae.vq_term(a, b, 'sum')) == pytest.approx(sq.sum(-1).mean(), rel=1e-6)
  assert float(vqae.vq_term(a, b, 'sum')) == pytest.approx(
      4 * float(vqae.vq_term(a, b, 'mean')), rel=1e-6)


def test_make_config_applies_method_and_overrides():
  c = vqae.make_config('simvq', 64, 'sum', 3, {'ae.codebook_lr': 0.01})
  assert c.vq.simvq and c.vq.ema_decay is None
  assert (c.vq.codebook_size, c.ae.reduction, c.seed, c.ae.codebook_lr) == (64, 'sum', 3, 0.01)
  assert vqae.make_config('fsq', 64, 'mean', 0).vq.fsq_levels == (4, 4, 4)
  with pytest.raises(ValueError, match='FSQ levels'):
    vqae.make_config('fsq', 100, 'mean', 0)


def test_patchify_roundtrip():
  x = np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8, 1)
  t = vqae.patchify(x)
  assert t.shape == (2, 4, 4, 4)
  np.testing.assert_array_equal(t[0, 0, 1], [2, 3, 10, 11])   # pixels (0..1, 2..3)
  np.testing.assert_array_equal(vqae.unpatchify(t), x)


def test_tiny_ae_loss_decreases_and_val_usage_is_distinct_codes():
  train_images, val_images = vqae.load_digits()
  assert (len(train_images), len(val_images)) == (1527, 270)   # the project's split
  cfg = vqae.make_config('plain_grad', 16, 'mean', 0, {
      'model.embed_dim': 8, 'model.width': 8, 'ae.steps': 30, 'ae.batch_size': 32,
      'ae.eval_every': 10, 'ae.lr': 3e-3})
  ae = vqae.AE(cfg)
  ts = ae.init(train_images)
  batch = train_images[:32]
  losses = []
  for _ in range(30):
    ts, m = ae.step(ts, batch)
    losses.append(float(m['loss']))
  assert np.isfinite(losses).all()
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
  # The reported usage is the number of distinct codes over every val token / K.
  res = vqae.train(cfg, train_images, val_images[:20], ae)
  ts = ae.init(train_images)
  assert res['curve'][0][0] == 0 and res['curve'][-1][0] == 30
  _, codes = ae.evaluate(ts, val_images[:20])
  assert codes.shape == (20, 16)
  assert res['curve'][0][1] == pytest.approx(len(np.unique(np.asarray(codes))) / 16)
  assert res['val_usage'] == pytest.approx(res['val_codes_used'] / 16)
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(
      lambda x: bool(np.isfinite(x).all()), ts['enc']))
