"""Dotted keys of a config ('vq.commitment_cost'): listing, reading, setting.

Works on an ml_collections ConfigDict and on the plain nested dicts of a run
folder's config.json alike, and `KeyChecks`, the one-line refusal of a bad
key's value (`errors.ConfigError`) that `config.checks` is written with.
"""
from __future__ import annotations

import math
from typing import Any, List

from jepa_jax.errors import ConfigError


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


class KeyChecks:
  """The checks of `config.checks`: check(key, ok, why) raises ConfigError(key) unless ok; number /
  positive_int / integer / flag check a key's type and return its value; pair checks a range."""

  def __init__(self, cfg):
    self.cfg = cfg

  def __call__(self, key: str, ok, why: str) -> None:
    if not ok:
      raise ConfigError(key, get(self.cfg, key), why)

  def number(self, key: str):
    v = get(self.cfg, key)
    self(key, isinstance(v, (int, float)) and not isinstance(v, bool)
         and math.isfinite(v), 'must be a finite number')
    return v

  def integer(self, key: str, low: int, why: str):
    v = get(self.cfg, key)
    self(key, isinstance(v, int) and not isinstance(v, bool) and v >= low, why)
    return v

  def positive_int(self, key: str):
    return self.integer(key, 1, 'must be an integer >= 1')

  def pair(self, key: str, low: float, high: float, what: str = '') -> None:
    """`key` is (lo, hi), finite numbers with low < lo <= hi <= high."""
    v = get(self.cfg, key)
    self(key, isinstance(v, (tuple, list)) and len(v) == 2 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
        for x in v) and low < v[0] <= v[1] <= high,
         f'must be a pair (lo, hi){what} with {low:g} < lo <= hi <= {high:g}')

  def flag(self, key: str) -> None:
    self(key, isinstance(get(self.cfg, key), bool), 'must be True or False')
