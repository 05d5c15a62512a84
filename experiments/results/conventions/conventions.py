"""Which conventions reproduce the reference: VQ loss reduction x usage definition.

    python -m experiments.results.conventions.conventions --runs mean=RUNS_MEAN,sum=RUNS_SUM \
        [--variants vq_no_refresh,sixth_run,gentle,no_vq] [--seed 0] [--out DIR]

Each RUNS_* folder is an `experiments.assess` workdir trained at the
reference's step rate (`--override train.batch_size=16`: 95 steps per digits
epoch) with one `vq.loss_reduction`. For every variant and reduction the
table gives, at step 200 (the reference's first point) and at the end, both
usage definitions (the whole val split, `vq_usage_ratio`; codes the train
step assigned in its last `train.usage_window_steps` steps,
`vq_window_usage_ratio`), the context / target effective ranks, the usage
trajectory (`diagnose.usage_trajectory`) and the final val loss, next to the
reference's published numbers (`report_health.REFERENCE`). Writes
DIR/README.md (default: print).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional

from experiments import report
from experiments import report_health
from jepa_jax import diagnose

REFERENCE_AT = {   # the reference's step-200 and end values (its assessment)
    'vq_no_refresh': {'usage': (0.177, 0.044), 'ctx': (3.29, 1.43), 'tgt': (5.65, 2.94)},
    'sixth_run': {'usage': (0.243, 0.017), 'ctx': (None, None), 'tgt': (None, None)},
}


def _at(recs, key, step) -> Optional[float]:
  """The value of `key` at the last record with step <= `step`."""
  xs = [r[key] for r in recs if r['step'] <= step and r.get(key) is not None]
  return xs[-1] if xs else None


def _pct(x):
  return '–' if x is None else f'{100 * x:.1f}%'


def _f(x, spec='.2f'):
  return '–' if x is None else format(x, spec)


def row(variant: str, reduction: str, run: diagnose.Run) -> str:
  emb = run.embedding
  end = emb[-1]['step'] if emb else 0
  u = [(_at(emb, 'vq_usage_ratio', s), _at(emb, 'vq_window_usage_ratio', s))
       for s in (200, end)]
  ranks = [(_at(emb, 'context_effective_rank', s), _at(emb, 'target_effective_rank', s))
           for s in (200, end)]
  traj = diagnose.usage_trajectory(emb)['label'] if run.vq_enabled else 'n/a'
  val = run.epochs[-1]['val_loss_mean'] if run.epochs else None
  usage = (f'{_pct(u[0][0])} / {_pct(u[0][1])} -> {_pct(u[1][0])} / {_pct(u[1][1])}'
           if run.vq_enabled else 'n/a')
  return (f'| {variant} | {reduction} | {len(run.epochs)}/{run.num_epochs} | {usage} | '
          f'{traj} | {_f(ranks[0][0])} -> {_f(ranks[1][0])} | '
          f'{_f(ranks[0][1])} -> {_f(ranks[1][1])} | {_f(val, ".4f")} |')


def reference_row(variant: str) -> Optional[str]:
  ref = report_health.REFERENCE.get(variant)
  if not ref:
    return None
  at = REFERENCE_AT.get(variant, {})
  usage = (f"{_pct(at['usage'][0])} -> {_pct(at['usage'][1])} (its definition)"
           if at.get('usage') else ref['usage'])
  return (f"| {variant} | **reference** | {ref['epochs']} | {usage} | {ref['trajectory']} | "
          f"{ref['ctx_rank']} | {ref['tgt_rank']} | {ref['final_val']} (own scale) |")


def table(runs: Dict[str, str], variants: List[str], seed: int) -> List[str]:
  lines = ['| variant | VQ loss | epochs | usage at step 200 -> end (val split / '
           'training window) | trajectory | context rank 200 -> end | '
           'target rank 200 -> end | final val loss |', '|---|---|---|---|---|---|---|---|']
  for var in variants:
    ref = reference_row(var)
    if ref:
      lines.append(ref)
    for reduction, workdir in runs.items():
      path = report.run_dir(workdir, var, seed)
      if os.path.exists(os.path.join(path, 'config.json')):
        lines.append(row(var, reduction, diagnose.load_run(path)))
      else:
        lines.append(f'| {var} | {reduction} | not run | | | | | |')
  return lines


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog='python -m experiments.results.conventions.conventions',
                               description=__doc__.split('\n\n')[0])
  ap.add_argument('--runs', required=True, help='reduction=WORKDIR,...')
  ap.add_argument('--variants', default='vq_no_refresh,sixth_run,gentle,no_vq')
  ap.add_argument('--seed', type=int, default=0)
  ap.add_argument('--out')
  args = ap.parse_args(argv)
  try:
    runs = dict(item.split('=', 1) for item in args.runs.split(','))
  except ValueError:
    print(f'error: --runs={args.runs!r}: expected reduction=WORKDIR,...', file=sys.stderr)
    return 2
  lines = table(runs, [v for v in args.variants.split(',') if v], args.seed)
  text = '\n'.join(lines) + '\n'
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'table.md'), 'w') as f:
      f.write(text)
  print(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
