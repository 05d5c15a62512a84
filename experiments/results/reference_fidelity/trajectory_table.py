"""Runs' val usage and effective ranks at the reference's measurement steps.

    python -m experiments.results.reference_fidelity.trajectory_table \
        RUN_OR_JSONL [RUN_OR_JSONL ...] [--steps 200,400,...,2850]

Reads each run's `embedding_metrics.jsonl` (a run folder, or the file
itself as this study keeps it) and prints one markdown row per run: the
val usage (`vq_usage_ratio`, % of K) at each step asked for (the logged
point nearest to it at or before it), then the context and target
effective ranks at the first and the last point. The reference's row is
typed in from its assessment (`REFERENCE`), for the comparison.
"""
from __future__ import annotations

import argparse
import os
import sys

from jepa_jax.run import files as run_files

STEPS = (200, 400, 600, 800, 1000, 1200, 1400, 1600, 1800, 2000, 2850)
# The reference's no-refresh run, as its assessment reports it: usage (%) at
# these steps, context and target effective rank at its start and end.
REFERENCE = {'usage': dict(zip(STEPS, (17.7, 16.4, 14.8, 13.8, 11.3, 9.5, 8.7, 7.3, 5.9,
                                       6.1, 4.4))),
             'context': (3.29, 1.43), 'target': (5.65, 2.94)}


def read(path: str):
  """The rows of a run's embedding_metrics.jsonl (folder or file); [] when
  there is none (`jepa_jax.run.files.read_jsonl`)."""
  if os.path.isdir(path):
    path = os.path.join(path, run_files.EMBEDDING_METRICS)
  return run_files.read_jsonl(path)


def row(name: str, rows, steps) -> str:
  """One markdown row: usage at each step, then the ranks first -> last."""
  cells = []
  for s in steps:
    before = [r for r in rows if r['step'] <= s]
    cells.append(f"{100 * before[-1]['vq_usage_ratio']:.1f}" if before else '–')
  first, last = rows[0], rows[-1]
  ranks = [f"{first[f'{e}_effective_rank']:.2f} → {last[f'{e}_effective_rank']:.2f}"
           for e in ('context', 'target')]
  return f'| {name} | ' + ' | '.join(cells + ranks) + ' |'


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog='python -m experiments.results.reference_fidelity.'
                               'trajectory_table', description=__doc__.split('\n\n')[0])
  ap.add_argument('runs', nargs='+', help='run folders or embedding_metrics.jsonl files')
  ap.add_argument('--steps', default=','.join(map(str, STEPS)))
  args = ap.parse_args(argv)
  steps = [int(s) for s in args.steps.split(',')]
  runs = []
  for path in args.runs:
    try:
      rows = read(path)
    except (OSError, ValueError) as err:
      ap.error(f'{path}: not a run folder or embedding_metrics.jsonl ({err})')
    if not rows:
      ap.error(f'{path}: not a run folder or embedding_metrics.jsonl (no points)')
    runs.append((os.path.basename(os.path.normpath(path)).replace(
        '_embedding_metrics.jsonl', ''), rows))
  print('| run | ' + ' | '.join(f'step {s}' for s in steps)
        + ' | context rank | target rank |')
  print('|---' * (len(steps) + 3) + '|')
  ref = [f"{REFERENCE['usage'][s]:.1f}" if s in REFERENCE['usage'] else '–' for s in steps]
  print('| reference (assessment) | ' + ' | '.join(
      ref + [f'{a:.2f} → {b:.2f}' for a, b in (REFERENCE['context'], REFERENCE['target'])])
        + ' |')
  for name, rows in runs:
    print(row(name, rows, steps))
  return 0


if __name__ == '__main__':
  sys.exit(main())
