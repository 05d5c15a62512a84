"""One command for the whole diagnostic assessment: train, evaluate, report.

    python -m experiments.assess \
        --variants sixth_run,no_vq,vq_no_refresh,gentle,gradient,two_stage \
        --workdir runs/assessment [--seeds 0,1,2] [--jobs 2] [--config_arg tiny] \
        [--publish experiments/results]

For every variant (a config file `configs/<variant>.py`) and seed it trains
WORKDIR/<variant>/seed_<seed>/ with `python -m jepa_jax.main` (the variant's
config, `--config.seed=<seed>`), then writes its eval.json with
`python -m jepa_jax.evaluate`, each in its own process, `--jobs` at a time
(longest variants first). A run folder whose summary.json says it finished
(completed, early_stopped, aborted or failed) is not trained again, and an
existing eval.json is kept, so rerunning the command after an interruption only
does what is missing. An unfinished folder is resumed when it holds
checkpoints; otherwise it is moved aside to `seed_<s>.incomplete-<n>` (never
deleted) and trained again.

A variant without a config file is reported as missing. Then
`experiments.report.write_report` writes WORKDIR/report.md and
WORKDIR/plots/; `--publish DIR` copies them to DIR as well.

What the report needs beyond the package (matplotlib, the `experiments`
extra) is checked first: missing, the command says so in one line and exits
with status 2 before it trains anything.
"""
from __future__ import annotations

import concurrent.futures
import datetime
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

from experiments import report
from experiments import report_health
from experiments import report_learning
from experiments import report_plots
from jepa_jax import diagnose
from jepa_jax import errors
from jepa_jax.config import load as config_files
from jepa_jax.run import files as run_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FINISHED = report.FINISHED
DEFAULT_VARIANTS = 'sixth_run,no_vq,vq_no_refresh,gentle,gradient,two_stage'


# Modules the assessment needs beyond the package's requirements: (module,
# what needs it, how to install it).
DEPENDENCIES = (('matplotlib', "the report's plots",
                 "pip install 'jepa_jax[experiments]' (or matplotlib)"),)


def missing_dependency() -> Optional[str]:
  """One line naming the first module of DEPENDENCIES that does not import, or None."""
  for module, needed_by, install in DEPENDENCIES:
    try:
      importlib.import_module(module)
    except ImportError as err:
      return f'{module} is missing ({err}); {needed_by} need it: {install}'
  return None


def config_path(variant: str) -> str:
  """The config file of `variant` (configs/ablation.py for the ac_* names)."""
  return config_files.variant_spec(variant).partition(':')[0]


def _status(path: str) -> Optional[str]:
  try:
    with open(os.path.join(path, run_files.SUMMARY)) as f:
      return json.load(f).get('status')
  except (OSError, ValueError):
    return None


