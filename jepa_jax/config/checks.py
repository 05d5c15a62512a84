"""Validating a config before anything compiles: `validate` (the config
alone) and `check_against_data` (once the data's image size is known).

Every check raises `ConfigError` naming the first bad key (one line); the
checks run section by section, in a fixed order (`validate`).
"""
from __future__ import annotations

import importlib.util

import numpy as np

from jepa_jax import data
from jepa_jax.config import base as config_defaults
from jepa_jax.config import keys as config_keys
from jepa_jax.errors import ConfigError
from jepa_jax.model import masking
from jepa_jax.model import vit as model
from jepa_jax.vq import spec as vq_spec

FREEZABLE = ('encoder', 'target_encoder', 'predictor', 'temperature')
_FLOAT32_TINY, _FLOAT32_MAX = (float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max))


CONTEXT_AUGMENTS = ('', 'colour', 'crop', 'colour+crop')


def validate(cfg) -> None:
  """Raises ConfigError naming the first bad key; returns None if cfg is sane."""
  check = config_keys.KeyChecks(cfg)
  for section in (_complete, _data, _model, vq_spec.check_codebook_keys,
                  vq_spec.check_quantizer_keys, _loss_and_schedule, _views, _parallel, _monitor,
                  _init_and_checkpoints, _seeds_and_ranges, _masking):
    section(cfg, check)


def _complete(cfg, check) -> None:
  """Every key of jepa_jax/config/base.py is there (`config_defaults.missing_keys`)."""
  missing = config_defaults.missing_keys(cfg)
  if missing:
    raise ConfigError(missing[0], config_defaults.MISSING, 'the config lacks this key '
                      '(jepa_jax/config/base.py has every key; older run folders: '
                      'config_lib.fill_added_keys)')


def _data(cfg, check) -> None:
  d = cfg.data
  check('data.name', d.name in data.available(),
        f'unknown dataset (available: {", ".join(data.available())})')
  check('data.val_fraction', 0.0 < check.number('data.val_fraction') < 1.0,
        'must be in (0, 1)')
  if d.name == 'arc':
    check('data.arc_version', d.arc_version in data.arc.VERSIONS,
          f'unknown ARC version (known: {", ".join(sorted(data.arc.VERSIONS))})')
    check.positive_int('data.canvas_size')
  if d.name in ('npz', 'folder', 'arrayrecord'):
    check('data.path', isinstance(d.path, str) and bool(d.path),
          f"data.name={d.name!r} needs the path of its " + {
              'npz': '.npz file', 'folder': 'image folder',
              'arrayrecord': 'packed folder (python -m jepa_jax.data.pack)'}[d.name])
  check('data.context_augment', d.context_augment in CONTEXT_AUGMENTS and not (
      d.context_augment and cfg.model.patch_embed == 'colour'),
        f"must be one of {', '.join(map(repr, CONTEXT_AUGMENTS))} "
        "(pixel data only: colour ids are not colours)")
  check('data.target_augment', d.target_augment in ('', 'colour') and not (
      d.target_augment and cfg.model.patch_embed == 'colour'),
        "must be '' or 'colour' (pixel data only; a crop would move the target's "
        "tokens off the predictions)")
  check('loss.pixel_weight', not (cfg.loss.pixel_weight and cfg.model.patch_embed == 'colour'),
        'pixel data only (colour ids have no pixels to regress)')
  check.pair('data.crop_area', 0.0, 1.0, ' of area shares')
  check('data.crop_area', 'crop' in d.context_augment
        or tuple(d.crop_area) == masking.CROP_AREA,
        "has no effect without 'crop' in data.context_augment")
  if 'crop' in d.context_augment:
    token_terms = [k for k, w in (('loss.infonce_weight', cfg.loss.infonce_weight),
                                  ('loss.invariance_weight', cfg.loss.invariance_weight),
                                  ('loss.pixel_weight', cfg.loss.pixel_weight),
                                  ('loss.relational_loss.weight', cfg.loss.relational_loss.weight))
                   if w]
    check('data.context_augment', not token_terms,
          f"{d.context_augment!r} moves the context's pixels off the target's tokens: "
          f"only pooled terms can compare them, so {', '.join(token_terms)} must be 0")
  check('data.pipeline', d.pipeline in ('memory', 'grain'),
        "must be 'memory' (in-memory batches) or 'grain' (the same batches through Grain)")
  if d.pipeline == 'grain' or d.name == 'arrayrecord':
    missing = [m for m in ('grain', 'array_record') if importlib.util.find_spec(m) is None]
    check('data.pipeline' if d.name != 'arrayrecord' else 'data.name', not missing,
          f"needs the {' and '.join(missing)} package(s): pip install 'jepa_jax[data]'")
  check.integer('data.read_threads', 1, 'must be an integer >= 1')
  check.integer('data.workers', 0, 'must be an integer >= 0')
  check.integer('data.prefetch_to_device', 0, 'must be an integer >= 0')
  if d.name in ('folder', 'arrayrecord', 'shapes'):
    size = d.image_size
    check('data.image_size', len(size) == 2 and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size),
          'must be a pair of positive integers (rows, cols)')
    check('data.channels', d.channels in (1, 3), 'must be 1 (grayscale) or 3 (RGB)')
  if d.name == 'shapes':
    data.shapes.check_config(cfg, check)


