"""The errors a bad input raises: each `str(err)` is one line naming the culprit.

A leaf module (it imports nothing from jepa_jax), so every layer can raise
them without importing the layers above it:

  ConfigError  a bad config value; names the key (`err.key`) and the value
  InputError   a bad input other than a config key: a workdir, a command-line
               option, a config file
  ConfigFileError  the InputError of a config file, a YAML key or an unknown
               `--config.KEY` override (printed as a `config error:`)
  DataError    unusable input data: a missing file, a wrong shape or dtype,
               NaNs; names the file or array

`config_lib` re-exports the first two and `data` the third, where callers
have always found them.
"""
from __future__ import annotations


class ConfigError(ValueError):
  """A bad config value. `str(err)` is one line naming the key."""

  def __init__(self, key: str, value, why: str):
    self.key = key
    super().__init__(f'config.{key}={value!r}: {why}')


class InputError(ValueError):
  """A bad input other than a config key (workdir, a command-line option, a
  config file). `str(err)` is one line naming it."""


class ConfigFileError(InputError):
  """A config file that does not load (missing, not Python, an unknown
  variant, a bad YAML key) or an unknown `--config.KEY`. One line naming it."""


class DataError(ValueError):
  """Unusable input data (missing file, wrong shape or dtype, NaNs...).

  `str(err)` is one line naming the file or array at fault.
  """
