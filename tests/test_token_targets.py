"""The token targets beside the latent regression: CAPI's clusters
(`objective.prototypes.capi_losses`, `configs/capi.py`) and MAE's pixels
(`losses.pixel_loss`, `configs/mae.py`): the losses against re-derivations
in numpy, where the gradients go, padded rows, one training step of each
config."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa_jax.objective import losses
from jepa_jax.objective import prototypes
from jepa_jax.objective import terms as objective
from jepa_jax.train import step as step_lib

TEMPS = (0.12, 0.06, 0.12)


def _capi_by_hand(params, pred, t_full, tgt_idx, temps, iters):
  """CAPI's losses in float64 numpy, Sinkhorn-Knopp in its multiplicative form
  per position (the authors' order: over the batch, then over the clusters)."""
  tau_s, tau_t, tau_c = temps
  unit = lambda x, a=-1: x / np.linalg.norm(x, axis=a, keepdims=True)
  logits = unit(t_full) @ params['clusters'] + params['clusters_bias']   # (B, N, K)
  m = np.exp((logits - logits.max()) / tau_t)
  for _ in range(iters):
    m = m / m.sum(axis=0, keepdims=True)          # each cluster's mass over the batch
    m = m / m.sum(axis=-1, keepdims=True)         # each token's over the clusters
  log_softmax = lambda x: x - x.max(-1, keepdims=True) - np.log(
      np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))
  clustering = -np.mean((m * log_softmax(logits / tau_c)).sum(-1))
  b, mb, t, _ = pred.shape
  q_tgt = np.stack([m[i, tgt_idx[i].reshape(-1)] for i in range(b)])      # (B, M*T, K)
  scores = unit(pred.reshape(b, mb * t, -1)) @ unit(params['head'], 0)
  student = -np.mean((q_tgt * log_softmax(scores / tau_s)).sum(-1))
  return student, clustering


def _example(seed, b=6, n=9, d=5, k=7, m=2, t=3):
  rng = np.random.default_rng(seed)
  params = {kk: np.asarray(v, np.float64) for kk, v in
            prototypes.init_capi(jax.random.PRNGKey(seed), d, k).items()}
  params['clusters_bias'] = rng.normal(size=k) * 0.1       # not zero: the bias is used
  pred = rng.normal(size=(b, m, t, d))
  t_full = rng.normal(size=(b, n, d))
  tgt_idx = rng.integers(0, n, size=(b, m, t))
  return params, pred, t_full, tgt_idx


def _jnp(params):
  return {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}


def test_capi_losses_match_a_numpy_re_derivation():
  params, pred, t_full, tgt_idx = _example(0)
  got = prototypes.capi_losses(_jnp(params), jnp.asarray(pred, jnp.float32),
                               jnp.asarray(t_full, jnp.float32), jnp.asarray(tgt_idx),
                               temperatures=TEMPS, num_iters=3)
  student, clustering = _capi_by_hand(params, pred, t_full, tgt_idx, TEMPS, 3)
  assert float(got['capi']) == pytest.approx(student, rel=1e-4)
  assert float(got['capi_clustering']) == pytest.approx(clustering, rel=1e-4)


def test_capi_gradients_reach_only_their_own_parameters():
  """The clustering's loss trains the clustering alone; the student's loss
  trains the head and the predictions, never the clustering; the target
  tokens get no gradient from either."""
  params, pred, t_full, tgt_idx = (_example(1)[0],) + tuple(
      jnp.asarray(x, jnp.float32 if x.dtype.kind == 'f' else jnp.int32) for x in _example(1)[1:])

  def loss(which):
    return lambda p, pr, t: prototypes.capi_losses(p, pr, t, tgt_idx)[which]
  g_p, g_pred, g_t = jax.grad(loss('capi_clustering'), argnums=(0, 1, 2))(
      _jnp(params), pred, t_full)
  assert float(jnp.abs(g_p['clusters']).max()) > 0 and float(jnp.abs(g_p['clusters_bias']).max()) > 0
  assert float(jnp.abs(g_p['head']).max()) == 0 and float(jnp.abs(g_pred).max()) == 0
  assert float(jnp.abs(g_t).max()) == 0
  g_p, g_pred, g_t = jax.grad(loss('capi'), argnums=(0, 1, 2))(_jnp(params), pred, t_full)
  assert float(jnp.abs(g_p['head']).max()) > 0 and float(jnp.abs(g_pred).max()) > 0
  assert float(jnp.abs(g_p['clusters']).max()) == 0 and float(jnp.abs(g_t).max()) == 0


