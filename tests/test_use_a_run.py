"""The public API of a trained run (`jepa_jax.load_run`, `python -m
jepa_jax.export`) and docs/use_a_run.md, whose worked example is run here as
it stands, in a fresh folder."""
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

import jepa_jax
from jepa_jax import export
from jepa_jax.errors import InputError
from jepa_jax.train import loop as train
from jepa_jax.vq import quantizer as qz
from conftest import ROOT, load

PAGE = pathlib.Path(ROOT, 'docs', 'use_a_run.md')


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('tiny_run'))
  assert train.train_and_evaluate(load('gentle', 'tiny'), path)['status'] == 'completed'
  return path


def test_encode_pools_the_tokens_and_codes_are_the_nearest_codes(tiny_run):
  run = jepa_jax.load_run(tiny_run)
  images = run.dataset.val_images[:40]
  emb = run.encode(images, batch=16)             # batches of 16, 16, 8
  assert emb.tokens.shape == (40, 16, run.config.model.embed_dim) and emb.valid is None
  np.testing.assert_allclose(emb.pooled, emb.tokens.mean(1), rtol=1e-6)
  whole = np.asarray(run.setup.encoder.apply(run.state['params']['encoder'], images))
  np.testing.assert_allclose(emb.tokens, whole, rtol=1e-5, atol=1e-5)
  target = run.encode(images, encoder='target', tokens=False)
  assert target.tokens is None and not np.allclose(target.pooled, emb.pooled)
  # Codes by hand: the nearest row of the codebook to each token in the
  # quantizer space.
  u = np.asarray(qz.encode(run.quantizer, run.state.get('vq_params'), emb.tokens))
  dist = ((u[..., None, :] - run.codebook) ** 2).sum(-1)
  codes = run.codes(images, batch=16)
  assert codes.dtype == np.int32 and codes.shape == (40, 16)
  np.testing.assert_array_equal(codes, dist.argmin(-1))
  assert run.codebook.shape == (run.quantizer.num_codes, u.shape[-1])
  # The target (EMA) encoder's tokens, coded the same way.
  tgt = run.encode(images, encoder='target').tokens
  u_tgt = np.asarray(qz.encode(run.quantizer, run.state.get('vq_params'), tgt))
  target_codes = run.codes(images, encoder='target', batch=16)
  np.testing.assert_array_equal(
      target_codes, ((u_tgt[..., None, :] - run.codebook) ** 2).sum(-1).argmin(-1))
  assert not np.array_equal(target_codes, codes)      # two encoders, two codings
  for method in (run.encode, run.codes):
    with pytest.raises(InputError, match="encoder='student': one of context, target"):
      method(images, encoder='student')


def test_export_writes_what_the_api_gives(tiny_run, tmp_path):
  out = tmp_path / 'e.npz'
  assert export.main(['--workdir', tiny_run, '--out', str(out), '--tokens']) == 0
  f = np.load(out)
  run = jepa_jax.load_run(tiny_run)
  ds = run.dataset
  assert sorted(f.keys()) == sorted(
      ['encoder', 'codebook'] + [f'{s}_{k}' for s in ('train', 'val')
                                 for k in ('embeddings', 'tokens', 'codes', 'labels')])
  np.testing.assert_array_equal(f['val_labels'], ds.val_labels)
  np.testing.assert_array_equal(f['train_codes'], run.codes(ds.train_images))
  np.testing.assert_allclose(f['val_embeddings'], run.encode(ds.val_images).pooled, rtol=1e-6)
  assert f['train_tokens'].shape == (len(ds.train_images), 16, run.config.model.embed_dim)
  assert str(f['encoder']) == 'context'


def _run(args, cwd):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=600)


def test_a_folder_that_is_not_a_finished_run_is_one_line(tiny_run, tmp_path):
  with pytest.raises(InputError, match=f'^{tmp_path}: not a run folder'):
    jepa_jax.load_run(str(tmp_path))
  out = _run(['-m', 'jepa_jax.export', '--workdir', str(tmp_path / 'none'),
              '--out', str(tmp_path / 'x.npz')], ROOT)
  assert (out.returncode, out.stderr) == (
      2, f'error: {tmp_path / "none"}: not a run folder (no config.json)\n')
  unfinished = tmp_path / 'unfinished'
  shutil.copytree(tiny_run, unfinished)
  os.remove(unfinished / 'final_state.msgpack')
  out = _run(['-m', 'jepa_jax.export', '--workdir', str(unfinished),
              '--out', str(tmp_path / 'x.npz')], ROOT)
  assert (out.returncode, out.stderr) == (
      2, f'error: {unfinished / "final_state.msgpack"}: no final weights (a run writes '
      'them when it ends; this one did not end or predates them)\n')
  with pytest.raises(InputError, match='--out=x.txt: name a .npz file'):
    export.export(tiny_run, 'x.txt')
  assert sorted(os.listdir(tmp_path)) == ['unfinished']         # nothing written


def _blocks(text):
  """(language, code) of the fenced blocks of the page's worked example."""
  section = text.split('## A worked example', 1)[1].split('\n## ', 1)[0]
  return re.findall(r'```(bash|python)\n(.*?)```', section, re.S)


@pytest.mark.slow
def test_the_pages_worked_example_runs_as_written(tmp_path):
  blocks = _blocks(PAGE.read_text())
  assert [lang for lang, _ in blocks] == ['bash', 'python', 'bash']
  shutil.copytree(os.path.join(ROOT, 'configs'), tmp_path / 'configs')
  outputs = []
  for lang, code in blocks:
    if lang == 'python':
      commands = [['-c', code]]
    else:
      commands = [shlex.split(line)[1:] for line in code.strip().splitlines()]
      assert all(shlex.split(line)[0] == 'python' for line in code.strip().splitlines())
    for args in commands:
      out = _run(args, tmp_path)
      assert out.returncode == 0, out.stderr[-3000:]
      outputs.append(out.stdout)
  lines = outputs[1].splitlines()                                 # digits' val split
  assert lines[0] == '(270, 16) (270, 16, 16)' and re.fullmatch(
      r'\(270, 16\) \d+ codes used of 32', lines[1]), lines
  assert "'val_codes', 'val_embeddings', 'val_labels'" in outputs[-1]
