"""absl flag parsing for the commands that take `--config=` (`jepa_jax.main`,
`jepa_jax.config_export`): every bad input (config file, YAML key, unknown
`--config.KEY`, bad value or flag) is one line on stderr and exit status 2,
before anything runs.

A YAML config (`--config=run.yaml[:variant]`, jepa_jax/yaml_config.py) is
handed to ml_collections' config flag as the config file
`configs/yaml_config.py:run.yaml[:variant]`, so `--config.KEY=VALUE`
overrides apply to it as to any config file.
"""
from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from jepa_jax import config_lib
from jepa_jax import yaml_config

YAML_CONFIG_FILE = os.path.join(yaml_config.ROOT, 'configs', 'yaml_config.py')


def config_spec_and_keys(argv):
  """The `--config=` spec and the `--config.KEY` override keys of `argv`."""
  spec, keys, args = None, [], list(argv[1:])
  for i, arg in enumerate(args):
    if arg == '--':
      break
    name, eq, value = arg.partition('=')
    if name in ('--config', '-config'):
      spec = value if eq else (args[i + 1] if i + 1 < len(args) else None)
    elif name.startswith(('--config.', '-config.')):
      keys.append(name.split('config.', 1)[1])
  return spec, keys


def yaml_argv(argv):
  """`argv` with a YAML `--config=` spec as `configs/yaml_config.py:SPEC`."""
  out, args = [argv[0]], list(argv[1:])
  i = 0
  while i < len(args):
    arg = args[i]
    if arg == '--':
      out += args[i:]
      break
    name, eq, value = arg.partition('=')
    if name in ('--config', '-config') and not eq and i + 1 < len(args):
      name, eq, value, i = name, '=', args[i + 1], i + 1
    if name in ('--config', '-config') and eq and yaml_config.is_yaml(value):
      arg = f'{name}={YAML_CONFIG_FILE}:{value}'
    out.append(arg)
    i += 1
  return out


def config_of(argv):
  """The config the command line `argv` (the program, then `--config=` and
  `--config.KEY=VALUE` only) builds, as `jepa_jax.main` would build it, parsed
  on flags of its own (this process's flags are untouched). A bad input is
  InputError, one line naming the file, key or flag; nothing is written."""
  spec, keys = config_spec_and_keys(argv)
  if not spec:
    raise config_lib.InputError('--config=: missing; pass a config file')
  config_lib.check_override_keys(config_lib.load_config_checked(spec), keys)
  argv = yaml_argv(argv)
  own = flags.FlagValues()
  holder = config_flags.DEFINE_config_file('config', None, 'config', flag_values=own,
                                           sys_argv=argv)
  try:
    own(argv)
  except flags.Error as err:
    raise config_lib.InputError(str(err).splitlines()[0]) from None
  return holder.value


def parse_config_flags(argv):
  """absl's flag parsing of `argv` (module docstring); returns the rest."""
  spec, keys = config_spec_and_keys(argv)
  try:
    if spec:
      config_lib.check_override_keys(config_lib.load_config_checked(spec), keys)
    return flags.FLAGS(yaml_argv(argv))
  except config_lib.InputError as err:
    message = f'config error: {err}'
  except flags.Error as err:
    message = f'error: {str(err).splitlines()[0]}'
  except Exception as err:  # pylint: disable=broad-except
    message = f'error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}'
  print(message, file=sys.stderr)
  sys.exit(2)
