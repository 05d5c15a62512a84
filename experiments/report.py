"""The assessment report: tables in the reference's shape and plots, from run folders.

`write_report(workdir, variants, seeds, meta)` reads WORKDIR/<variant>/seed_<s>/
(config.json, summary.json, the JSONL logs, eval.json), and writes
WORKDIR/report.md and WORKDIR/plots/*.png. Every number comes from those files.
The report opens with "Does the encoder learn?" (experiments/report_learning.py).
The tables' cells and rows are in experiments/report_tables.py, the plots in
experiments/report_plots.py.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from experiments import report_goals
from experiments import report_health
from experiments import report_learning
from experiments import report_plots
# Re-exported: the per-run values and folders, as callers have used them.
from experiments.report_values import run_dir, run_values  # noqa: F401
from experiments.report_tables import (CODEBOOK, DOWNSTREAM, EMBEDDING, LOSSES, SPEED,
                                       STABILITY, mean_or_none, mean_std, property_rows,
                                       render_table)
from jepa_jax import diagnose
from jepa_jax.run import files as run_files
from jepa_jax.train import monitor


# Statuses of a run that has stopped (summary.json); others are still training.
FINISHED = ('completed', 'early_stopped', 'aborted', 'failed')


def trajectory_table(variants, runs: Dict[str, List[diagnose.Run]], every: int = 4
                     ) -> List[str]:
  """VQ usage at every `every`-th logged step (the reference's 200-step
  checkpoints with embedding metrics every 50 steps) plus each run's last."""
  per_var: Dict[str, Dict[int, List[dict]]] = {}
  steps = set()
  for var in variants:
    table: Dict[int, List[dict]] = {}
    for run in runs.get(var) or []:
      recs = [r for r in run.embedding if monitor.USAGE in r]
      for i, r in enumerate(recs):
        if (i + 1) % every == 0 or i in (0, len(recs) - 1):
          table.setdefault(r['step'], []).append(r)
          steps.add(r['step'])
    if table:
      per_var[var] = table
  shown = [v for v in variants if v in per_var]
  if not shown:
    return ['### VQ usage trajectory', '', 'No run with VQ.', '']
  lines = ['### VQ usage trajectory', '',
           'VQ usage (codes used) at the embedding-metrics checkpoints; '
           'mean ± std over seeds.', '',
           '| Step | ' + ' | '.join(shown) + ' |', '|---|' + '---|' * len(shown)]
  for step in sorted(steps):
    cells = []
    for var in shown:
      recs = per_var[var].get(step)
      if not recs:
        cells.append('')
        continue
      u = mean_std([r[monitor.USAGE] for r in recs], '%')
      c = mean_std([r['vq_codes_used'] for r in recs], '.0f')
      cells.append(f'{u} ({c})')
    lines.append(f'| {step} | ' + ' | '.join(cells) + ' |')
  return lines + ['']


def criteria_section(variants, runs, criteria_of: Dict[str, diagnose.Criteria],
                     bound_text: str) -> List[str]:
  results = {var: [diagnose.check_run(r, criteria_of[var]) for r in runs.get(var) or []]
             for var in variants}
  shown = [v for v in variants if results[v]]
  lines = ['## Success criteria and red flags', '',
           'Pass counts over seeds (`python -m jepa_jax.diagnose`; definitions in '
           '`jepa_jax/diagnose.py`).', '']
  lines += [bound_text, '']
  lines += ['| Level | Criterion | ' + ' | '.join(shown) + ' |',
            '|---|---|' + '---|' * len(shown)]
  if shown:
    for i, c0 in enumerate(results[shown[0]][0]['criteria']):
      cells = []
      for var in shown:
        st = [r['criteria'][i]['status'] for r in results[var]]
        n = len(st)
        if all(s == diagnose.NA for s in st):
          cells.append('n/a')
          continue
        k = st.count(diagnose.PASS)
        mark = '✅' if k == n else ('❌' if k == 0 else '⚠️')
        cells.append(f'{k}/{n} {mark}')
      lines.append(f"| {c0['level']} | {diagnose.title(c0)} | " + ' | '.join(cells) + ' |')
    cells = [f"{sum(r['must_have_passed'] for r in results[v])}/{len(results[v])}"
             for v in shown]
    lines.append('| **all must-haves** | | ' + ' | '.join(cells) + ' |')
  lines += ['', '### Red flags (abort criteria) and alerts per run', '',
            'Replayed from the logs with the monitor rules (`jepa_jax/train/monitor.py`); '
            'the runs themselves ran with `monitor.abort=False`, so they completed.', '',
            '| Run | Red flags | First red flag | Alerts (rule x count) |',
            '|---|---|---|---|']
  for var in shown:
    for r in results[var]:
      alerts = ', '.join(f'{k} x{n}' for k, n in sorted(r['alerts'].items())) or 'none'
      first = r['red_flags'][0] if r['red_flags'] else '–'
      lines.append(f"| {var}/{os.path.basename(r['run'])} | {len(r['red_flags'])} | "
                   f'{first} | {alerts} |')
  return lines + ['']


