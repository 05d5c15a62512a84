"""The report's first question, "Does the encoder learn?": per variant the
trained encoders' linear probe next to the raw pixels' and the random-init
encoder's (eval.json, `jepa_jax.eval.goals`), the gains in points, the probe
trajectory's start, best and end; and the plot of the probe trajectories
(`probe_trajectory.png`: one line per variant and seed, the pixels' and each
variant's random-init probe as horizontal lines)."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence

import numpy as np

from experiments.report_tables import Row, mean_or_none, mean_std, render_table, scalar
from jepa_jax import diagnose
from jepa_jax.eval import goals as learning

PLOT = 'probe_trajectory.png'


def learning_values(run: diagnose.Run) -> Dict[str, Any]:
  """The section's scalars of one run (keys absent where the run lacks them)."""
  got = learning.learning(run)
  ev, traj = got['eval'], got['trajectory']
  v: Dict[str, Any] = {}
  if ev:
    v.update(best_probe=ev['best_acc'], best_encoder=ev['best'], rnd_probe=ev['random_init'],
             gain_pix=ev['over_pixels_points'], gain_rnd=ev['over_random_init_points'])
  if traj:
    v.update(traj_start=traj['start'], traj_best=traj['best'], traj_end=traj['end'])
  return v


def _trajectory_cell(vs):
  parts = [mean_std([v.get(f'traj_{k}') for v in vs], '%') for k in ('start', 'best', 'end')]
  if parts[0] is None:
    return 'N/A', None
  return ' → '.join(parts), mean_or_none([v.get('traj_end') for v in vs])


def _points(key: str):
  """A gain in points: signed mean, ± the sample std over seeds (several)."""
  def cell(vs):
    xs = [v[key] for v in vs if v.get(key) is not None]
    if not xs:
      return 'N/A', None
    m = float(np.mean(xs))
    return f'{m:+.1f}' + (f' ± {np.std(xs, ddof=1):.1f}' if len(xs) > 1 else ''), m
  return cell


def _best_cell(vs):
  text, score = scalar('best_probe', '%')(vs)
  names = sorted({v['best_encoder'].replace('_encoder', '') for v in vs if 'best_encoder' in v})
  return (f"{text} ({', '.join(names)})" if names else text), score


LEARNING = [Row('Linear probe, better trained encoder', _best_cell, 'max'),
            Row('Linear probe, random-init encoder (same architecture and seed)',
                scalar('rnd_probe', '%')),
            Row('Linear probe, raw pixels', scalar('pix_probe', '%')),
            Row('Gain over random init [points]', _points('gain_rnd'), 'max'),
            Row('Gain over raw pixels [points]', _points('gain_pix'), 'max'),
            Row('Probe trajectory (target, holdout): step 0 → best → end',
                _trajectory_cell, 'max')]


def learning_section(shown: Sequence[str], values) -> List[str]:
  """The report's opening section."""
  lines = ['## Does the encoder learn?', '',
           'The linear probe of the better trained encoder (eval.json: 5-fold '
           'cross-validated, mean token per image) next to the same probe of the raw '
           'pixels and of the encoder at its initialisation (same architecture and '
           'seed); gains in points (100 x accuracy difference), mean ± std over seeds. '
           'A negative gain over random init: training made the features worse for '
           'this probe. The trajectory row is the target encoder\'s holdout probe on '
           'a fixed subset during training (probe_metrics.jsonl), step 0 being the '
           'encoder at initialisation; a holdout, not cross-validated, so it reads a '
           'few points apart from eval.json (digits: 81.1% holdout vs 83.4% CV for the '
           'same random-init encoder); its end is the winner score.',
           '']
  return lines + render_table('Does the encoder learn?', LEARNING, shown, values)


def write_plot(plot_dir: str, shown: Sequence[str], runs, styles, plt) -> List[str]:
  """probe_trajectory.png (module docstring); [] when no run has a trajectory."""
  if not any(r.probe for var in shown for r in runs[var]):
    return []
  cmap = plt.get_cmap('tab10')
  fig, ax = plt.subplots(figsize=(8, 4.5))
  pixels = []
  for var in shown:
    color, style = cmap(styles[var][0]), styles[var][1]
    for i, run in enumerate(runs[var]):
      recs = [r for r in run.probe if r.get('linear_target') is not None]
      if recs:
        ax.plot([r['step'] for r in recs], [100 * r['linear_target'] for r in recs], style,
                color=color, lw=1.3, marker='.', label=var if i == 0 else None)
      ev = learning.from_eval(run.eval or {})
      if ev.get('random_init') is not None:
        ax.axhline(100 * ev['random_init'], color=color, ls=':', lw=1,
                   label=f'{var}: random init' if i == 0 else None)
      if ev.get('pixels') is not None:
        pixels.append(ev['pixels'])
  if pixels:
    ax.axhline(100 * mean_or_none(pixels), color='black', ls='--', lw=1, label='raw pixels')
  ax.set(xlabel='step', ylabel='linear probe accuracy [%]',
         title='Probe trajectory, target encoder (holdout on a fixed subset; step 0 = '
               'init)\nlines: pixels and random init (eval.json, 5-fold CV)')
  ax.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(plot_dir, PLOT)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return [path]