def test_capi_targets_are_balanced_per_position():
  """With many iterations, at every position each cluster gets 1/K of the
  batch's mass, though one cluster dominates every token's scores (it would
  take most of the mass without the balancing); rows sum to 1."""
  params, _, t_full, _ = _example(2, b=16, k=4)
  params['clusters_bias'] = np.array([3.0, 0.0, 0.0, 0.0])
  logits, q = prototypes.capi_targets(_jnp(params), jnp.asarray(t_full, jnp.float32),
                                      TEMPS[1], num_iters=200)
  assert float(jax.nn.softmax(logits / TEMPS[1], -1)[..., 0].mean()) > 0.9
  np.testing.assert_allclose(np.asarray(q).mean(0), 0.25, atol=5e-3)
  np.testing.assert_allclose(np.asarray(q).sum(-1), 1.0, atol=1e-5)


def test_capi_losses_with_padded_images_are_the_losses_of_the_valid_ones():
  params, pred, t_full, tgt_idx = _example(3, b=7)
  keep = np.array([1, 1, 0, 1, 1, 0, 1], bool)
  valid = np.broadcast_to(keep[:, None], t_full.shape[:2])
  tgt_valid = np.broadcast_to(keep[:, None, None], tgt_idx.shape)
  f = lambda *a, **kw: prototypes.capi_losses(
      _jnp(params), *(jnp.asarray(x, jnp.float32) for x in a[:2]), jnp.asarray(a[2]), **kw)
  got = f(pred, t_full, tgt_idx, valid=jnp.asarray(valid), tgt_valid=jnp.asarray(tgt_valid))
  want = f(pred[keep], t_full[keep], tgt_idx[keep])
  for k in ('capi', 'capi_clustering'):
    assert float(got[k]) == pytest.approx(float(want[k]), rel=1e-5)


def _one_step(name):
  """(cfg, data, initial state, state after one :tiny step, its metrics) of
  configs/NAME.py, warm-up off so the step's learning rate is above 0."""
  from jepa_jax import data as data_lib  # noqa: PLC0415
  from conftest import load  # noqa: PLC0415
  cfg = load(name, 'tiny')
  cfg.train.warmup_epochs = 0
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)
  state = step_lib.init_state(setup, ds.image_shape, cfg.seed)
  new, metrics = jax.jit(step_lib.make_train_step(setup))(
      state, jnp.asarray(ds.train_images[:16]), jnp.arange(16, dtype=jnp.int32))
  return cfg, ds, state, new, metrics


def test_capi_config_trains_the_clustering_without_weight_decay():
  """configs/capi.py at :tiny: one step gives finite CAPI terms, moves the
  clustering and the head; weight decay skips the clustering only."""
  cfg, _, state, new, metrics = _one_step('capi')
  capi = state['params']['capi']
  assert capi['clusters'].shape == capi['head'].shape == (cfg.model.embed_dim, 256)
  for k in ('capi', 'capi_clustering'):
    assert np.isfinite(float(metrics[k])) and float(metrics[k]) > 0
  for k in ('clusters', 'head'):
    assert np.abs(np.asarray(new['params']['capi'][k]) - np.asarray(capi[k])).max() > 0
  assert float(metrics['invariance']) > 0       # logged, though weighted 0
  mask = objective._weight_decay_mask({'params': state['params']})['params']['capi']
  assert mask == {'clusters': False, 'clusters_bias': False, 'head': True}


def test_pixel_loss_regresses_each_patch_normalised_by_its_own_statistics():
  rng = np.random.default_rng(4)
  pred, patches = rng.normal(size=(2, 6, 12))
  patches = 3.0 * patches + 5.0
  t = (patches - patches.mean(-1, keepdims=True)) / np.sqrt(patches.var(-1, keepdims=True) + 1e-6)
  got = losses.pixel_loss(jnp.asarray(pred, jnp.float32), jnp.asarray(patches, jnp.float32))
  assert float(got) == pytest.approx(np.mean((pred - t) ** 2), rel=1e-5)
  w = np.array([1, 0, 1, 1, 0, 1], np.float32)
  got_w = losses.pixel_loss(jnp.asarray(pred, jnp.float32), jnp.asarray(patches, jnp.float32), w)
  assert float(got_w) == pytest.approx(np.mean((pred - t)[w > 0] ** 2), rel=1e-5)


