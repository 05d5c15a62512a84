"""Bad input, from the raise to the exit: the errors every layer raises, the
one line and exit status each gets, and the option parsing of every command.

A foundation module (it imports nothing from jepa_jax), so every layer can
raise these without importing the layers above it:

  ConfigError  a bad config value; names the key (`err.key`) and the value
  InputError   a bad input other than a config key: a workdir, a command-line
               option, a config file
  ConfigFileError  the InputError of a config file, a YAML key or an unknown
               `--config.KEY` override (printed as a `config error:`)
  DataError    unusable input data: a missing file, a wrong shape or dtype,
               NaNs; names the file or array
  WorkdirLocked  another process trains in the workdir (run/files.py's lock)

Every command ends a refused input the same way (`refused`: one `error:`
line on stderr, the documented exit status, docs/errors.md) and parses its
options with `ArgumentParser`, whose errors are one line and exit status 2.
`config_lib` re-exports ConfigError and InputError, `data` DataError, where
callers have always found them.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Optional, Tuple


class ConfigError(ValueError):
  """A bad config value. `str(err)` is one line naming the key."""

  def __init__(self, key: str, value, why: str):
    self.key = key
    super().__init__(f'config.{key}={value!r}: {why}')


class InputError(ValueError):
  """A bad input other than a config key (workdir, a command-line option, a
  config file). `str(err)` is one line naming it."""


class ConfigFileError(InputError):
  """A config file that does not load (missing, not Python, an unknown
  variant, a bad YAML key) or an unknown `--config.KEY`. One line naming it."""


class DataError(ValueError):
  """Unusable input data (missing file, wrong shape or dtype, NaNs...).

  `str(err)` is one line naming the file or array at fault.
  """


class WorkdirLocked(RuntimeError):
  """Another process holds the workdir (run/files.py's lock). One-line message."""


def _line(err: BaseException) -> str:
  """The first line of `err`'s message, or its type's name."""
  text = str(err).strip().splitlines()
  return text[0] if text else type(err).__name__


def os_error_of(err: BaseException) -> Optional[OSError]:
  """`err` if it is an OSError, else the first OSError it was raised from."""
  seen = set()
  while err is not None and not isinstance(err, OSError) and id(err) not in seen:
    seen.add(id(err))
    err = err.__cause__ or err.__context__
  return err if isinstance(err, OSError) else None


def one_line_error(err: BaseException) -> str:
  """An error as one line: an OSError (or one it was raised from) as
  'STRERROR: PATH', anything else as its message's first line (or its type)."""
  cause = os_error_of(err)
  if cause is not None and cause.strerror:
    where = f': {cause.filename}' if cause.filename else ''
    return f'{cause.strerror}{where}'
  return _line(err)


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
  if isinstance(err, (ConfigError, ConfigFileError)):
    return f'config error: {_line(err)}', 2
  if isinstance(err, DataError):
    return f'data error: {_line(err)}', 2
  if isinstance(err, (InputError, WorkdirLocked)):
    return f'error: {_line(err)}', 2
  for module, name, prefix, status in _RAISED_ABOVE:
    cls = getattr(sys.modules.get(module), name, None)
    if cls is not None and isinstance(err, cls):
      return f'{prefix}: {_line(err)}', status
  if also and isinstance(err, tuple(also)):
    return f'error: {one_line_error(err)}', 2
  if os_error_of(err) is not None:
    return f'error: {one_line_error(err)}', 1
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


class ArgumentParser(argparse.ArgumentParser):
  """argparse, with every error (its own and `error(...)` calls) one line."""

  def error(self, message):
    print(f'error: {self.prog}: {message}', file=sys.stderr)
    sys.exit(2)


def check_out_file(path: str, suffix: str) -> None:
  """InputError unless `path` (a command's --out) ends in `suffix` and its
  folder exists: checked before anything is computed or written."""
  if not path.endswith(suffix):
    raise InputError(f'--out={path}: name a {suffix} file')
  parent = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(parent):
    raise InputError(f'--out={path}: no folder {parent}')


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
