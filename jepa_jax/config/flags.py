"""absl flag parsing for the commands that take `--config=` (`jepa_jax.main`,
`jepa_jax.config_export`): every bad input (config file, YAML key, unknown
`--config.KEY`, bad value or flag) is one line on stderr and exit status 2,
before anything runs.

A YAML config (`--config=run.yaml[:variant]`, jepa_jax/config/yaml_io.py) is
handed to ml_collections' config flag as the config file
`jepa_jax/config/yaml_io.py:run.yaml[:variant]`, so `--config.KEY=VALUE`
overrides apply to it as to any config file.

`--config.KEY=None` sets a key that may be None (a `placeholder` of
jepa_jax/config/base.py: `train.steps_per_epoch`, `vq.ema_decay`, ...) to None; absl's
parsers cannot read None, so these are taken out of the command line and set
after it is parsed.

`--help` of `python -m jepa_jax.main` (`text`): what the command takes, read
from the configs themselves (config files and their docstrings, variants.py's
variant strings and key groups), so the help cannot fall behind them.
"""
from __future__ import annotations

import ast
import glob
import os
import sys
import textwrap
from typing import List, Tuple

from absl import flags
from ml_collections import config_dict, config_flags

from jepa_jax.config import keys as config_keys
from jepa_jax.config import load as config_lib
from jepa_jax.config import yaml_io as yaml_config


# A YAML config reaches ml_collections' config flag through this config file
# (its `get_config`), inside the package, so an installed jepa_jax reads YAML.
YAML_CONFIG_FILE = os.path.abspath(yaml_config.__file__)


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
  """`argv` with `--config FILE` joined into `--config=FILE` and a YAML
  `--config=` spec as `YAML_CONFIG_FILE:SPEC` (this package's yaml_io.py)."""
  out, args = [argv[0]], list(argv[1:])
  i = 0
  while i < len(args):
    arg = args[i]
    if arg == '--':
      out += args[i:]
      break
    name, eq, value = arg.partition('=')
    if name in ('--config', '-config') and not eq and i + 1 < len(args):
      i += 1                                   # `--config FILE`: one `--config=FILE`
      eq, value = '=', args[i]
      arg = f'{name}={value}'
    if name in ('--config', '-config') and eq and yaml_config.is_yaml(value):
      arg = f'{name}={YAML_CONFIG_FILE}:{value}'
    out.append(arg)
    i += 1
  return out


def _takes_none(cfg, key: str) -> bool:
  """Whether `key` is a placeholder field of `cfg` (None is one of its values)."""
  *parents, leaf = key.split('.')
  try:
    node = config_keys.get(cfg, '.'.join(parents)) if parents else cfg
  except (KeyError, AttributeError):
    return False
  fields = getattr(node, '_fields', {})
  return isinstance(fields.get(leaf), config_dict.FieldReference)


def split_none(argv, cfg):
  """(`argv` without its `--config.KEY=None` of keys that take None, those keys)."""
  out, keys, after = [], [], False
  for arg in argv:
    name, eq, value = arg.partition('=')
    after = after or arg == '--'
    if (not after and eq and value == 'None' and name.startswith(('--config.', '-config.'))
        and _takes_none(cfg, name.split('config.', 1)[1])):
      keys.append(name.split('config.', 1)[1])
    else:
      out.append(arg)
  return out, keys


def _set_none(cfg, keys) -> None:
  for key in keys:
    config_keys.put(cfg, key, None)


def config_of(argv):
  """The config the command line `argv` (the program, then `--config=` and
  `--config.KEY=VALUE` only) builds, as `jepa_jax.main` would build it, parsed
  on flags of its own (this process's flags are untouched). A bad input is
  InputError, one line naming the file, key or flag; nothing is written."""
  spec, keys = config_spec_and_keys(argv)
  if not spec:
    raise config_lib.InputError('--config=: missing; pass a config file')
  cfg = config_lib.load_config_checked(spec)
  config_lib.check_override_keys(cfg, keys)
  argv, none_keys = split_none(yaml_argv(argv), cfg)
  own = flags.FlagValues()
  holder = config_flags.DEFINE_config_file('config', None, 'config', flag_values=own,
                                           sys_argv=argv)
  try:
    own(argv)
  except flags.Error as err:
    raise config_lib.InputError(str(err).splitlines()[0]) from None
  _set_none(holder.value, none_keys)
  return holder.value


