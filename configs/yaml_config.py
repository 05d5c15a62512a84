"""A YAML config as a config file (jepa_jax/yaml_config.py, docs/yaml.md).

    --config=configs/yaml_config.py:run.yaml[:variant]

is what `python -m jepa_jax.main --config=run.yaml[:variant]` turns into:
base.py, the YAML's keys, then the variant string.
"""
from jepa_jax import yaml_config


def get_config(arg=None):
  return yaml_config.load_spec(arg)
