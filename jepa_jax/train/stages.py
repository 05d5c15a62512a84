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

On the command line, `--config.KEY=VALUE` for a key the stage-2 block also
sets (`train.num_epochs`, `vq.commitment_cost`, ...) applies to stage 2 as
well, unless `--config.stage2.KEY` is given too (`carry_overrides_to_stage2`).
"""
from __future__ import annotations

import copy
import os
from typing import Any, Dict, List, Tuple

import ml_collections

from jepa_jax.config import load as config_lib
from jepa_jax.run import files as run_files
from jepa_jax.run.files import STAGE_DIRS
from jepa_jax.train import loop as train


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


def _leaf_keys(node, prefix=''):
  for key, value in node.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaf_keys(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}'


def _get(node, key):
  for part in key.split('.'):
    node = node[part]
  return node


def carry_overrides_to_stage2(cfg, keys) -> List[Tuple[str, Any, Any]]:
  """Command-line overrides win over a two-stage config file's stage-2 block.

  `keys`: the keys overridden on the command line, as typed after
  `--config.`. A KEY that `stage2.KEY` also sets (e.g. `train.num_epochs`)
  would otherwise reach stage 1 only; with `stage=0` or `stage=2` its value
  is copied to `stage2.KEY`, so it applies to stage 2 as well (`stage=0`:
  both stages; `stage=2`: the stage that runs), unless `stage2.KEY` is given
  on the command line too (then each is as given). Changes `cfg` in place;
  returns [(KEY, value, the stage-2 value it replaced)].
  """
  if not is_two_stage(cfg) or cfg.get('stage') not in (0, 2):
    return []
  shadowed = set(_leaf_keys(cfg.stage2))
  carried = []
  for key in keys:
    if key in shadowed and f'stage2.{key}' not in keys:
      *parents, leaf = key.split('.')
      node = _get(cfg.stage2, '.'.join(parents)) if parents else cfg.stage2
      value, old = _get(cfg, key), node[leaf]
      if value != old:
        node[leaf] = value
        carried.append((key, value, old))
  return carried


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
  run_files.write_json(os.path.join(workdir, run_files.SUMMARY), out)
  return out
