"""YAML configs in the reference trainer's key names, and back.

A YAML config is a mapping of keys to values applied on top of
`jepa_jax/config/base.py` (then the `:variant` string, as every config file does):

    python -m jepa_jax.main --config=run.yaml[:tiny] --workdir=W [--config.KEY=V]

Each key is either a name of the reference trainer (its YAML files,
`configs/training/jepa_vq_*.yaml`, and the keys its assessment quotes:
`commitment_cost`, `ema_decay`, `vq_refresh_*`, `temperature_min/max`,
`relational_loss.weight`, ...) mapped by `REFERENCE_KEYS`, or a jepa_jax key
(`vq.codebook_size`, written dotted or as nested mappings). Refused, as one
line (`errors.InputError`): a key that is neither (naming the nearest
known keys, difflib), a key of `NOT_SUPPORTED` (a reference-trainer setting
jepa_jax has no equivalent of: never silently ignored), a key given twice
(e.g. `commitment_cost` and `vq.commitment_cost`, or the same key on two
lines), a value of the wrong type (`null` for a true/false key included), a
file with no keys at all (empty or only comments: `{}` says "base.py's
defaults" on purpose).

Values are in jepa_jax's units: a step count is a step of jepa_jax's data
(configs/gentle.py's refresh interval 726 is the reference's 3000 scaled to
the digits epoch), not the reference's. `1e-3` reads as a number (YAML 1.1
would read a string). The table is documented in docs/yaml.md; `to_yaml`
writes the keys that differ from base.py, reference names first
(`python -m jepa_jax.config_export`).
"""
from __future__ import annotations

import difflib
import os
import re
from typing import Any, Dict, List, Tuple

import yaml

from jepa_jax.config import base as defaults_file
from jepa_jax.config import keys as config_keys
from jepa_jax.errors import InputError

SUFFIXES = ('.yaml', '.yml')

# Reference-trainer name -> jepa_jax key (one name per key, so `to_yaml` is
# unambiguous). docs/yaml.md carries the same table.
REFERENCE_KEYS = {
    'seed': 'seed',
    'dataset': 'data.name',
    'val_split': 'data.val_fraction',
    'patch_size': 'model.patch_size',
    'embed_dim': 'model.embed_dim',
    'depth': 'model.depth',
    'num_heads': 'model.num_heads',
    'mlp_ratio': 'model.mlp_ratio',
    'predictor_dim': 'model.predictor_dim',
    'predictor_depth': 'model.predictor_depth',
    'predictor_num_heads': 'model.predictor_num_heads',
    'use_vq': 'vq.enabled',
    'codebook_size': 'vq.codebook_size',
    'commitment_cost': 'vq.commitment_cost',
    'ema_decay': 'vq.ema_decay',                  # null: gradient-trained codebook
    'vq_refresh_enabled': 'vq.refresh_enabled',
    'vq_refresh_interval': 'vq.refresh_interval',
    'vq_refresh_usage_threshold': 'vq.refresh_usage_threshold',
    'temperature': 'loss.temperature_init',
    'temperature_min': 'loss.temperature_min',
    'temperature_max': 'loss.temperature_max',
    'infonce_weight': 'loss.infonce_weight',
    'sigreg_weight': 'loss.sigreg_weight',
    'invariance_weight': 'loss.invariance_weight',
    'relational_loss.weight': 'loss.relational_loss.weight',
    'relational_loss.context_self_weight': 'loss.relational_loss.context_self_weight',
    'epochs': 'train.num_epochs',
    'batch_size': 'train.batch_size',
    'learning_rate': 'train.learning_rate',
    'min_learning_rate': 'train.min_learning_rate',
    'warmup_epochs': 'train.warmup_epochs',
    'weight_decay': 'train.weight_decay',
    'grad_clip': 'train.grad_clip_norm',
    'ema_momentum_start': 'train.ema_momentum_start',
    'ema_momentum_end': 'train.ema_momentum_end',
    'early_stopping_patience': 'train.early_stopping_patience',
    'embedding_metrics_interval': 'train.embedding_metrics_every_steps',
    'log_interval': 'train.log_every_steps',
}

