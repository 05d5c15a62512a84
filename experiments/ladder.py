"""The reference assessment's decision ladder in one command: B, then C, then D.

    python -m experiments.ladder --workdir W [--config_arg tiny] [--seed 0] \
        [--baseline NO_VQ_RUN[,...] | --val_loss_bound X] [--override KEY=VALUE] \
        [--no_evaluate]

The plan it follows (assessment, "Recommended Next Steps" and "Path
forward"): "Run gentle VQ config (Option B)"; "If Option B shows any VQ usage
below 12% or effective rank below 4.0 by epoch 15, abort and move to Option C
or D"; "If that fails, implement gradient-based VQ (Option C)"; "If both fail,
use hybrid two-stage approach (Option D)". The options (`OPTIONS`):

  B  configs/gentle.py with the Option-B rule on and aborting
     (`monitor.option_b=True`, `monitor.abort=True`: the run ends at its first
     red flag, the rule's included)
  C  configs/gradient_long.py (gradient codebook, its own learning rate, 60 epochs)
  D  configs/two_stage_reference.py (stage 1 no VQ 50 epochs, stage 2 codebook only)

Each runs in W/<option>_<variant>/ (`experiments.assess.train_and_evaluate`:
a finished folder is reused, an unfinished one resumed, so rerunning the
command continues where it stopped). An option passes when its run finished
(completed or early-stopped, not aborted or failed), the Option-B rule did not
fire (B only: the rule is the reference's for B) and every must-have success
criterion of the assessment holds (`jepa_jax.diagnose`; the val-loss one only
with --baseline / --val_loss_bound). The ladder stops at the first option
that passes; W/ladder.json and W/ladder.md say which passed (or that none
did) and why, with each run's diagnose report. Exit status 0 when an option
passed, 3 when none did.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from experiments import assess
from jepa_jax import diagnose
from jepa_jax import errors
from jepa_jax.config import flags as flag_parsing
from jepa_jax.config import load as config_lib
from jepa_jax.run import files as run_files
from jepa_jax.train import stages

FINISHED_OK = ('completed', 'early_stopped')


@dataclasses.dataclass(frozen=True)
class Option:
  name: str                        # 'B', 'C', 'D'
  variant: str                     # configs/<variant>.py
  overrides: Tuple[str, ...] = ()  # KEY=VALUE for this option's run
  option_b_rule: bool = False      # judged by the Option-B rule too
  title: str = ''

  @property
  def folder(self) -> str:
    return f'{self.name}_{self.variant}'


OPTIONS = (
    Option('B', 'gentle', ('monitor.option_b=True', 'monitor.abort=True'), True,
           'Gentle VQ parameters'),
    Option('C', 'gradient_long', (), False, 'Gradient-based VQ'),
    Option('D', 'two_stage_reference', (), False, 'Hybrid two-stage'),
)
CRITERIA = diagnose.Criteria()     # the assessment's "Success Criteria"


class ChildRefused(RuntimeError):
  """An option's run refused its input: `str(err)` is its one error line,
  `err.status` its exit status."""

  def __init__(self, line: str, status: int):
    super().__init__(line)
    self.status = status


def command_line(option: Option, config_arg: str, seed: int,
                 overrides: Sequence[str]) -> List[str]:
  """The `--config=` and `--config.KEY=VALUE` arguments of `option`'s run
  (`assess.train_and_evaluate` passes the same)."""
  spec = config_lib.variant_spec(option.variant, config_arg)
  return [f'--config={spec}', f'--config.seed={seed}', '--config.train.progress_bar=False',
          *[f'--config.{o}' for o in option.overrides], *overrides]


def check_options(config_arg: str, seed: int, overrides: Sequence[str]) -> None:
  """Builds and validates every option's config as its run would, before
  anything is created: InputError / ConfigError (one line) on a bad
  --config_arg or --override."""
  for option in OPTIONS:
    argv = ['ladder', *command_line(option, config_arg, seed, overrides)]
    cfg = flag_parsing.config_of(argv)
    _, keys = flag_parsing.config_spec_and_keys(argv)
    if stages.is_two_stage(cfg):
      stages.carry_overrides_to_stage2(cfg, keys)
    flag_parsing.fit_warmup(cfg, keys)           # as jepa_jax.main does
    if stages.is_two_stage(cfg):
      config_lib.validate(stages.stage_config(cfg, 1))
      config_lib.validate(stages.stage_config(cfg, 2, init_from='stage1'))
    else:
      config_lib.validate(cfg)


def judge(option: Option, path: str, criteria: diagnose.Criteria) -> Dict[str, Any]:
  """{'passed', 'reasons' (why it failed; [] when it passed), 'result' (the
  diagnose result), 'report' (its text)} for the run of `option` in `path`."""
  run = diagnose.load_run(path)
  result = diagnose.check_run(run, criteria, force_option_b=option.option_b_rule)
  reasons = []
  ob = result['option_b']
  fired = option.option_b_rule and ob['fired']
  why = (run.summary or {}).get('reason')
  if fired:
    reasons.append(f"Option B rule fired ({ob['rule']}): {ob['events'][0]}"
                   + (f'; the run {run.status} on it' if why in ob['events'] else ''))
  if run.status not in FINISHED_OK and not (fired and why in ob['events']):
    reasons.append(f'run {run.status}' + (f': {why}' if why else ''))
  for c in result['criteria']:
    if c['level'] == 'must' and c['status'] == diagnose.FAIL:
      reasons.append(f"must-have failed: {diagnose.title(c)} ({c['detail']})")
  return {'passed': not reasons, 'reasons': reasons, 'result': result,
          'report': diagnose.format_result(result)}


def _log(msg: str) -> None:
  print(f'[ladder {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def run_ladder(workdir: str, config_arg: str = '', seed: int = 0,
               overrides: Sequence[str] = (), criteria: Optional[diagnose.Criteria] = None,
               evaluate: bool = True) -> Dict[str, Any]:
  """Runs B, C, D in turn until one passes (module docstring); writes and
  returns the decision (the content of ladder.json)."""
  criteria = criteria or CRITERIA
  steps: List[Dict[str, Any]] = []
  passed = None
  for option in OPTIONS:
    path = os.path.join(workdir, option.folder)
    extra = [f'--config.{o}' for o in option.overrides] + list(overrides)
    _log(f'Option {option.name} ({option.variant}): {path}')
    did = assess.train_and_evaluate(option.variant, seed, path, config_arg, extra,
                                    evaluate=evaluate)
    if did.get('exit') and not (run_files.holds_config(path) or diagnose.stage_dirs(path)):
      log = os.path.join(path, 'run.log')
      line = assess.error_line(log) or f'exit status {did["exit"]}, no error line'
      raise ChildRefused(f'Option {option.name} ({option.variant}) refused: {line} '
                         f'(see {log})', did['exit'])
    verdict = judge(option, path, criteria)
    steps.append({'option': option.name, 'title': option.title,
                  'variant': option.variant, 'workdir': path,
                  'config': f'configs/{option.variant}.py' + (
                      f':{config_arg}' if config_arg else ''),
                  'overrides': extra, 'trained_now': did['trained'], **verdict})
    _log(f"Option {option.name}: {'PASSED' if verdict['passed'] else 'failed'}"
         + ('' if verdict['passed'] else f" ({verdict['reasons'][0]})"))
    if verdict['passed']:
      passed = option.name
      break
  out = {'passed': passed, 'decision': decision(steps, passed), 'seed': seed,
         'config_arg': config_arg, 'criteria': dataclasses.asdict(criteria),
         'steps': steps}
  run_files.write_json(os.path.join(workdir, 'ladder.json'), run_files.to_builtin(out))
  with open(os.path.join(workdir, 'ladder.md'), 'w') as f:
    f.write(markdown(out))
  return out


def decision(steps: Sequence[Dict[str, Any]], passed: Optional[str]) -> str:
  """One sentence: which option passed, after which failures."""
  failed = [f"{s['option']} failed ({s['reasons'][0]})" for s in steps if not s['passed']]
  before = ('; '.join(failed) + '; ') if failed else ''
  if passed:
    return f'{before}Option {passed} passed: it finished and met every must-have criterion.'
  return f'{before}no option passed.'


def markdown(out: Dict[str, Any]) -> str:
  lines = ['# Decision ladder (reference assessment: B, then C, then D)', '',
           f"**Result:** {out['decision']}", '']
  for s in out['steps']:
    lines += [f"## Option {s['option']}: {s['title']} (`{s['config']}`)", '',
              f"Run folder `{s['workdir']}`"
              + (f", overrides `{' '.join(s['overrides'])}`" if s['overrides'] else '')
              + '.', '',
              f"**{'Passed' if s['passed'] else 'Failed'}**"
              + ('' if s['passed'] else ':'), '']
    lines += [f'- {r}' for r in s['reasons']]
    lines += ['', '```', s['report'], '```', '']
  return '\n'.join(lines)


def main(argv=None) -> int:
  ap = errors.ArgumentParser(prog='python -m experiments.ladder',
                             description=__doc__.split('\n\n')[0])
  ap.add_argument('--workdir', required=True)
  ap.add_argument('--config_arg', default='', help="variant string, e.g. 'tiny'")
  ap.add_argument('--seed', type=int, default=0)
  ap.add_argument('--override', action='append', default=[],
                  help='extra --config.KEY=VALUE for every run (repeatable)')
  ap.add_argument('--baseline', help='no-VQ run folder(s), comma-separated: '
                  'relative val-loss bound')
  ap.add_argument('--val_loss_bound', type=errors.finite_float)
  ap.add_argument('--no_evaluate', action='store_true',
                  help='skip jepa_jax.evaluate (eval.json) for each run')
  args = ap.parse_args(argv)
  if args.seed < 0:
    ap.error('--seed must be >= 0')
  if os.path.exists(args.workdir) and not os.path.isdir(args.workdir):
    ap.error(f'--workdir {args.workdir}: exists and is not a folder')
  criteria = dataclasses.replace(CRITERIA, val_loss_bound=args.val_loss_bound)
  overrides = [o if o.startswith('--config.') else f'--config.{o}' for o in args.override]
  try:
    if args.baseline:
      criteria = criteria.with_baseline(diagnose.baseline_val_loss(args.baseline.split(',')))
    check_options(args.config_arg, args.seed, overrides)    # before creating anything
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    out = run_ladder(workdir, args.config_arg, args.seed, overrides, criteria,
                     evaluate=not args.no_evaluate)
  except ChildRefused as err:
    print(f'error: {err}', file=sys.stderr)
    return err.status
  except Exception as err:  # pylint: disable=broad-except
    status = errors.refused(err, also=(ValueError, OSError))
    if status is None:
      raise
    return status
  _log(out['decision'])
  _log(f"wrote {os.path.join(workdir, 'ladder.md')} and ladder.json")
  return 0 if out['passed'] else 3


if __name__ == '__main__':
  sys.exit(main())
