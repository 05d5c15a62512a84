"""A YAML config as a config file (jepa_jax/config/yaml_io.py, docs/yaml.md).

    --config=configs/yaml_config.py:run.yaml[:variant]

is what `python -m jepa_jax.main --config=run.yaml[:variant]` turns into:
base.py, the YAML's keys, then the variant string.
"""
from jepa_jax.config import yaml_io as yaml_config


def get_config(arg=None):
  return yaml_config.load_spec(arg)
