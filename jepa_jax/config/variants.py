"""The variant strings of every config: `with_variant(config, arg)`.

Variant strings (`--config=configs/gentle.py:tiny`, comma-separated, applied
in order):
  arc    the same variant on ARC-AGI grids: colour embedding, 30x30 canvas
         of 3x3-cell patches, masking sized for it.
  shapes the same variant on the procedural `shapes` images: 32x32 RGB, 4x4
         patches, masking sized for the 8x8 token grid, a schedule shortened
         to fit the 50,000-image epochs.
  tiny   a few steps of a very small model (tests, smoke runs); a two-stage
         config's `stage2` keys are shrunk by the same rules.
  vit_s16, vit_b16
         accelerator sizes: 224x224 RGB images from an image folder or packed
         shards (set data.path; data.name 'folder' or 'arrayrecord'), 16x16
         patches, a ViT-S/16 (384 wide, 12 deep, 6 heads) or ViT-B/16 (768,
         12, 12) encoder, an I-JEPA-like predictor (384 wide, 6 deep) and
         I-JEPA-like masks on the 14x14 token grid.
"""
import functools


def apply_arc(c):
  """Switches a config to ARC-AGI-1 grids (data, patch embedding, masking).

  Grids (1x1..30x30 colour ids) sit on a 30x30 canvas cut into 3x3-cell
  patches: a 10x10 token grid of which a median grid covers 12 tokens.
  Target blocks of 2x2 tokens (6x6 cells) and up to 16 context tokens; on
  small grids the masks flag the slots they cannot fill (see masking.py).
  """
  c.data.name = 'arc'
  c.data.arc_version = 'arc-agi-1'
  c.data.canvas_size = 30
  c.model.patch_embed = 'colour'
  c.model.patch_size = 3
  c.model.num_colours = 10
  c.model.colour_dim = 16
  c.masking.num_target_blocks = 2
  c.masking.target_block_size = (2, 2)
  c.masking.context_block_size = (4, 4)
  c.masking.num_context_tokens = 16
  return c


def apply_shapes(c):
  """Switches a config to the procedural `shapes` images (data.md).

  32x32 RGB at the default 50,000 train / 12,800 val images, cut into 4x4
  patches: an 8x8 grid of 64 tokens, 4x digits' 16, so a step costs a few
  times digits'. Masks: 2 target blocks of 3x3 tokens (14% of the image
  each) and 32 context tokens (half the image) from a 7x7 block. The run
  is shortened to SHAPES_EPOCHS epochs (one epoch is 781 steps at batch 64),
  and the embedding metrics (over the whole val split) run once an epoch,
  to bring a run at the default size near a quarter of an hour on a 2-core
  CPU (the target; measured: 1,146 CPU-seconds, docs/data.md).
  """
  c.data.name = 'shapes'
  c.data.image_size = (32, 32)
  c.data.channels = 3
  c.model.patch_embed = 'conv'
  c.model.patch_size = 4
  c.masking.num_target_blocks = 2
  c.masking.target_block_size = (3, 3)
  c.masking.context_block_size = (7, 7)
  c.masking.num_context_tokens = 32
  c.train.num_epochs = SHAPES_EPOCHS
  c.train.warmup_epochs = min(c.train.warmup_epochs, 1)
  c.train.embedding_metrics_every_steps = 781    # once an epoch: 12,800 val images each time
  return c


SHAPES_EPOCHS = 3


# ViT sizes (Dosovitskiy et al. 2021; Touvron et al. 2021 for ViT-S):
# (embed_dim, depth, num_heads).
VIT_SIZES = {'vit_s16': (384, 12, 6), 'vit_b16': (768, 12, 12)}


