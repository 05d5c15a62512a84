"""The defaults every variant builds on: `jepa_jax/config/base.py` (every
key with its default) and `jepa_jax/config/variants.py` (the variant strings
`:tiny`, `:arc`, `:shapes`, `:vit_s16`, `:vit_b16`), re-exported here so the
files of this folder write `from configs import base` and `base.build()`.
The defaults live in the package, so an installed jepa_jax has them."""
from jepa_jax.config.base import build, get_config  # noqa: F401
from jepa_jax.config.variants import (  # noqa: F401
    SHAPES_EPOCHS, TINY, VARIANTS, VIT_SIZES, apply_arc, apply_shapes, apply_tiny,
    apply_vit, parse_variant, with_variant)
