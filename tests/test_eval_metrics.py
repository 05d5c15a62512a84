"""Chance-corrected code metrics, k-means baseline and cross-validated probes
of jepa_jax.evaluate, against scikit-learn and hand-worked values."""
import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from jepa_jax import evaluate
from jepa_jax.run import trained


def test_code_metrics_match_sklearn_on_tokens():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, 60)                       # one label per image
  codes = (labels[:, None] * 3 + rng.integers(0, 3, (60, 5))) % 10   # 5 tokens each
  codes[rng.random((60, 5)) < 0.3] = rng.integers(0, 10)             # some noise
  valid = rng.random((60, 5)) > 0.2
  got = evaluate.code_metrics(codes, labels, valid)
  tok = np.broadcast_to(labels[:, None], codes.shape)[valid]
  assert got['ami'] == pytest.approx(adjusted_mutual_info_score(tok, codes[valid]))
  assert got['nmi'] == pytest.approx(normalized_mutual_info_score(tok, codes[valid]))
  assert got['nmi_shuffled'] < got['nmi']
  assert got['ami'] < got['nmi']                        # chance removed


def test_code_metrics_chance_levels():
  rng = np.random.default_rng(1)
  labels = np.repeat(np.arange(10), 20)                 # 200 images, 10 classes
  codes = rng.integers(0, 500, (200, 16))               # many codes, no information
  got = evaluate.code_metrics(codes, labels)
  assert got['nmi'] > 0.1                               # NMI reads information by chance
  assert got['nmi_shuffled'] == pytest.approx(got['nmi'], abs=0.02)
  assert abs(got['ami']) < 0.02                         # AMI does not
  perfect = evaluate.code_metrics(np.repeat(labels[:, None], 4, 1), labels)
  assert perfect['nmi'] == pytest.approx(1.0) and perfect['ami'] == pytest.approx(1.0)


def test_kmeans_codes_recover_separated_clusters():
  rng = np.random.default_rng(2)
  centres = rng.normal(0, 10, (4, 3))
  train = np.concatenate([c + rng.normal(0, 0.1, (50, 3)) for c in centres])
  truth = rng.integers(0, 4, (20, 6))
  val = centres[truth] + rng.normal(0, 0.1, (20, 6, 3))
  codes = evaluate.kmeans_codes(train, val, 4)
  assert codes.shape == (20, 6)
  assert adjusted_mutual_info_score(truth.ravel(), codes.ravel()) == pytest.approx(1.0)


def test_kmeans_codes_cosine_assigns_to_the_nearest_normalised_centre():
  # Centres near (10, 0) and (1, 1): the token (2, 0.3) is nearest to (1, 1)
  # in Euclidean distance but closest in angle to (10, 0).
  rng = np.random.default_rng(4)
  train = np.concatenate([c + rng.normal(0, 0.05, (50, 2)) for c in ([10., 0.], [1., 1.])])
  val = np.array([[[2.0, 0.3]], [[10.0, 0.1]]])
  euclid = evaluate.kmeans_codes(train, val, 2)
  cosine = evaluate.kmeans_codes(train, val, 2, cosine=True)
  assert euclid[0, 0] != euclid[1, 0]            # (2, 0.3) with (1, 1)
  assert cosine[0, 0] == cosine[1, 0] == euclid[1, 0]   # with (10, 0)


def test_kmeans_codes_of_a_tuple_come_from_one_fit_in_chunks(monkeypatch):
  from jepa_jax.eval import probes  # noqa: PLC0415
  rng = np.random.default_rng(6)
  train, a, b = rng.normal(size=(300, 4)), rng.normal(size=(7, 5, 4)), rng.normal(size=(3, 5, 4))
  for cosine in (False, True):
    whole = [evaluate.kmeans_codes(train, x, 6, cosine=cosine) for x in (a, b)]
    monkeypatch.setattr(probes, 'PREDICT_ROWS', 4)          # 35 and 15 rows: ragged chunks
    parts = evaluate.kmeans_codes(train, (a, b), 6, cosine=cosine)
    monkeypatch.undo()
    assert isinstance(parts, tuple) and len(parts) == 2
    for got, want in zip(parts, whole):
      np.testing.assert_array_equal(got, want)


