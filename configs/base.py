"""Shared defaults for every jepa_jax variant.

Values follow the reference system: a 768-code codebook, the sixth-run VQ
settings (commitment 0.3, EMA decay 0.99, refresh every 500 steps below 5% of
the uniform share; sixth_run.py scales the interval to digits' epoch), VQ
losses as element means (the field's convention), temperature in [0.07, 0.15],
relational weights 0.05 / 0.025. Model and schedule sizes are scaled to the
embedded digits data so a run fits a laptop CPU.

Every config file in this package defines `build()` (its config, no variant)
and `get_config(arg=None)`, `with_variant(build(), arg)`; the files build on
each other by ordinary imports (`from configs import gentle`).

Variant strings (`--config=configs/gentle.py:tiny`, comma-separated, applied
in order; `parse_variant` is their one parser):
  arc    the same variant on ARC-AGI grids (`apply_arc`): colour embedding,
         30x30 canvas of 3x3-cell patches, masking sized for it.
  shapes the same variant on the procedural `shapes` images (`apply_shapes`):
         32x32 RGB, 4x4 patches, masking sized for the 8x8 token grid, a
         schedule shortened to fit the 50,000-image epochs.
  tiny   a few steps of a very small model (tests, smoke runs); a two-stage
         config's `stage2` keys are shrunk by the same rules (`TINY`).
  vit_s16, vit_b16
         accelerator sizes (`apply_vit`): 224x224 RGB images from an image
         folder or packed shards (set data.path; data.name 'folder' or
         'arrayrecord'), 16x16 patches, a ViT-S/16 (384 wide, 12 deep, 6
         heads) or ViT-B/16 (768, 12, 12) encoder, an I-JEPA-like predictor
         (384 wide, 6 deep) and I-JEPA-like masks on the 14x14 token grid.
"""
import functools

import ml_collections
from ml_collections import config_dict


