"""Do a run's codes carry the class? A linear probe on each image's bag of codes.

    python -m experiments.results.codebook_shapes.code_probe --workdir RUN [--out FILE] [--refine N]
    python -m experiments.results.codebook_shapes.code_probe --workdir LOGS \
        --table ijepa_vq,ijepa [--seeds 0,1,2,3,4]

For a finished run with class labels, on `evaluate`'s probe set (the same
images, `jepa_jax.eval.probes.restrict` at the run's seed): every context-
encoder token's code (`TrainedRun.codes`, the codes `evaluate` scores) and
the codes of a k-means fit with as many centres on the train images' tokens
(`probes.kmeans_codes`, `evaluate`'s `kmeans` baseline; a run without VQ
gets that baseline alone, with `vq.codebook_size` centres); with VQ also
k-means in the quantizer's own space (`kmeans_space`: the tokens through
the layer's projection and normalisation, `quantizer.encode`, assigned by
cosine when the codes are l2-normalised, as
`experiments/results/goal_gaps/ami_sources.py` fits it), which tells a
codebook that assigns badly from a space that lost the class. Each image becomes
its bag of codes, h_k = (tokens with code k) / T (`probes.bag_of_codes`),
and `evaluate`'s 5-fold linear probe is fitted on h: the numbers `evaluate`
writes as `code_label_bag_probe` since 2026-12-05, here with k-means in the
quantizer's space beside them and paired tables over seeds. Printed per source:
that accuracy, the code-label AMI, NMI and NMI with the images' labels
shuffled (`probes.code_metrics`, which `evaluate` reports as means over its
label sets), and chance (the most frequent class).

Why: the token-level AMI counts each token as a sample, though an image's T
tokens share its label; the bag-of-codes probe asks per image, with a plain
chance level, whether the codes tell the class, the use the codes are for.
A run without class labels is one error line, exit status 2.

--refine N asks why a codebook's codes tell the class less than k-means':
the run's codebook after N Lloyd steps on the final train tokens (`lloyd`),
with nearest codes ('lloyd', k-means from the run's codebook) and with the
training step's Sinkhorn codes ('lloyd_balanced', the EMA update's rule
taken in full steps on frozen tokens), each scored as the codes are.
run -> lloyd_balanced is what a refit on the final tokens adds to the
online codebook (not its lag behind the encoder: a codebook trained a
whole run on a frozen encoder gains as much or more, README),
lloyd_balanced -> lloyd what balance costs, lloyd -> kmeans_space the
starting point's share.

--table VARIANT,BASELINE reads the saved rows LOGS/NAME/seed_S/code_probe.jsonl
and prints one markdown row per comparison, per seed and paired by seed
(mean [95% bootstrap CI] (worst seed), `jepa_jax.eval.metrics.paired`): the
VQ variant's codes against k-means of its own tokens, and each against
k-means of the baseline's tokens (rows saved with --refine add the refined
codebook's comparisons); a missing row file is one error line.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List

import jax
import jax.numpy as jnp
import numpy as np

from experiments import json_rows
from jepa_jax.eval import metrics
from jepa_jax.eval import probes
from jepa_jax.run import files as run_files
from jepa_jax.run import trained
from jepa_jax.vq import assignment
from jepa_jax.vq import quantizer as quantizer_lib


def scores(train_codes, train_y, val_codes, val_y, num_codes: int) -> Dict[str, float]:
  """The bag-of-codes probe (5-fold over train and val together) and the
  token-level code metrics of the val codes: `probes.codes_section`, the
  scoring `evaluate` does, under this script's key names."""
  sec = probes.codes_section(val_codes, None, {'label': (train_y, val_y)}, num_codes,
                             train=(train_codes, None))
  acc = sec['code_label_bag_probe']
  return {'bag_linear_probe_acc': acc,
          'bag_linear_probe_ci95': probes.ci95(acc, len(train_y) + len(val_y)),
          **{key: sec[f'code_label_{key}'] for key in probes.CODE_METRICS}}


def code_probe(workdir: str, refine: int = 0) -> Dict[str, Any]:
  """{'chance', 'run': scores, 'kmeans': scores} of a finished run (no 'run'
  without VQ: k-means with `vq.codebook_size` centres, as `evaluate`);
  refine > 0 adds `refined`'s two sources (a codebook with state only)."""
  run = trained.load_run(workdir)
  if run.setup.padded or run.dataset.train_labels is None:
    raise ValueError(f'{workdir}: dataset {run.config.data.name!r} has no class labels '
                     '(bags of codes need one label per image)')
  ds, _ = probes.restrict(run.dataset, probes.MAX_IMAGES, run.config.seed)
  spec = run.quantizer
  k = spec.num_codes if spec else int(run.config.vq.codebook_size)
  ytr, yva = ds.train_labels, ds.val_labels
  tokens = [run.encode(ds.train_images).tokens, run.encode(ds.val_images).tokens]

  def kmeans(train, val, cosine=False):     # one fit on train tokens, both splits coded
    km_train, km_val = probes.kmeans_codes(train.reshape(-1, train.shape[-1]), (train, val), k,
                                           cosine=cosine)
    return scores(km_train, ytr, km_val, yva, k)

  out = {'workdir': workdir, 'num_codes': k, 'images': len(ytr) + len(yva),
         'chance': probes.chance(np.concatenate([ytr, yva])), 'kmeans': kmeans(*tokens)}
  if spec is not None:
    out['run'] = scores(run.codes(ds.train_images), ytr, run.codes(ds.val_images), yva, k)
    if spec.has_state:
      to_space = jax.jit(lambda z: quantizer_lib.encode(spec, run.state.get('vq_params'), z))
      space = [np.asarray(to_space(t)) for t in tokens]
      out['kmeans_space'] = kmeans(*space, cosine=spec.l2)
      if refine:
        out.update(refined(run, space, ytr, yva, refine))
  return out


