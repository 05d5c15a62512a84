"""Importing config files by path, and the repository's `configs` package.

A config file is a Python module with `get_config(arg=None)`. A file in a
package folder (a folder with `__init__.py`, as the repository's `configs/`)
is imported as a module of that package, with the folder above the package
first on `sys.path`: the files of a package then import each other by
ordinary imports (`from configs import gentle`), whatever the working
directory. A file outside a package (a user's own config) is imported by its
path alone. Leaf of the config modules: it imports nothing from jepa_jax but
`errors`.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from jepa_jax.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, 'configs')


def _package_name(folder: str):
  """(dotted package name, folder above the top package) of `folder`, or
  (None, None) when `folder` is not a package."""
  parts = []
  while os.path.isfile(os.path.join(folder, '__init__.py')):
    parts.insert(0, os.path.basename(folder))
    folder = os.path.dirname(folder)
  return ('.'.join(parts), folder) if parts else (None, None)


def load_module(path: str):
  """The module of the config file at `path` (module docstring)."""
  path = os.path.abspath(path)
  stem = os.path.splitext(os.path.basename(path))[0]
  package, above = _package_name(os.path.dirname(path))
  if package is None:
    return _load_by_path('jepa_jax_config_' + stem, path)
  if above not in sys.path:
    sys.path.insert(0, above)
  module = importlib.import_module(f'{package}.{stem}')
  if os.path.abspath(module.__file__) != path:
    raise InputError(f'{path}: the package {package!r} is already imported from '
                     f'{os.path.dirname(module.__file__)}')
  return module


def _load_by_path(name: str, path: str):
  if name in sys.modules and getattr(sys.modules[name], '__file__', None) == path:
    return sys.modules[name]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def configs_module(name: str):
  """The repository's `configs/<name>.py` (e.g. 'base', the defaults)."""
  return load_module(os.path.join(CONFIGS, f'{name}.py'))


def variant_spec(variant: str, arg: str = '') -> str:
  """The `--config=` spec of the run variant `variant` (a `config.variant`
  name) with the variant string `arg`: configs/<variant>.py[:arg], or, for
  an ablation's name ac_<NAME> without a file of its own,
  configs/ablation.py:<NAME>[,arg] (the per-ablation files are folded into
  configs/ablation.py; their run folders keep the name)."""
  path = os.path.join(CONFIGS, f'{variant}.py')
  name = variant[len('ac_'):] if variant.startswith('ac_') else None
  if not os.path.exists(path) and name in configs_module('ablation').ABLATIONS:
    return os.path.join(CONFIGS, 'ablation.py') + f':{name}' + (f',{arg}' if arg else '')
  return path + (f':{arg}' if arg else '')