def fit_warmup(cfg, keys):
  """A warm-up the command line did not set that is longer than the run (a
  smoke test's `--config.train.num_epochs=1` on a config warming up for 2
  epochs) is shortened to half the run, in place; returns a note for each.
  One set on the command line stays as given (`validate` refuses it, naming
  the key). `keys`: the override keys, as typed after `--config.`."""
  notes = []
  stage2 = cfg.get('stage2') or {}
  blocks = [('', cfg.get('train'), cfg.get('train'))]
  if 'train' in stage2:                          # a two-stage config's stage 2
    blocks.append(('stage2.', stage2['train'], cfg.get('train')))
  for prefix, train, base in blocks:
    if train is None or 'warmup_epochs' not in train or f'{prefix}train.warmup_epochs' in keys:
      continue
    epochs = train['num_epochs'] if 'num_epochs' in train else base['num_epochs']
    warm = train['warmup_epochs']
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (warm, epochs))
    if numbers and 0 <= epochs < warm:
      train['warmup_epochs'] = epochs // 2
      notes.append(f'note: {prefix}train.warmup_epochs={warm:g} is longer than the run '
                   f'({prefix}train.num_epochs={epochs}): shortened to {epochs // 2}; '
                   f'--config.{prefix}train.warmup_epochs sets it')
  return notes


def parse_config_flags(argv):
  """absl's flag parsing of `argv` (module docstring); returns the rest."""
  spec, keys = config_spec_and_keys(argv)
  try:
    none_keys = []
    argv = yaml_argv(argv)
    if spec:
      cfg = config_lib.load_config_checked(spec)
      config_lib.check_override_keys(cfg, keys)
      argv, none_keys = split_none(argv, cfg)
    rest = flags.FLAGS(argv)
    _set_none(flags.FLAGS['config'].value, none_keys)
    return rest
  except config_lib.InputError as err:
    message = f'config error: {err}'
  except flags.Error as err:
    message = f'error: {str(err).splitlines()[0]}'
  except Exception as err:  # pylint: disable=broad-except
    message = f'error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}'
  print(message, file=sys.stderr)
  sys.exit(2)


ROOT = config_lib.ROOT
CONFIGS = config_lib.CONFIGS       # the repository's variant files (absent in a wheel)
VARIANTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'variants.py')
TWO_STAGE = os.path.join(CONFIGS, 'two_stage.py')
# Files in configs/ that are not configs of their own: the YAML loader and
# base.py, which re-exports the package's defaults (`jepa_jax.config.base`).
NOT_CONFIGS = ('yaml_config.py', 'base.py')
# Module-level dicts naming the configs of a file that holds several
# (configs/ablation.py's ABLATIONS: `--config=configs/ablation.py:NAME`).
NAMES_DICTS = ('ABLATIONS',)
HELP_FLAGS = ('--help', '-help', '-h', '-?', '--helpshort', '-helpshort')
FULL_HELP_FLAGS = ('--helpfull', '-helpfull')


def _docstring(path: str) -> str:
  with open(path) as f:
    return ast.get_docstring(ast.parse(f.read())) or ''


def _names_taken(path: str) -> List[str]:
  """The keys of a config file's module-level `NAMES_DICT` dict literal (a
  file of several configs, `configs/FILE.py:NAME`), read without importing it."""
  with open(path) as f:
    tree = ast.parse(f.read())
  for node in tree.body:
    if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
        and any(isinstance(t, ast.Name) and t.id in NAMES_DICTS for t in node.targets)):
      return [k.value for k in node.value.keys
              if isinstance(k, ast.Constant) and isinstance(k.value, str)]
  return []


