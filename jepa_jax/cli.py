"""What every command shares: option parsing (a bad option is one line on
stderr and exit status 2; the usage stays available with --help) and the one
exit path of a refused input (`refused`: one `error:` line, the documented
exit status, docs/errors.md)."""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Optional, Tuple

from jepa_jax import errors
from jepa_jax.run import files as records

# The refusals of the layers above this one: (module, class, prefix of the
# line, exit status). Looked up by name in sys.modules, so this foundation
# module imports nothing from above it and a small command (diagnose,
# data.pack) does not import the trainer: an error class whose module was never
# imported cannot have been raised.
_RAISED_ABOVE = (
    ('jepa_jax.train.loop_state', 'TrainingError', 'error', 1),
    ('jepa_jax.run.checkpoint', 'CheckpointError', 'error', 1),
)


def refusal(err: BaseException, also=()) -> Optional[Tuple[str, int]]:
  """(the one line, the exit status) of an error that refuses an input, or
  None for a bug (keep its traceback). ConfigError, ConfigFileError
  'config error: ...' and DataError 'data error: ...' (2); InputError,
  WorkdirLocked 'error: ...' (2); TrainingError, CheckpointError
  'error: ...' (1); an instance of a class of `also` (a command's own:
  evaluate's ValueError...) 'error: ...' (2); an OSError, or an error raised
  from one, 'error: STRERROR: PATH' (1)."""
  if isinstance(err, (errors.ConfigError, errors.ConfigFileError)):
    return f'config error: {_line(err)}', 2
  if isinstance(err, errors.DataError):
    return f'data error: {_line(err)}', 2
  if isinstance(err, (errors.InputError, records.WorkdirLocked)):
    return f'error: {_line(err)}', 2
  for module, name, prefix, status in _RAISED_ABOVE:
    cls = getattr(sys.modules.get(module), name, None)
    if cls is not None and isinstance(err, cls):
      return f'{prefix}: {_line(err)}', status
  if also and isinstance(err, tuple(also)):
    return f'error: {records.one_line_error(err)}', 2
  if records.os_error_of(err) is not None:
    return f'error: {records.one_line_error(err)}', 1
  return None


def refused(err: BaseException, also=()) -> Optional[int]:
  """Every command's exit path for an error: a refusal (`refusal`) prints its
  one line on stderr and returns its exit status; a bug returns None (the
  caller re-raises it, traceback kept)."""
  found = refusal(err, also)
  if found is None:
    return None
  print(found[0], file=sys.stderr)
  return found[1]


def _line(err: BaseException) -> str:
  text = str(err).strip().splitlines()
  return text[0] if text else type(err).__name__


class ArgumentParser(argparse.ArgumentParser):
  """argparse, with every error (its own and `error(...)` calls) one line."""

  def error(self, message):
    print(f'error: {self.prog}: {message}', file=sys.stderr)
    sys.exit(2)


def check_out_file(path: str, suffix: str) -> None:
  """InputError unless `path` (a command's --out) ends in `suffix` and its
  folder exists: checked before anything is computed or written."""
  if not path.endswith(suffix):
    raise errors.InputError(f'--out={path}: name a {suffix} file')
  parent = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(parent):
    raise errors.InputError(f'--out={path}: no folder {parent}')


def finite_float(text: str) -> float:
  """An argparse type: a finite number (no nan / inf)."""
  value = float(text)
  if not math.isfinite(value):
    raise argparse.ArgumentTypeError(f'{text!r} is not a finite number')
  return value


def seed_list(text: str) -> list:
  """An argparse type: comma-separated integer seeds >= 0, at least one."""
  try:
    seeds = [int(s) for s in text.split(',') if s.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r}: seeds are integers, e.g. 0,1,2') from None
  if not seeds or min(seeds) < 0:
    raise argparse.ArgumentTypeError(f'{text!r}: give one or more seeds >= 0')
  return seeds


def positive_int(text: str) -> int:
  """An argparse type: an integer >= 1."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
  if value < 1:
    raise argparse.ArgumentTypeError(f'{value} must be >= 1')
  return value
