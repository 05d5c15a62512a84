"""Shared fixtures: config loading by variant name."""
import os

import pytest

from jepa_jax import config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name, arg=None):
  spec = os.path.join(ROOT, 'configs', f'{name}.py') + (f':{arg}' if arg else '')
  return config_lib.load_config(spec)


@pytest.fixture
def config_of():
  return load