# Reference-trainer settings that map to nothing jepa_jax does: refused with
# the reason, never ignored.
NOT_SUPPORTED = {
    'output_dir': 'the run folder is the --workdir flag',
    'save_dir': 'the run folder is the --workdir flag',
    'log_dir': 'logs go to the --workdir folder',
    'device': 'JAX places the run: see parallel.mode / parallel.num_devices',
    'num_workers': 'the data sits in memory; there are no loader workers',
    'mixed_precision': 'a true/false AMP switch has no one-to-one key: set '
                       "model.dtype ('float32' or 'bfloat16')",
    'resume': 'a workdir with checkpoints resumes by itself (checkpoint.restart '
              'starts over)',
}

_NATIVE_OF = {v: k for k, v in REFERENCE_KEYS.items()}


class _Loader(yaml.SafeLoader):
  """SafeLoader that reads `1e-3` (no dot) as a float, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    'tag:yaml.org,2002:float',
    re.compile(r'''^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$''', re.X),
    list('-+0123456789.'))


def _mapping_once(loader, node):
  """A YAML mapping whose keys are each given once: a repeated key is an
  error naming both lines (PyYAML would keep the last value silently)."""
  loader.flatten_mapping(node)
  first = {}
  for key_node, _ in node.value:
    key = loader.construct_object(key_node, deep=True)
    line = key_node.start_mark.line + 1
    if isinstance(key, (str, int, float, bool)) and key in first:
      raise yaml.constructor.ConstructorError(
          None, None, f'{key}: given twice (lines {first[key]} and {line})',
          key_node.start_mark)
    first.setdefault(key, line)
  return loader.construct_mapping(node, deep=True)


_Loader.add_constructor('tag:yaml.org,2002:map', _mapping_once)


def is_yaml(spec: str) -> bool:
  return spec.partition(':')[0].lower().endswith(SUFFIXES)


def _base():
  return defaults_file


native_keys = config_keys.leaf_keys
_get = config_keys.get


def _flatten(mapping, prefix='') -> List[Tuple[str, Any]]:
  """Nested mappings -> [(dotted key, value)], in file order."""
  out = []
  for key, value in mapping.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict) and value:
      out += _flatten(value, name + '.')
    else:
      out.append((name, value))
  return out


def resolve(key: str, leaves: List[str], where: str) -> str:
  """The jepa_jax key of a YAML key; InputError (one line) when it has none."""
  if key in REFERENCE_KEYS:
    return REFERENCE_KEYS[key]
  if key in leaves:
    return key
  if key in NOT_SUPPORTED:
    raise InputError(f'{where}: {key}: not supported by jepa_jax '
                                f'({NOT_SUPPORTED[key]})')
  known = list(REFERENCE_KEYS) + leaves
  near = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
  if not near:
    leaf = key.rsplit('.', 1)[-1]
    near = [k for k in known if k.rsplit('.', 1)[-1] == leaf][:3]
  hint = (f'nearest: {", ".join(near)}' if near else
          'see docs/yaml.md for the reference names and jepa_jax/config/base.py for every key')
  raise InputError(f'{where}: {key}: unknown config key ({hint})')


def _coerce(key: str, value, current, where: str):
  """A YAML value as the type of the config field it sets."""
  if isinstance(current, tuple) and isinstance(value, list):
    return tuple(value)
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if isinstance(value, (dict, list)):
    raise InputError(f'{where}: {key}: {value!r} is not a value of '
                                f'this key (it holds {current!r})')
  return value


def apply(cfg, mapping: Dict[str, Any], where: str):
  """Sets every key of the YAML `mapping` in `cfg` (module docstring)."""
  leaves, seen = native_keys(cfg), {}
  for key, value in _flatten(mapping):
    target = resolve(key, leaves, where)
    if target in seen:
      raise InputError(f'{where}: {key}: sets {target}, already set by '
                                  f'{seen[target]}')
    seen[target] = key
    *parents, leaf = target.split('.')
    node = cfg
    for part in parents:
      node = node[part]
    if value is None and isinstance(node[leaf], bool):
      raise InputError(f'{where}: {key}: null is not true or false; write true or false')
    try:
      node[leaf] = _coerce(key, value, node[leaf], where)
    except (TypeError, ValueError) as err:
      first = str(err).splitlines()[0] if str(err) else type(err).__name__
      raise InputError(f'{where}: {key}: {value!r}: {first}') from None
  return cfg


def read(path: str) -> Dict[str, Any]:
  """The YAML file's mapping; InputError on a parse error, a repeated key or
  a file with no YAML in it (`{}` is base.py's defaults)."""
  with open(path) as f:
    text = f.read()
  try:
    data = yaml.load(text, Loader=_Loader)   # noqa: S506 (a SafeLoader)
  except yaml.YAMLError as err:
    mark = getattr(err, 'problem_mark', None)
    line = f' line {mark.line + 1}' if mark is not None else ''
    problem = getattr(err, 'problem', None) or str(err).splitlines()[0]
    raise InputError(f'{path}{line}: {problem}') from None
  if data is None:
    raise InputError(f'{path}: no keys (the file is empty or only comments); '
                     'write {} to train jepa_jax/config/base.py as it is')
  if not isinstance(data, dict):
    raise InputError(f'{path}: a YAML config is a mapping of keys, '
                                f'not a {type(data).__name__}')
  return data


def load(path: str, arg=None):
  """The ConfigDict of YAML file `path`: base.py, its keys, then `arg`."""
  base = _base()
  return base.with_variant(apply(base.build(), read(path), path), arg)


def load_spec(spec: str):
  """'run.yaml[:variant]' -> ConfigDict."""
  path, _, arg = (spec or '').partition(':')
  if not path:
    raise InputError('configs/yaml_config.py needs a YAML file: '
                                'configs/yaml_config.py:PATH.yaml[:variant]')
  if not os.path.isfile(path):
    raise InputError(f'{path}: no such file')
  return load(path, arg or None)


def get_config(arg=None):
  """This file as a config file: `--config=PATH/yaml_config.py:run.yaml[:variant]`
  (what `flag_parsing` hands ml_collections for a YAML `--config=`)."""
  return load_spec(arg)


def diff_from_base(cfg) -> List[Tuple[str, Any]]:
  """[(jepa_jax key, value)] of the leaves where `cfg` differs from base.py.
  A key base.py lacks is refused (it would not load back)."""
  base = _base().build()
  base_leaves = native_keys(base)
  for key in native_keys(cfg):
    if key not in base_leaves:
      raise InputError(f'config key {key} is not in jepa_jax/config/base.py: a '
                                  'YAML config cannot hold it')
  return [(k, _get(cfg, k)) for k in base_leaves if _get(cfg, k) != _get(base, k)]


class _Dumper(yaml.SafeDumper):
  """Lists in flow style ([8, 8, 4, 3]), mappings in block style."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence(
    'tag:yaml.org,2002:seq', v, flow_style=True))


def _plain(value):
  return list(value) if isinstance(value, tuple) else value


def to_yaml(cfg, header: str = '') -> str:
  """The YAML text of `cfg`: its differences from base.py, reference names
  first (in REFERENCE_KEYS order, relational_loss nested), then jepa_jax keys
  (dotted, config order). `load` of it gives `cfg` back."""
  diff = dict(diff_from_base(cfg))
  out: Dict[str, Any] = {}
  if 'variant' in diff:
    out['variant'] = diff.pop('variant')
  for ref, native in REFERENCE_KEYS.items():
    if native in diff:
      head, _, tail = ref.partition('.')
      if tail:
        out.setdefault(head, {})[tail] = _plain(diff.pop(native))
      else:
        out[ref] = _plain(diff.pop(native))
  for key, value in diff.items():
    out[key] = _plain(value)
  text = yaml.dump(out, Dumper=_Dumper, sort_keys=False) if out else '{}\n'
  lines = [f'# {line}'.rstrip() for line in header.splitlines()]
  return '\n'.join(lines + [text.rstrip('\n')]).strip('\n') + '\n'
