"""Report of `experiments.results.vqae.vqae` runs: metadata, a results table and a plot.

Table: one row per (method, reduction, K) with mean ± half-range over seeds
(half-range = (max - min) / 2, the spread of 2-3 seeds) of the val usage
(distinct codes among the 4,320 val tokens / K), val perplexity, val
reconstruction MSE and train usage (distinct codes among 24,432 train
tokens / K). Plot: val usage over training steps, mean over seeds, one
panel per (reduction, K), one line per method.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections import OrderedDict
from typing import Any, Dict, List

import numpy as np


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown'


def _commit() -> str:
  try:
    out = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
                         text=True, check=True, cwd=os.path.dirname(__file__))
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                           capture_output=True, text=True, cwd=os.path.dirname(__file__))
    return out.stdout.strip() + ('-dirty' if dirty.stdout.strip() else '')
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


def metadata(argv, wall_s: float, overrides: Dict[str, Any]) -> Dict[str, Any]:
  import jax
  args = sys.argv[1:] if argv is None else list(argv)
  return {'command': 'python -m experiments.results.vqae.vqae ' + ' '.join(
              a if ' ' not in a and ';' not in a else repr(a) for a in args),
          'commit': _commit(), 'cpu': _cpu_model(), 'cores': os.cpu_count(),
          'jax': jax.__version__, 'backend': jax.default_backend(),
          'wall_s': round(wall_s, 1), 'overrides': overrides}


def group(runs: List[Dict[str, Any]]) -> 'OrderedDict[tuple, List[Dict[str, Any]]]':
  """Runs grouped by (method, reduction, K), in first-seen order."""
  out: 'OrderedDict[tuple, list]' = OrderedDict()
  for r in runs:
    out.setdefault((r['method'], r['reduction'], r['K']), []).append(r)
  return out


def _stat(rs, key, fmt):
  v = np.array([r[key] for r in rs], float)
  return f'{fmt.format(v.mean())} ± {fmt.format((v.max() - v.min()) / 2)}'


def table(runs: List[Dict[str, Any]]) -> str:
  head = ('| method | commit/codebook R | K | seeds | val usage | val perplexity | '
          'val MSE | train usage | code rms / token rms |\n'
          '|---|---|---|---|---|---|---|---|---|\n')
  rows = []
  for (m, red, k), rs in group(runs).items():
    scale = '–'
    if 'code_rms' in rs[0]:
      scale = (f"{np.mean([r['code_rms'] for r in rs]):.3g} / "
               f"{np.mean([r['token_rms'] for r in rs]):.3g}")
    rows.append(f'| {m} | {red} | {k} | {len(rs)} | {_stat(rs, "val_usage", "{:.3f}")} | '
                f'{_stat(rs, "val_perplexity", "{:.1f}")} | {_stat(rs, "val_mse", "{:.4f}")} | '
                f'{_stat(rs, "train_usage", "{:.3f}")} | {scale} |')
  return head + '\n'.join(rows) + '\n'


def plot(runs: List[Dict[str, Any]], path: str) -> None:
  """Val usage over training steps (mean over seeds), a panel per (R, K);
  one colour and line style per method, the same in every panel."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  panels = sorted({(r['reduction'], r['K']) for r in runs}, key=lambda p: (p[0], -p[1]))
  methods = list(OrderedDict.fromkeys(r['method'] for r in runs))
  cols = min(2, len(panels))
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4 * rows), squeeze=False)
  styles = ['-', '--', ':', '-.']
  for ax, (red, k) in zip(axes.flat, panels):
    for (m, r2, k2), rs in group(runs).items():
      if (r2, k2) != (red, k):
        continue
      i = methods.index(m)
      steps = np.array([c[0] for c in rs[0]['curve']])
      usage = np.mean([[c[1] for c in r['curve']] for r in rs], axis=0)
      ax.plot(steps, usage, styles[(i // 10) % 4], label=m, color=f'C{i % 10}')
    ax.set_title(f'R = {red}, K = {k}')
    ax.set_xlabel('step')
    ax.set_ylabel('val usage (distinct codes / K)')
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis('off')
  axes.flat[0].legend(fontsize=7, loc='best', ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def write(out_dir: str, meta: Dict[str, Any], runs: List[Dict[str, Any]]) -> None:
  """README.md (table + provenance) and usage.png in out_dir."""
  plot(runs, os.path.join(out_dir, 'usage.png'))
  text = ['# VQ autoencoder on digits: codebook usage per anti-collapse method (generated)', '',
          f"* **Command**: `{meta['command']}`",
          f"* **Commit**: {meta['commit']}",
          f"* **Machine**: {meta['cpu']} ({meta['cores']} cores, shared), jax "
          f"{meta['jax']} on {meta['backend']}",
          f"* **Wall time**: {meta['wall_s']} s for {len(runs)} runs",
          f"* **Overrides**: {meta['overrides'] or 'none'}", '',
          *(['Findings and the follow-up runs: [FINDINGS.md](FINDINGS.md), '
             '[investigate/](investigate/README.md).', '']
            if os.path.exists(os.path.join(out_dir, 'FINDINGS.md')) else []),
          'Mean ± half-range over seeds. Val usage: distinct codes among the 4,320 '
          'val tokens (270 images x 16) / K; train usage: among the 24,432 train '
          'tokens. R: reduction of the commitment (and codebook) term, `mean` over '
          'elements or `sum` over the quantizer width. Code rms / token rms: root '
          'mean square of the looked-up codes and of the quantizer inputs u at the '
          'end.', '', table(runs), '', '![usage](usage.png)', '']
  with open(os.path.join(out_dir, 'README.md'), 'w') as f:
    f.write('\n'.join(text))


def combine(parent: str) -> str:
  """README.md of `parent`: one table over every subfolder's results.json,
  each row tagged with its folder and the overrides it ran with."""
  import json
  parts = ['# VQ-AE investigations (generated from the subfolders\' results.json)', '',
           'Each subfolder is one `python -m experiments.results.vqae.vqae` command (in its '
           'README.md, with commit, machine and wall time); its overrides apply to '
           'every run in it. Mean ± half-range over seeds.', '',
           '| folder | overrides | method | R | K | seeds | val usage | val perplexity | '
           'val MSE | train usage | code rms / token rms |',
           '|---|---|---|---|---|---|---|---|---|---|---|']
  for name in sorted(os.listdir(parent)):
    path = os.path.join(parent, name, 'results.json')
    if not os.path.exists(path):
      continue
    with open(path) as f:
      saved = json.load(f)
    over = '; '.join(f'{k}={v}' for k, v in saved['meta']['overrides'].items()) or '–'
    for row in table(saved['runs']).splitlines()[2:]:
      parts.append(f'| [{name}]({name}/README.md) | {over} ' + row)
  text = '\n'.join(parts) + '\n'
  with open(os.path.join(parent, 'README.md'), 'w') as f:
    f.write(text)
  return text


if __name__ == '__main__':
  if sys.argv[1:2] == ['--combine']:
    for folder in sys.argv[2:]:
      combine(folder)
    sys.exit(0)
  # Rewrites README.md and usage.png of a results folder from its results.json.
  import json
  for folder in sys.argv[1:]:
    with open(os.path.join(folder, 'results.json')) as f:
      saved = json.load(f)
    write(folder, saved['meta'], saved['runs'])
