"""The assessment report's plots (matplotlib, imported only when drawing):
VQ usage, effective ranks and losses over training, mean ± std over seeds,
the probe trajectories (experiments/report_learning.py) and the
codebook-health plots of experiments/report_health.py."""
from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from experiments import report_health
from experiments import report_learning
from jepa_jax import diagnose
from jepa_jax.train import monitor

PLOTS = ('vq_usage.png', 'effective_ranks.png', 'losses.png')


def _series(runs: List[diagnose.Run], source: str, key: str):
  """(x, mean, std) over seeds of a logged series (steps aligned by value)."""
  by_x: Dict[int, List[float]] = {}
  for run in runs:
    recs = run.embedding if source == 'embedding' else run.epochs
    for r in recs:
      if r.get(key) is not None:
        x = r['step'] if source == 'embedding' else r['epoch'] + 1
        by_x.setdefault(x, []).append(r[key])
  xs = sorted(by_x)
  return (np.array(xs), np.array([np.mean(by_x[x]) for x in xs]),
          np.array([np.std(by_x[x], ddof=1) if len(by_x[x]) > 1 else 0.0 for x in xs]))


LINE_STYLES = ('-', '--', '-.', ':')


def line_styles(variants: Sequence[str]) -> Dict[str, Tuple[int, str]]:
  """variant -> (tab10 colour index, line style), distinct for up to 40 variants.

  The i-th variant gets colour i mod 10 and the (i div 10)-th line style, so
  the 11th variant does not reuse the first one's solid line (beyond 40 the
  pairs repeat).
  """
  return {v: (i % 10, LINE_STYLES[(i // 10) % len(LINE_STYLES)])
          for i, v in enumerate(variants)}


def write_plots(plot_dir: str, variants, runs: Dict[str, List[diagnose.Run]]) -> List[str]:
  import matplotlib  # noqa: PLC0415
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # noqa: PLC0415
  os.makedirs(plot_dir, exist_ok=True)
  styles = line_styles(list(variants))
  cmap = plt.get_cmap('tab10')

  def draw(ax, var, source, key, scale=1.0):
    x, m, s = _series(runs[var], source, key)
    color, style = cmap(styles[var][0]), styles[var][1]
    if len(x):
      ax.plot(x, scale * m, style, color=color, label=var, lw=1.5)
      ax.fill_between(x, scale * (m - s), scale * (m + s), color=color, alpha=0.2)

  shown = [v for v in variants if runs.get(v)]
  fig, ax = plt.subplots(figsize=(8, 4.5))
  for var in shown:
    draw(ax, var, 'embedding', monitor.USAGE, 100.0)
  ax.axhline(15, color='grey', ls='--', lw=1, label='15% (must-have)')
  ax.axhline(10, color='red', ls=':', lw=1, label='10% (red flag)')
  ax.set(xlabel='step', ylabel='VQ usage [% of codebook]', yscale='log',
         title='VQ codebook usage (mean ± std over seeds)')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(plot_dir, PLOTS[0]), dpi=110)
  plt.close(fig)

  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True, sharey=True)
  for ax, key, must, name in ((axes[0], 'context_effective_rank', 5, 'context'),
                              (axes[1], 'target_effective_rank', 10, 'target')):
    for var in shown:
      draw(ax, var, 'embedding', key)
    ax.axhline(must, color='grey', ls='--', lw=1, label=f'{must} (must-have)')
    ax.axhline(3, color='red', ls=':', lw=1, label='3 (alert)')
    ax.set(xlabel='step', ylabel='effective rank', title=f'{name} encoder')
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(plot_dir, PLOTS[1]), dpi=110)
  plt.close(fig)

  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True, sharey=True)
  for ax, key, name in ((axes[0], 'train_loss_mean', 'train'),
                        (axes[1], 'val_loss_mean', 'validation')):
    for var in shown:
      draw(ax, var, 'epoch', key)
    ax.set(xlabel='epoch', ylabel='loss (epoch mean)', title=f'{name} loss',
           yscale='log')
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(plot_dir, PLOTS[2]), dpi=110)
  plt.close(fig)
  health = report_health.write_health_plots(plot_dir, shown, runs, draw, styles)
  probe = report_learning.write_plot(plot_dir, shown, runs, styles, plt)
  return [os.path.join(plot_dir, p) for p in PLOTS] + probe + health