def test_probe_scores_cross_validate_with_interval():
  rng = np.random.default_rng(3)
  y = rng.integers(0, 2, 200)
  x = np.stack([y * 4.0 + rng.normal(0, 1, 200), rng.normal(0, 1, 200)], 1)
  out = evaluate.probe_scores(x[:150], y[:150], x[150:], y[150:], k=5)
  for name in ('linear_probe', 'knn'):
    p = out[f'{name}_acc']
    assert 0.8 < p <= 1.0                               # chance 0.5
    assert out[f'{name}_ci95'] == pytest.approx(1.96 * np.sqrt(p * (1 - p) / 200))
  noise = evaluate.probe_scores(rng.normal(size=(150, 3)), y[:150],
                                rng.normal(size=(50, 3)), y[150:], k=5)
  assert abs(noise['linear_probe_acc'] - 0.5) < 3 * noise['linear_probe_ci95']


def test_a_bag_of_codes_is_each_images_share_of_its_valid_tokens_per_code():
  from jepa_jax.eval import probes  # noqa: PLC0415
  codes = np.array([[0, 0, 2, 1], [3, 3, 3, 0]])
  np.testing.assert_array_equal(probes.bag_of_codes(codes, 5),
                                [[0.5, 0.25, 0.25, 0, 0], [0.25, 0, 0, 0.75, 0]])
  valid = np.array([[True, True, True, False], [True, True, False, False]])
  np.testing.assert_array_equal(probes.bag_of_codes(codes, 5, valid),
                                [[2 / 3, 0, 1 / 3, 0, 0], [0, 0, 0, 1, 0]])


def test_the_bag_probe_reads_codes_that_tell_the_class_per_image_not_per_token():
  # Each image's tokens take codes unique to the image (as a codebook that
  # tells images apart), and the class decides nothing: the token AMI reads
  # far above zero while the bag probe stays at chance. Codes that carry the
  # class in half the tokens probe perfectly.
  from jepa_jax.eval import probes  # noqa: PLC0415
  rng = np.random.default_rng(5)
  y = np.arange(300) % 3
  per_image = (np.arange(300)[:, None] * 2 + rng.integers(0, 2, (300, 8))) % 600
  sets = {'label': (y[:200], y[200:])}
  noise = probes.codes_section(per_image[200:], None, sets, 600, train=(per_image[:200], None))
  assert noise['code_label_ami'] > 0.1
  assert noise['code_label_nmi'] - noise['code_label_nmi_shuffled'] < 0.02
  assert abs(noise['code_label_bag_probe'] - 1 / 3) < 0.1
  told = np.where(np.arange(8) < 4, 600 + y[:, None], per_image)
  good = probes.codes_section(told[200:], None, sets, 603, train=(told[:200], None))
  assert good['code_label_bag_probe'] == 1.0
  assert 'code_label_bag_probe' not in probes.codes_section(told[200:], None, sets, 603)


def test_probe_cache_returns_the_stored_scores_and_keys_on_every_input(tmp_path, monkeypatch):
  """probe_cache.cached: the first call computes and stores, an identical call
  reads the same scores back without computing; another array, label or
  argument is another entry; '' disables the cache."""
  from jepa_jax.eval import probes as probe_cache  # noqa: PLC0415
  monkeypatch.setenv(probe_cache.ENV, str(tmp_path))
  calls = []

  def scores(x, y, k=1):
    calls.append(k)
    return {'acc': float(np.mean(x)) / 3.0 + k, 'ci': 1.0 / 7.0}

  x, y = np.arange(12.0).reshape(4, 3), np.array([0, 1, 0, 1])
  first = probe_cache.cached(scores, x, y, k=2)
  again = probe_cache.cached(scores, x.copy(), y.copy(), k=2)
  assert again == first and calls == [2]              # exact floats from the file
  assert len(list(tmp_path.glob('*.json'))) == 1
  probe_cache.cached(scores, x + 1e-9, y, k=2)         # other features
  probe_cache.cached(scores, x, y[::-1].copy(), k=2)   # other labels
  probe_cache.cached(scores, x, y, k=3)                # other argument
  probe_cache.cached(scores, x.astype(np.float32), y, k=2)  # other dtype
  assert len(calls) == 5 and len(list(tmp_path.glob('*.json'))) == 5
  monkeypatch.setenv(probe_cache.ENV, '')
  probe_cache.cached(scores, x, y, k=2)
  assert len(calls) == 6 and len(list(tmp_path.glob('*.json'))) == 5


# ------------------------------------------------ baselines and the trajectory

