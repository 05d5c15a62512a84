"""Codebook-health metrics, float64 spectra and phase-free measurement points,
each against hand-worked values or an independent float64 construction."""
import dataclasses
import math

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from jepa_jax.eval import measure
from jepa_jax.eval import metrics
from jepa_jax.vq import anticollapse as ac
from jepa_jax.vq import codebook as vq_lib
from jepa_jax.vq import health
from jepa_jax.vq import quantizer as qz
from conftest import load, set_overrides


def test_usage_summary_hand_worked():
  # K = 6; tokens on codes 0 (x5), 1 (x2), 3 (x1): used 3, dead 3, >= 5: one.
  codes = np.array([[0, 0, 0, 1], [0, 0, 1, 3]])
  c = health.code_counts(codes, 6)
  np.testing.assert_array_equal(c, [5, 2, 0, 1, 0, 0])
  s = health.usage_summary(c, 'vq')
  p = np.array([5, 2, 1]) / 8
  assert s == {'vq_usage_ratio': 0.5, 'vq_codes_used': 3,
               'vq_perplexity': pytest.approx(math.exp(-np.sum(p * np.log(p)))),
               'vq_dead_codes': 3, 'vq_codes_ge5': 1}
  # Weights: padding (w = 0) is not a usage.
  w = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
  assert health.usage_summary(health.code_counts(codes, 6, w))['vq_codes_used'] == 2


def test_churn_hand_worked_and_weighted():
  prev = np.array([[1, 2, 3], [4, 5, 6]])
  cur = np.array([[1, 9, 3], [4, 5, 0]])
  assert health.churn(prev, cur) == pytest.approx(2 / 6)
  w = np.array([[1, 1, 1], [1, 1, 0]])          # the changed padding token ignored
  assert health.churn(prev, cur, w) == pytest.approx(1 / 5)
  with pytest.raises(ValueError, match='churn'):
    health.churn(prev, cur[:1])


def test_window_age_restarts_hand_worked():
  last_used = np.array([0, 10, 95, 100, 101])    # code 0 never assigned
  assert health.window_usage(last_used, 101, 10) == pytest.approx(3 / 5)  # > 91
  born = np.array([0, 0, 50, 90, 100])
  a = health.age_summary(born, 101, steps_per_epoch=20)   # ages 101 101 51 11 1
  assert a == {'vq_code_age_median': 51.0, 'vq_young_share': 0.4}
  r = health.restarts_since(np.array([0, 0, 1, 2, 3]), born, previous_total=4,
                            previous_step=60)
  assert r == {'vq_restarts': 2, 'vq_restarts_total': 6, 'vq_restarted_share': 0.4}
  assert health.sorted_counts(np.array([1., 5., 0., 2.])) == [5, 2, 1, 0]


def test_expected_usage_hand_worked_and_by_simulation():
  # Two equally used codes, one unused; 2 draws: each used code appears with
  # probability 1 - (1/2)^2 = 3/4, so 1.5 of 3 codes are expected.
  assert health.expected_usage(np.array([5., 5., 0.]), 2) == pytest.approx(0.5)
  assert health.expected_usage(np.array([0., 0.]), 10) == 0.0
  # Uniform over K with n = K ln K draws: 1 - (1 - 1/K)^n ~ 1 - 1/K.
  k = 768
  assert health.expected_usage(np.ones(k), int(k * np.log(k))) == pytest.approx(1 - 1 / k, abs=1e-3)
  # Against sampling: a skewed distribution, 4,320 draws, 200 repetitions.
  rng = np.random.default_rng(0)
  counts = rng.zipf(1.5, k).astype(float)
  p = counts / counts.sum()
  sim = np.mean([len(np.unique(rng.choice(k, 4320, p=p))) / k for _ in range(200)])
  assert health.expected_usage(counts, 4320) == pytest.approx(sim, abs=0.005)


def test_pack_codes_round_trip():
  codes = np.random.default_rng(0).integers(0, 8192, (270, 16))
  back = health.unpack_codes(health.pack_codes(codes), codes.shape)
  np.testing.assert_array_equal(back, codes)
  assert health.pack_codes(None) is None and health.unpack_codes(None, (1,)) is None


