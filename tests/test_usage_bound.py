"""The usage-bound, churn-sources, token-shares and VQ-bypass experiments
(experiments/results/usage_bound/usage_bound.py, churn_sources.py,
subset_usage.py, codebook_arc/token_shares.py, vq_bypass.py): their measures by hand, and
checkpoints of one tiny run end to end."""
import json

import numpy as np
import pytest

from experiments.results.codebook_arc import token_shares
from experiments.results.goal_gaps import churn_sources, subset_usage
from experiments.results.reference_fidelity import trajectory_table, usage_definitions
from experiments.results.usage_bound import usage_bound
from experiments.results.loss_gap import vq_bypass
from jepa_jax.vq import health


def test_expected_usage_by_hand():
  # Two codes of four share the draws equally: each is missed by 2 draws with
  # probability 0.5^2, the other two are never drawn.
  assert health.expected_usage([0.5, 0.5, 0.0, 0.0], 2) == pytest.approx(0.375)
  # Uniform shares over K: 1 - (1 - 1/K)^n.
  assert health.expected_usage(np.full(8, 1 / 8), 8) == pytest.approx(1 - (7 / 8) ** 8)


def test_kmeans_usage_counts_the_centres_val_tokens_reach():
  rng = np.random.default_rng(0)
  centres = np.array([[10, 0], [-10, 0], [0, 10], [0, -10]], np.float32)
  fit = np.concatenate([c + 0.1 * rng.standard_normal((50, 2)) for c in centres])
  val = np.concatenate([centres[0] + 0.1 * rng.standard_normal((5, 2)),
                        centres[2] + 0.1 * rng.standard_normal((5, 2))])
  assert usage_bound.kmeans_usage(fit, val, 4, l2=False) == pytest.approx(0.5)
  # Cosine: the same directions on the unit circle.
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
  assert usage_bound.kmeans_usage(unit(fit), unit(val), 4, l2=True) == pytest.approx(0.5)


def test_token_shares_by_hand():
  codes = np.array([[0, 0, 1, -1], [2, 0, 1, 3]])          # -1: a padding token
  keys = np.array([[5, 5, 6, 0], [5, 7, 6, 8]], np.int8)[..., None]
  got = token_shares.code_shares(codes, 5)
  p = np.array([3, 2, 1, 1]) / 7                              # codes 0, 1, 2, 3; code 4 unused
  assert got == pytest.approx({'tokens': 7, 'code_usage': 0.8, 'top_code_share': 3 / 7,
                               'code_perplexity': np.exp(-(p * np.log(p)).sum()) / 5})
  got = token_shares.input_shares(codes, keys, 5)
  q = np.array([3, 2, 1, 1]) / 7                              # inputs 5, 6, 7, 8
  # Input 5 (3 of 7 tokens) falls in codes 0, 0, 2.
  assert got == pytest.approx({
      'input_kinds': 4, 'input_perplexity': np.exp(-(q * np.log(q)).sum()) / 5,
      'top_input_share': 3 / 7, 'top_input_codes': 2,
      'top_input_code_perplexity': np.exp(-(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3)))})
  # ARC patches: 3x3 cells row-major over the canvas, token (r, c) at r * 10 + c.
  canvas = np.zeros((1, 30, 30, 1), np.float32)
  canvas[0, 3:6, 6:9, 0] = np.arange(9).reshape(3, 3)
  assert list(token_shares.patch_keys(canvas, 3)[0, 1 * 10 + 2]) == list(range(9))


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  """A tiny run with a checkpoint at every step (measurement points 1, 3, 5)."""
  from jepa_jax.train import loop as train  # noqa: PLC0415
  from conftest import load  # noqa: PLC0415
  cfg = load('gentle', 'tiny')            # the program test_train compiles too
  cfg.checkpoint.every_steps, cfg.checkpoint.keep = 1, 10
  workdir = str(tmp_path_factory.mktemp('tiny') / 'run')
  train.train_and_evaluate(cfg, workdir)
  return workdir


