"""Loading config files and validating configs before anything compiles."""
from __future__ import annotations

import difflib
import importlib.util
import math
import os
import sys

import numpy as np

from jepa_jax import data
from jepa_jax.config_files import load_module  # noqa: F401  (re-exported)
# Re-exported: callers catch config_lib.ConfigError / InputError.
from jepa_jax.errors import ConfigError, InputError  # noqa: F401


def check_workdir_path(workdir) -> None:
  """Refuses a workdir that is empty or names something other than a folder.
  Reads only."""
  if not isinstance(workdir, str) or not workdir.strip():
    raise InputError(f'workdir={workdir!r}: pass a folder, --workdir=FOLDER')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise InputError(f'workdir={workdir!r}: exists and is not a folder')
  parent = os.path.dirname(os.path.abspath(workdir))
  if os.path.exists(parent) and not os.path.isdir(parent):
    raise InputError(f'workdir={workdir!r}: {parent!r} is not a folder')


def load_config(spec: str):
  """'configs/gentle.py[:arg]' or 'run.yaml[:arg]' (jepa_jax/yaml_config.py)
  -> ConfigDict, as `--config=` would build it."""
  path, _, arg = spec.partition(':')
  if path.lower().endswith(('.yaml', '.yml')):
    from jepa_jax import yaml_config  # noqa: PLC0415  (imports this module)
    return yaml_config.load(path, arg or None)
  return load_module(path).get_config(arg or None)


def load_config_checked(spec: str):
  """`load_config`, with every way a config file can fail (missing, not
  Python, raising in get_config, an unknown variant) as InputError, one
  line naming the file."""
  path = spec.partition(':')[0]
  if not os.path.isfile(path):
    raise InputError(f'--config={spec}: no such file' if not os.path.exists(path)
                     else f'--config={spec}: not a file')
  try:
    cfg = load_config(spec)
  except InputError as err:             # a YAML config's key or value
    message = str(err)
    message = message[len(path) + 2:] if message.startswith(f'{path}: ') else message
    raise InputError(f'--config={spec}: {message}') from None
  except SyntaxError as err:
    raise InputError(f'--config={spec}: {path} line {err.lineno}: {err.msg}') from None
  except Exception as err:  # pylint: disable=broad-except
    where = _innermost_line(err, path)
    raise InputError(f'--config={spec}: {type(err).__name__}: {err}{where}') from None
  if not hasattr(cfg, 'to_dict'):
    raise InputError(f'--config={spec}: get_config returned {type(cfg).__name__}, '
                     'not a ConfigDict')
  return cfg


def _innermost_line(err: BaseException, path: str) -> str:
  """' (FILE line N)' of the deepest traceback frame in `path`, or ''."""
  tb, where = err.__traceback__, ''
  while tb is not None:
    if os.path.abspath(tb.tb_frame.f_code.co_filename) == os.path.abspath(path):
      where = f' ({path} line {tb.tb_lineno})'
    tb = tb.tb_next
  return where


def config_keys(cfg, prefix: str = '') -> list:
  """Every dotted key of `cfg`, nested ConfigDicts included (as 'train', ...)."""
  keys = []
  for key, value in cfg.items():
    name = prefix + key
    keys.append(name)
    if hasattr(value, 'items') and hasattr(value, 'to_dict'):
      keys.extend(config_keys(value, name + '.'))
  return keys


def check_override_keys(cfg, keys) -> None:
  """Refuses an override key (`--config.KEY=`) that `cfg` does not have, naming
  the nearest valid keys (difflib)."""
  known = config_keys(cfg)
  for key in keys:
    if key in known:
      continue
    near = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    if not near:      # the same last name in another section, or a close one
      leaf = key.rsplit('.', 1)[-1]
      near = [k for k in known if k.rsplit('.', 1)[-1] == leaf][:3] or [
          k for k in known if k.rsplit('.', 1)[-1] in difflib.get_close_matches(
              leaf, [n.rsplit('.', 1)[-1] for n in known], n=3, cutoff=0.6)][:3]
    hint = (f'nearest: {", ".join(near)}' if near else
            'no similar key; see configs/base.py for every key')
    raise InputError(f'--config.{key}: unknown config key ({hint})')


