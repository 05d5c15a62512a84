"""Paired per-seed changes between two VQ variants' logged runs (this study's
"paired change against 'target'" column):

    python -m experiments.results.codebook_arc.paired \
        --workdir experiments/results/codebook_arc/logs \
        --a ijepa_vq_beside_cw --b ijepa_vq_beside --seeds 400,401,402,403,404

For each quantity, a - b per seed, its mean, 95% bootstrap interval and
worst seed (`jepa_jax.eval.metrics.paired`): from eval.json the code-label
AMI and the bag-of-codes probe; from the last embedding_metrics.jsonl
point the train-subset usage and perplexity / K, the val usage and the
churn over the last epoch.
"""
from __future__ import annotations

import argparse
import json
import os

from jepa_jax.eval import metrics

QUANTITIES = {
    'code_label_ami': lambda ev, last: ev['code_label_ami'],
    'bag_of_codes_probe': lambda ev, last: ev['code_label_bag_probe'],
    'train_usage_end': lambda ev, last: last['vq_train_usage_ratio'],
    'train_perplexity_ratio_end': lambda ev, last: last['vq_train_perplexity_ratio'],
    'val_usage_end': lambda ev, last: last['vq_usage_ratio'],
    'churn_last_epoch': lambda ev, last: last['vq_churn_epoch'],
}


def values(workdir: str, variant: str, seed: int):
  """{quantity: value} of one logged run."""
  run = os.path.join(workdir, variant, f'seed_{seed}')
  with open(os.path.join(run, 'eval.json')) as f:
    ev = json.load(f)
  with open(os.path.join(run, 'embedding_metrics.jsonl')) as f:
    last = [json.loads(line) for line in f if line.strip()][-1]
  return {name: fn(ev, last) for name, fn in QUANTITIES.items()}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog='python -m experiments.results.codebook_arc.paired',
                               description=__doc__.split('\n')[0])
  ap.add_argument('--workdir', required=True)
  ap.add_argument('--a', required=True)
  ap.add_argument('--b', required=True)
  ap.add_argument('--seeds', required=True, help='comma-separated')
  args = ap.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(',')]
  a = {s: values(args.workdir, args.a, s) for s in seeds}
  b = {s: values(args.workdir, args.b, s) for s in seeds}
  for name, _, p in metrics.paired_by_name(a, b, list(QUANTITIES)):
    print(f"{name:<28} {p['mean']:+.4f} [{p['ci'][0]:+.4f}, {p['ci'][1]:+.4f}] "
          f"worst {p['worst']:+.4f} (seed {p['worst_seed']})")
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