def lloyd(u, codebook, iters: int, l2: bool, balanced=None, chunk: int = 4096):
  """The codebook after `iters` Lloyd steps on the tokens u (M, d) of the
  quantizer's space, starting from `codebook` (K, d):

    k_i = argmin_k ||u_i - e_k||        (balanced=(epsilon, iters): the
                                         Sinkhorn codes the training step
                                         uses, `assignment.sinkhorn_codes`,
                                         `chunk` tokens at a time)
    e_k = mean of the u_i with k_i = k  (a code with none keeps its row)

  then l2-normalised when the layer normalises its codes. Iterated, the
  balanced steps seek the EMA update's fixed point on frozen tokens, the
  nearest steps k-means' (Lloyd 1982) from the run's codebook."""
  u = jnp.asarray(u, jnp.float32)
  e = jnp.asarray(codebook, jnp.float32)
  for _ in range(iters):
    if balanced is None:
      codes = jnp.concatenate([assignment.nearest_codes(e, u[i:i + chunk])[0]
                               for i in range(0, len(u), chunk)])
    else:
      codes = jnp.concatenate([assignment.sinkhorn_codes(u[i:i + chunk], e, *balanced)
                               for i in range(0, len(u), chunk)])
    sums = jax.ops.segment_sum(u, codes, num_segments=len(e))
    counts = jax.ops.segment_sum(jnp.ones(len(u)), codes, num_segments=len(e))[:, None]
    e = jnp.where(counts > 0, sums / jnp.maximum(counts, 1), e)
    if l2:
      e = e / jnp.maximum(jnp.linalg.norm(e, axis=1, keepdims=True), 1e-12)
  return e


NEAREST_ROWS = 65_536     # tokens `refined` assigns at once (bounds the distance block)


def refined(run, space, ytr, yva, iters: int) -> Dict[str, Dict[str, float]]:
  """Scores of the run's codebook after `iters` Lloyd steps on the final
  train tokens of the context encoder (`lloyd`; the 20,000 that
  `probes.kmeans_codes` fits, seed 0), nearest ('lloyd') and Sinkhorn-
  balanced ('lloyd_balanced'), every
  token then coded by its nearest refined code: what a refit on the final
  tokens and the balanced assignment each change. `space`:
  the train and val tokens (N, T, d) in the quantizer's space."""
  spec = run.quantizer
  flat = space[0].reshape(-1, space[0].shape[-1])
  fit = flat[np.random.default_rng(0).permutation(len(flat))[:20_000]]
  e0 = quantizer_lib.codebook(spec, run.state['vq'].codebook, run.state.get('vq_params'))
  out = {}
  for name, balanced in (('lloyd', None),
                         ('lloyd_balanced', (spec.sinkhorn_epsilon, spec.sinkhorn_iters))):
    e = lloyd(fit, e0, iters, spec.l2, balanced)
    coded = [np.asarray(assignment.nearest_codes(e, x, max_elements=NEAREST_ROWS * len(e))[0])
             for x in space]
    out[name] = scores(coded[0], ytr, coded[1], yva, len(e))
  return out