# Keys added after run folders were first written, with the values that give
# the behaviour of the runs that predate them (every option off). A config.json
# written before a key existed reads as if it had this value
# (`fill_added_keys`), so older run folders still evaluate.
# NEW_DEFAULTS: keys of ADDED_KEYS whose default for new configs (base.py)
# differs from the value that reproduces older runs.
NEW_DEFAULTS = ('vq.loss_reduction', 'monitor.usage_from_epoch')
ADDED_KEYS = {
    'init_from': '', 'train.frozen': (), 'model.attention': 'flax',
    'checkpoint.every_steps': 500, 'checkpoint.every_epochs': 1, 'checkpoint.keep': 3,
    'checkpoint.allow_config_change': False, 'checkpoint.restart': False,
    'vq.init': 'random', 'vq.kmeans_iters': 10, 'vq.kmeans_num_samples': 8192,
    'vq.quantizer': 'vq', 'vq.fsq_levels': (8, 8, 4, 3), 'vq.l2_normalize': False,
    'vq.codebook_dim': None, 'vq.simvq': False, 'vq.estimator': 'straight_through',
    'vq.reanchor': False, 'vq.reanchor_strength': 1000.0, 'vq.reanchor_threshold': 1.0,
    'vq.reanchor_decay': 0.99, 'vq.refresh_warmup_steps': 0,
    'vq.refresh_warmup_interval': 1, 'vq.refresh_sampling': 'uniform',
    'vq.refresh_source': 'context', 'vq.loss_reduction': 'sum',
    'monitor.usage_from_epoch': 0, 'train.usage_window_steps': 200,
    'loss.entropy_weight': 0.0,
    'loss.entropy_temperature': 1.0,
    'data.pipeline': 'memory', 'data.read_threads': 4, 'data.workers': 0,
    'vq.codebook_learning_rate': None, 'vq.ema_decay_schedule': 'constant',
    'monitor.option_b': False, 'monitor.option_b_epoch': 15,
    'monitor.option_b_usage': 0.12, 'monitor.option_b_rank': 4.0,
}


def fill_added_keys(cfg):
  """`cfg` (e.g. a run's config.json as a ConfigDict) with every key of
  ADDED_KEYS it lacks set to that value; keys it has are left alone."""
  import ml_collections  # noqa: PLC0415
  for key, value in ADDED_KEYS.items():
    node = cfg
    *parents, leaf = key.split('.')
    for part in parents:
      if part not in node:
        node[part] = ml_collections.ConfigDict()
      node = node[part]
    if leaf not in node:
      node[leaf] = value
  return cfg


def _get(cfg, key):
  node = cfg
  for part in key.split('.'):
    node = node[part]
  return node


