"""Padded categorical grids: padding never reaches masks, attention, losses or VQ."""
import json

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.results.goal_gaps import ami_sources
from experiments import report
from experiments.results.usage_bound import usage_bound
from jepa_jax import data as data_lib
from jepa_jax import evaluate
from jepa_jax.data import arc
from jepa_jax.data import grid_properties as gp
from jepa_jax.eval import measure
from jepa_jax.model import masking
from jepa_jax.model import vit as model_lib
from jepa_jax.run import files as records
from jepa_jax.train import loop as train
from jepa_jax.train import step as step_lib
from conftest import load


def _mask_cfg(m=2, tgt=(2, 2), ctx_block=(3, 3), k=8):
  c = ml_collections.ConfigDict()
  c.num_target_blocks, c.target_block_size = m, tgt
  c.context_block_size, c.num_context_tokens = ctx_block, k
  return c


def test_masks_use_valid_tokens_only():
  grid, cfg = (6, 6), _mask_cfg()
  rng = np.random.default_rng(0)
  valid = np.zeros((40, 6, 6), bool)
  for i in range(40):                        # top-left grids of every size ...
    valid[i, :1 + i % 6, :1 + (i // 6) % 6] = True
  valid[36:] = rng.random((4, 6, 6)) < 0.4   # ... and scattered patterns
  valid[39] = False                          # and an all-padding sample
  valid = valid.reshape(40, 36)
  sample = jax.jit(lambda k, ids, v: masking.sample_masks_valid(k, ids, grid, cfg, v))
  ctx, tgt, cv, tv = jax.tree.map(np.asarray, sample(
      jax.random.PRNGKey(0), np.arange(40), jnp.asarray(valid)))
  assert ctx.shape == (40, 8) and tgt.shape == (40, 2, 4)
  assert cv.shape == (40, 8) and tv.shape == (40, 2, 4)
  for v, c, t, c_ok, t_ok in zip(valid, ctx, tgt, cv, tv):
    n_valid = int(v.sum())
    ctx_tokens, tgt_tokens = c[c_ok], set(t[t_ok].tolist())
    assert v[ctx_tokens].all() and v[list(tgt_tokens)].all()
    assert len(set(ctx_tokens.tolist())) == len(ctx_tokens)          # distinct
    assert not set(ctx_tokens.tolist()) & tgt_tokens                  # disjoint
    # Every valid slot is filled: context takes min(K, valid non-targets).
    assert len(ctx_tokens) == min(8, n_valid - len(tgt_tokens))
    assert len(ctx_tokens) >= min(n_valid, 1)                         # never empty
    if n_valid <= 1:
      assert not t_ok.any()
    # Target blocks are 2x2 squares placed over the grid.
    for block in t:
      rows, cols = block // 6, block % 6
      assert rows.max() - rows.min() == 1 and cols.max() - cols.min() == 1
  # On a grid of at least 2x2 tokens the blocks lie inside it: a target slot
  # is invalid only where it holds the token reserved for the context.
  big = [i for i in range(36) if valid[i].reshape(6, 6)[:2, :2].all()]
  assert len(big) == 25
  for i in big:
    off = set(tgt[i][~tv[i]].tolist())
    assert len(off) <= 1 and off <= set(ctx[i][cv[i]].tolist())


@pytest.fixture(scope='module')
def arc_setup():
  cfg = load('arc_gentle', 'tiny')
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)
  state = step_lib.init_state(setup, ds.image_shape, cfg.seed)
  step = jax.jit(step_lib.make_train_step(setup))
  emb = jax.jit(measure.make_device_fn(setup, cfg.seed))
  return cfg, ds, setup, state, step, emb


def _canvas(grid, size, pad):
  out = np.full((size, size), pad, np.float32)
  out[:grid.shape[0], :grid.shape[1]] = grid
  return out


def test_encoder_outputs_ignore_padding_and_canvas_size(arc_setup):
  _, _, setup, state, _, _ = arc_setup            # 3x3-cell patches
  params = state['params']['encoder']
  rng = np.random.default_rng(0)
  grid = rng.integers(0, 10, (7, 5))
  apply = jax.jit(setup.encoder.apply)
  out = {}
  for size, pad in ((9, -1), (15, -4), (15, None)):
    img = _canvas(grid, size, -1)
    if pad is None:                       # padding filled with random negatives
      img = np.where(img < 0, -rng.integers(1, 1000, img.shape), img)
    else:
      img = np.where(img < 0, pad, img)
    img = jnp.asarray(img, jnp.float32)[None, ..., None]
    valid = model_lib.token_validity(img, 3)
    g = size // 3
    assert valid.reshape(g, g)[:3, :2].all() and int(valid.sum()) == 6
    y = apply(params, img, None, valid).reshape(g, g, -1)
    out[(size, pad)] = np.asarray(y[:3, :2])
  ref = out[(9, -1)]
  for key, val in out.items():
    np.testing.assert_allclose(val, ref, rtol=1e-5, atol=1e-6, err_msg=str(key))
  # If attention could see every token, the padding would leak into the grid's.
  img = jnp.asarray(_canvas(grid, 15, -1))[None, ..., None]
  leaky = apply(params, img, None, jnp.ones((1, 25), bool)).reshape(5, 5, -1)[:3, :2]
  assert not np.allclose(leaky, ref, atol=1e-3)


def test_predictor_ignores_invalid_slots(arc_setup):
  _, _, setup, state, _, _ = arc_setup
  params = state['params']['predictor']
  rng = np.random.default_rng(1)
  ctx = jnp.asarray(rng.normal(size=(2, 6, 16)), jnp.float32)
  ctx_idx = jnp.asarray([[0, 1, 2, 4, 5, 6], [0, 3, 5, 7, 9, 11]])
  tgt_idx = jnp.asarray([[[8, 9, 12, 13]], [[1, 2, 5, 6]]])
  ctx_valid = jnp.asarray([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
  tgt_valid = jnp.asarray([[[1, 1, 0, 0]], [[1, 1, 1, 0]]], bool)
  apply = jax.jit(setup.predictor.apply)
  y = apply(params, ctx, ctx_idx, tgt_idx, ctx_valid, tgt_valid)
  junk_ctx = jnp.where(ctx_valid[..., None], ctx, 50.0)
  junk_idx = jnp.where(ctx_valid, ctx_idx, 15)
  junk_tgt = jnp.where(tgt_valid, tgt_idx, 0)
  y2 = apply(params, junk_ctx, junk_idx, junk_tgt, ctx_valid, tgt_valid)
  np.testing.assert_allclose(np.asarray(y2)[np.asarray(tgt_valid)],
                             np.asarray(y)[np.asarray(tgt_valid)], rtol=1e-5, atol=1e-6)


# --- the train step on ARC grids -------------------------------------------


def _two_steps(step, state, images, ids):
  s1, m1 = step(state, images, ids)
  s2, m2 = step(s1, images, ids)           # tiny: refresh fires after step 2
  return jax.device_get((s1, m1, s2, m2))


def _pick(ds, pred, n=16):
  sizes = [arc.trim(img).shape for img in ds.train_images]
  idx = [i for i, s in enumerate(sizes) if pred(s)]
  smallest = sorted(idx, key=lambda i: sizes[i][0] * sizes[i][1])[:3]
  rest = [i for i in idx if i not in smallest]
  picked = smallest + rest[:: max(len(rest) // (n - 3), 1)][:n - 3]
  return ds.train_images[picked], np.asarray(picked, np.int32)


def test_step_does_not_depend_on_padding_sentinel(arc_setup):
  cfg, ds, setup, state, step, emb = arc_setup
  images, ids = _pick(ds, lambda s: True)             # includes a 1x1 grid
  assert min(arc.trim(img).size for img in images) == 1
  ref = _two_steps(step, state, images, ids)
  # Padding filled with other sentinels: -7 in half the grids, random
  # negative values in the others.
  fill = -np.random.default_rng(0).integers(1, 10**6, images.shape)
  fill[::2] = -7
  other = np.where(images < 0, fill, images).astype(np.float32)
  chex.assert_trees_all_equal(ref, _two_steps(step, state, other, ids))
  chex.assert_trees_all_equal(emb(state, images), emb(state, other))


def test_padding_embedding_never_reaches_loss_masks_or_vq(arc_setup):
  """Grids whose sides are multiples of the patch size have no mixed tokens:
  every padding token then holds only the padding embedding, so changing
  that embedding row changes padding tokens alone. Nothing that the step or
  the metrics compute may change."""
  cfg, ds, setup, state, step, emb = arc_setup
  images, ids = _pick(ds, lambda s: s[0] % 3 == 0 and s[1] % 3 == 0)
  assert len(images) == 16
  pad_row = cfg.model.num_colours

  def perturb(enc_params):
    table = enc_params['params']['colour_embed']['embedding']
    new = dict(enc_params['params'], colour_embed={
        'embedding': table.at[pad_row].set(37.0 * jnp.arange(table.shape[1]))})
    return {'params': new}

  other = dict(state, target_params=perturb(state['target_params']),
               params=dict(state['params'], encoder=perturb(state['params']['encoder'])))
  a, b = _two_steps(step, state, images, ids), _two_steps(step, other, images, ids)
  strip = lambda s: jax.tree_util.tree_map_with_path(
      lambda path, x: 0 if 'colour_embed' in str(path) else x, s)
  for x, y in ((a[1], b[1]), (a[3], b[3]), (strip(a[0]), strip(b[0])),
               (strip(a[2]), strip(b[2]))):
    chex.assert_trees_all_close(x, y, rtol=1e-5, atol=1e-6)
  assert float(a[1]['loss']) > 0 and float(a[3]['vq_batch_usage_ratio']) > 0
  chex.assert_trees_all_close(emb(state, images), emb(other, images), rtol=1e-5, atol=1e-6)


def test_vq_usage_counts_valid_context_slots_only(arc_setup):
  cfg, ds, setup, state, step, emb = arc_setup
  images, ids = _pick(ds, lambda s: True)
  new, _ = step(state, images, ids)

  @jax.jit
  def context_flags(state, images):
    keys = step_lib._step_keys(state['rng'], state['step'])
    valid = model_lib.token_validity(images, cfg.model.patch_size)
    return masking.sample_masks_valid(keys[0], ids, setup.grid, cfg.masking, valid)[2]

  ctx_valid = np.asarray(context_flags(state, images))
  n_valid = int(ctx_valid.sum())
  assert 0 < n_valid < ctx_valid.size            # some slots are padding
  assert float(new['vq'].usage.sum()) == n_valid


def test_arc_training_evaluation_and_report_end_to_end(tmp_path, capsys):
  run = tmp_path / 'arc_gentle' / 'seed_0'
  cfg = load('arc_gentle', 'tiny')
  summary = train.train_and_evaluate(cfg, str(run))
  assert summary['status'] == 'completed' and summary['steps'] == 6
  epochs = records.read_jsonl(run / 'epoch_metrics.jsonl')
  assert len(epochs) == 2
  for e in epochs:
    assert all(np.isfinite(v) for v in e.values())
    assert e['train_infonce_mean'] > 0 and e['val_infonce_mean'] > 0
  emb = records.read_jsonl(run / 'embedding_metrics.jsonl')
  assert [r['step'] for r in emb] == [1, 3, 5]      # before the refreshing steps 1, 3, 5
  assert all(0 < r['vq_usage_ratio'] <= 1 for r in emb)

  # No class labels: eval.json probes grid properties.
  ev = evaluate.evaluate_run(str(run))
  assert json.loads((run / 'eval.json').read_text()) == ev
  assert ev['labels'] == 'grid_properties' and set(ev['probes']) == set(gp.NAMES)
  ds = data_lib.load_dataset(cfg)
  props = {k: np.concatenate([v, gp.grid_properties(ds.val_images)[k]])
           for k, v in gp.grid_properties(ds.train_images).items()}
  for name, res in ev['probes'].items():
    counts = np.bincount(props[name])             # probes: CV over train + val
    assert res['chance'] == pytest.approx(counts.max() / counts.sum())
    for enc in ('context_encoder', 'target_encoder', 'random_init', 'pixels'):
      assert 0 <= res[enc]['linear_probe_acc'] <= 1 and 0 <= res[enc]['knn_acc'] <= 1
    assert 0 <= res['code_property_nmi'] < 1
    assert res['code_property_ami'] <= res['code_property_nmi']
  # The baselines' top-level values are the means over the properties, and the
  # probe trajectory (means over the properties too) has step 0 and the last.
  assert ev['random_init']['linear_probe_acc'] == pytest.approx(np.mean(
      [r['random_init']['linear_probe_acc'] for r in ev['probes'].values()]))
  assert [p['step'] for p in ev['probe_trajectory']] == [0, 6]
  assert all(0 <= p['linear_target'] <= 1 for p in ev['probe_trajectory'])
  for enc in ('context_encoder', 'target_encoder', 'pixels'):
    assert ev[enc]['linear_probe_acc'] == pytest.approx(
        np.mean([r[enc]['linear_probe_acc'] for r in ev['probes'].values()]))
  assert 1 <= ev['codes_used_val'] <= cfg.vq.codebook_size
  # experiments/results/goal_gaps/ami_sources: the run's codes score eval.json's AMI (valid
  # tokens, mean over the properties); the k-means AMIs are AMIs.
  amis = ami_sources.ami_sources(str(run))
  assert amis['run'] == pytest.approx(ev['code_label_ami'], abs=1e-12)
  assert all(-1 <= amis[k] <= 1 for k in ('kmeans_space', 'kmeans_raw'))
  assert 'kmeans_projected' not in amis           # no normalised projection here
  # experiments/results/usage_bound/usage_bound counts every token slot: it refuses padded runs.
  with pytest.raises(SystemExit):
    usage_bound.main(['--workdir', str(run)])
  assert 'padded data (ARC grids) is not supported' in capsys.readouterr().err

  # The assessment report shows every property's probe.
  text = open(report.write_report(str(tmp_path), ['arc_gentle'], [0], {})).read()
  assert '### Grid-property probes' in text
  sym = ev['probes']['symmetric']
  assert (f"| **`symmetric`: linear probe, target encoder** | "
          f"{100 * sym['target_encoder']['linear_probe_acc']:.1f}% |") in text