def _cloud(sigma, n=300, seed=0):
  """Centred data xc = U diag(sigma) V^T with U orthonormal and orthogonal to
  the ones vector: its covariance eigenvalues are exactly sigma^2 / (n - 1)."""
  rng = np.random.default_rng(seed)
  d = len(sigma)
  a = rng.standard_normal((n, d + 1))
  a[:, 0] = 1.0
  q, _ = np.linalg.qr(a)
  u = q[:, 1:]                                   # orthonormal, each column sums to 0
  v, _ = np.linalg.qr(rng.standard_normal((d, d)))
  return u @ np.diag(sigma) @ v.T + 3.0          # an offset the centring removes


@pytest.mark.parametrize('ratio', [1e-2, 1e-6, 1e-9, 1e-12])
def test_isotropy_float64_matches_exact_down_to_1e12(ratio):
  sigma = np.geomspace(1.0, math.sqrt(ratio), 16)
  got = metrics.isotropy_f64(_cloud(sigma))
  assert got == pytest.approx(ratio, rel=1e-6)
  lam = metrics.covariance_spectrum(_cloud(sigma))
  np.testing.assert_allclose(lam, sigma ** 2 / 299, rtol=1e-6)


def test_float32_isotropy_cannot_resolve_what_float64_does():
  x = _cloud(np.geomspace(1.0, 1e-6, 16))        # true ratio 1e-12
  f32 = float(metrics.isotropy(jnp.asarray(x, jnp.float32)))
  assert abs(f32 - 1e-12) > 1e-9 or f32 == 0.0  # noise at float32 resolution
  assert metrics.isotropy_f64(x) == pytest.approx(1e-12, rel=1e-6)


def test_isotropy_ln_skips_the_layernorm_null_direction():
  rng = np.random.default_rng(4)
  g, b = rng.uniform(0.5, 2.0, 8), rng.normal(size=8)
  t = rng.normal(size=(500, 5, 8))
  t = (t - t.mean(-1, keepdims=True)) / t.std(-1, keepdims=True) * g + b   # LayerNorm
  x = t.mean(1)                                   # per-image mean tokens
  assert metrics.isotropy_f64(x) < 1e-12           # singular by construction
  lam = metrics.covariance_spectrum(x)
  assert metrics.isotropy_f64(x, skip=1) == pytest.approx(lam[-2] / lam[0])
  assert metrics.isotropy_f64(x, skip=1) > 0.05


def test_centred_effective_rank_values():
  assert metrics.centred_effective_rank(_cloud(np.ones(8))) == pytest.approx(8.0)
  # One direction collapsed out of 8 lowers it by about one (isotropy -> 0).
  sigma = np.array([1.0] * 7 + [1e-9])
  assert metrics.centred_effective_rank(_cloud(sigma)) == pytest.approx(7.0, rel=1e-6)
  # Eigenvalues (4, 1): p = (.8, .2).
  want = math.exp(-(0.8 * math.log(0.8) + 0.2 * math.log(0.2)))
  assert metrics.centred_effective_rank(_cloud(np.array([2.0, 1.0]))) == pytest.approx(want)
  assert metrics.centred_effective_rank(np.ones((5, 3))) == 1.0


def test_effective_rank_f64_matches_float32_version():
  x = np.random.default_rng(1).standard_normal((64, 16))
  assert metrics.effective_rank_f64(x) == pytest.approx(
      float(metrics.effective_rank(jnp.asarray(x, jnp.float32))), rel=1e-5)


def test_refresh_due_host_matches_traced():
  for args in ((5, 0, 1), (23, 230, 5), (2, 3, 2)):
    host = [ac.refresh_due_host(t, *args) for t in range(300)]
    dev = [bool(ac.refresh_due(jnp.int32(t), *args)) for t in range(300)]
    assert host == dev


def test_schedule_never_measures_right_after_a_refresh():
  s = measure.Schedule(every=50, total_steps=690, refresh_interval=23,
                       refresh_warmup_steps=230, refresh_warmup_interval=5)
  points = [t for t in range(1, 691) if s.measures(t)]
  assert not any(s.refreshes(t - 1) for t in points)
  # Step 50 is preceded by a refresh (step 49 refreshes): measured at 49 instead.
  assert 49 in points and 50 not in points and 100 not in points and 99 in points
  assert 250 in points                         # after the warm-up 250 % 23 != 0: not moved
  assert 690 not in points and 689 in points   # the last step refreshes (690 = 30 x 23)
  assert len(points) == len([t for t in range(1, 691) if t % 50 == 0]) + 1
  # Dense mode measures every state, right after refreshes too.
  dense = measure.Schedule(every=1, total_steps=40, refresh_interval=5)
  assert all(dense.measures(t) for t in range(1, 41))
  # Without refresh: the nominal points and the last step.
  plain = measure.Schedule(every=200, total_steps=690)
  assert [t for t in range(1, 691) if plain.measures(t)] == [200, 400, 600, 690]