def _model(cfg, check) -> None:
  m = cfg.model
  check('model.patch_embed', m.patch_embed in ('conv', 'colour'),
        "must be 'conv' (pixel values) or 'colour' (colour ids, learned table)")
  check('model.attention', m.attention in ('flax', 'fused'),
        "must be 'flax' (flax MultiHeadDotProductAttention) or 'fused' (one qkv matmul)")
  check('model.dtype', m.dtype in model.DTYPES, "must be 'float32' or 'bfloat16'")
  if m.patch_embed == 'colour':
    check.positive_int('model.num_colours')
    check.positive_int('model.colour_dim')
  for key in ('model.patch_size', 'model.embed_dim', 'model.depth', 'model.num_heads',
              'model.predictor_dim', 'model.predictor_depth',
              'model.predictor_num_heads', 'masking.num_target_blocks',
              'masking.num_context_tokens', 'vq.codebook_size', 'train.num_epochs',
              'train.batch_size', 'train.embedding_metrics_every_steps',
              'train.usage_window_steps', 'train.log_every_steps',
              'train.early_stopping_patience', 'loss.sigreg_num_slices',
              'loss.sigreg_num_points', 'train.probe_train_images', 'train.probe_val_images'):
    check.positive_int(key)
  check.integer('train.probe_every_steps', 0, 'must be an integer >= 0 (0: no probes)')
  check.integer('train.usage_train_images', 0,
                'must be an integer >= 0 (0: no train-token usage)')
  check('model.embed_dim', m.embed_dim % 4 == 0 and m.embed_dim % m.num_heads == 0,
        'must be divisible by 4 (2-D sin-cos) and by model.num_heads')
  check('model.predictor_dim', m.predictor_dim % 4 == 0 and
        m.predictor_dim % m.predictor_num_heads == 0,
        'must be divisible by 4 and by model.predictor_num_heads')
  if cfg.train.steps_per_epoch is not None:
    check.positive_int('train.steps_per_epoch')


