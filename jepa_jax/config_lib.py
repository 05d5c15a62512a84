"""Loading configs: a config file or YAML config by its `--config=` spec,
the `--config.KEY` overrides, the workdir.

The config modules, bottom up: `errors` (ConfigError, InputError, ConfigFileError),
`config_files` (importing config files, the `configs` package),
`config_keys` (dotted keys), `config_defaults` (configs/base.py, the one
place every default is written, and the keys older run folders lack),
`config_checks` (`validate`, `check_against_data`), `yaml_config`, and this
module, which re-exports what callers use as `config_lib.<name>`.
"""
from __future__ import annotations

import difflib
import os

from jepa_jax import config_keys
from jepa_jax import yaml_config
# Re-exported: callers use them as config_lib.<name>.
from jepa_jax.config_checks import check_against_data, validate  # noqa: F401
from jepa_jax.config_defaults import ADDED_KEYS, NEW_DEFAULTS, fill_added_keys  # noqa: F401
from jepa_jax.config_files import load_module
from jepa_jax.errors import ConfigError, ConfigFileError, InputError  # noqa: F401


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
            'no similar key; see configs/base.py for every key')
    raise ConfigFileError(f'--config.{key}: unknown config key ({hint})')