def _encode(setup, params, images, batch):
  """Per-image mean token of `images` encoded whole, `batch` at a time."""
  import jax  # noqa: PLC0415
  fn = jax.jit(lambda p, x: setup.encoder.apply(p, x, None, None).mean(1))
  return np.concatenate([np.asarray(fn(params, images[i:i + batch]))
                         for i in range(0, len(images), batch)])


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  """A tiny no-VQ digits run, trained and evaluated: (cfg, folder, eval.json)."""
  from jepa_jax.train import loop as train  # noqa: PLC0415
  from conftest import load  # noqa: PLC0415
  cfg = load('no_vq', 'tiny')
  cfg.train.probe_every_steps = 4                  # points at steps 0, 4, 6
  path = str(tmp_path_factory.mktemp('tiny_run'))
  assert train.train_and_evaluate(cfg, path)['status'] == 'completed'
  return cfg, path, evaluate.evaluate_run(path)


def test_random_init_baseline_is_the_runs_architecture_at_its_seed(tiny_run):
  from jepa_jax import data as data_lib  # noqa: PLC0415
  from jepa_jax.train import step as step_lib  # noqa: PLC0415
  cfg, _, ev = tiny_run
  ds = data_lib.load_dataset(cfg)
  setup = step_lib.make_setup(cfg, ds)

  def scores(seed):
    params = step_lib.init_state(setup, ds.image_shape, seed)['params']['encoder']
    return evaluate.probe_scores(_encode(setup, params, ds.train_images, 512), ds.train_labels,
                                 _encode(setup, params, ds.val_images, 512), ds.val_labels,
                                 k=ev['knn_k'])

  assert ev['random_init'] == scores(cfg.seed)
  assert ev['random_init'] != scores(cfg.seed + 1)
  learned = ev['learned']
  best = max(('context_encoder', 'target_encoder'), key=lambda e: ev[e]['linear_probe_acc'])
  assert learned['encoder'] == best
  for ref in ('pixels', 'random_init'):
    for probe in ('linear_probe', 'knn'):
      assert learned[f'{probe}_over_{ref}_points'] == pytest.approx(
          100 * (ev[best][f'{probe}_acc'] - ev[ref][f'{probe}_acc']))


def test_probe_trajectory_points_are_probes_of_the_states_fitted_by_hand(tiny_run):
  from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
  from sklearn.preprocessing import StandardScaler  # noqa: PLC0415
  from jepa_jax.eval import probes  # noqa: PLC0415
  from jepa_jax.run import files as records  # noqa: PLC0415
  from jepa_jax.train import step as step_lib  # noqa: PLC0415
  cfg, path, ev = tiny_run
  _, ds, setup, final = trained.load_trained_state(path)
  logged = records.read_jsonl(f'{path}/probe_metrics.jsonl')
  assert [r['step'] for r in logged] == [0, 4, 6]
  tr, va = probes.subset(len(ds.train_images), len(ds.val_images),
                         cfg.train.probe_train_images, cfg.train.probe_val_images, cfg.seed)
  assert (len(tr), len(va)) == (300, 150)          # tiny: at most 300 / 150
  images = np.concatenate([ds.train_images[tr], ds.val_images[va]])

  def by_hand(params):
    x = _encode(setup, params, images, len(images))
    scale = StandardScaler().fit(x[:len(tr)])
    fit = LogisticRegression(max_iter=5000).fit(scale.transform(x[:len(tr)]),
                                                ds.train_labels[tr])
    return float(np.mean(fit.predict(scale.transform(x[len(tr):])) == ds.val_labels[va]))

  init = step_lib.init_state(setup, ds.image_shape, cfg.seed)
  for rec, state in ((logged[0], init), (logged[-1], final)):
    assert rec['linear_target'] == pytest.approx(by_hand(state['target_params']), abs=1e-12)
    assert rec['linear_context'] == pytest.approx(by_hand(state['params']['encoder']),
                                                  abs=1e-12)
  assert ev['probe_trajectory'] == [{k: r[k] for k in ('step', 'linear_target',
                                                       'linear_context')} for r in logged]
  summary = json.load(open(f'{path}/summary.json'))['probe']
  assert summary['points'] == 3 and summary['linear_target_end'] == logged[-1]['linear_target']
  assert summary['linear_context_start'] == logged[0]['linear_context']
  best = max(r['linear_target'] for r in logged)
  assert summary['linear_target_best'] == best
  assert summary['linear_target_best_step'] == next(
      r['step'] for r in logged if r['linear_target'] == best)