def _loss_and_schedule(cfg, check) -> None:
  lo, hi = check.number('loss.temperature_min'), check.number('loss.temperature_max')
  check('loss.temperature_min', 0 < lo, 'must be > 0')
  check('loss.temperature_min', lo <= hi, f'must be <= loss.temperature_max ({hi})')
  check('loss.temperature_init', lo <= check.number('loss.temperature_init') <= hi,
        f'must lie in [temperature_min, temperature_max] = [{lo}, {hi}]')
  for key in ('loss.infonce_weight', 'loss.sigreg_weight', 'loss.invariance_weight',
              'loss.relational_loss.weight',
              'loss.relational_loss.context_self_weight', 'loss.global_weight',
              'loss.global_infonce_weight', 'loss.global_dino_weight', 'loss.capi_weight',
              'loss.pixel_weight',
              'train.weight_decay', 'train.min_learning_rate'):
    check(key, check.number(key) >= 0, 'must be >= 0')
  for key in ('loss.dino_student_temperature', 'loss.dino_teacher_temperature',
              'loss.capi_student_temperature', 'loss.capi_target_temperature',
              'loss.capi_clustering_temperature'):
    check(key, check.number(key) > 0, 'must be > 0')
  check.positive_int('loss.dino_prototypes')
  check.positive_int('loss.capi_clusters')
  check('loss.sigreg_input', cfg.loss.sigreg_input in ('tokens', 'pooled'),
        "must be 'tokens' or 'pooled'")
  check.integer('loss.target_layers', 1, 'must be an integer >= 1 (1: the final norm)')
  check('loss.target_layers', cfg.loss.target_layers <= cfg.model.depth,
        f'must be <= model.depth ({cfg.model.depth}): the blocks it averages')
  check('train.learning_rate', check.number('train.learning_rate') > 0, 'must be > 0')
  check('train.grad_clip_norm', check.number('train.grad_clip_norm') > 0, 'must be > 0')
  check('train.warmup_epochs', check.number('train.warmup_epochs') >= 0, 'must be >= 0')
  for key in ('train.ema_momentum_start', 'train.ema_momentum_end'):
    check(key, 0.0 <= check.number(key) <= 1.0, 'must be in [0, 1]')


# The terms LeJEPA's objective replaces (`loss.views`): each must be 0 beside it.
MASKED_TERMS = ('loss.infonce_weight', 'loss.sigreg_weight', 'loss.invariance_weight',
                'loss.relational_loss.weight', 'loss.relational_loss.context_self_weight',
                'loss.global_weight', 'loss.global_infonce_weight', 'loss.global_dino_weight',
                'loss.capi_weight', 'loss.pixel_weight')


def _views(cfg, check) -> None:
  """LeJEPA's objective (`loss.views`, objective/multiview.py)."""
  lc = cfg.loss
  check.integer('loss.views', 0, 'must be an integer >= 0 (0: off)')
  check('loss.views', lc.views != 1, 'must be 0 (off) or >= 2: one view has nothing to agree with')
  if not lc.views:
    check('loss.views_local', lc.views_local == 0, 'has no effect without loss.views')
    return
  check('loss.views_lambda', 0.0 < check.number('loss.views_lambda') < 1.0, 'must be in (0, 1)')
  sizes = lc.views_projector
  check('loss.views_projector', isinstance(sizes, (tuple, list)) and len(sizes) >= 1 and all(
      isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes),
        'must be a non-empty tuple of positive integers (the layer widths)')
  check('data.context_augment', bool(cfg.data.context_augment),
        "must not be '' with loss.views: identical views teach nothing")
  if check.integer('loss.views_local', 0, 'must be an integer >= 0 (0: no local views)'):
    check('data.context_augment', 'crop' in cfg.data.context_augment,
          "needs 'crop' with loss.views_local (local views are crops)")
    size = check.positive_int('loss.views_local_size')
    check('loss.views_local_size', size % cfg.model.patch_size == 0,
          f'must be a multiple of model.patch_size ({cfg.model.patch_size})')
    check.pair('loss.views_local_area', 0.0, 1.0, ' of area shares')
  check('vq.enabled', not cfg.vq.enabled,
        'must be False with loss.views (LeJEPA\'s views have no masked context to quantize)')
  for key in MASKED_TERMS:
    check(key, config_keys.get(cfg, key) == 0,
          "must be 0 with loss.views (LeJEPA's objective replaces it)")


