"""Encoder/predictor shapes, positions, token selection and the target EMA."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa_jax.model import vit as model


def test_sincos_positions_distinct_and_bounded():
  pos = model.sincos_pos_embed_2d(16, 4, 4)
  assert pos.shape == (16, 16)
  assert np.abs(pos).max() <= 1.0
  # Row 0 / col 0 token has sin(0)=0, cos(0)=1 in both halves.
  np.testing.assert_allclose(pos[0], [0] * 4 + [1] * 4 + [0] * 4 + [1] * 4, atol=1e-7)
  d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
  assert (d + np.eye(16)).min() > 0.1                    # every position distinct


def test_encoder_token_subset_equals_full_when_all_tokens_given():
  enc = model.ViTEncoder(patch_size=2, embed_dim=16, depth=2, num_heads=2)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 1))
  params = enc.init(jax.random.PRNGKey(1), x)
  full = enc.apply(params, x)
  assert full.shape == (3, 16, 16)
  idx = jnp.tile(jnp.arange(16)[None], (3, 1))
  np.testing.assert_allclose(enc.apply(params, x, idx), full, atol=1e-5)
  sub = enc.apply(params, x, idx[:, :5])
  assert sub.shape == (3, 5, 16)


def test_predictor_output_shape_and_dependence_on_target_position():
  pred = model.Predictor(embed_dim=16, pred_dim=8, depth=1, num_heads=2, grid=(4, 4))
  ctx = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 16))
  ctx_idx = jnp.tile(jnp.arange(6)[None], (2, 1))
  tgt_idx = jnp.array([[[10, 11], [14, 15]]] * 2)
  params = pred.init(jax.random.PRNGKey(1), ctx, ctx_idx, tgt_idx)
  out = pred.apply(params, ctx, ctx_idx, tgt_idx)
  assert out.shape == (2, 2, 2, 16)
  # Same context, different target positions -> different predictions.
  assert not np.allclose(out[:, 0], out[:, 1])


def test_ema_params_and_momentum_schedule():
  t = {'w': jnp.ones(3)}
  o = {'w': jnp.zeros(3)}
  np.testing.assert_allclose(model.ema_params(t, o, 0.75)['w'], 0.75)
  assert float(model.momentum_schedule(0, 100, 0.996, 1.0)) == np.float32(0.996)
  np.testing.assert_allclose(model.momentum_schedule(50, 100, 0.996, 1.0), 0.998, rtol=1e-6)
  np.testing.assert_allclose(model.momentum_schedule(500, 100, 0.996, 1.0), 1.0)


def test_self_attention_equals_flax_multi_head_attention():
  """SelfAttention (one fused qkv matmul) has flax MHA's parameter tree and
  initial values, and the same outputs and gradients with a key mask.

  Tolerance: both compute the same sums in float32, only blocked and ordered
  differently (one (D, 3D) matmul instead of three (D, D) ones), so they
  differ by reassociation: a few ulp (eps = 1.2e-7) of O(1) values times
  sqrt of the reduction length (D = 96); 1e-5 absolute/relative is ~10x that.
  """
  import flax.linen as nn
  b, l, d, h = 3, 10, 96, 3
  x = jax.random.normal(jax.random.PRNGKey(0), (b, l, d))
  valid = jax.random.bernoulli(jax.random.PRNGKey(1), 0.6, (b, l))
  valid = valid.at[0, 0].set(True).at[1].set(False)     # row 1: no valid key
  mask = model.key_mask(valid)
  ref = nn.MultiHeadDotProductAttention(num_heads=h)
  new = model.SelfAttention(num_heads=h)
  params = ref.init(jax.random.PRNGKey(2), x, x)
  new_params = new.init(jax.random.PRNGKey(2), x)
  assert jax.tree.structure(new_params) == jax.tree.structure(params)
  jax.tree.map(np.testing.assert_array_equal, new_params, params)
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(  # non-zero biases
      jax.random.PRNGKey(3), p.shape), params)

  def loss(apply, p, x):
    out = apply(p, x)
    return (out * jnp.cos(out)).sum(), out

  for m in (None, mask):
    ref_apply = lambda p, x: ref.apply(p, x, x, mask=m)
    new_apply = lambda p, x: new.apply(p, x, m)
    (_, ref_out), ref_g = jax.value_and_grad(
        lambda p, x: loss(ref_apply, p, x), argnums=(0, 1), has_aux=True)(params, x)
    (_, new_out), new_g = jax.value_and_grad(
        lambda p, x: loss(new_apply, p, x), argnums=(0, 1), has_aux=True)(params, x)
    np.testing.assert_allclose(new_out, ref_out, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, r: np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5),
                 new_g, ref_g)
  # Masked keys are ignored: changing the input at an invalid slot changes
  # no output at the other slots of a row that has valid keys.
  y = x.at[0, 1:].set(jnp.where(valid[0, 1:, None], x[0, 1:], 5.0))
  out_x, out_y = new.apply(params, x, mask), new.apply(params, y, mask)
  keep = np.asarray(valid[0])
  np.testing.assert_allclose(out_y[0, keep], out_x[0, keep], rtol=1e-5, atol=1e-5)


def test_attention_option_selects_the_block_and_keeps_the_parameter_tree():
  """model.attention='fused' gives the same params and (to rounding) outputs as 'flax'."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 1))
  outs, trees = {}, {}
  for attention in ('flax', 'fused'):
    enc = model.ViTEncoder(patch_size=4, embed_dim=16, depth=1, num_heads=2,
                           attention=attention)
    params = enc.init(jax.random.PRNGKey(1), x)
    trees[attention] = params
    outs[attention] = enc.apply(params, x)
  chex.assert_trees_all_equal(trees['flax'], trees['fused'])
  chex.assert_trees_all_close(outs['flax'], outs['fused'], atol=1e-5)
  with pytest.raises(ValueError, match='attention'):
    model.ViTEncoder(patch_size=4, embed_dim=16, depth=1, num_heads=2,
                     attention='nope').init(jax.random.PRNGKey(1), x)