# ---------------------------------------------------------------- report

def findings(variants, values, runs) -> List[str]:
  """Plain statements computed from the numbers (no judgement beyond thresholds)."""
  out = []
  for var in variants:
    vs = values.get(var)
    if not vs:
      continue
    n = len(vs)
    parts = [f'{sum(v["status"] == "completed" for v in vs)}/{n} completed']
    if mean_or_none([v.get('usage_min') for v in vs]) is not None:
      below = sum(v['usage_min'] < 0.10 for v in vs)
      parts.append(f'VQ usage {mean_std([v["usage_start"] for v in vs], "%")} at the '
                   f'first checkpoint -> {mean_std([v["usage_end"] for v in vs], "%")} at the end'
                   f' (min {mean_std([v["usage_min"] for v in vs], "%")}); fell below 10% in '
                   f'{below}/{n} seeds')
    parts.append(f'final context / target effective rank '
                 f'{mean_std([v.get("ctx_rank_final") for v in vs], ".2f")} / '
                 f'{mean_std([v.get("tgt_rank_final") for v in vs], ".2f")}')
    if mean_or_none([v.get('tgt_probe') for v in vs]) is not None:
      parts.append(f'target-encoder linear probe '
                   f'{mean_std([v.get("tgt_probe") for v in vs], "%")}')
    out.append(f'* **{var}**: ' + '; '.join(parts) + '.')
  return out


def _load_runs(workdir, variants, seeds, missing) -> Dict[str, List[diagnose.Run]]:
  """{variant: its runs}; a variant without a run folder is added to `missing`."""
  runs: Dict[str, List[diagnose.Run]] = {}
  for var in variants:
    found = [diagnose.load_run(path) for path in (run_dir(workdir, var, s) for s in seeds)
             if run_files.holds_config(path) or diagnose.stage_dirs(path)]
    unfinished = [r for r in found if r.status not in FINISHED]
    found = [r for r in found if r.status in FINISHED]
    if unfinished:              # a run still training (or killed) is not averaged in
      missing[f'{var} ({len(unfinished)} of its seeds)'] = 'unfinished: ' + ', '.join(
          sorted({r.status for r in unfinished}))
    if found:
      runs[var] = found
    elif not unfinished:
      missing.setdefault(var, 'no run folder')
  return runs


def _criteria(shown, runs):
  """({variant: its Criteria}, the text stating the val-loss bounds): bounds
  relative to each variant's matched no-VQ baseline (report_health)."""
  matched = report_health.matched_baselines(runs)
  criteria_of, bounds = {}, []
  for var in shown:
    base = matched.get(var) or (var if not runs[var][0].vq_enabled else None)
    finals = [r.epochs[-1]['val_loss_mean'] for r in runs.get(base) or [] if r.epochs]
    criteria_of[var] = diagnose.Criteria()
    if finals:
      criteria_of[var] = criteria_of[var].with_baseline(float(np.mean(finals)))
      bounds.append(f'{var}: < {criteria_of[var].val_loss_bound:.4f} / '
                    f'{criteria_of[var].val_loss_nice_bound:.4f} ({base})')
  bound_text = ('Val-loss bounds (must / nice): 1.10x / 1.03x the mean final val loss '
                "of each variant's matched no-VQ baseline, as the reference's 8.5 / 8.0 "
                'against 7.75, on the total val loss: ' + ('; '.join(bounds) or 'none')
                + '. Variants without a matched baseline: n/a.')
  return criteria_of, bound_text, matched


