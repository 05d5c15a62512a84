"""The package boundary: a wheel built from the repository, installed (not
editable) in a fresh virtualenv, trains a `:tiny` run and exports it from a
folder outside the repository, given a copy of the config files.

The wheel is built from a copy of the package's sources (so nothing is
written into the checkout) by `pip wheel --no-deps` (its build backend,
setuptools, comes from the package index or PIP_FIND_LINKS). The virtualenv
gets the wheel alone (`--no-deps --no-index`); its dependencies (jax, flax,
...) are those of the interpreter running the tests, added to the
virtualenv's path by a .pth file after its own site-packages, so the
installed jepa_jax, not the checkout, is the one imported (the test checks
its path).
"""
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def _ok(cmd, cwd, env=None, timeout=900):
  out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout)
  assert out.returncode == 0, (cmd, out.stdout[-2000:], out.stderr[-3000:])
  return out.stdout


def test_an_installed_wheel_trains_and_exports_outside_the_repository(tmp_path):
  src = tmp_path / 'src'
  shutil.copytree(os.path.join(ROOT, 'jepa_jax'), src / 'jepa_jax',
                  ignore=shutil.ignore_patterns('__pycache__'))
  for name in ('setup.py', 'README.md'):
    shutil.copy(os.path.join(ROOT, name), src)
  _ok([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '-w', str(tmp_path / 'dist'),
       str(src)], tmp_path)
  [wheel] = os.listdir(tmp_path / 'dist')
  venv = tmp_path / 'venv'
  _ok([sys.executable, '-m', 'venv', str(venv)], tmp_path)
  python = str(venv / 'bin' / 'python')
  site = _ok([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
             tmp_path).strip()
  with open(os.path.join(site, 'test_dependencies.pth'), 'w') as f:
    f.write(sysconfig.get_paths()['purelib'] + '\n')
  _ok([python, '-m', 'pip', 'install', '-q', '--no-deps', '--no-index',
       str(tmp_path / 'dist' / wheel)], tmp_path)

  user = tmp_path / 'user'                       # a user's folder: config files only
  shutil.copytree(os.path.join(ROOT, 'configs'), user / 'configs',
                  ignore=shutil.ignore_patterns('__pycache__'))
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env['JAX_PLATFORMS'] = 'cpu'
  where = _ok([python, '-c', 'import jepa_jax; print(jepa_jax.__file__)'], user, env)
  assert where.strip() == os.path.join(site, 'jepa_jax', '__init__.py')
  last = _ok([python, '-m', 'jepa_jax.main', '--config=configs/gentle.py:tiny',
              '--workdir=run', '--config.train.num_epochs=1'], user, env).splitlines()[-1]
  assert last.startswith('completed: 1 epochs, 3 steps'), last
  last = _ok([python, '-m', 'jepa_jax.export', '--workdir', 'run', '--out', 'run/e.npz'],
             user, env).splitlines()[-1]
  assert last.startswith('train_embeddings (1527, 16), train_codes (1527, 16)'), last
  assert os.path.isfile(user / 'run' / 'e.npz')