def test_schedule_measures_at_the_goal_boundary():
  """A point at 10% of the run (from_config), so that restarts after it are
  exactly those after the first 10%; moved one step earlier like any point
  when the step before it refreshes."""
  cfg = set_overrides(load('early_refresh'), {'train.embedding_metrics_every_steps': 50})
  s = measure.Schedule.from_config(cfg, total_steps=690)
  assert s.boundary == 69 and s.refresh_warmup_steps == 69
  # step 49 refreshes (warm-up, every 5 steps): the first point is taken at 49
  assert [t for t in range(1, 201) if s.measures(t)] == [49, 69, 100, 150, 200]
  shifted = measure.Schedule(every=50, total_steps=690, refresh_interval=5, boundary=70)
  assert shifted.refreshes(69) and shifted.measures(69) and not shifted.measures(70)
  assert measure.Schedule.from_config(cfg, total_steps=540).boundary == 54


def _spec_2d(num_codes, overrides):
  """An EMA quantizer of gentle's settings (and `overrides`) on 2-d tokens."""
  spec = qz.make_spec(set_overrides(load('gentle'), overrides))
  assert spec.ema and not (spec.project or spec.l2 or spec.simvq or spec.rotation)
  return dataclasses.replace(spec, embed_dim=2, dim=2, num_codes=num_codes)


def test_track_health_marks_use_and_restarts():
  spec = _spec_2d(3, {})
  s0 = qz.state_from_codebook(spec, jnp.array([[0., 0.], [5., 5.], [-5., 5.]]))
  z = jnp.array([[0.1, 0.], [4.9, 5.]])
  codes = jnp.array([0, 1])
  s1 = vq_lib.ema_update(s0, z, codes, 0.9)
  s1 = qz.track_health(s0, s1, step=6)
  np.testing.assert_array_equal(s1.last_used, [7, 7, 0])
  np.testing.assert_array_equal(s1.born, [0, 0, 0])
  s2 = qz.track_health(s1, s1, step=9, restarted=jnp.array([False, False, True]))
  np.testing.assert_array_equal(s2.born, [0, 0, 10])
  np.testing.assert_array_equal(s2.restarts, [0, 0, 1])
  # A state without the bookkeeping is passed through.
  plain = vq_lib.init_state(np.asarray([0, 1], np.uint32), 3, 2)
  chex.assert_trees_all_equal(qz.track_health(plain, plain, 3), plain)


def test_update_state_counts_exactly_the_dead_codes_restarted():
  spec = _spec_2d(4, {'vq.ema_decay': 0.9, 'vq.epsilon': 1e-5, 'vq.refresh_enabled': True,
                      'vq.refresh_interval': 2, 'vq.refresh_usage_threshold': 0.5,
                      'vq.refresh_warmup_steps': 0, 'vq.refresh_sampling': 'uniform'})
  s = qz.state_from_codebook(spec, jnp.array([[0., 0.], [9., 9.], [-9., 9.], [9., -9.]]))
  z = jnp.array([[0.1, 0.], [0., 0.1], [8.9, 9.]])
  codes = jnp.array([0, 0, 1])
  key = np.asarray([0, 7], np.uint32)
  s = qz.update_state(spec, s, u=z, codes=codes, u_global=z, step=0, refresh_key=key)
  np.testing.assert_array_equal(s.restarts, [0, 0, 0, 0])     # step 0: no refresh
  np.testing.assert_array_equal(s.last_used, [1, 1, 0, 0])
  s = qz.update_state(spec, s, u=z, codes=codes, u_global=z, step=1, refresh_key=key)
  # Window usage (4, 2, 0, 0), mean 1.5: codes 2 and 3 (< 0.75) restarted at step 2.
  np.testing.assert_array_equal(s.restarts, [0, 0, 1, 1])
  np.testing.assert_array_equal(s.born, [0, 0, 2, 2])
  np.testing.assert_array_equal(s.last_used, [2, 2, 0, 0])


