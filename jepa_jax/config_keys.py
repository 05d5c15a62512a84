"""Dotted keys of a config ('vq.commitment_cost'): listing, reading, setting.

Works on an ml_collections ConfigDict and on the plain nested dicts of a run
folder's config.json alike. A leaf module.
"""
from __future__ import annotations

from typing import Any, List


def _is_group(value) -> bool:
  return hasattr(value, 'items') and hasattr(value, 'keys')


def all_keys(cfg, prefix: str = '') -> List[str]:
  """Every dotted key of `cfg`, groups included ('train', 'train.num_epochs', ...),
  in config order."""
  keys = []
  for key, value in cfg.items():
    name = prefix + key
    keys.append(name)
    if _is_group(value):
      keys.extend(all_keys(value, name + '.'))
  return keys


def leaf_keys(cfg) -> List[str]:
  """The dotted keys of `cfg` that hold values, not groups, in config order."""
  return [k for k in all_keys(cfg) if not _is_group(get(cfg, k))]


def has(cfg, key: str) -> bool:
  node = cfg
  for part in key.split('.'):
    if not _is_group(node) or part not in node:
      return False
    node = node[part]
  return True


def get(cfg, key: str) -> Any:
  """The value at dotted `key` (KeyError when a part is missing)."""
  node = cfg
  for part in key.split('.'):
    node = node[part]
  return node


def put(cfg, key: str, value, make_group=None) -> None:
  """Sets dotted `key` to `value`; missing groups are made by `make_group()`
  (KeyError without it)."""
  node = cfg
  *parents, leaf = key.split('.')
  for part in parents:
    if part not in node:
      if make_group is None:
        raise KeyError(key)
      node[part] = make_group()
    node = node[part]
  node[leaf] = value