def _downstream(shown, values) -> List[str]:
  """The downstream-quality section (and ARC's grid-property table)."""
  L = ['## Downstream quality', '',
       'Frozen features (mean token embedding per image), probes cross-validated '
       'over every labelled image (5 folds; CI: the 95% interval of the accuracy), '
       'code metrics on the val tokens (`python -m jepa_jax.evaluate`).', '']
  props = sorted({k[:-len('_chance')] for vs in values.values() for v in vs
                  for k in v if k.endswith('_chance')})
  if props:
    L += ['No class labels: probes predict grid properties computed from each grid '
          '(`jepa_jax/data/grid_properties.py`); the rows below are means over those '
          'probes, the next table gives each one.', '']
  L += render_table('Downstream quality', DOWNSTREAM, shown, values)
  if props:
    L += render_table('Grid-property probes', property_rows(props), shown, values)
  return L


def write_report(workdir: str, variants: Sequence[str], seeds: Sequence[int],
                 meta: Dict[str, Any], missing: Optional[Dict[str, str]] = None) -> str:
  """Writes WORKDIR/report.md and WORKDIR/plots/; returns the report's path."""
  missing = dict(missing or {})
  runs = _load_runs(workdir, variants, seeds, missing)
  values = {var: [run_values(r) for r in rs] for var, rs in runs.items()}
  shown = [v for v in variants if v in runs]
  criteria_of, bound_text, matched = _criteria(shown, runs)
  plot_paths = (report_plots.write_plots(os.path.join(workdir, 'plots'), shown, runs)
                if shown else [])
  L = ['# VQ diagnostic assessment (generated)', '']
  L += [f'* **{k}**: {v}' for k, v in meta.items()]
  L += [f'* **Variants**: {", ".join(variants)}; seeds: {", ".join(map(str, seeds))}',
        f'* **Run folders**: `{workdir}/<variant>/seed_<seed>/`', '']
  if missing:
    L += ['**Missing variants**: ' + '; '.join(f'`{k}`: {v}' for k, v in missing.items()),
          '']
  L += report_learning.learning_section(shown, values)
  L += ['## Findings (computed)', '', *findings(shown, values, runs), '']
  L += ['## Comparison', '',
        f'Cells: mean ± std over seeds ({len(seeds)} requested). ✅ / ⚠️ / ❌ mark values '
        'against the must-have threshold / alert threshold of the reference '
        '(usage 15% / 10%, context rank 5 / 3, target rank 10 / 3).', '']
  L += render_table('Run completion & stability', STABILITY, shown, values)
  L += render_table('Final losses', LOSSES, shown, values)
  L += ['The losses are the weighted totals each run optimises, as in the reference, so '
        'VQ runs include the commitment (and, in gradient mode, codebook; with '
        '`loss.entropy_weight`, assignment-entropy) terms; the '
        'row without the VQ terms compares the JEPA objective alone.', '']
  L += render_table('Embedding quality', EMBEDDING, shown, values)
  L += render_table('VQ codebook health', CODEBOOK, shown, values)
  L += trajectory_table(shown, runs)
  L += report_health.dense_section(shown, values)
  L += report_health.baseline_section(shown, values, runs, matched)
  L += report_goals.goals_section({v: runs[v] for v in shown})
  L += report_health.reference_section(values)
  L += criteria_section(shown, runs, criteria_of, bound_text)
  L += _downstream(shown, values)
  L += render_table('Speed (this machine, shared)', SPEED, shown, values)
  L += ['## Plots', '']
  L += [f'![{os.path.splitext(os.path.basename(p))[0]}](plots/{os.path.basename(p)})'
        for p in plot_paths]
  L.append('')
  path = os.path.join(workdir, 'report.md')
  with open(path, 'w') as f:
    f.write('\n'.join(L))
  return path