def test_codebook_at_step_0_next_to_the_encoder_tokens(config_of):
  """What a fresh codebook looks like next to the tokens it quantizes (the
  init-scale question): the encoder's tokens leave a LayerNorm (unit gain,
  zero bias at init), so every token has norm sqrt(D) = 8 exactly; codes
  e ~ N(0, I) have norm ~ sqrt(D) too, the same scale. But the tokens of the
  val images occupy a small cap (mean distance to their mean ~5 against ~8 for
  the codes), so each token's nearest code is much closer than a typical code
  (d^2 ~ 76 vs ~128) and only a few percent of the codes are anyone's nearest
  at step 0: usage starts low because of where the tokens are, not because the
  codes are at the wrong scale."""
  from jepa_jax import data as data_lib
  from jepa_jax.train import step as step_lib
  cfg = config_of('vq_no_refresh')
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)
  st = step_lib.init_state(setup, ds.image_shape, 0)
  tok = np.asarray(setup.encoder.apply(st['params']['encoder'], ds.val_images, None))
  u = tok.reshape(-1, tok.shape[-1]).astype(np.float64)
  cb = np.asarray(st['vq'].codebook, np.float64)
  d = cfg.model.embed_dim
  np.testing.assert_allclose(np.linalg.norm(u, axis=1), np.sqrt(d), rtol=1e-4)
  assert np.linalg.norm(cb, axis=1).mean() == pytest.approx(np.sqrt(d), rel=0.05)
  spread = np.linalg.norm(u - u.mean(0), axis=1).mean()
  assert spread < 0.8 * np.sqrt(d)
  codes = np.asarray(qz.assign(setup.quantizer, st['vq'], None, tok))
  assert len(np.unique(codes)) < 0.1 * cfg.vq.codebook_size


def test_sampling_ceiling_by_enumeration():
  # Train shares 3:2:1:0 over K = 4, n = 3 val tokens. Enumerate the 4^3 draws
  # (the unused code has probability 0), weight each by its probability and
  # average the share of codes it hits: E[distinct codes] / K.
  import itertools  # noqa: PLC0415
  p = [3 / 6, 2 / 6, 1 / 6, 0.0]
  want = sum(np.prod([p[c] for c in draw]) * len(set(draw)) / 4
             for draw in itertools.product(range(4), repeat=3))
  # By hand: 1 - (1/2)^3 + 1 - (2/3)^3 + 1 - (5/6)^3 = 7/8 + 19/27 + 91/216,
  # = 189/216 + 152/216 + 91/216 = 432/216 = 2 codes of 4.
  assert want == pytest.approx(0.5)
  s = health.train_usage(np.array([3., 2., 1., 0.]), 3)
  assert s['vq_val_usage_ceiling'] == pytest.approx(want)
  q = np.array([3, 2, 1]) / 6
  assert s['vq_train_perplexity_ratio'] == pytest.approx(
      math.exp(-np.sum(q * np.log(q))) / 4)
  assert (s['vq_train_usage_ratio'], s['vq_train_codes_used'], s['vq_train_tokens']) == (
      0.75, 3, 6)


def test_restart_split_hand_worked():
  # Cumulative totals 5, 12, 12, 20 at steps 4, 8, 12, 16; warm-up ends at 10.
  warm = health.warmup_total([4, 8, 12, 16], [5, 12, 12, 20], 10)
  assert warm == 12 and health.warmup_total([12], [3], 10) == 0
  r = health.restart_split(20, warm, 10, 16)
  assert r == {'events': 20, 'per_codebook': 1.25, 'warmup_events': 12,
               'warmup_per_codebook': 0.75, 'after_warmup_events': 8,
               'after_warmup_per_codebook': 0.5, 'warmup_end_step': 10}
  assert health.restart_split(20, None, 10, 16)['after_warmup_events'] is None


def test_warmup_end_is_a_point_and_the_later_of_10_percent_and_the_refresh_warmup():
  assert measure.warmup_end(100, 5, 30) == 30
  assert measure.warmup_end(100, 5, 3) == 10
  assert measure.warmup_end(100, 0, 30) == 10          # no refresh: no refresh warm-up
  s = measure.Schedule(every=50, total_steps=100, warmup_end=30)
  assert [t for t in range(1, 101) if s.measures(t)] == [30, 50, 100]


def test_train_subset_is_fixed_by_the_seed_and_capped():
  a = measure.train_subset(100, 10, 3)
  assert len(a) == 10 and np.all(np.diff(a) > 0)
  np.testing.assert_array_equal(a, measure.train_subset(100, 10, 3))
  assert not np.array_equal(a, measure.train_subset(100, 10, 4))
  np.testing.assert_array_equal(measure.train_subset(5, 10, 3), np.arange(5))


