"""The default of every config key, from the one place it is written:
jepa_jax/config/base.py (re-exported by the repository's configs/base.py).

`base()` is that file's config, every key at its default. Code below the
config files reads every key from the config it is given, never a default of
its own; a config that lacks keys is completed here first:

* `fill_added_keys`: a run folder's config.json written before a key existed
  reads as if the key had the value that gives the behaviour of the runs
  that predate it: its base.py default, except the keys of `OLD_VALUES`,
  whose default for new configs changed when they were added (old runs
  summed the VQ losses over D, judged usage from epoch 0, logged no
  probe trajectory and counted no train-split codes).
* `with_defaults`: a group of a config (e.g. `monitor`) with every key it
  lacks at its base.py default.
"""
from __future__ import annotations

from typing import Any, Dict

from jepa_jax import config_keys
from jepa_jax.config import base as defaults_file

# Keys added after run folders were first written, in the order they came.
ADDED = (
    'init_from', 'train.frozen', 'model.attention',
    'checkpoint.every_steps', 'checkpoint.every_epochs', 'checkpoint.keep',
    'checkpoint.allow_config_change', 'checkpoint.restart',
    'vq.init', 'vq.kmeans_iters', 'vq.kmeans_num_samples',
    'vq.quantizer', 'vq.fsq_levels', 'vq.l2_normalize', 'vq.codebook_dim', 'vq.simvq',
    'vq.estimator', 'vq.reanchor', 'vq.reanchor_strength', 'vq.reanchor_threshold',
    'vq.reanchor_decay', 'vq.refresh_warmup_steps', 'vq.refresh_warmup_interval',
    'vq.refresh_sampling', 'vq.refresh_source', 'vq.loss_reduction',
    'monitor.usage_from_epoch', 'train.usage_window_steps',
    'loss.entropy_weight', 'loss.entropy_temperature',
    'data.pipeline', 'data.read_threads', 'data.workers',
    'vq.codebook_learning_rate', 'vq.ema_decay_schedule', 'train.compilation_cache_dir',
    'monitor.option_b', 'monitor.option_b_epoch', 'monitor.option_b_usage',
    'monitor.option_b_rank', 'vq.reanchor_steps', 'data.prefetch_to_device',
    'init_from_skip', 'vq.identity_gradient', 'loss.global_weight', 'loss.sigreg_input',
    'train.probe_every_steps', 'train.probe_train_images', 'train.probe_val_images',
    'model.dtype', 'train.usage_train_images',
    'data.shapes_train_size', 'data.shapes_val_size', 'data.shapes_classes',
    'data.shapes_scale_range', 'data.shapes_max_rotation', 'data.shapes_max_distractors',
    'data.shapes_distractor_scale_range', 'data.shapes_backgrounds',
)
# Added keys whose value for older runs is not their base.py default.
OLD_VALUES = {'vq.loss_reduction': 'sum', 'monitor.usage_from_epoch': 0,
              'train.probe_every_steps': 0, 'train.usage_train_images': 0}
NEW_DEFAULTS = tuple(OLD_VALUES)


def base():
  """Every key at its default (a fresh copy; `jepa_jax.config.base.build`)."""
  return defaults_file.build()


def added_keys() -> Dict[str, Any]:
  """{key: the value a config written before `key` existed reads it as}."""
  defaults = base()
  return {key: OLD_VALUES[key] if key in OLD_VALUES else config_keys.get(defaults, key)
          for key in ADDED}


ADDED_KEYS = added_keys()


def fill_added_keys(cfg):
  """`cfg` (e.g. a run's config.json as a ConfigDict) with every key of
  ADDED_KEYS it lacks set to that value; keys it has are left alone."""
  import ml_collections  # noqa: PLC0415
  for key, value in ADDED_KEYS.items():
    if not config_keys.has(cfg, key):
      config_keys.put(cfg, key, value, make_group=ml_collections.ConfigDict)
  return cfg


def with_defaults(group: str, values) -> Dict[str, Any]:
  """The keys of base.py's `group` (e.g. 'monitor') as a dict, those
  `values` (a mapping, or None) has taken from it."""
  out = base()[group].to_dict()
  out.update({k: v for k, v in (values or {}).items() if k in out})
  return out


class _Missing:
  """The value a key the config lacks shows in its ConfigError."""

  def __repr__(self):
    return 'missing'


MISSING = _Missing()


def missing_keys(cfg):
  """The keys of configs/base.py that `cfg` lacks, in base.py's order (a run
  folder's config.json from before a key existed: `fill_added_keys` first)."""
  return [key for key in config_keys.leaf_keys(base()) if not config_keys.has(cfg, key)]
