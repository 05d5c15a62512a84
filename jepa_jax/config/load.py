"""Loading configs: a config file or YAML config by its `--config=` spec,
the `--config.KEY` overrides, the workdir.

The config modules, bottom up: `errors` (ConfigError, InputError, ConfigFileError),
`config_files` (importing config files, the `configs` package),
`config_keys` (dotted keys), `config_defaults` (jepa_jax/config/base.py, the one
place every default is written, and the keys older run folders lack),
`config_checks` (`validate`, `check_against_data`), `yaml_config`, and this
module, which re-exports what callers use as `config_lib.<name>`.

Importing config files by path, and the repository's `configs` package.

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

import difflib
import importlib
import importlib.util
import os
import sys

from jepa_jax.config import keys as config_keys
from jepa_jax.config import yaml_io as yaml_config
# Re-exported: callers use them as config_lib.<name>.
from jepa_jax.config.base import ADDED_KEYS, NEW_DEFAULTS, fill_added_keys  # noqa: F401
from jepa_jax.config.checks import check_against_data, validate  # noqa: F401
from jepa_jax.errors import ConfigError, ConfigFileError, InputError  # noqa: F401


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
  """'configs/gentle.py[:arg]' or 'run.yaml[:arg]' (jepa_jax/config/yaml_io.py)
  -> ConfigDict, as `--config=` would build it."""
  path, _, arg = spec.partition(':')
  if yaml_config.is_yaml(path):
    return yaml_config.load(path, arg or None)
  return load_module(path).get_config(arg or None)


def load_config_checked(spec: str):
  """`load_config`, with every way a config file can fail (missing, not
  Python, raising in get_config, an unknown variant) as ConfigFileError, one
  line naming the file."""
  path = spec.partition(':')[0]
  if not os.path.isfile(path):
    raise ConfigFileError(f'--config={spec}: no such file' if not os.path.exists(path)
                          else f'--config={spec}: not a file')
  try:
    cfg = load_config(spec)
  except InputError as err:             # a YAML config's key or value
    message = str(err)
    message = message[len(path) + 2:] if message.startswith(f'{path}: ') else message
    raise ConfigFileError(f'--config={spec}: {message}') from None
  except SyntaxError as err:
    raise ConfigFileError(f'--config={spec}: {path} line {err.lineno}: {err.msg}') from None
  except Exception as err:  # pylint: disable=broad-except
    where = _innermost_line(err, path)
    raise ConfigFileError(f'--config={spec}: {type(err).__name__}: {err}{where}') from None
  if not hasattr(cfg, 'to_dict'):
    raise ConfigFileError(f'--config={spec}: get_config returned {type(cfg).__name__}, '
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


def check_override_keys(cfg, keys) -> None:
  """Refuses an override key (`--config.KEY=`) that `cfg` does not have, naming
  the nearest valid keys (difflib)."""
  known = config_keys.all_keys(cfg)
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
            'no similar key; see jepa_jax/config/base.py for every key')
    raise ConfigFileError(f'--config.{key}: unknown config key ({hint})')