def test_whole_run_restarts_of_a_logged_run_sum_its_point_events(tmp_path):
  # sixth_run:tiny refreshes every 2 steps; a refresh warm-up of 3 steps
  # makes step 3 the warm-up end, and a point.
  from jepa_jax.run import files as records  # noqa: PLC0415
  from jepa_jax.train import loop as train  # noqa: PLC0415
  cfg = set_overrides(load('sixth_run', 'tiny'), {'vq.refresh_warmup_steps': 3})
  summary = train.train_and_evaluate(cfg, str(tmp_path))
  emb = records.read_jsonl(tmp_path / 'embedding_metrics.jsonl')
  steps = [e['step'] for e in emb]
  assert 3 in steps and steps[-1] > 3
  r = summary['restarts']
  assert r['warmup_end_step'] == 3
  assert r['events'] == sum(e['vq_restarts'] for e in emb) > 0
  assert r['warmup_events'] == sum(e['vq_restarts'] for e in emb if e['step'] <= 3)
  assert r['after_warmup_events'] == sum(e['vq_restarts'] for e in emb if e['step'] > 3) > 0
  assert r['per_codebook'] == pytest.approx(r['events'] / 32)
  at3 = emb[steps.index(3)]['vq_restarts_total']
  assert [e['vq_restarts_warmup'] for e in emb] == [
      e['vq_restarts_total'] if e['step'] <= 3 else at3 for e in emb]


def test_train_token_usage_is_the_hand_count_of_the_final_state_on_the_subset(tmp_path):
  # vq_no_refresh: no refresh, so the last point measures the final state.
  from jepa_jax.run import files as records  # noqa: PLC0415
  from jepa_jax.train import loop as train  # noqa: PLC0415
  from jepa_jax.run import trained  # noqa: PLC0415
  train.train_and_evaluate(load('vq_no_refresh', 'tiny'), str(tmp_path))
  last = records.read_jsonl(tmp_path / 'embedding_metrics.jsonl')[-1]
  cfg, ds, setup, state = trained.load_trained_state(str(tmp_path))
  assert last['step'] == setup.total_steps and cfg.train.usage_train_images == 256
  idx = measure.train_subset(len(ds.train_images), 256, cfg.seed)
  z = setup.encoder.apply(state['params']['encoder'], ds.train_images[idx])
  codes = np.asarray(qz.assign(setup.quantizer, state.get('vq'), state.get('vq_params'), z))
  used, n = np.unique(codes, return_counts=True)
  p = n / n.sum()
  assert last['vq_train_tokens'] == len(idx) * 16 == n.sum()
  assert last['vq_train_codes_used'] == len(used)
  assert last['vq_train_perplexity'] == pytest.approx(math.exp(-np.sum(p * np.log(p))))
  k = cfg.vq.codebook_size
  assert last['vq_val_usage_ceiling'] == pytest.approx(
      np.sum(1 - (1 - p) ** (len(ds.val_images) * 16)) / k)


def test_epoch_churn_is_measured_since_the_last_point_of_the_previous_epoch():
  rng = np.random.default_rng(0)
  out = lambda codes: {'ctx_mean': rng.normal(size=(6, 8)),  # noqa: E731
                       'tgt_mean': rng.normal(size=(6, 8)), 'codes': np.array(codes),
                       'valid': None, 'ctx_codes': np.array(codes), 'ctx_valid': None}
  tracker = measure.Tracker()
  kw = dict(num_codes=4, steps_per_epoch=3, window=2)
  a, b = [[0, 1, 2], [3, 0, 1]], [[0, 1, 2], [3, 0, 0]]
  c, d = [[1, 1, 2], [3, 0, 0]], [[1, 2, 2], [2, 0, 0]]
  r = [measure.record(out(x), None, tracker, step=s, epoch=e, **kw)
       for x, s, e in ((a, 2, 0), (b, 3, 0), (c, 5, 1), (d, 6, 1))]
  assert [x['vq_churn_epoch_since'] for x in r] == [None, None, 3, 3]
  assert r[0]['vq_churn_epoch'] is None and r[1]['vq_churn_epoch'] is None
  # Epoch 1 against b, the last point of epoch 0: c differs in 1 of 6, d in 3.
  assert r[2]['vq_churn_epoch'] == pytest.approx(1 / 6)
  assert r[3]['vq_churn_epoch'] == pytest.approx(3 / 6)
  assert r[3]['vq_churn'] == pytest.approx(2 / 6)              # since the point before
  resumed = measure.Tracker(tracker.to_json())          # a resume keeps the reference
  again = measure.record(out(d), None, resumed, step=6, epoch=1, **kw)
  assert again['vq_churn_epoch'] == r[3]['vq_churn_epoch']