def _parallel(cfg, check) -> None:
  pc = cfg.parallel
  check('parallel.mode', pc.mode in ('auto', 'pmap', 'jit'),
        "must be 'auto', 'pmap' or 'jit'")
  if pc.num_devices is not None:
    check.positive_int('parallel.num_devices')
  check.flag('parallel.multihost')
  if pc.coordinator_address is not None:
    check('parallel.multihost', pc.multihost,
          'must be True when parallel.coordinator_address is set')
    check.positive_int('parallel.num_processes')
    pid = pc.process_id
    check('parallel.process_id', isinstance(pid, int) and not isinstance(pid, bool)
          and 0 <= pid < pc.num_processes,
          f'must be an integer in [0, parallel.num_processes={pc.num_processes})')
  else:
    for key in ('parallel.num_processes', 'parallel.process_id'):
      check(key, config_keys.get(cfg, key) is None,
            'needs parallel.coordinator_address (leave all three unset to '
            'auto-detect SLURM / Cloud TPU)')


def _monitor(cfg, check) -> None:
  """The collapse monitor's rules (jepa_jax/train/monitor.py)."""
  m = cfg.monitor
  check.flag('monitor.abort')
  check.flag('monitor.option_b')
  if m.option_b:
    check.integer('monitor.option_b_epoch', 1,
                  'must be an integer >= 1 (the rule reads epochs before it)')
    check('monitor.option_b_usage', 0.0 <= check.number('monitor.option_b_usage') <= 1.0,
          'must be a usage ratio in [0, 1]')
    check('monitor.option_b_rank', check.number('monitor.option_b_rank') >= 0,
          'must be >= 0')
  for key in ('monitor.usage_decline_checkpoints', 'monitor.val_increase_epochs',
              'monitor.min_epochs'):
    check.positive_int(key)
  check.integer('monitor.usage_from_epoch', 0, 'must be an integer >= 0 (0: every record)')
  for key in ('monitor.usage_alert', 'monitor.usage_abort'):
    check(key, 0.0 <= check.number(key) <= 1.0, 'must be a usage ratio in [0, 1]')
  for key in ('monitor.rank_alert', 'monitor.rank_abort'):
    check(key, check.number(key) >= 0, 'must be >= 0')
  check('monitor.val_spike_factor', check.number('monitor.val_spike_factor') >= 1.0,
        'must be >= 1 (a multiple of the best val loss)')


def _init_and_checkpoints(cfg, check) -> None:
  check('vq.init', cfg.vq.init in ('random', 'kmeans'), "must be 'random' or 'kmeans'")
  schedule = cfg.vq.ema_decay_schedule
  check('vq.ema_decay_schedule', schedule in ('constant', 'learning_rate'),
        "must be 'constant' or 'learning_rate'")
  check('vq.ema_decay_schedule', schedule == 'constant' or not cfg.vq.enabled
        or cfg.vq.ema_decay is not None,
        'schedules the EMA codebook update: this codebook is trained by gradient '
        '(vq.ema_decay=None)')
  for key in ('vq.kmeans_num_samples', 'checkpoint.keep', 'checkpoint.every_epochs'):
    check.positive_int(key)
  check.integer('vq.kmeans_iters', 0, 'must be an integer >= 0')
  if cfg.checkpoint.every_steps is not None:
    check.positive_int('checkpoint.every_steps')
  check.flag('checkpoint.allow_config_change')
  check.flag('checkpoint.restart')
  check('init_from', isinstance(cfg.init_from, str), 'must be a path (str), or empty')
  skip = cfg.init_from_skip
  check('init_from_skip', isinstance(skip, (tuple, list))
        and all(g in FREEZABLE for g in skip) and len(set(skip)) == len(skip),
        f'must be a tuple of distinct names from {FREEZABLE}')
  check('init_from_skip', not skip or bool(cfg.init_from),
        'names groups init_from leaves fresh: set init_from too')
  frozen = cfg.train.frozen
  check('train.frozen', isinstance(frozen, (tuple, list))
        and all(g in FREEZABLE for g in frozen) and len(set(frozen)) == len(frozen),
        f'must be a tuple of distinct names from {FREEZABLE}')