ROW_FILE = 'code_probe.jsonl'
# (label, (name, key) of a, (name, key) of b): name 0 the variant, 1 the baseline.
COMPARISONS = (
    ('bag probe, %: codes vs k-means of the same tokens',
     (0, 'run_bag_linear_probe_acc'), (0, 'kmeans_bag_linear_probe_acc')),
    ('bag probe, %: codes vs k-means of the baseline\'s tokens',
     (0, 'run_bag_linear_probe_acc'), (1, 'kmeans_bag_linear_probe_acc')),
    ('bag probe, %: codes vs k-means in the quantizer\'s space',
     (0, 'run_bag_linear_probe_acc'), (0, 'kmeans_space_bag_linear_probe_acc')),
    ('bag probe, %: k-means of the variant\'s vs of the baseline\'s tokens',
     (0, 'kmeans_bag_linear_probe_acc'), (1, 'kmeans_bag_linear_probe_acc')),
    ('NMI − shuffled NMI (x100): codes vs k-means of the same tokens',
     (0, 'run_excess'), (0, 'kmeans_excess')),
    ('AMI (x100): codes vs k-means of the same tokens', (0, 'run_ami'), (0, 'kmeans_ami')),
)
# Rows saved with --refine: the codebook after its own (balanced) Lloyd steps.
REFINE_COMPARISONS = (
    ('bag probe, %: refined (balanced) vs the codes', (0, 'lloyd_balanced_bag_linear_probe_acc'),
     (0, 'run_bag_linear_probe_acc')),
    ('bag probe, %: refined (balanced) vs k-means of the same tokens',
     (0, 'lloyd_balanced_bag_linear_probe_acc'), (0, 'kmeans_bag_linear_probe_acc')),
    ('bag probe, %: refined, balanced vs nearest', (0, 'lloyd_balanced_bag_linear_probe_acc'),
     (0, 'lloyd_bag_linear_probe_acc')),
    ('AMI (x100): refined (balanced) vs the codes', (0, 'lloyd_balanced_ami'), (0, 'run_ami')),
    ('AMI (x100): refined (balanced) vs k-means of the same tokens', (0, 'lloyd_balanced_ami'),
     (0, 'kmeans_ami')),
    ('AMI (x100): refined, balanced vs nearest', (0, 'lloyd_balanced_ami'), (0, 'lloyd_ami')),
)


def _saved(workdir: str, name: str, seed: int) -> Dict[str, float]:
  path = os.path.join(workdir, name, f'seed_{seed}', ROW_FILE)
  if not os.path.exists(path):
    raise ValueError(f'{path}: no saved row (run --workdir RUN --out {path})')
  with open(path) as f:
    row = json.loads(f.readline())
  for src in ('run', 'kmeans'):
    if f'{src}_nmi' in row:
      row[f'{src}_excess'] = row[f'{src}_nmi'] - row[f'{src}_nmi_shuffled']
  return row


def table(workdir: str, names: List[str], seeds: List[int]) -> List[str]:
  """The markdown lines of --table (module docstring)."""
  rows = [{s: _saved(workdir, n, s) for s in seeds} for n in names]
  lines = [f'| ({names[0]} vs {names[1]}) | ' + ' | '.join(f'seed {s}' for s in seeds)
           + ' | paired Δ: mean [95% CI] (worst) |', '|---' * (len(seeds) + 2) + '|',
           '| chance, % | ' + ' | '.join(f"{100 * rows[0][s]['chance']:.1f}" for s in seeds)
           + ' | |']
  refined_rows = all('lloyd_ami' in row for row in rows[0].values())
  for label, (ia, ka), (ib, kb) in COMPARISONS + (REFINE_COMPARISONS if refined_rows else ()):
    a = {s: 100 * rows[ia][s][ka] for s in seeds}
    b = {s: 100 * rows[ib][s][kb] for s in seeds}
    d = metrics.paired(a, b)
    fmt = '.2f' if 'NMI' in label or 'AMI' in label else '.1f'
    cells = [f'{a[s]:{fmt}} vs {b[s]:{fmt}}' for s in seeds]
    low, high = d['ci']
    lines.append(f'| {label} | ' + ' | '.join(cells) + f" | {d['mean']:+{fmt}} [{low:+{fmt}}, "
                 f"{high:+{fmt}}] ({d['worst']:+{fmt}}, seed {d['worst_seed']}) |")
  return lines


def main(argv=None) -> int:
  ap = json_rows.parser('experiments.results.codebook_shapes.code_probe', __doc__)
  ap.add_argument('--table', help='VARIANT,BASELINE: the table of the saved rows under --workdir')
  ap.add_argument('--seeds', default='0,1,2,3,4')
  ap.add_argument('--refine', type=int, default=0,
                  help='N > 0: also score the codebook after N Lloyd steps on the final '
                       "train tokens, nearest and balanced ('lloyd', 'lloyd_balanced')")
  args = ap.parse_args(argv)
  if args.table:
    names = args.table.split(',')
    if len(names) != 2:
      ap.error(f'--table {args.table}: give VARIANT,BASELINE')
    try:
      print('\n'.join(table(args.workdir, names, [int(s) for s in args.seeds.split(',')])))
    except ValueError as err:
      ap.error(str(err))
    return 0
  if not os.path.exists(os.path.join(args.workdir, run_files.FINAL_STATE)):
    ap.error(f'--workdir {args.workdir}: no {run_files.FINAL_STATE} (not a finished run)')
  try:
    out = code_probe(args.workdir, args.refine)
  except ValueError as err:
    ap.error(str(err))
  row = {key: val for key, val in out.items() if not isinstance(val, dict)}
  for source in ('run', 'kmeans', 'kmeans_space', 'lloyd', 'lloyd_balanced'):
    if source in out:
      row.update({f'{source}_{key}': val for key, val in out[source].items()})
  json_rows.show(row)
  json_rows.save([row], args.out)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