def validate(cfg) -> None:
  """Raises ConfigError naming the first bad key; returns None if cfg is sane."""

  def check(key, ok, why):
    if not ok:
      raise ConfigError(key, _get(cfg, key), why)

  def number(key):
    v = _get(cfg, key)
    check(key, isinstance(v, (int, float)) and not isinstance(v, bool)
          and math.isfinite(v), 'must be a finite number')
    return v

  def positive_int(key):
    v = _get(cfg, key)
    check(key, isinstance(v, int) and not isinstance(v, bool) and v >= 1,
          'must be an integer >= 1')
    return v

  check('data.name', cfg.data.name in data.available(),
        f'unknown dataset (available: {", ".join(data.available())})')
  check('data.val_fraction', 0.0 < number('data.val_fraction') < 1.0,
        'must be in (0, 1)')
  if cfg.data.name == 'arc':
    check('data.arc_version', cfg.data.arc_version in data.arc.VERSIONS,
          f'unknown ARC version (known: {", ".join(sorted(data.arc.VERSIONS))})')
    positive_int('data.canvas_size')
  if cfg.data.name in ('npz', 'folder', 'arrayrecord'):
    check('data.path', isinstance(cfg.data.path, str) and bool(cfg.data.path),
          f"data.name={cfg.data.name!r} needs the path of its " + {
              'npz': '.npz file', 'folder': 'image folder',
              'arrayrecord': 'packed folder (python -m jepa_jax.data.pack)'}[cfg.data.name])
  _validate_pipeline(cfg, check)
  if cfg.data.name in ('folder', 'arrayrecord'):
    size = cfg.data.image_size
    check('data.image_size', len(size) == 2 and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size),
          'must be a pair of positive integers (rows, cols)')
    check('data.channels', cfg.data.channels in (1, 3), 'must be 1 (grayscale) or 3 (RGB)')
  check('model.patch_embed', cfg.model.patch_embed in ('conv', 'colour'),
        "must be 'conv' (pixel values) or 'colour' (colour ids, learned table)")
  check('model.attention', cfg.model.get('attention', 'flax') in ('flax', 'fused'),
        "must be 'flax' (flax MultiHeadDotProductAttention) or 'fused' (one qkv matmul)")
  if cfg.model.patch_embed == 'colour':
    positive_int('model.num_colours')
    positive_int('model.colour_dim')
  for key in ('model.patch_size', 'model.embed_dim', 'model.depth', 'model.num_heads',
              'model.predictor_dim', 'model.predictor_depth',
              'model.predictor_num_heads', 'masking.num_target_blocks',
              'masking.num_context_tokens', 'vq.codebook_size', 'train.num_epochs',
              'train.batch_size', 'train.embedding_metrics_every_steps',
              'train.usage_window_steps', 'train.log_every_steps',
              'train.early_stopping_patience', 'loss.sigreg_num_slices',
              'loss.sigreg_num_points'):
    positive_int(key)
  check('model.embed_dim', cfg.model.embed_dim % 4 == 0 and
        cfg.model.embed_dim % cfg.model.num_heads == 0,
        'must be divisible by 4 (2-D sin-cos) and by model.num_heads')
  check('model.predictor_dim', cfg.model.predictor_dim % 4 == 0 and
        cfg.model.predictor_dim % cfg.model.predictor_num_heads == 0,
        'must be divisible by 4 and by model.predictor_num_heads')
  if cfg.train.steps_per_epoch is not None:
    positive_int('train.steps_per_epoch')

  decay = cfg.vq.ema_decay
  if decay is not None:
    check('vq.ema_decay', 0.0 <= number('vq.ema_decay') < 1.0,
          'must be in [0, 1), or None for gradient updates')
  check('vq.commitment_cost', number('vq.commitment_cost') >= 0, 'must be >= 0')
  check('vq.epsilon', number('vq.epsilon') > 0, 'must be > 0')
  check('vq.init_scale', number('vq.init_scale') > 0, 'must be > 0')
  if cfg.vq.refresh_enabled:
    positive_int('vq.refresh_interval')
    check('vq.refresh_usage_threshold',
          0.0 <= number('vq.refresh_usage_threshold') <= 1.0, 'must be in [0, 1]')
  warmup = cfg.vq.refresh_warmup_steps
  check('vq.refresh_warmup_steps', isinstance(warmup, int) and not isinstance(warmup, bool)
        and warmup >= 0, 'must be an integer >= 0 (0: no warm-up)')
  if warmup:
    check('vq.refresh_warmup_steps', cfg.vq.refresh_enabled,
          'a refresh warm-up needs vq.refresh_enabled=True')
    positive_int('vq.refresh_warmup_interval')
  check('vq.refresh_sampling', cfg.vq.refresh_sampling in ('uniform', 'far'),
        "must be 'uniform' or 'far'")
  check('vq.refresh_source', cfg.vq.refresh_source in ('context', 'full'),
        "must be 'context' or 'full'")
  check('vq.loss_reduction', cfg.vq.loss_reduction in ('sum', 'mean'),
        "must be 'mean' (element mean, as PyTorch F.mse_loss / Sonnet) or 'sum' (over D)")

  _validate_quantizer(cfg, check, number, positive_int)

  lo, hi = number('loss.temperature_min'), number('loss.temperature_max')
  check('loss.temperature_min', 0 < lo, 'must be > 0')
  check('loss.temperature_min', lo <= hi,
        f'must be <= loss.temperature_max ({hi})')
  check('loss.temperature_init', lo <= number('loss.temperature_init') <= hi,
        f'must lie in [temperature_min, temperature_max] = [{lo}, {hi}]')
  for key in ('loss.infonce_weight', 'loss.sigreg_weight', 'loss.invariance_weight',
              'loss.relational_loss.weight',
              'loss.relational_loss.context_self_weight',
              'train.weight_decay', 'train.min_learning_rate'):
    check(key, number(key) >= 0, 'must be >= 0')
  check('train.learning_rate', number('train.learning_rate') > 0, 'must be > 0')
  check('train.grad_clip_norm', number('train.grad_clip_norm') > 0, 'must be > 0')
  check('train.warmup_epochs', number('train.warmup_epochs') >= 0, 'must be >= 0')
  for key in ('train.ema_momentum_start', 'train.ema_momentum_end'):
    check(key, 0.0 <= number(key) <= 1.0, 'must be in [0, 1]')

  pc = cfg.parallel
  check('parallel.mode', pc.mode in ('auto', 'pmap', 'jit'),
        "must be 'auto', 'pmap' or 'jit'")
  if pc.num_devices is not None:
    positive_int('parallel.num_devices')
  check('parallel.multihost', isinstance(pc.multihost, bool), 'must be True or False')
  if pc.coordinator_address is not None:
    check('parallel.multihost', pc.multihost,
          'must be True when parallel.coordinator_address is set')
    positive_int('parallel.num_processes')
    pid = _get(cfg, 'parallel.process_id')
    check('parallel.process_id', isinstance(pid, int) and not isinstance(pid, bool)
          and 0 <= pid < pc.num_processes,
          f'must be an integer in [0, parallel.num_processes={pc.num_processes})')
  else:
    for key in ('parallel.num_processes', 'parallel.process_id'):
      check(key, _get(cfg, key) is None,
            'needs parallel.coordinator_address (leave all three unset to '
            'auto-detect SLURM / Cloud TPU)')

  check('monitor.abort', isinstance(cfg.monitor.abort, bool), 'must be True or False')
  _validate_option_b(cfg, check, number)
  for key in ('monitor.usage_decline_checkpoints', 'monitor.val_increase_epochs',
              'monitor.min_epochs'):
    positive_int(key)
  start = cfg.monitor.usage_from_epoch
  check('monitor.usage_from_epoch', isinstance(start, int) and not isinstance(start, bool)
        and start >= 0, 'must be an integer >= 0 (0: every record)')
  for key in ('monitor.usage_alert', 'monitor.usage_abort'):
    check(key, 0.0 <= number(key) <= 1.0, 'must be a usage ratio in [0, 1]')
  for key in ('monitor.rank_alert', 'monitor.rank_abort'):
    check(key, number(key) >= 0, 'must be >= 0')
  check('monitor.val_spike_factor', number('monitor.val_spike_factor') >= 1.0,
        'must be >= 1 (a multiple of the best val loss)')
  check('vq.init', cfg.vq.init in ('random', 'kmeans'), "must be 'random' or 'kmeans'")
  schedule = cfg.vq.get('ema_decay_schedule', 'constant')
  check('vq.ema_decay_schedule', schedule in ('constant', 'learning_rate'),
        "must be 'constant' or 'learning_rate'")
  check('vq.ema_decay_schedule', schedule == 'constant' or not cfg.vq.enabled
        or cfg.vq.ema_decay is not None,
        'schedules the EMA codebook update: this codebook is trained by gradient '
        '(vq.ema_decay=None)')
  for key in ('vq.kmeans_num_samples', 'checkpoint.keep', 'checkpoint.every_epochs'):
    positive_int(key)
  iters = cfg.vq.kmeans_iters
  check('vq.kmeans_iters', isinstance(iters, int) and not isinstance(iters, bool)
        and iters >= 0, 'must be an integer >= 0')
  if cfg.checkpoint.every_steps is not None:
    positive_int('checkpoint.every_steps')
  check('checkpoint.allow_config_change',
        isinstance(cfg.checkpoint.allow_config_change, bool), 'must be True or False')
  check('checkpoint.restart', isinstance(cfg.checkpoint.get('restart', False), bool),
        'must be True or False')
  check('init_from', isinstance(cfg.init_from, str), 'must be a path (str), or empty')
  frozen = cfg.train.frozen
  freezable = ('encoder', 'target_encoder', 'predictor', 'temperature')
  check('train.frozen', isinstance(frozen, (tuple, list))
        and all(g in freezable for g in frozen) and len(set(frozen)) == len(frozen),
        f'must be a tuple of distinct names from {freezable}')

  _validate_seeds_and_ranges(cfg, check, number)
  m = cfg.masking
  for key in ('masking.target_block_size', 'masking.context_block_size'):
    size = _get(cfg, key)
    check(key, len(size) == 2 and all(isinstance(s, int) and s >= 1 for s in size),
          'must be a pair of positive integers (rows, cols)')
  # Grid-dependent checks need the image size, known once data is loaded:
  # see check_against_data.
  del m