def config_files() -> List[Tuple[str, str]]:
  """[(configs/NAME.py, first paragraph of its docstring, and the names it
  takes after the ':' if it holds several configs)], sorted."""
  out = []
  for path in sorted(glob.glob(os.path.join(CONFIGS, '*.py'))):
    name = os.path.basename(path)
    if name.startswith('_') or name in NOT_CONFIGS:
      continue
    first = ' '.join(_docstring(path).split('\n\n')[0].split())
    names = _names_taken(path)
    if names:
      first += f' Names (configs/{name}:NAME[,variant]): {", ".join(names)}.'
    out.append((f'configs/{name}', first))
  return out


def yaml_files() -> List[str]:
  found = sorted(glob.glob(os.path.join(CONFIGS, 'yaml', '*.yaml')))
  return [os.path.relpath(p, ROOT) for p in found]


def variant_strings() -> str:
  """The 'Variant strings' paragraph of variants.py's docstring (to its end)."""
  doc = _docstring(VARIANTS)
  start = doc.find('Variant strings')
  return doc[start:].strip() if start >= 0 else ''


def key_groups() -> List[Tuple[str, List[str]]]:
  """[(top-level key, its keys)] of the defaults' config; plain top-level
  keys come first, under ''."""
  from jepa_jax.config import base as config_defaults  # noqa: PLC0415  (ml_collections, only for --help)
  cfg = config_defaults.base()
  plain = [k for k, v in cfg.items() if not hasattr(v, 'items')]
  groups = [(k, list(v.keys())) for k, v in cfg.items() if hasattr(v, 'items')]
  return [('', plain)] + groups


def two_stage_keys() -> List[str]:
  """The top-level keys a two-stage config (configs/two_stage.py) adds to the
  defaults; [] without the repository's configs/."""
  from jepa_jax.config import base as config_defaults  # noqa: PLC0415
  from jepa_jax.config import load as config_lib  # noqa: PLC0415
  if not os.path.exists(TWO_STAGE):
    return []
  base = config_defaults.base()
  return [k for k in config_lib.load_config(TWO_STAGE) if k not in base]


def _wrapped(head: str, body: str, indent: int = 36, width: int = 79) -> List[str]:
  """'  HEAD   body...' with the body wrapped at `width` in a column at `indent`."""
  head = f'  {head}'
  pad = ' ' * indent
  if len(head) >= indent:
    return [head] + textwrap.wrap(body, width, initial_indent=pad, subsequent_indent=pad)
  return textwrap.wrap(body, width, initial_indent=head.ljust(indent),
                       subsequent_indent=pad) or [head]


def text(command_doc: str) -> str:
  """The whole help: the command's docstring, flags, configs, variant
  strings, key groups."""
  lines = [command_doc.strip(), '', 'Flags:',
           '  --config=FILE[:VARIANTS]          a config file (below) or a YAML config',
           '  --config.KEY=VALUE                override one key (groups below)',
           '  --workdir=DIR                     the run folder (resumed if it holds this run)',
           '  --helpfull                        every flag, absl and JAX ones included',
           '', 'Config files:']
  for name, doc in config_files():
    lines += _wrapped(name, doc)
  if not config_files():
    lines += ["  none here: the variant files are the repository's configs/*.py "
              '(copy them, or write your own on jepa_jax.config.base)']
  yamls = yaml_files()
  if yamls:
    lines += ['', 'YAML configs (reference key names, docs/yaml.md):',
              *textwrap.wrap(', '.join(yamls), 77, initial_indent='  ',
                             subsequent_indent='  ')]
  lines += ['', variant_strings()]
  lines += ['', 'Key groups (--config.GROUP.KEY=VALUE; defaults in jepa_jax/config/base.py):']
  for group, keys in key_groups():
    lines += _wrapped(group or '(top level)', ', '.join(keys))
  stage_keys = two_stage_keys()
  if stage_keys:
    lines += _wrapped('(two-stage configs)', ', '.join(stage_keys) + ': see '
                      'configs/two_stage.py; --config.stage2.GROUP.KEY sets stage 2 apart')
  return '\n'.join(lines) + '\n'
