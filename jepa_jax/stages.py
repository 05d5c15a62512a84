"""Two-stage runs (the reference's Option D, `configs/two_stage.py`).

Stage 1 trains the JEPA without VQ. Stage 2 loads the stage-1 encoder,
predictor and target encoder (`init_from`), freezes what `train.frozen` names
(the encoder and target encoder by default) and adds the VQ layer, whose
codebook can start from k-means++ on the stage-1 embeddings (`vq.init`).

A two-stage config is a plain config (stage 1's settings) plus `stage`
(0: both stages, in WORKDIR/stage1 and WORKDIR/stage2; 1 or 2: that stage
alone, in WORKDIR) and `stage2`, a nested dict of the keys stage 2 changes.
`stage_config` turns it into the plain config of one stage, so each stage is
an ordinary run: same checkpoints, same resume.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Dict

import ml_collections

from jepa_jax import config_lib
from jepa_jax import records
from jepa_jax import run_files
from jepa_jax import train
from jepa_jax.run_files import STAGE_DIRS


def is_two_stage(cfg) -> bool:
  return 'stage2' in cfg


def _merge(dst, overrides, prefix='stage2') -> None:
  for key, value in overrides.items():
    if key not in dst:
      raise config_lib.ConfigError(f'{prefix}.{key}', value,
                                   'names no key of the stage-1 config')
    if isinstance(value, ml_collections.ConfigDict):
      _merge(dst[key], value, f'{prefix}.{key}')
    else:
      dst[key] = value


def stage_config(cfg, stage: int, init_from: str = ''):
  """The plain config of stage 1 or 2 of a two-stage config."""
  c = copy.deepcopy(cfg)
  with c.unlocked():
    del c['stage2']
    c.stage = stage
    c.variant = f'{cfg.variant}_stage{stage}'
  if stage == 2:
    _merge(c, cfg.stage2)
    c.init_from = init_from or cfg.init_from
  else:
    c.init_from = ''
  return c


def run(cfg, workdir: str) -> Dict[str, Any]:
  """Runs the stage(s) `cfg.stage` asks for; returns the summary."""
  stage = cfg.stage
  if stage not in (0, 1, 2):
    raise config_lib.ConfigError('stage', stage, 'must be 0 (both stages), 1 or 2')
  if stage == 2 and not cfg.init_from:
    raise config_lib.ConfigError('init_from', cfg.init_from,
                                 'stage 2 alone starts from a stage-1 checkpoint: '
                                 'pass --config.init_from=PATH[/STEP]')
  if stage == 0 and cfg.init_from:
    raise config_lib.ConfigError('init_from', cfg.init_from,
                                 'only with stage=2 (stage=0 trains stage 1 itself)')
  if stage in (1, 2):
    return train.train_and_evaluate(stage_config(cfg, stage), workdir)

  w1, w2 = (os.path.join(workdir, STAGE_DIRS[s]) for s in (1, 2))
  config_lib.validate(stage_config(cfg, 2, init_from=w1))   # fail before stage 1
  s1 = train.train_and_evaluate(stage_config(cfg, 1), w1)
  out = {'status': s1['status'], 'stages': {'stage1': s1}}
  if s1['status'] in ('completed', 'early_stopped'):   # not after an abort
    s2 = train.train_and_evaluate(stage_config(cfg, 2, init_from=w1), w2)
    out = {'status': s2['status'], 'stages': {'stage1': s1, 'stage2': s2}}
  records.write_json(os.path.join(workdir, run_files.SUMMARY), out)
  return out