def test_digits_are_probed_whole_as_before(tiny_run):
  """Digits (1,797 images) are under --max_images: every image probed, the
  protocol string and the pixel probe those of the uncapped evaluation."""
  cfg, _, ev = tiny_run
  from jepa_jax import data as data_lib  # noqa: PLC0415
  ds = data_lib.load_dataset(cfg)
  n = len(ds.train_images) + len(ds.val_images)
  assert ev['probe_images'] == n == ev['num_train'] + ev['num_val'] < ev['max_images']
  assert ev['probe_protocol'] == '5-fold CV over train + val'
  assert ev['pixels'] == evaluate.probe_scores(ds.train_images, ds.train_labels,
                                               ds.val_images, ds.val_labels, k=ev['knn_k'])


def test_max_images_probes_one_seed_chosen_subset(tiny_run, tmp_path):
  """Over --max_images every probe uses the subset `probe_set.choose` draws
  from the run's seed (train and val proportions kept)."""
  import shutil  # noqa: PLC0415
  from jepa_jax.eval import probes as probe_set  # noqa: PLC0415
  cfg, path, full = tiny_run
  run = str(tmp_path / 'run')
  shutil.copytree(path, run)
  ev = evaluate.evaluate_run(run, max_images=400)
  _, ds, setup, state = trained.load_trained_state(run)
  tr, va = probe_set.choose(len(ds.train_images), len(ds.val_images), 400, cfg.seed)
  assert (ev['probe_images'], ev['probe_train_images'], ev['probe_val_images']) == (
      400, len(tr), len(va)) and len(tr) == round(400 * ev['num_train'] / 1797)
  assert ev['num_train'] == full['num_train'] and '400 of 1797 images' in ev['probe_protocol']
  assert json.load(open(f'{run}/eval.json'))['probe_images'] == 400
  ytr, yva = ds.train_labels[tr], ds.val_labels[va]
  assert ev['pixels'] == evaluate.probe_scores(ds.train_images[tr], ytr, ds.val_images[va],
                                               yva, k=ev['knn_k'])
  params = state['params']['encoder']
  assert ev['context_encoder'] == evaluate.probe_scores(
      _encode(setup, params, ds.train_images[tr], 512), ytr,
      _encode(setup, params, ds.val_images[va], 512), yva, k=ev['knn_k'])
  assert ev['chance'] == evaluate.probes.chance(np.concatenate([ytr, yva]))
  assert sum(ev['kmeans']['codebook']['sorted_counts']) == len(va) * setup.grid[0] * setup.grid[1]


def test_max_images_below_two_per_fold_is_refused(tmp_path):
  with pytest.raises(ValueError, match='--max_images=9: must be >= 10'):
    evaluate.evaluate_run(str(tmp_path), max_images=9)
  assert evaluate.main(['--workdir', str(tmp_path), '--max_images', '9']) != 0


def test_pixel_features_are_whole_for_small_images_and_pca_for_large():
  rng = np.random.default_rng(0)
  small_tr, small_va = rng.normal(size=(50, 8, 8, 1)), rng.normal(size=(20, 8, 8, 1))
  tr, va = evaluate._pixel_features(small_tr, small_va)
  assert tr is small_tr and va is small_va                 # digits: the pixels as they are
  big_tr = rng.normal(size=(300, 16, 16, 3)).astype(np.float32)
  big_va = rng.normal(size=(40, 16, 16, 3)).astype(np.float32)
  tr, va = evaluate._pixel_features(big_tr, big_va)        # 768 values > PIXEL_COMPONENTS
  assert tr.shape == (300, evaluate.PIXEL_COMPONENTS) and va.shape == (40, tr.shape[1])
  # The components are the train split's: projecting back recovers the
  # centred train rows' best rank-256 approximation, so most of their variance.
  flat = big_tr.reshape(300, -1)
  kept = np.sum(tr.var(0)) / np.sum(flat.var(0))
  assert 0.5 < kept < 1.0


def test_the_command_says_each_long_part_as_it_starts(tiny_run, tmp_path, capsys):
  """evaluate was silent for a minute and more: its stderr now names each
  long part as it starts (encoding, probing, k-means), its stdout the result."""
  import shutil  # noqa: PLC0415
  run = str(tmp_path / 'run')
  shutil.copytree(tiny_run[1], run)
  assert evaluate.main(['--workdir', run, '--max_images', '200']) == 0
  out = capsys.readouterr()
  assert out.err.splitlines() == [
      'encoding 200 images with the context, target and random-init encoders...',
      'probing each encoder and the pixels (5-fold linear probe and k-NN)...',
      'k-means baseline of the tokens (32 codes), scored the same way...']   # tiny's K
  assert out.out.count('\n') == 1 and out.out.startswith('target_encoder probe ')