@pytest.mark.slow          # a whole (tiny) run
def test_bounds_of_a_tiny_run_checkpoint(tiny_run, tmp_path, capsys):
  workdir = tiny_run
  out = str(tmp_path / 'bounds.jsonl')
  assert usage_bound.main(['--workdir', workdir, '--steps', '3', '--out', out]) == 0
  rows = [json.loads(line) for line in open(out)]
  assert rows and all(0 < r[k] <= 1 for r in rows
                      for k in ('run', 'kmeans_ctx', 'kmeans_whole', 'sampling'))
  # The recomputed run usage is the metric the run logged at that step.
  logged = {json.loads(line)['step']: json.loads(line)['vq_usage_ratio']
            for line in open(f'{workdir}/embedding_metrics.jsonl')}
  same = [r for r in rows if r['step'] in logged]
  assert same, 'no checkpoint at a measurement point'
  for r in same:
    assert r['run'] == pytest.approx(logged[r['step']])
  with pytest.raises(SystemExit):
    usage_bound.main(['--workdir', workdir, '--steps', '99999'])
  assert 'no checkpoint at step(s) [99999]' in capsys.readouterr().err


def test_usage_definitions_by_hand():
  # usage 0, 1, 10, 89: mean 25, the refresh rule's line at 0.05 x 25 = 1.25.
  shares = usage_definitions.state_shares([0, 1, 10, 89], [1e-6, 1e-4, 0.5, 2.0], 0.05,
                                          (1e-5, 1e-3, 0.1))
  assert shares == {'ever': 0.75, 'not_dead': 0.5, 'ema>1e-05': 0.75, 'ema>0.001': 0.5,
                    'ema>0.1': 0.5}
  # Nothing counted yet: nothing is dead; a gradient codebook has no EMA sizes.
  assert usage_definitions.state_shares([0, 0], None, 0.05, (0.1,)) == {
      'ever': 0.0, 'not_dead': 1.0}


@pytest.mark.slow          # the tiny run of the fixture
def test_usage_definitions_of_a_tiny_run_recompute_the_logged_usage(tiny_run, tmp_path):
  out = str(tmp_path / 'defs.jsonl')
  assert usage_definitions.main(['--workdir', tiny_run, '--steps', '3,5', '--out', out]) == 0
  rows = {json.loads(line)['step']: json.loads(line) for line in open(out)}
  logged = {json.loads(line)['step']: json.loads(line)['vq_usage_ratio']
            for line in open(f'{tiny_run}/embedding_metrics.jsonl')}
  for step in (3, 5):
    assert rows[step]['val'] == pytest.approx(logged[step])
    assert 0 < rows[step]['train'] <= 1 and 0 < rows[step]['ever'] <= 1
    assert {'ema>1e-05', 'ema>0.001', 'ema>0.1'} <= set(rows[step])


def test_trajectory_table_reads_the_point_at_or_before_each_step(tmp_path, capsys):
  path = tmp_path / 'run_embedding_metrics.jsonl'
  rows = [{'step': 50, 'vq_usage_ratio': 0.5, 'context_effective_rank': 3.0,
           'target_effective_rank': 6.0},
          {'step': 250, 'vq_usage_ratio': 0.125, 'context_effective_rank': 2.0,
           'target_effective_rank': 4.0}]
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  assert trajectory_table.main([str(path), '--steps', '10,200,250,400']) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[-1] == '| run | – | 50.0 | 12.5 | 12.5 | 3.00 → 2.00 | 6.00 → 4.00 |'
  assert out[2].startswith('| reference (assessment) | – | 17.7 | – | 16.4 |')
  # A path that is no run: one error line naming it, nothing printed to stdout.
  with pytest.raises(SystemExit) as stop:
    trajectory_table.main([str(path), str(tmp_path / 'missing')])
  assert stop.value.code == 2 and capsys.readouterr().out == ''


