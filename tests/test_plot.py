"""`python -m jepa_jax.plot`: one PNG of a run's curves, through the command
a user types; its refusals are one line each, nothing written."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT, load

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _plot(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, '-m', 'jepa_jax.plot', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)


@pytest.fixture(scope='module')
def vq_run(tmp_path_factory):
  from jepa_jax.train import loop as train  # noqa: PLC0415
  cfg = load('gentle', 'tiny')
  cfg.train.probe_every_steps = 4
  path = str(tmp_path_factory.mktemp('plot_run'))
  assert train.train_and_evaluate(cfg, path)['status'] == 'completed'
  return path


def test_plot_writes_one_png_of_the_run_and_prints_its_path(vq_run, tmp_path):
  out = _plot(f'--workdir={vq_run}')
  assert out.returncode == 0 and out.stderr == '', out.stderr[-3000:]
  path = os.path.join(vq_run, 'curves.png')
  assert out.stdout == path + '\n'
  with open(path, 'rb') as f:
    assert f.read(8) == PNG_MAGIC
  other = tmp_path / 'mine.png'
  assert _plot(f'--workdir={vq_run}', f'--out={other}').returncode == 0
  assert other.read_bytes()[:8] == PNG_MAGIC


def test_plot_draws_the_panels_from_the_logs(vq_run):
  import matplotlib  # noqa: PLC0415
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # noqa: PLC0415
  from jepa_jax import plot  # noqa: PLC0415
  from jepa_jax.run import reader  # noqa: PLC0415
  run = reader.load_run(vq_run)
  fig = plot.draw(run, plt)
  loss, probe, rank, usage = fig.axes
  assert list(loss.lines[1].get_ydata()) == [r['val_loss_mean'] for r in run.epochs]
  assert list(probe.lines[0].get_xdata()) == [r['step'] for r in run.probe] == [0, 4, 6]
  assert usage.get_title() == 'VQ usage' and len(rank.lines) == 2
  plt.close(fig)


@pytest.mark.parametrize('args, expected', [
    (('--workdir={tmp}/none',), 'error: --workdir={tmp}/none: no such folder'),
    (('--workdir={tmp}',), 'error: {tmp}: not a run folder (no config.json)'),
    (('--workdir={tmp}', '--out={tmp}/x.jpg'), 'error: --out={tmp}/x.jpg: name a .png file'),
])
def test_plot_refusals_are_one_line_and_write_nothing(args, expected, tmp_path):
  out = _plot(*(a.format(tmp=tmp_path) for a in args))
  assert (out.returncode, out.stderr) == (2, expected.format(tmp=tmp_path) + '\n')
  assert os.listdir(tmp_path) == []


def test_plot_without_matplotlib_is_one_line(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  code = ('import sys; sys.modules["matplotlib"] = None; '
          'from jepa_jax import plot; sys.exit(plot.main(sys.argv[1:]))')
  out = subprocess.run([sys.executable, '-c', code, f'--workdir={tmp_path}'], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
  assert (out.returncode, out.stderr) == (
      2, 'error: python -m jepa_jax.plot needs matplotlib: pip install matplotlib\n')
  assert os.listdir(tmp_path) == []
