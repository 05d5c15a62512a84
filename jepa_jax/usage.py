"""`python -m jepa_jax.main --help`: what the command takes, read from the
configs themselves (config files and their docstrings, variants.py's variant
strings and key groups), so the help cannot fall behind them."""
from __future__ import annotations

import ast
import glob
import os
import textwrap
from typing import List, Tuple

from jepa_jax.config import load as config_files

ROOT = config_files.ROOT
CONFIGS = config_files.CONFIGS       # the repository's variant files (absent in a wheel)
VARIANTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'config', 'variants.py')
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