def test_churn_sources_by_hand():
  book = np.array([[0.0, 0.0], [1.0, 0.0]])
  u_a = np.array([[0.1, 0.0], [0.9, 0.0], [0.45, 0.0]])
  u_b = np.array([[0.1, 0.0], [0.9, 0.0], [0.55, 0.0]])   # the third token crosses
  got = churn_sources.decompose(u_a, book, u_b, book)
  assert got['total'] == got['encoder_only'] == pytest.approx(1 / 3)
  assert got['codebook_only'] == 0.0
  # Only the third token moved (0.1) more than half its margin ((0.55 - 0.45) / 2).
  assert got['can_switch'] == pytest.approx(1 / 3)
  assert got['chance'] == pytest.approx(1 - (1 / 9 + 4 / 9))     # shares 1/3, 2/3 at B
  assert got['usage_a'] == got['usage_b'] == got['usage_codebook_held'] == 1.0
  # Tokens that all move next to code 1: only the held codebook's usage sees it.
  near_1 = np.array([[0.9, 0.0], [0.95, 0.0], [1.1, 0.0]])
  got = churn_sources.decompose(u_a, book, near_1, book)
  assert got['usage_a'] == got['usage_tokens_held'] == 1.0
  assert got['usage_b'] == got['usage_codebook_held'] == 0.5
  moved = np.array([[0.0, 0.0], [0.4, 0.0]])                       # code 1 moves to 0.4
  got = churn_sources.decompose(u_a, book, u_a, moved)
  assert got['codebook_only'] == got['total'] == pytest.approx(1 / 3)
  assert got['encoder_only'] == got['can_switch'] == 0.0
  assert got['median_code_move'] == pytest.approx(0.3)
  # Code 0 moves far away: no token of A or B reaches it any more.
  gone = np.array([[-5.0, 0.0], [1.0, 0.0]])
  got = churn_sources.decompose(u_a, book, u_a, gone)
  assert got['usage_tokens_held'] == got['usage_b'] == 0.5
  assert got['usage_a'] == got['usage_codebook_held'] == 1.0
  assert got['near_origin_a'] == 0.5 and got['near_origin_b'] == 0.0   # |0| < 0.01 * 0.45 < 1
  shrunk = np.array([[-0.004, 0.0], [1.0, 0.0]])                  # 0.004 < 0.01 * 0.45: near
  assert churn_sources.decompose(u_a, shrunk, u_a, gone)['near_origin_a'] == 0.5
  assert churn_sources.decompose(u_a, gone, u_a, gone)['near_origin_a'] == 0.0
  # A frozen k-means codebook: two clusters at 0 and 1 on u_a; the tokens
  # near 0.5 decide the churn.
  u = np.array([[0.0, 0.0], [0.05, 0.0], [0.4, 0.0], [0.6, 0.0], [0.95, 0.0], [1.0, 0.0]])
  same = churn_sources.kmeans_encoder_only(u, u, [2], cosine=False)
  assert same == {'kmeans_2_encoder_only': 0.0}
  crossed = u.copy()
  crossed[2, 0] = 0.9                                # the token at 0.4 crosses to 1's side
  got = churn_sources.kmeans_encoder_only(u, crossed, [2, 6], cosine=False)
  assert got['kmeans_2_encoder_only'] == pytest.approx(1 / 6)
  assert set(got) == {'kmeans_2_encoder_only', 'kmeans_6_encoder_only'}


def test_nearest_codes_in_chunks_are_the_nearest_codes():
  rng = np.random.default_rng(3)
  book, u = rng.standard_normal((7, 4)), rng.standard_normal((50, 4))
  brute = np.argmin(((u[:, None] - book[None]) ** 2).sum(-1), axis=1)
  assert np.array_equal(churn_sources._nearest(book, u, chunk=8), brute)   # 7 chunks, last of 2
  assert np.array_equal(churn_sources._nearest(book, u), brute)


def test_two_nearest_distances_against_brute_force():
  rng = np.random.default_rng(1)
  book, u = rng.standard_normal((50, 4)), rng.standard_normal((5000, 4))
  d1, d2 = churn_sources.two_nearest_distances(book, u)
  full = np.sort(np.linalg.norm(u[:, None] - book[None], axis=-1), axis=1)
  np.testing.assert_allclose(d1, full[:, 0], rtol=1e-12)
  np.testing.assert_allclose(d2, full[:, 1], rtol=1e-12)


