"""Command-line parsing shared by `evaluate`, `diagnose` and `experiments.assess`:
a bad option is one line on stderr and exit status 2 (argparse prints its
usage block first; the usage stays available with --help)."""
from __future__ import annotations

import argparse
import math
import sys


class ArgumentParser(argparse.ArgumentParser):
  """argparse, with every error (its own and `error(...)` calls) one line."""

  def error(self, message):
    print(f'error: {self.prog}: {message}', file=sys.stderr)
    sys.exit(2)


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