def apply_vit(c, name):
  """Switches a config to a ViT-S/16 or ViT-B/16 encoder on 224 px RGB images.

  Predictor as I-JEPA's (Assran et al. 2023: 384 wide, the encoder's heads;
  6 deep here, half the depth I-JEPA uses for ViT-H). Masks on the 14x14
  grid as I-JEPA's in size: 4 target blocks of 5x5 tokens (12.8% of the
  image each; I-JEPA 15-20%) and a context of 96 tokens (the most the
  static-shape masking allows with 4 such blocks) drawn from a 13x13 block.
  The pipeline switches to 'grain', so the folder is read lazily.
  """
  width, depth, heads = VIT_SIZES[name]
  c.data.name = 'folder'          # or 'arrayrecord'; data.path: set it
  c.data.image_size = (224, 224)
  c.data.channels = 3
  c.data.pipeline = 'grain'
  c.model.patch_size = 16
  c.model.patch_embed = 'conv'
  c.model.embed_dim, c.model.depth, c.model.num_heads = width, depth, heads
  c.model.mlp_ratio = 4.0
  c.model.predictor_dim = 384
  c.model.predictor_depth = 6
  c.model.predictor_num_heads = heads
  c.masking.num_target_blocks = 4
  c.masking.target_block_size = (5, 5)
  c.masking.context_block_size = (13, 13)
  c.masking.num_context_tokens = 96
  c.train.batch_size = 256
  return c


def _at_most(limit):
  """A `TINY` rule: the value lowered to `limit` at most (None stays None)."""
  return lambda value: value if value is None else min(value, limit)


# `tiny`: (key, value) sets the key; (key, rule) maps its value by the rule.
TINY = (
    ('model.embed_dim', 16), ('model.depth', 1), ('model.num_heads', 2),
    ('model.predictor_dim', 8), ('model.predictor_depth', 1),
    ('model.predictor_num_heads', 2),
    ('vq.codebook_size', 32), ('vq.fsq_levels', (4, 4, 2)),   # 32 implicit codes
    ('vq.codebook_dim', _at_most(8)),
    ('loss.sigreg_num_slices', 16),
    ('train.num_epochs', 2), ('train.batch_size', 16), ('train.steps_per_epoch', 3),
    ('train.warmup_epochs', 1), ('train.embedding_metrics_every_steps', 2),
    ('train.usage_window_steps', 2), ('train.log_every_steps', 2),
    ('train.usage_train_images', _at_most(256)),
    ('train.probe_train_images', _at_most(300)), ('train.probe_val_images', _at_most(150)),
    ('train.progress_bar', False),
    ('vq.refresh_interval', _at_most(2)), ('vq.refresh_warmup_interval', _at_most(2)),
    ('vq.kmeans_iters', 2), ('vq.kmeans_num_samples', 512),
)


def _apply_rule(node, key, value):
  """Sets dotted `key` of `node` to `value`, or to value(old) for a rule;
  nothing when `node` lacks the key."""
  *parents, leaf = key.split('.')
  for part in parents:
    if part not in node:
      return
    node = node[part]
  if leaf in node:
    node[leaf] = value(node[leaf]) if callable(value) else value


def apply_tiny(c):
  """A few steps of a very small model (`TINY`); the rules apply to a
  two-stage config's `stage2` too, to the keys it sets."""
  for node in [c] + ([c.stage2] if 'stage2' in c else []):
    for key, value in TINY:
      _apply_rule(node, key, value)
  return c


VARIANTS = {'arc': apply_arc, 'shapes': apply_shapes, 'tiny': apply_tiny,
            **{name: functools.partial(apply_vit, name=name) for name in VIT_SIZES}}


def parse_variant(arg) -> tuple:
  """The tokens of a variant string ('tiny', 'arc,tiny', '' or None: none),
  in order; ValueError naming an unknown one."""
  tokens = tuple(t.strip() for t in (arg or '').split(',') if t.strip())
  for token in tokens:
    if token not in VARIANTS:
      raise ValueError(f'unknown config variant {token!r} (known: {", ".join(VARIANTS)})')
  return tokens


def with_variant(c, arg):
  """`c` with the variant string `arg` applied (module docstring)."""
  for token in parse_variant(arg):
    VARIANTS[token](c)
  return c