@pytest.mark.slow          # uses the tiny run
def test_churn_sources_total_is_the_logged_churn(tiny_run, tmp_path, capsys):
  out = str(tmp_path / 'churn.json')
  assert churn_sources.main(['--workdir', tiny_run, '--steps', '3,5', '--kmeans', '4',
                             '--out', out]) == 0
  row = json.loads(open(out).read())
  assert 0.0 <= row['kmeans_4_encoder_only'] <= 1.0
  logged = {json.loads(line)['step']: json.loads(line)['vq_churn']
            for line in open(f'{tiny_run}/embedding_metrics.jsonl')}
  assert row['total'] == pytest.approx(logged[5])            # churn logged at 5, since 3
  assert row['encoder_only'] <= row['can_switch']
  # --encoder target: the churn of the target (EMA) encoder's codes, by hand.
  assert churn_sources.main(['--workdir', tiny_run, '--steps', '3,5', '--encoder', 'target',
                             '--out', out]) == 0
  row = json.loads(open(out).read())
  assert row['encoder'] == 'target' and row['total'] == pytest.approx(
      _target_churn_by_hand(tiny_run, 3, 5))
  with pytest.raises(SystemExit):
    churn_sources.main(['--workdir', tiny_run, '--steps', '3'])
  assert 'give two checkpoint steps' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    churn_sources.main(['--workdir', tiny_run, '--steps', '3,5', '--kmeans', '0'])
  assert "--kmeans '0': give codebook sizes" in capsys.readouterr().err


@pytest.mark.slow          # uses the tiny run
def test_token_shares_of_a_tiny_run_count_both_encoders(tiny_run, tmp_path):
  out = str(tmp_path / 'shares.jsonl')
  assert token_shares.main(['--workdir', tiny_run, '--split', 'val', '--max_images', '40',
                            '--out', out]) == 0
  row = json.loads(open(out).read())
  assert (row['split'], row['images']) == ('val', 40)
  for encoder in ('context', 'target'):
    assert row[encoder]['tokens'] == 40 * 16 and 0 < row[encoder]['code_usage'] <= 1
    assert 'input_kinds' not in row[encoder]               # digits: no colour-id inputs


def _target_churn_by_hand(workdir, step_a, step_b):
  """Share of val tokens whose nearest code (squared distance in the
  quantizer's space) changes between two checkpoints, with the tokens of the
  target encoder (target_params) rather than the context encoder."""
  import os  # noqa: PLC0415
  from jepa_jax.run import checkpoint as ckpt_lib  # noqa: PLC0415
  from jepa_jax.run import trained  # noqa: PLC0415
  from jepa_jax.vq import quantizer as qz  # noqa: PLC0415
  _, ds, setup, abstract = trained.run_setup(workdir)
  ckpts = ckpt_lib.RunCheckpoints(os.path.join(workdir, 'checkpoints'), read_only=True)
  codes = []
  for step in (step_a, step_b):
    state = ckpts.restore(step, abstract).state
    z = setup.encoder.apply(state['target_params'], ds.val_images)
    u = np.asarray(qz.encode(setup.quantizer, state.get('vq_params'), z))
    book = np.asarray(qz.codebook(setup.quantizer, state['vq'].codebook, state.get('vq_params')))
    codes.append(((u[..., None, :] - book) ** 2).sum(-1).argmin(-1))
  ckpts.close()
  return float(np.mean(codes[0] != codes[1]))


