"""A run folder read back: its config, summary, JSONL logs and eval, as a `Run`.
`probe` is probe_metrics.jsonl (the probe trajectory, `probe_trajectory`).

Nothing is re-run. A two-stage folder (stage1/, stage2/, configs/two_stage.py)
reads as one run whose logs are the stages' end to end (`load_run`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Dict, List, Optional

from jepa_jax.run import files as run_files
from jepa_jax.train import monitor


@dataclasses.dataclass
class Run:
  """The files of one run folder."""
  path: str
  config: Dict[str, Any]
  summary: Optional[Dict[str, Any]]
  embedding: List[Dict[str, Any]]
  epochs: List[Dict[str, Any]]
  eval: Optional[Dict[str, Any]] = None
  parts: List['Run'] = dataclasses.field(default_factory=list)   # two-stage stages
  probe: List[Dict[str, Any]] = dataclasses.field(default_factory=list)  # probe_metrics.jsonl

  @property
  def variant(self) -> str:
    return self.config.get('variant', os.path.basename(self.path))

  @property
  def vq_enabled(self) -> bool:
    """Whether the run trained a quantizer: its config's `vq.enabled` (a
    two-stage run: the last stage's), or, for a config without the key, any
    usage record in its logs. A VQ run that logged no usage stays a VQ run."""
    enabled = (self.config.get('vq') or {}).get('enabled')
    if enabled is not None:
      return bool(enabled)
    return any(monitor.USAGE in r for r in self.embedding)

  @property
  def num_epochs(self) -> Optional[int]:
    return (self.config.get('train') or {}).get('num_epochs')

  @property
  def status(self) -> str:
    return (self.summary or {}).get('status', 'no summary.json')


def _read_json(path):
  if not os.path.exists(path):
    return None
  with open(path) as f:
    try:
      return json.load(f)
    except ValueError as err:       # torn or garbled: name the file
      raise ValueError(f'{path}: damaged JSON ({err})') from None


def stage_dirs(path: str) -> List[str]:
  """The stage folders of a two-stage run folder (configs/two_stage.py), else []."""
  return run_files.stage_folders(path)


def _offset(recs, step, epoch):
  return [{**r, 'step': r['step'] + step, 'epoch': r['epoch'] + epoch} for r in recs]


def _two_stage(path: str, parts: List[Run]) -> Run:
  """One run of a two-stage folder: logs of the stages end to end (stage 2's
  steps and epochs offset by stage 1's), stage 2's config, eval and status,
  `num_epochs` the sum of the stages'. Red flags are found per stage."""
  config = json.loads(json.dumps(parts[-1].config))
  variant = config.get('variant', 'two_stage')
  config['variant'] = variant.rsplit('_stage', 1)[0]
  config.setdefault('train', {})['num_epochs'] = sum(p.num_epochs or 0 for p in parts)
  emb, epochs, probe, step, epoch = [], [], [], 0, 0
  for part in parts:
    emb += _offset(part.embedding, step, epoch)
    epochs += _offset(part.epochs, step, epoch)
    probe += _offset(part.probe, step, epoch)
    step += ((part.summary or {}).get('steps') or
             (part.epochs[-1]['step'] if part.epochs else 0))
    epoch += len(part.epochs)
  summary = _read_json(os.path.join(path, run_files.SUMMARY)) or parts[-1].summary
  return Run(path=path, config=config, summary=summary, embedding=emb, epochs=epochs,
             eval=parts[-1].eval, parts=parts, probe=probe)


def load_run(path: str) -> Run:
  """Reads a run folder (or a two-stage folder); raises ValueError naming it
  when it holds no run."""
  stages = stage_dirs(path)
  if stages:
    return _two_stage(path, [load_run(s) for s in stages])
  config = _read_json(os.path.join(path, run_files.CONFIG))
  if config is None:
    raise ValueError(f'{path}: not a run folder (no {run_files.CONFIG})')

  def log(name):                 # a torn line (a killed run): named, skipped
    return run_files.read_jsonl(os.path.join(path, name), on_damaged=lambda message: print(
        f'warning: {message}; skipped, the intact lines are used', file=sys.stderr))

  return Run(path=path, config=config,
             summary=_read_json(os.path.join(path, run_files.SUMMARY)),
             embedding=log(run_files.EMBEDDING_METRICS), epochs=log(run_files.EPOCH_METRICS),
             eval=_read_json(os.path.join(path, run_files.EVAL)),
             probe=log(run_files.PROBE_METRICS))
