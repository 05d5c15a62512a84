"""Configs: every key's default and the keys older run folders lack
(`base`), the variant strings (`variants`: `:tiny`, `:arc`, `:shapes`,
`:vit_s16`), dotted keys (`keys`), loading a config file or YAML config
(`load`, `yaml_io`), its command-line flags and `--help` (`flags`), and the
checks that refuse a bad value with one line naming the key (`checks`). The
variant files themselves are the repository's `configs/*.py`, which build on
`jepa_jax.config.base`."""