def _log(msg: str) -> None:
  print(f'[assess {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def _run(cmd: List[str], log_path: str) -> int:
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(p for p in (ROOT, env.get('PYTHONPATH')) if p)
  with open(log_path, 'a') as log:
    log.write('$ ' + ' '.join(cmd) + '\n')
    log.flush()
    return subprocess.run(cmd, cwd=ROOT, env=env, stdout=log,
                          stderr=subprocess.STDOUT).returncode


ERROR_PREFIXES = ('error: ', 'config error: ', 'data error: ')


def error_line(log_path: str) -> Optional[str]:
  """The last one-line refusal (docs/errors.md) a command wrote to its log, or None."""
  try:
    with open(log_path, errors='replace') as f:
      lines = [l.strip() for l in f if l.startswith(ERROR_PREFIXES)]
  except OSError:
    return None
  return lines[-1] if lines else None


def train_and_evaluate(variant: str, seed: int, path: str, config_arg: str,
                       overrides: Sequence[str], evaluate: bool = True) -> Dict[str, object]:
  """Trains (unless finished) and evaluates (unless eval.json exists, or
  `evaluate` is False) one run."""
  did = {'variant': variant, 'seed': seed, 'trained': False, 'evaluated': False}
  status = _status(path)
  if status not in FINISHED:
    folders = diagnose.stage_dirs(path) or [path]
    has_run = any(run_files.holds_config(f) for f in folders)
    resumable = any(os.path.isdir(os.path.join(f, run_files.CHECKPOINTS)) for f in folders)
    if has_run and not resumable:
      n = 0
      while os.path.exists(f'{path}.incomplete-{n}'):
        n += 1
      os.rename(path, f'{path}.incomplete-{n}')
      _log(f'{variant}/seed_{seed}: unfinished run without checkpoints moved to '
           f'{path}.incomplete-{n}')
    os.makedirs(path, exist_ok=True)
    spec = config_files.variant_spec(variant, config_arg)
    _log(f'{variant}/seed_{seed}: training' + (' (resuming)' if has_run else ''))
    t0 = time.perf_counter()
    rc = _run([sys.executable, '-m', 'jepa_jax.main', f'--config={spec}',
               f'--workdir={path}', f'--config.seed={seed}',
               '--config.train.progress_bar=False', *overrides],
              os.path.join(path, 'run.log'))
    status = _status(path)
    did['trained'], did['exit'] = True, rc
    _log(f'{variant}/seed_{seed}: {status or "no summary"} (exit {rc}) in '
         f'{time.perf_counter() - t0:.0f} s')
  did['status'] = status
  # A two-stage run is evaluated on its last stage (the final encoder and codes).
  eval_dir = (diagnose.stage_dirs(path) or [path])[-1]
  if (evaluate and status in ('completed', 'early_stopped', 'aborted') and
      not os.path.exists(os.path.join(eval_dir, run_files.EVAL))):
    rc = _run([sys.executable, '-m', 'jepa_jax.evaluate', f'--workdir={eval_dir}'],
              os.path.join(path, 'eval.log'))
    did['evaluated'] = rc == 0
    if rc:
      _log(f'{variant}/seed_{seed}: evaluation failed (exit {rc}), see {path}/eval.log')
  return did


def _git(*args) -> str:
  try:
    return subprocess.run(['git', *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=30).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return ''


def machine() -> str:
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      names = [l.split(':', 1)[1].strip() for l in f if l.startswith('model name')]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  return f'{cpu}, {os.cpu_count()} logical cores, {platform.platform()}'


def main(argv=None) -> int:
  ap = errors.ArgumentParser(prog='python -m experiments.assess',
                             description=__doc__.split('\n\n')[0])
  ap.add_argument('--variants', default=DEFAULT_VARIANTS)
  ap.add_argument('--workdir', required=True)
  ap.add_argument('--seeds', type=errors.seed_list, default='0',
                  help='comma-separated, e.g. 0,1,2')
  ap.add_argument('--jobs', type=errors.positive_int, default=min(2, os.cpu_count() or 1),
                  help='runs trained at the same time (processes)')
  ap.add_argument('--config_arg', default='',
                  help="variant string for every config, e.g. 'tiny'")
  ap.add_argument('--override', action='append', default=[],
                  help='extra --config.KEY=VALUE for every run (repeatable)')
  ap.add_argument('--publish', help='also copy report.md and plots/ to this folder')
  args = ap.parse_args(argv)
  missing_module = missing_dependency()
  if missing_module:
    ap.error(missing_module)               # one line, exit 2, before any training
  t0 = time.perf_counter()
  load_start = os.getloadavg()
  variants = [v.strip() for v in args.variants.split(',') if v.strip()]
  seeds = args.seeds
  if not variants or not seeds:
    ap.error('need at least one variant and one seed')
  if os.path.exists(args.workdir) and not os.path.isdir(args.workdir):
    ap.error(f'--workdir {args.workdir}: exists and is not a folder')
  overrides = [o if o.startswith('--config.') else f'--config.{o}' for o in args.override]
  missing = {v: f'no config file configs/{v}.py' for v in variants
             if not os.path.exists(config_path(v))}
  present = [v for v in variants if v not in missing]
  for v, why in missing.items():
    _log(f'{v}: {why}; reported as missing')
  workdir = os.path.abspath(args.workdir)
  os.makedirs(workdir, exist_ok=True)

  # Longest first (planned epochs), so the last job to start is a short one.
  def planned_epochs(v):
    from jepa_jax.config import load as config_lib  # noqa: PLC0415
    spec = config_files.variant_spec(v, args.config_arg)
    return config_lib.load_config(spec).train.num_epochs
  jobs = sorted(((v, s) for v in present for s in seeds),
                key=lambda vs: (-planned_epochs(vs[0]), vs[1]))
  with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
    done = list(pool.map(lambda vs: train_and_evaluate(
        vs[0], vs[1], report.run_dir(workdir, *vs), args.config_arg, overrides), jobs))
  trained = sum(d['trained'] for d in done)
  wall = time.perf_counter() - t0
  commit = _git('rev-parse', '--short', 'HEAD') or 'unknown'
  if _git('status', '--porcelain', '--untracked-files=no'):
    commit += ' (with uncommitted changes)'
  import jax  # noqa: PLC0415  (version only)
  meta = {
      'Generated': datetime.datetime.now().strftime('%Y-%m-%d %H:%M'),
      'Command': '`python -m experiments.assess ' + ' '.join(
          sys.argv[1:] if argv is None else argv) + '`',
      'Commit': commit,
      'Machine': f'{machine()}; jax {jax.__version__} on {jax.default_backend()}',
      'Wall time': f'{wall / 60:.1f} min for this invocation ({trained} of '
                   f'{len(jobs)} runs trained now, {args.jobs} at a time); load '
                   f'average {load_start[0]:.1f} at the start, '
                   f'{os.getloadavg()[0]:.1f} at the end',
  }
  path = report.write_report(workdir, variants, seeds, meta, missing)
  _log(f'report: {path} ({wall:.0f} s)')
  if args.publish:
    os.makedirs(os.path.join(args.publish, 'plots'), exist_ok=True)
    shutil.copy(path, os.path.join(args.publish, 'report.md'))
    for p in report_plots.PLOTS + (report_learning.PLOT,) + report_health.HEALTH_PLOTS:
      src = os.path.join(workdir, 'plots', p)
      if os.path.exists(src):
        shutil.copy(src, os.path.join(args.publish, 'plots', p))
    _log(f'published to {args.publish}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
