"""Writes a config as YAML in the reference trainer's key names.

    python -m jepa_jax.config_export --config=configs/gentle.py[:tiny] \
        [--config.KEY=VALUE ...] [--out=gentle.yaml]

The YAML holds the keys where the config differs from jepa_jax/config/base.py
(`yaml_config.to_yaml`), reference names first; without `--out` it goes to
stdout. `python -m jepa_jax.main --config=gentle.yaml` gives the same config
back (tests/test_yaml_config.py). A config whose keys base.py lacks (a
two-stage config's `stage2`) is refused, one line.
"""
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from jepa_jax import errors
from jepa_jax.config import flags as flag_parsing
from jepa_jax.config import load as config_lib
from jepa_jax.config import yaml_io as yaml_config

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (configs/*.py[:variant]) or YAML config.')
_OUT = flags.DEFINE_string('out', None, 'YAML file to write (default: stdout).')
flags.mark_flags_as_required(['config'])


def header(spec: str, argv) -> str:
  """The comment block: the config, what the keys mean, the command."""
  args = ' '.join(a for a in argv[1:] if not a.startswith(('--out', '-out')))
  return (f'jepa_jax config: {spec}\n'
          'Keys on top of jepa_jax/config/base.py; reference-trainer names as in docs/yaml.md.\n'
          f'Written by: python -m jepa_jax.config_export {args}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  spec = flags.FLAGS['config'].config_filename
  spec = spec.split(':', 1)[1] if spec.startswith(flag_parsing.YAML_CONFIG_FILE) else spec
  try:
    text = yaml_config.to_yaml(_CONFIG.value, header(spec, sys.argv))
  except config_lib.InputError as err:
    print(f'config error: {err}', file=sys.stderr)
    sys.exit(2)
  if _OUT.value is None:
    sys.stdout.write(text)
    return
  try:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, 'w') as f:
      f.write(text)
  except Exception as err:  # pylint: disable=broad-except
    status = errors.refused(err)     # --out a folder, unwritable: one line
    if status is None:
      raise
    sys.exit(status)


if __name__ == '__main__':
  app.run(main, flags_parser=flag_parsing.parse_config_flags)