def _validate_option_b(cfg, check, number) -> None:
  """The Option-B rule's keys (jepa_jax/monitor.py, `option_b_abort`)."""
  m = cfg.monitor
  check('monitor.option_b', isinstance(m.get('option_b', False), bool),
        'must be True or False')
  if not m.get('option_b', False):
    return
  epoch = m.option_b_epoch
  check('monitor.option_b_epoch', isinstance(epoch, int) and not isinstance(epoch, bool)
        and epoch >= 1, 'must be an integer >= 1 (the rule reads epochs before it)')
  check('monitor.option_b_usage', 0.0 <= number('monitor.option_b_usage') <= 1.0,
        'must be a usage ratio in [0, 1]')
  check('monitor.option_b_rank', number('monitor.option_b_rank') >= 0, 'must be >= 0')


_FLOAT32_TINY, _FLOAT32_MAX = (float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max))


def _validate_seeds_and_ranges(cfg, check, number) -> None:
  """Seeds, and the ranges and orderings between keys that the checks of
  single keys miss (each would otherwise be accepted and clamped, or fail
  late)."""
  for key in ('seed', 'data.split_seed'):
    v = _get(cfg, key)
    check(key, isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 2**62,
          'must be an integer in [0, 2**62]')
  ratio = number('model.mlp_ratio')
  width = min(cfg.model.embed_dim, cfg.model.predictor_dim)
  check('model.mlp_ratio', ratio > 0 and int(ratio * width) >= 1,
        f'must be > 0 and leave an MLP of >= 1 unit (ratio * {width} >= 1)')
  lr, min_lr = number('train.learning_rate'), number('train.min_learning_rate')
  check('train.min_learning_rate', min_lr <= lr,
        f'must be <= train.learning_rate ({lr}): the schedule decays to it')
  start, end = number('train.ema_momentum_start'), number('train.ema_momentum_end')
  check('train.ema_momentum_start', start <= end,
        f'must be <= train.ema_momentum_end ({end}): the momentum rises to it')
  check('train.warmup_epochs', number('train.warmup_epochs') <= number('train.num_epochs'),
        f'longer than the run (train.num_epochs={cfg.train.num_epochs})')
  for key in ('loss.temperature_min', 'loss.temperature_max', 'loss.temperature_init',
              'loss.entropy_temperature'):
    v = number(key)
    check(key, v <= 0 or _FLOAT32_TINY <= v <= _FLOAT32_MAX,
          f'outside float32 range: must be in [{_FLOAT32_TINY:.3g}, {_FLOAT32_MAX:.3g}]')