def test_unsnapped_loss_of_an_unprojected_layer_is_the_no_vq_loss():
  # Without projection or normalisation decode(encode(z)) = z: with snap=False
  # the JEPA terms are those of the same weights without the VQ layer, and the
  # snap changes them.
  import jax  # noqa: PLC0415
  from conftest import load  # noqa: PLC0415
  from jepa_jax import data as data_lib  # noqa: PLC0415
  from jepa_jax.train import step as step_lib  # noqa: PLC0415
  cfg, cfg_off = load('gentle', 'tiny'), load('no_vq_gentle', 'tiny')
  ds = data_lib.load_dataset(cfg)
  setup, setup_off = step_lib.make_setup(cfg, ds), step_lib.make_setup(cfg_off, ds)
  assert setup.vq_enabled and not setup_off.vq_enabled
  state = step_lib.init_state(setup, ds.image_shape, cfg.seed)
  images, ids = ds.val_images[:16], np.arange(16, dtype=np.int32)
  parts = {}
  for name, s_, snap in (('snapped', setup, True), ('bypassed', setup, False),
                         ('no_vq', setup_off, True)):
    parts[name] = jax.device_get(jax.jit(step_lib.make_eval_step(s_, cfg.seed, snap=snap))(
        state, images, ids))
  for k in vq_bypass.JEPA_TERMS:
    np.testing.assert_allclose(parts['bypassed'][k], parts['no_vq'][k], rtol=1e-5, atol=1e-6)
  assert abs(parts['snapped']['infonce'] - parts['no_vq']['infonce']) > 1e-3


@pytest.mark.slow          # a whole (tiny) run
def test_vq_bypass_of_a_tiny_run(tiny_run, tmp_path, capsys):
  out = str(tmp_path / 'bypass.jsonl')
  assert vq_bypass.main(['--workdir', tiny_run, '--out', out]) == 0
  rows = {r['term']: r for r in map(json.loads, open(out))}
  assert set(rows) == set(vq_bypass.JEPA_TERMS) | {'jepa', 'snap'}
  # The snapped loss is the logged one (the script checks), and removing the
  # snap changes the prediction terms on these weights.
  assert rows['infonce']['snapped'] != pytest.approx(rows['infonce']['bypassed'], rel=1e-4)
  assert rows['snap']['snap_distance'] > 0
  # A baseline that has VQ is refused with one line naming it.
  with pytest.raises(SystemExit):
    vq_bypass.main(['--workdir', tiny_run, '--baseline', tiny_run])
  assert 'a VQ run' in capsys.readouterr().err


def test_codebook_arc_paired_subtracts_b_from_a_per_seed(tmp_path, capsys):
  from experiments.results.codebook_arc import paired
  for variant, ami in (('a', (0.15, 0.14)), ('b', (0.10, 0.13))):
    for seed, value in zip((1, 2), ami):
      run = tmp_path / variant / f'seed_{seed}'
      run.mkdir(parents=True)
      (run / 'eval.json').write_text(json.dumps(
          {'code_label_ami': value, 'code_label_bag_probe': 0.5}))
      last = {'vq_train_usage_ratio': 0.9, 'vq_train_perplexity_ratio': 0.8,
              'vq_usage_ratio': 0.7, 'vq_churn_epoch': 0.1}
      (run / 'embedding_metrics.jsonl').write_text(
          json.dumps({'step': 1}) + '\n' + json.dumps(last) + '\n')
  assert paired.values(str(tmp_path), 'a', 2)['code_label_ami'] == 0.14
  assert paired.main(['--workdir', str(tmp_path), '--a', 'a', '--b', 'b', '--seeds', '1,2']) == 0
  out = capsys.readouterr().out
  assert 'code_label_ami               +0.0300' in out          # (0.05 + 0.01) / 2
  assert 'churn_last_epoch             +0.0000' in out


