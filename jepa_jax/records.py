"""Run records: atomic JSON files and append-only JSON-lines logs."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Optional

import numpy as np


def to_builtin(value: Any) -> Any:
  """numpy / jax scalars and arrays -> JSON-serialisable Python values."""
  if isinstance(value, Mapping):
    return {str(k): to_builtin(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_builtin(v) for v in value]
  if hasattr(value, 'tolist'):          # numpy / jax arrays and scalars
    return to_builtin(np.asarray(value).tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)                    # JSON has no NaN/Inf: keep them visible
  return value


def write_json(path: str, obj: Mapping) -> None:
  """Writes `obj` to `path` atomically (temp file + rename): never half-written."""
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(to_builtin(obj), f, indent=2, sort_keys=True)
    f.write('\n')
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


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
  text = str(err).strip().splitlines()
  return text[0] if text else type(err).__name__


def run_each(steps, say) -> Optional[BaseException]:
  """Runs every (what, fn) of `steps` in order, whatever the others raise;
  `say`s a line for each that fails and returns the first error (or None)."""
  first = None
  for what, fn in steps:
    try:
      fn()
    except Exception as err:  # pylint: disable=broad-except
      say(f'warning: {what} failed: {one_line_error(err)}')
      first = first or err
  return first


def read_jsonl(path: str, on_damaged=None) -> list:
  """The records of a JSONL log ([] if there is no file). A line that does not
  parse raises ValueError naming the file and line, or, with `on_damaged`,
  is skipped after `on_damaged(message)` (the intact lines are used)."""
  if not os.path.exists(path):
    return []
  out = []
  with open(path, errors='replace') as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError as err:
        message = f'{path} line {number}: damaged JSON line ({err.msg})'
        if on_damaged is None:
          raise ValueError(message) from None
        on_damaged(message)
  return out


def rewind_jsonl(path: str, max_step: int) -> int:
  """Keeps only the lines of a JSONL log whose `step` is <= max_step.

  Used on resume: lines written after the checkpoint being resumed from are
  dropped, so the resumed run appends them again exactly once. A line that
  does not parse (a write cut short by a kill) is dropped too. The file is
  rewritten atomically. Returns the number of lines kept.
  """
  if not os.path.exists(path):
    return 0
  kept = []
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if record.get('step', 0) <= max_step:
        kept.append(line if line.endswith('\n') else line + '\n')
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    f.writelines(kept)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  return len(kept)


class JsonlWriter:
  """Appends one JSON object per line, flushed after each line."""

  def __init__(self, path: str):
    self.path = path
    self._f = open(path, 'a')

  def write(self, record: Mapping) -> None:
    self._f.write(json.dumps(to_builtin(record), sort_keys=True) + '\n')
    self._f.flush()

  def close(self) -> None:
    self._f.close()


class TensorBoardWriter:
  """Scalars to TensorBoard event files (tensorboardX: no TensorFlow needed).

  `write(prefix, record, step)` logs every finite numeric value of `record`
  except the 'step' / 'epoch' bookkeeping keys as `<prefix>/<key>` at `step`.
  """

  SKIP = ('step', 'epoch')

  def __init__(self, logdir: str, purge_step=None):
    from tensorboardX import SummaryWriter  # noqa: PLC0415  (protobuf import is slow)
    self._w = SummaryWriter(logdir=logdir, purge_step=purge_step)

  def write(self, prefix: str, record: Mapping, step: int) -> None:
    for key, value in record.items():
      if key in self.SKIP or isinstance(value, (bool, str)):
        continue
      arr = np.asarray(value)                   # Python, numpy and 0-d jax scalars
      if arr.ndim == 0 and arr.dtype.kind in 'iuf' and math.isfinite(float(arr)):
        self._w.add_scalar(f'{prefix}/{key}', float(arr), int(step))

  def close(self) -> None:
    self._w.close()


class NullWriter:
  """Stands in for a writer on processes that write no files."""

  def write(self, *args, **kwargs) -> None:
    del args, kwargs

  def close(self) -> None:
    pass
