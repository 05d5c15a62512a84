"""The curves of one run folder -> one PNG, from its logs (nothing is re-run).

    python -m jepa_jax.plot --workdir RUN_DIR [--out FILE.png]

Four panels: the train and val loss per epoch (epoch_metrics.jsonl); the
linear probe over training, target and context encoder, step 0 being the
random-init encoder (probe_metrics.jsonl); the context and target encoders'
effective rank (embedding_metrics.jsonl); and, with VQ, the codebook usage
(else the InfoNCE temperature per epoch). A run still going or stopped is
drawn as far as its logs go. The default file is RUN_DIR/curves.png.
Needs matplotlib (`pip install matplotlib`, or the `experiments` extra): a
missing matplotlib, a folder that holds no run and an --out that is not a
.png in an existing folder are one line each, before anything is written
(docs/errors.md). TensorBoard reads the same run from its event files.
"""
from __future__ import annotations

import os
import sys
from typing import List

from jepa_jax import errors
from jepa_jax.run import files as records
from jepa_jax.run import reader
from jepa_jax.train import monitor

DEFAULT_NAME = 'curves.png'


def _xy(recs: List[dict], x: str, y: str):
  pts = [(r[x], r[y]) for r in recs if r.get(y) is not None and x in r]
  return [p[0] for p in pts], [p[1] for p in pts]


def draw(run: reader.Run, plt):
  """The figure of `run` (module docstring)."""
  fig, axes = plt.subplots(2, 2, figsize=(11, 8))
  (loss, probe), (rank, last) = axes
  for key, label in (('train_loss_mean', 'train'), ('val_loss_mean', 'val')):
    loss.plot(*_xy(run.epochs, 'epoch', key), 'o-', ms=3, label=label)
  loss.set(xlabel='epoch', ylabel='loss (epoch mean)', title='loss')
  for key, label in (('linear_target', 'target encoder'),
                     ('linear_context', 'context encoder')):
    probe.plot(*_xy(run.probe, 'step', key), 'o-', ms=3, label=label)
  if run.probe:
    probe.axhline(run.probe[0]['linear_target'], color='grey', ls=':', lw=1,
                  label='step 0 (random init)')
  probe.set(xlabel='step', ylabel='accuracy', title='linear probe (holdout)')
  for key, label in (('context_effective_rank', 'context'),
                     ('target_effective_rank', 'target')):
    rank.plot(*_xy(run.embedding, 'step', key), '-', label=label)
  rank.set(xlabel='step', ylabel='effective rank', title='effective rank')
  if run.vq_enabled:
    last.plot(*_xy(run.embedding, 'step', monitor.USAGE), '-', label='val usage')
    last.set(xlabel='step', ylabel='share of the codebook', title='VQ usage')
  else:
    last.plot(*_xy(run.epochs, 'epoch', 'temperature'), 'o-', ms=3, label='temperature')
    last.set(xlabel='epoch', ylabel='temperature', title='InfoNCE temperature')
  for ax in axes.ravel():
    if ax.lines:
      ax.legend(fontsize=8)
  fig.suptitle(f'{run.variant}: {run.status} ({run.path})', fontsize=10)
  fig.tight_layout()
  return fig


def plot(workdir: str, out_path: str = '') -> str:
  """Writes the figure of the run in `workdir` to `out_path` (default
  WORKDIR/curves.png, atomically); returns the path."""
  if not os.path.isdir(workdir):
    raise errors.InputError(f'--workdir={workdir}: no such folder')
  out_path = out_path or os.path.join(workdir, DEFAULT_NAME)
  errors.check_out_file(out_path, '.png')
  try:
    import matplotlib  # noqa: PLC0415  (an optional dependency)
  except ImportError:
    raise errors.InputError('python -m jepa_jax.plot needs matplotlib: '
                            'pip install matplotlib') from None
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # noqa: PLC0415
  fig = draw(reader.load_run(workdir), plt)
  try:
    records.write_atomically(out_path, lambda f: fig.savefig(f, format='png', dpi=100), 'wb')
  finally:
    plt.close(fig)
  return out_path


def main(argv=None) -> int:
  ap = errors.ArgumentParser(prog='python -m jepa_jax.plot',
                             description='The curves of one run (loss, probe, ranks, '
                             'usage) -> one PNG')
  ap.add_argument('--workdir', required=True, help='a run folder (finished or not)')
  ap.add_argument('--out', default='',
                  help=f'the .png file to write (default WORKDIR/{DEFAULT_NAME})')
  args = ap.parse_args(argv)
  try:
    path = plot(args.workdir, args.out)
  except Exception as err:  # pylint: disable=broad-except
    status = errors.refused(err, also=(ValueError,))
    if status is None:
      raise
    return status
  print(path)
  return 0


if __name__ == '__main__':
  sys.exit(main())