def test_target_patches_are_the_pixels_under_the_target_tokens():
  """Token n of an (H/p, W/p) row-major grid is the p x p block at
  (n // (W/p), n % (W/p)), channels last, flattened row by row."""
  rng = np.random.default_rng(5)
  images = rng.normal(size=(2, 8, 12, 3)).astype(np.float32)      # grid 2 x 3 at p = 4
  tgt_idx = np.array([[[0, 5]], [[4, 2]]])                         # (b, M=1, T=2)
  got = np.asarray(objective._target_patches(jnp.asarray(images), jnp.asarray(tgt_idx), 4))
  assert got.shape == (2, 1, 2, 48)
  for b in range(2):
    for j, n in enumerate(tgt_idx[b, 0]):
      r, c = divmod(int(n), 3)
      np.testing.assert_array_equal(got[b, 0, j], images[b, 4 * r:4 * r + 4, 4 * c:4 * c + 4].reshape(-1))


def test_mae_config_trains_its_pixel_head_and_the_context_encoder():
  """configs/mae.py at :tiny: the head maps the encoder width to a patch's
  pixels; one step gives a finite 'pixel' term and moves the head and the
  context encoder."""
  cfg, ds, state, new, metrics = _one_step('mae')
  head = state['params']['pixel_head']
  p, c = cfg.model.patch_size, ds.image_shape[-1]
  assert head['kernel'].shape == (cfg.model.embed_dim, p * p * c)
  assert np.isfinite(float(metrics['pixel'])) and float(metrics['pixel']) > 0
  assert np.abs(np.asarray(new['params']['pixel_head']['kernel']) - np.asarray(head['kernel'])).max() > 0
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                       new['params']['encoder'], state['params']['encoder'])
  assert max(jax.tree.leaves(moved)) > 0


def test_top_layers_target_is_the_mean_of_the_blocks_outputs_each_normalised():
  """`loss.target_layers` K > 1 (data2vec's target): the encoder returns the
  mean over its last K blocks' outputs of (h - mean h) / sqrt(var h + 1e-6),
  per token, re-derived in numpy from the blocks' outputs (flax's
  `capture_intermediates`); K = 1 is the final LayerNorm's output, unchanged."""
  from jepa_jax.model import vit  # noqa: PLC0415
  enc = vit.ViTEncoder(patch_size=2, embed_dim=8, depth=3, num_heads=2)
  x = jnp.asarray(np.random.default_rng(6).normal(size=(2, 4, 4, 1)), jnp.float32)
  params = enc.init(jax.random.PRNGKey(0), x)
  final, inter = enc.apply(params, x, capture_intermediates=True, mutable=['intermediates'])
  blocks = [np.asarray(inter['intermediates'][f'block_{i}']['__call__'][0], np.float64)
            for i in range(3)]
  norm = lambda h: (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-6)
  got = np.asarray(enc.apply(params, x, top_layers=2))
  np.testing.assert_allclose(got, (norm(blocks[1]) + norm(blocks[2])) / 2, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(enc.apply(params, x, top_layers=1)), np.asarray(final))
  assert not np.allclose(got, np.asarray(final), atol=1e-3)


def test_top_layers_targets_train_and_differ_from_the_final_norm():
  """configs/ijepa.py at :tiny, two blocks: with `loss.target_layers=2` one
  step regresses other targets (another loss) from the same state."""
  from conftest import load  # noqa: PLC0415
  from jepa_jax import data as data_lib  # noqa: PLC0415
  losses_by_k = {}
  for k in (1, 2):
    cfg = load('ijepa', 'tiny')
    cfg.model.depth, cfg.loss.target_layers, cfg.train.warmup_epochs = 2, k, 0
    ds = data_lib.load_dataset(cfg)
    setup = step_lib.make_setup(cfg, ds)
    state = step_lib.init_state(setup, ds.image_shape, cfg.seed)
    _, metrics = jax.jit(step_lib.make_train_step(setup))(
        state, jnp.asarray(ds.train_images[:16]), jnp.arange(16, dtype=jnp.int32))
    losses_by_k[k] = float(metrics['invariance'])
  assert all(np.isfinite(v) and v > 0 for v in losses_by_k.values())
  assert losses_by_k[1] != pytest.approx(losses_by_k[2], rel=1e-3)