def build():
  """Every key of a jepa_jax config with its default (no variant applied)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.variant = 'base'
  # Start from another run's checkpoint (params and target encoder; fresh
  # optimizer and VQ state): PATH (a workdir or its checkpoints/, latest step)
  # or PATH/STEP. '' = from scratch. Ignored once the run has checkpoints.
  c.init_from = ''
  # Param groups init_from leaves at their fresh initialisation (any of
  # 'encoder', 'target_encoder', 'predictor', 'temperature'), e.g. a fresh
  # predictor on another run's encoders.
  c.init_from_skip = ()

  c.data = ml_collections.ConfigDict()
  c.data.name = 'digits'
  c.data.val_fraction = 0.15      # fixed split: 1,527 train / 270 val digits
  c.data.split_seed = 0
  c.data.path = config_dict.placeholder(str)  # npz: the .npz file; folder, arrayrecord: the folder
  c.data.arc_version = 'arc-agi-1'            # arc: 'arc-agi-1', 'kaggle2019', 'arc-agi-2'
  c.data.canvas_size = 30                     # arc: grids padded to a 30x30 canvas
  c.data.image_size = (32, 32)                # folder, arrayrecord: resized to (rows, cols)
  c.data.channels = 1                         # folder, arrayrecord: 1 grayscale, 3 RGB
  # shapes (procedural images, jepa_jax/data/shapes.py; data.image_size,
  # data.channels and data.split_seed, its generator's seed, apply too):
  c.data.shapes_train_size = 50_000           # images per split
  c.data.shapes_val_size = 12_800            # 819,200 tokens at 64 a image: 100 a code at K = 8,192
  c.data.shapes_classes = 8                   # object classes (2..10)
  c.data.shapes_scale_range = (0.2, 0.32)     # main object's radius / image side
  c.data.shapes_max_rotation = 180.0          # angle uniform in +-this, degrees
  c.data.shapes_max_distractors = 4           # smaller objects, 0..this per image
  c.data.shapes_distractor_scale_range = (0.07, 0.11)  # their radius / image side
  c.data.shapes_backgrounds = ('flat', 'gradient', 'stripes', 'checker', 'noise')
  # Input pipeline: 'memory' (batches cut from in-memory arrays) or 'grain'
  # (the same batches through Grain; `folder` then decodes lazily). grain:
  # reader threads, and worker processes decoding (0: none).
  # The context encoder's view: '' (the image, as I-JEPA) or 'colour' (its
  # colours jittered per image: channel order, gain, offset, grey; the target
  # encoder sees the image; objective.colour_jitter). Pixel data only.
  c.data.context_augment = ''
  c.data.pipeline = 'memory'
  c.data.read_threads = 4
  c.data.workers = 0
  # Batches placed on the devices ahead of the step that uses them (0: each
  # batch placed when the step asks for it); never changes the results.
  c.data.prefetch_to_device = 2

  c.model = ml_collections.ConfigDict()
  c.model.patch_size = 2          # 8x8 digits -> 4x4 grid of 16 tokens
  c.model.patch_embed = 'conv'    # 'conv': pixels; 'colour': learned colour table
  c.model.num_colours = 10        # 'colour': colour ids 0..num_colours-1
  c.model.colour_dim = 16         # 'colour': width of a cell's colour embedding
  c.model.embed_dim = 64
  c.model.depth = 4
  c.model.num_heads = 4
  c.model.mlp_ratio = 4.0
  c.model.attention = 'flax'       # 'flax' MHA, or 'fused' (one qkv matmul, same params)
  # Computation dtype of the encoder and predictor: 'float32', or 'bfloat16'
  # (mixed precision: bf16 activations; params, optimizer state, VQ, losses float32).
  c.model.dtype = 'float32'
  c.model.predictor_dim = 32
  c.model.predictor_depth = 2
  c.model.predictor_num_heads = 4

  c.masking = ml_collections.ConfigDict()
  c.masking.num_target_blocks = 2
  c.masking.target_block_size = (2, 2)
  c.masking.context_block_size = (3, 3)
  c.masking.num_context_tokens = 8

  c.vq = ml_collections.ConfigDict()
  c.vq.enabled = True
  c.vq.codebook_size = 768
  c.vq.commitment_cost = 0.3
  c.vq.ema_decay = config_dict.placeholder(float)   # None -> gradient updates
  c.vq.ema_decay = 0.99
  # 'constant', or 'learning_rate': the EMA step size 1 - ema_decay scaled by
  # the learning rate's share of its peak after warm-up (vq.scheduled_decay).
  c.vq.ema_decay_schedule = 'constant'
  c.vq.epsilon = 1e-5
  c.vq.init_scale = 1.0
  # Commitment / codebook losses: 'mean' over elements (the field's convention:
  # PyTorch F.mse_loss in VQ-VAE code, Sonnet, Haiku) or 'sum' over the D dims
  # of a token (D x 'mean'). The reference variants (sixth_run, gentle and the
  # configs built on them) set 'sum', which reproduces the reference's collapse.
  c.vq.loss_reduction = 'mean'
  c.vq.refresh_enabled = True
  c.vq.refresh_interval = 500
  c.vq.refresh_usage_threshold = 0.05
  c.vq.refresh_warmup_steps = 0         # > 0: refresh every refresh_warmup_interval steps before
  c.vq.refresh_warmup_interval = 1      #      this step, then every refresh_interval
  c.vq.refresh_sampling = 'uniform'     # or 'far': distinct vectors, P ~ dist^2 to live codes
  c.vq.refresh_source = 'context'       # or 'full': refresh draws whole-image tokens (1 device)
  # Peak learning rate of the gradient-trained codebook and the quantizer's
  # own trainables (Option C, jepa_jax/step.py `_make_tx`); None: learning_rate.
  c.vq.codebook_learning_rate = config_dict.placeholder(float)
  c.vq.init = 'random'            # or 'kmeans': k-means++ on the encoder's tokens
  c.vq.kmeans_iters = 10          # Lloyd iterations after k-means++ seeding
  c.vq.kmeans_num_samples = 8192  # token embeddings of training images used
  # Anti-collapse options (jepa_jax/quantizer.py, anticollapse.py); all off by
  # default. See README "Anti-collapse options" for formulas and sources.
  c.vq.quantizer = 'vq'                 # 'vq' (codebook) or 'fsq' (no codebook)
  c.vq.fsq_levels = (8, 8, 4, 3)        # fsq: levels per dim; product = codebook_size
  c.vq.l2_normalize = False             # cosine codes and inputs
  c.vq.codebook_dim = config_dict.placeholder(int)  # None: embed_dim; else project
  c.vq.simvq = False                    # frozen random basis x learned linear map
  c.vq.estimator = 'straight_through'   # or 'rotation' (rotation trick), 'ibq'
  c.vq.ibq_temperature = 2.0            # 'ibq': softmax over -||u - e_k||^2 / T
  # 'nearest', or 'sinkhorn': balanced codes of each batch (OptVQ's entropic
  # OT on standardised distances; epsilon 0.1 and 5 iterations as OptVQ's).
  c.vq.assignment = 'nearest'
  c.vq.sinkhorn_epsilon = 0.1
  c.vq.sinkhorn_iters = 5
  # 'context', or 'target': the EMA codebook learns from the target encoder's
  # whole-image tokens (the codes' population) instead of the masked context.
  c.vq.update_source = 'context'
  # The encoder also gets the predictor's gradient unchanged, around the
  # projection and snap (out = decode(q) + z - sg(z)); projected or cosine layers.
  c.vq.identity_gradient = False
  c.vq.reanchor = False                 # CVQ online re-anchoring, every step
  c.vq.reanchor_strength = 1000.0       # alpha_k = exp(-strength K share_k - 1e-3); CVQ: 10/(1-0.99)
  c.vq.reanchor_threshold = 1.0         # codes at >= this x uniform share never move
  c.vq.reanchor_decay = 0.99            # running average of the usage shares
  c.vq.reanchor_steps = 0               # re-anchor during the first N train steps only; 0: every step

  c.loss = ml_collections.ConfigDict()
  c.loss.temperature_init = 0.1
  c.loss.temperature_min = 0.07
  c.loss.temperature_max = 0.15
  c.loss.infonce_weight = 1.0
  c.loss.sigreg_weight = 0.02
  c.loss.sigreg_num_slices = 256
  c.loss.sigreg_num_points = 17
  c.loss.invariance_weight = 0.1
  c.loss.relational_loss = ml_collections.ConfigDict()
  c.loss.relational_loss.weight = 0.05
  c.loss.relational_loss.context_self_weight = 0.025
  # LeJEPA-style global terms (Balestriero & LeCun 2025): the MSE of the
  # context encoder's mean token (the masked view) to the target encoder's
  # mean token of the whole image (0: off), and SIGReg on 'tokens' (every
  # context token, the reference) or 'pooled' (one mean token per image).
  c.loss.global_weight = 0.0
  c.loss.sigreg_input = 'tokens'
  c.loss.entropy_weight = 0.0           # assignment-entropy regulariser (0: off)
  c.loss.entropy_temperature = 1.0      # T of its soft assignments softmax(-d / T)

  c.train = ml_collections.ConfigDict()
  c.train.num_epochs = 80
  c.train.batch_size = 64
  c.train.steps_per_epoch = config_dict.placeholder(int)  # None: full epochs
  c.train.learning_rate = 1e-3
  c.train.warmup_epochs = 2
  c.train.min_learning_rate = 1e-5
  c.train.weight_decay = 0.05
  c.train.grad_clip_norm = 1.0
  c.train.ema_momentum_start = 0.996
  c.train.ema_momentum_end = 1.0
  # Embedding metrics (jepa_jax/measure.py) over the whole val split, every N
  # steps (1: the dense audit mode); points right after a refresh move one step
  # earlier. usage_window_steps: the window of vq_window_usage_ratio (codes the
  # train step assigned in its last N steps).
  c.train.embedding_metrics_every_steps = 50
  c.train.usage_window_steps = 200
  # With VQ, every point also counts the codes of a fixed train subset's
  # whole-image tokens (at most N images, drawn once from the seed; 0: off):
  # 1,024 digits x 16 tokens = 16,384 tokens, 21 per code at K = 768.
  c.train.usage_train_images = 1024
  c.train.log_every_steps = 10
  # Probe trajectory (jepa_jax/probe_trajectory.py): the linear probe of both
  # encoders on a fixed subset of labelled images (at most N train, M val,
  # drawn from the seed) at step 0, every N steps and at the last step; 0: off.
  c.train.probe_every_steps = 100
  c.train.probe_train_images = 2000
  c.train.probe_val_images = 1000
  c.train.early_stopping_patience = 10
  c.train.progress_bar = True
  c.train.compilation_cache_dir = '~/.cache/jepa_jax/xla'  # JAX's persistent cache; '': off

  c.parallel = ml_collections.ConfigDict()
  c.parallel.mode = 'auto'        # 'auto' ('jit' on > 1 device), 'jit', 'pmap'
  c.parallel.num_devices = config_dict.placeholder(int)   # None: all devices
  c.parallel.multihost = False    # True: jax.distributed.initialize() first
  c.parallel.coordinator_address = config_dict.placeholder(str)  # 'host:port'
  c.parallel.num_processes = config_dict.placeholder(int)
  c.parallel.process_id = config_dict.placeholder(int)

  # Collapse monitor (jepa_jax/monitor.py): alert and red-flag thresholds from
  # the reference's Monitoring Checklist / Red Flags. abort=True ends a run at
  # its first red flag with status 'aborted'.
  c.monitor = ml_collections.ConfigDict()
  c.monitor.abort = False
  c.monitor.usage_alert = 0.15
  c.monitor.usage_decline_checkpoints = 3
  c.monitor.rank_alert = 3.0
  c.monitor.val_increase_epochs = 2
  c.monitor.usage_abort = 0.10
  c.monitor.val_spike_factor = 1.5
  c.monitor.rank_abort = 1.0
  c.monitor.min_epochs = 60
  c.monitor.usage_from_epoch = 1    # usage rules from this (0-based) epoch on; 0: any point
  # The reference's Option-B decision rule (off by default): an abort-severity
  # event when usage < option_b_usage or the context effective rank <
  # option_b_rank within the first option_b_epoch epochs.
  c.monitor.option_b = False
  c.monitor.option_b_epoch = 15
  c.monitor.option_b_usage = 0.12
  c.monitor.option_b_rank = 4.0

  # Parameter groups kept fixed: any of 'encoder', 'target_encoder',
  # 'predictor', 'temperature' (no gradient, no update, no weight decay).
  c.train.frozen = ()

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = config_dict.placeholder(int)  # None: epoch ends only
  c.checkpoint.every_steps = 500  # and at the epoch ends below
  c.checkpoint.every_epochs = 1   # epoch ends saved: every N-th, the last, and on a stop
  c.checkpoint.keep = 3           # latest N kept, plus the best by val loss
  c.checkpoint.allow_config_change = False  # resume a workdir of another config
  # Train again from step 0 in a workdir whose outputs (final weights, logs)
  # have no usable checkpoint; they are moved to WORKDIR/previous-<n>/ first.
  c.checkpoint.restart = False
  return c


def get_config(arg=None):
  return with_variant(build(), arg)


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