def _validate_pipeline(cfg, check) -> None:
  """data.pipeline, data.read_threads, data.workers (see configs/base.py)."""
  d = cfg.data
  check('data.pipeline', d.get('pipeline', 'memory') in ('memory', 'grain'),
        "must be 'memory' (in-memory batches) or 'grain' (the same batches through Grain)")
  if d.get('pipeline', 'memory') == 'grain' or d.name == 'arrayrecord':
    missing = [m for m in ('grain', 'array_record') if importlib.util.find_spec(m) is None]
    check('data.pipeline' if d.name != 'arrayrecord' else 'data.name', not missing,
          f"needs the {' and '.join(missing)} package(s): pip install 'jepa_jax[data]'")
  for key, low in (('data.read_threads', 1), ('data.workers', 0)):
    if key.split('.')[1] in d:
      v = _get(cfg, key)
      check(key, isinstance(v, int) and not isinstance(v, bool) and v >= low,
            f'must be an integer >= {low}')


def _validate_codebook_lr(cfg, check, number) -> None:
  """vq.codebook_learning_rate: a positive number, and only where the
  quantizer has trainables for it (jepa_jax/step.py `_make_tx`)."""
  v = cfg.vq
  if v.get('codebook_learning_rate', None) is None:
    return
  check('vq.codebook_learning_rate', number('vq.codebook_learning_rate') > 0, 'must be > 0')
  trainable = v.enabled and (v.quantizer == 'fsq' or v.codebook_dim is not None
                             or v.simvq or v.ema_decay is None)
  check('vq.codebook_learning_rate', trainable,
        'sets the learning rate of a gradient-trained codebook (vq.ema_decay=None) '
        'or of the quantizer\'s projections / SimVQ map; this config has none')


