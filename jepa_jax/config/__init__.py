"""Configs: every key's default (`base.build()`), the variant strings
(`variants.with_variant`: `:tiny`, `:arc`, `:shapes`, `:vit_s16`), loading a
config file or YAML config with its overrides, the checks that refuse a bad
value with one line naming the key, and the keys older run folders lack. The
variant files themselves are the repository's `configs/*.py`, which build on
`jepa_jax.config.base`."""
