"""The config files of jepa_jax runs: `--config=configs/<name>.py[:variant]`.

A package, so the files build on each other by ordinary imports
(`from configs import gentle`). Each defines `build()`, its config with no
variant applied, and `get_config(arg=None)`, `base.with_variant(build(),
arg)`; `base.py` holds the default of every key and the one parser of
variant strings. `jepa_jax.config.load.load_module` imports a file given by
path as a module of this package, from any working directory.
"""