def _seeds_and_ranges(cfg, check) -> None:
  """Seeds, and the ranges and orderings between keys that the checks of
  single keys miss (each would otherwise be accepted and clamped, or fail
  late)."""
  for key in ('seed', 'data.split_seed'):
    v = config_keys.get(cfg, key)
    check(key, isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 2**62,
          'must be an integer in [0, 2**62]')
  ratio = check.number('model.mlp_ratio')
  width = min(cfg.model.embed_dim, cfg.model.predictor_dim)
  check('model.mlp_ratio', ratio > 0 and int(ratio * width) >= 1,
        f'must be > 0 and leave an MLP of >= 1 unit (ratio * {width} >= 1)')
  lr, min_lr = check.number('train.learning_rate'), check.number('train.min_learning_rate')
  check('train.min_learning_rate', min_lr <= lr,
        f'must be <= train.learning_rate ({lr}): the schedule decays to it')
  start, end = check.number('train.ema_momentum_start'), check.number('train.ema_momentum_end')
  check('train.ema_momentum_start', start <= end,
        f'must be <= train.ema_momentum_end ({end}): the momentum rises to it')
  check('train.warmup_epochs',
        check.number('train.warmup_epochs') <= check.number('train.num_epochs'),
        f'longer than the run (train.num_epochs={cfg.train.num_epochs})')
  for key in ('loss.temperature_min', 'loss.temperature_max', 'loss.temperature_init',
              'loss.entropy_temperature'):
    v = check.number(key)
    check(key, v <= 0 or _FLOAT32_TINY <= v <= _FLOAT32_MAX,
          f'outside float32 range: must be in [{_FLOAT32_TINY:.3g}, {_FLOAT32_MAX:.3g}]')


def _masking(cfg, check) -> None:
  """Block sizes; the grid-dependent checks need the image size, known once
  the data is loaded (`check_against_data`)."""
  for key in ('masking.target_block_size', 'masking.context_block_size'):
    size = config_keys.get(cfg, key)
    check(key, len(size) == 2 and all(isinstance(s, int) and s >= 1 for s in size),
          'must be a pair of positive integers (rows, cols)')


def check_against_data(cfg, image_shape, num_colours=None) -> tuple:
  """Checks the config against the data; returns the token grid.

  image_shape is the data's (H, W, C); num_colours is `Dataset.num_colours`
  (None for continuous images).
  """
  colour = cfg.model.patch_embed == 'colour'
  if num_colours is not None and not colour:
    raise ConfigError('model.patch_embed', cfg.model.patch_embed,
                      f"dataset {cfg.data.name!r} holds colour ids: use 'colour'")
  if num_colours is None and colour:
    raise ConfigError('model.patch_embed', cfg.model.patch_embed,
                      f"dataset {cfg.data.name!r} holds pixel values, not colour ids: "
                      "use 'conv'")
  if colour and num_colours > cfg.model.num_colours:
    raise ConfigError('model.num_colours', cfg.model.num_colours,
                      f'fewer than the {num_colours} colours of dataset {cfg.data.name!r}')
  if colour and image_shape[2] != 1:
    raise ConfigError('model.patch_embed', cfg.model.patch_embed,
                      f'colour ids need one channel, dataset {cfg.data.name!r} has '
                      f'{image_shape[2]}')
  h, w = image_shape[:2]
  p = cfg.model.patch_size
  if h % p or w % p:
    raise ConfigError('model.patch_size', p,
                      f'must divide the image size {h}x{w} of dataset {cfg.data.name!r}')
  grid = (h // p, w // p)
  m = cfg.masking
  for key in ('target_block_size', 'context_block_size'):
    bh, bw = m[key]
    if bh > grid[0] or bw > grid[1]:
      raise ConfigError(f'masking.{key}', tuple(m[key]),
                        f'larger than the {grid[0]}x{grid[1]} token grid')
  n = grid[0] * grid[1]
  worst = n - m.num_target_blocks * m.target_block_size[0] * m.target_block_size[1]
  if m.num_context_tokens > worst:
    raise ConfigError('masking.num_context_tokens', m.num_context_tokens,
                      f'must be <= {worst} (tokens left when the {m.num_target_blocks}'
                      f' target blocks do not overlap on the {grid[0]}x{grid[1]} grid)')
  return grid