def test_subset_usage_by_hand():
  # Image 0 puts its 4 tokens in code 0; image 1 in codes 1, 2, 2, 3 (one
  # padding token in image 2). K = 8.
  codes = np.array([[0, 0, 0, 0], [1, 2, 2, 3], [4, 5, 6, -1]])
  assert subset_usage.distinct_share(codes) == pytest.approx((1 / 4 + 3 / 4 + 3 / 3) / 3)
  rows = subset_usage.split_rows('val', codes, 8, [1, 3, 99], draws=40, seed=0)
  one, whole, summary = rows                    # 99 > 3 images: no row
  # One image of three: usage 1/8 or 3/8 or 3/8, so the draws' mean lies
  # between and both ends are seen in 40 draws.
  assert (one['usage_min'], one['usage_max']) == (1 / 8, 3 / 8)
  assert 1 / 8 < one['usage_mean'] < 3 / 8 and one['draws'] == 40
  p = np.array([4, 1, 2, 1, 1, 1, 1, 0]) / 11   # shares of the 11 valid tokens
  assert one['iid_expected'] == pytest.approx(np.mean(1 - (1 - p) ** 4))   # 11/3 -> 4 tokens
  assert whole['draws'] == 1 and whole['usage_mean'] == whole['usage_min'] == 7 / 8
  assert whole['iid_expected'] == pytest.approx(np.mean(1 - (1 - p) ** 11))
  assert summary['perplexity_ratio'] == pytest.approx(
      np.exp(-(p[p > 0] * np.log(p[p > 0])).sum()) / 8)


@pytest.mark.slow          # uses the tiny run
def test_subset_usage_of_a_tiny_run_recomputes_the_logged_train_usage(tiny_run, tmp_path, capsys):
  out = str(tmp_path / 'subsets.jsonl')
  assert subset_usage.main(['--workdir', tiny_run, '--steps', '3', '--images', '4,8',
                            '--draws', '2', '--train-images', '16', '--out', out]) == 0
  rows = [json.loads(line) for line in open(out)]
  logged = rows[0]
  assert logged['split'] == 'train_logged' and logged['logged'] is not None
  assert logged['usage_mean'] == pytest.approx(logged['logged'])
  splits = [(r['split'], r['images'], 'perplexity_ratio' in r) for r in rows[1:]]
  assert splits[:2] == [('val', 4, False), ('val', 8, False)] and splits[2][2]   # val summary
  assert splits[3:] == [('train', 4, False), ('train', 8, False), ('train', 16, True)]
  assert all(0 < r['usage_min'] <= r['usage_mean'] <= r['usage_max'] <= 1 for r in rows[2:]
             if 'usage_min' in r)
  with pytest.raises(SystemExit):
    subset_usage.main(['--workdir', tiny_run, '--steps', '99999'])
  assert 'no checkpoint at step(s) [99999]' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    subset_usage.main(['--workdir', tiny_run, '--steps', '3', '--images', '0'])
  assert "--images '0': give subset sizes" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    subset_usage.main(['--workdir', tiny_run, '--steps', '3,x'])
  assert "--steps '3,x': give checkpoint steps" in capsys.readouterr().err


@pytest.mark.slow          # uses the tiny run
def test_scripts_walking_checkpoints_close_them_however_they_end(tiny_run, tmp_path,
                                                                 monkeypatch, capsys):
  """usage_bound.checkpoints (shared by the four scripts) closes the run's
  checkpoints when the caller's block ends: after a measurement, after a
  missing step's one-line error, and after a measurement that fails."""
  from jepa_jax.run import checkpoint as ckpt_lib  # noqa: PLC0415
  opened, closed = [], []
  real_init, real_close = ckpt_lib.RunCheckpoints.__init__, ckpt_lib.RunCheckpoints.close
  monkeypatch.setattr(ckpt_lib.RunCheckpoints, '__init__',
                      lambda self, *a, **k: (opened.append(self), real_init(self, *a, **k))[1])
  monkeypatch.setattr(ckpt_lib.RunCheckpoints, 'close',
                      lambda self: (closed.append(self), real_close(self))[1])
  out = str(tmp_path / 'churn.json')
  assert churn_sources.main(['--workdir', tiny_run, '--steps', '3,5', '--out', out]) == 0
  assert len(opened) == 1 and closed == opened
  with pytest.raises(SystemExit):
    churn_sources.main(['--workdir', tiny_run, '--steps', '3,99999'])
  assert 'no checkpoint at step(s) [99999]' in capsys.readouterr().err
  assert len(opened) == 2 and closed == opened
  monkeypatch.setattr(subset_usage, '_walk', lambda *a: 1 / 0)
  with pytest.raises(ZeroDivisionError):
    subset_usage.main(['--workdir', tiny_run, '--steps', '3'])
  assert len(opened) == 3 and closed == opened
