"""Command line: `python -m jepa_jax.main --config=configs/gentle.py --workdir=runs/gentle`.

Override any key: `--config.vq.commitment_cost=0.2`; variant strings after
the file name: `--config=configs/gentle.py:tiny`. A YAML config in the
reference trainer's key names: `--config=run.yaml[:tiny]` (docs/yaml.md).
Two-stage configs: an override of a key the stage-2 block also sets (e.g.
`--config.train.num_epochs`) applies to both stages unless
`--config.stage2.KEY` is given too. `--help` lists the config files, the
variant strings and the key groups.
"""
import sys

from jepa_jax.train import interrupts   # stdlib only: signal handlers from the start

if __name__ == '__main__':
  interrupts.install()

try:          # a requirement missing (not installed): one line, not a traceback
  from absl import app  # noqa: E402
  from absl import flags
  from absl import logging
  from ml_collections import config_flags

  from jepa_jax import errors
  from jepa_jax.config import flags as flag_parsing
  from jepa_jax.train import stages
  from jepa_jax.train import loop as train
except ModuleNotFoundError as err:
  if __name__ != '__main__' or (err.name or '').startswith('jepa_jax'):
    raise
  sys.stderr.write(f'error: the package {err.name!r} is missing: install jepa_jax '
                   "and its requirements first (pip install -e . in the repository)\n")
  raise SystemExit(2)

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (configs/*.py[:variant]) or YAML config (*.yaml[:variant]).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for the run outputs.')
flags.mark_flags_as_required(['config', 'workdir'])


def _print_help_and_exit(argv) -> None:
  """`--help` (and its absl spellings): this command's help, exit status 0;
  `--helpfull` adds every absl flag."""
  args = argv[1:argv.index('--')] if '--' in argv else argv[1:]
  full = any(a in flag_parsing.FULL_HELP_FLAGS for a in args)
  if not full and not any(a in flag_parsing.HELP_FLAGS for a in args):
    return
  text = flag_parsing.text(__doc__)
  if full:
    text += '\nEvery flag:\n' + flags.FLAGS.get_help() + '\n'
  sys.stdout.write(text)
  sys.exit(0)


def parse_flags(argv):
  """absl's flag parsing; every bad input is one line, exit 2 (flag_parsing).
  A two-stage config's stage 2 takes the command line's overrides of its
  keys (stages.carry_overrides_to_stage2), each reported on stderr; a
  warm-up longer than the run that the command line did not set is shortened
  (flag_parsing.fit_warmup), with a note."""
  _print_help_and_exit(argv)
  rest = flag_parsing.parse_config_flags(argv)
  _, keys = flag_parsing.config_spec_and_keys(argv)
  for key, value, old in stages.carry_overrides_to_stage2(_CONFIG.value, keys):
    print(f'note: --config.{key}={value!r} applies to stage 2 as well (instead of '
          f'stage2.{key}={old!r}); --config.stage2.{key} sets stage 2 apart',
          file=sys.stderr)
  for note in flag_parsing.fit_warmup(_CONFIG.value, keys):
    print(note, file=sys.stderr)
  return rest


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)     # Orbax logs every save at INFO
  cfg, workdir = _CONFIG.value, _WORKDIR.value
  try:
    if stages.is_two_stage(cfg):
      summary = stages.run(cfg, workdir)
    else:
      summary = train.train_and_evaluate(cfg, workdir)
  except interrupts.Stopped as stop:
    print(f'{stop.status}: {stop} of the run, before it wrote anything; no summary',
          file=sys.stderr)
    sys.exit(128 + stop.signum)
  except Exception as err:  # pylint: disable=broad-except
    status = errors.refused(err)     # one line, its exit status (docs/errors.md)
    if status is None:
      raise                       # a bug: keep its traceback
    sys.exit(status)
  if summary.get('parallel', {}).get('process_index', 0) != 0:
    return                        # only process 0 reports
  for name, s in summary.get('stages', {'run': summary}).items():
    prefix = '' if name == 'run' else f'{name}: '
    print(prefix + _describe(s, workdir))
  if summary.get('status') == 'interrupted':
    sys.exit(130)                 # Ctrl-C: saved, but not finished


def _describe(summary, workdir) -> str:
  best = summary.get('best_val_loss')
  best = 'none' if best is None else f"{best:.4f} (epoch {summary['best_epoch']})"
  timing = (f", wall {summary['wall_time_s']:.1f} s, compile {summary['compile_time_s']:.1f} s"
            if 'wall_time_s' in summary else '')
  return (f"{summary['status']}: {summary['epochs_completed']} epochs, "
          f"{summary['steps']} steps, best val loss {best}{timing} -> {workdir}")


if __name__ == '__main__':
  interrupts.run_and_exit(lambda: app.run(main, flags_parser=parse_flags))
