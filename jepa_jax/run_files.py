"""Every file and folder name of a run folder (WORKDIR), in one place.

    WORKDIR/
      config.json                  the run's config (plain JSON)
      summary.json                 status, steps, best val loss, timings
      epoch_metrics.jsonl          one line per epoch (train / val loss means)
      embedding_metrics.jsonl      one line per measurement point (measure.py)
      probe_metrics.jsonl          one line per probe-trajectory point (probe_trajectory.py)
      alerts.jsonl                 the collapse monitor's events
      final_state.msgpack          the final weights (final_state.py)
      eval.json                    downstream metrics (evaluate.py)
      eval.stale-<n>.json          an eval.json set aside: training changed the weights
      events.out.tfevents.*        TensorBoard scalars
      checkpoints/<step>/          Orbax checkpoints (checkpoint.py)
      corrupt_checkpoints/<step>/  unreadable checkpoints moved aside
      checkpoint_mismatches.txt    every name/shape mismatch of a refused restore
      previous-<n>/                outputs moved aside by checkpoint.restart
      .lock                        held while a process trains in the folder
      stage1/, stage2/             a two-stage run's stages, each a run folder

Only names live here; the modules that write the files own their formats.
"""
from __future__ import annotations

import os

CONFIG = 'config.json'
SUMMARY = 'summary.json'
EPOCH_METRICS = 'epoch_metrics.jsonl'
EMBEDDING_METRICS = 'embedding_metrics.jsonl'
PROBE_METRICS = 'probe_metrics.jsonl'
ALERTS = 'alerts.jsonl'
FINAL_STATE = 'final_state.msgpack'
EVAL = 'eval.json'
STALE_EVAL = 'eval.stale-{}.json'
TENSORBOARD_EVENTS = 'events.out.tfevents.*'
CHECKPOINTS = 'checkpoints'
CORRUPT_CHECKPOINTS = 'corrupt_checkpoints'
MISMATCHES = 'checkpoint_mismatches.txt'
PREVIOUS = 'previous-{}'
LOCK = '.lock'
STAGE_DIRS = {1: 'stage1', 2: 'stage2'}

# JSONL logs whose lines carry a `step`: rewound to the checkpoint on resume.
STEP_LOGS = (EPOCH_METRICS, EMBEDDING_METRICS, ALERTS, PROBE_METRICS)
# Files that mark a folder as holding a run's outputs.
RUN_FILES = (SUMMARY, FINAL_STATE) + STEP_LOGS
# What a run (and evaluate) writes next to its checkpoints: glob patterns,
# moved aside as a whole by checkpoint.restart (restart.py).
OUTPUT_PATTERNS = (SUMMARY, FINAL_STATE, *STEP_LOGS, EVAL, STALE_EVAL.format('*'),
                   TENSORBOARD_EVENTS, MISMATCHES)


def holds_config(path: str) -> bool:
  """Whether the folder `path` holds a run's config.json."""
  return os.path.exists(os.path.join(path, CONFIG))


def stage_folders(path: str) -> list:
  """The stage folders of a two-stage run folder (each with its config.json),
  else [] (also for a plain run folder)."""
  if holds_config(path):
    return []
  return [os.path.join(path, name) for name in STAGE_DIRS.values()
          if holds_config(os.path.join(path, name))]