def _validate_quantizer(cfg, check, number, positive_int) -> None:
  """The anti-collapse keys of config.vq / config.loss (see jepa_jax/quantizer.py)."""
  v = cfg.vq
  check('vq.quantizer', v.quantizer in ('vq', 'fsq'), "must be 'vq' or 'fsq'")
  check('vq.estimator', v.estimator in ('straight_through', 'rotation'),
        "must be 'straight_through' or 'rotation'")
  for key in ('vq.l2_normalize', 'vq.simvq', 'vq.reanchor'):
    check(key, isinstance(_get(cfg, key), bool), 'must be True or False')
  levels = v.fsq_levels
  check('vq.fsq_levels', isinstance(levels, (tuple, list)) and len(levels) >= 1 and all(
      isinstance(x, int) and not isinstance(x, bool) and x >= 2 for x in levels),
        'must be a tuple of integers >= 2 (levels per dimension)')
  if v.codebook_dim is not None:
    positive_int('vq.codebook_dim')
    check('vq.codebook_dim', v.codebook_dim <= cfg.model.embed_dim,
          f'must be <= model.embed_dim ({cfg.model.embed_dim}): the codebook space '
          'is a projection of the embedding')
  if v.reanchor:
    check('vq.reanchor_strength', number('vq.reanchor_strength') > 0, 'must be > 0')
    check('vq.reanchor_threshold', number('vq.reanchor_threshold') > 0, 'must be > 0')
    check('vq.reanchor_decay', 0.0 <= number('vq.reanchor_decay') < 1.0,
          'must be in [0, 1)')
  _validate_codebook_lr(cfg, check, number)
  check('loss.entropy_weight', number('loss.entropy_weight') >= 0, 'must be >= 0')
  check('loss.entropy_temperature', number('loss.entropy_temperature') > 0, 'must be > 0')
  if not v.enabled:
    check('loss.entropy_weight', cfg.loss.entropy_weight == 0,
          'the assignment-entropy loss needs the quantizer (vq.enabled=True)')
    return
  if v.quantizer == 'fsq':
    product = int(math.prod(levels))
    check('vq.fsq_levels', product == v.codebook_size,
          f'their product ({product}) must equal vq.codebook_size ({v.codebook_size}), '
          'the number of implicit FSQ codes usage is counted over')
    check('vq.codebook_dim', v.codebook_dim in (None, len(levels)),
          f'FSQ quantizes len(vq.fsq_levels) = {len(levels)} dimensions: leave it '
          'None or set it to that')
    why = 'does not apply to vq.quantizer=\'fsq\' (no codebook): '
    for key, ok, fix in (
        ('vq.refresh_enabled', not v.refresh_enabled, 'set it to False'),
        ('vq.reanchor', not v.reanchor, 'set it to False'),
        ('vq.simvq', not v.simvq, 'set it to False'),
        ('vq.l2_normalize', not v.l2_normalize, 'FSQ bounds its inputs; set it to False'),
        ('vq.estimator', v.estimator == 'straight_through',
         "FSQ rounds straight-through; use 'straight_through'"),
        ('vq.commitment_cost', v.commitment_cost == 0, 'set it to 0'),
        ('loss.entropy_weight', cfg.loss.entropy_weight == 0, 'set it to 0'),
        ('vq.init', v.get('init', 'random') == 'random', "use 'random'")):
      check(key, ok, why + fix)
    return
  if v.simvq:
    check('vq.ema_decay', v.ema_decay is None,
          'SimVQ trains its codebook (the learned map) by gradient: set it to None')
    check('vq.refresh_enabled', not v.refresh_enabled,
          'refresh would overwrite the frozen SimVQ basis: set it to False')
    check('vq.reanchor', not v.reanchor,
          're-anchoring would move the frozen SimVQ basis: set it to False')


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
