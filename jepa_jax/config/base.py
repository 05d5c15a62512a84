"""Shared defaults for every jepa_jax variant.

Values follow the reference system: a 768-code codebook, the sixth-run VQ
settings (commitment 0.3, EMA decay 0.99, refresh every 500 steps below 5% of
the uniform share; sixth_run.py scales the interval to digits' epoch), VQ
losses as element means (the field's convention), temperature in [0.07, 0.15],
relational weights 0.05 / 0.025. Model and schedule sizes are scaled to the
embedded digits data so a run fits a laptop CPU.

The one place every default is written, inside the package, so an installed
jepa_jax has them. Every config file of the repository's `configs/` defines
`build()` (its config, no variant) and `get_config(arg=None)`,
`with_variant(build(), arg)` (variant strings: `variants.py`), building on
each other by imports; `configs/base.py` re-exports this module.

`base()` is that file's config, every key at its default. Code below the
config files reads every key from the config it is given, never a default of
its own; a config that lacks keys is completed here first:

* `fill_added_keys`: a run folder's config.json written before a key existed
  reads as if the key had the value that gives the behaviour of the runs
  that predate it: its base.py default, except the keys of `OLD_VALUES`,
  whose default for new configs changed when they were added (old runs
  summed the VQ losses over D, judged usage from epoch 0, logged no
  probe trajectory and counted no train-split codes).
* `with_defaults`: a group of a config (e.g. `monitor`) with every key it
  lacks at its base.py default.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict
from typing import Any, Dict

# Re-exported: a config file applies a variant string as base.with_variant.
from jepa_jax.config.variants import (  # noqa: F401
    TINY, VARIANTS, apply_arc, apply_shapes, apply_tiny, apply_vit, parse_variant,
    with_variant)
from jepa_jax.config import keys as config_keys


def build():
  """Every key of a jepa_jax config with its default (no variant applied)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.variant = 'base'
  # Start from another run's checkpoint (params and target encoder; fresh
  # optimizer and VQ state): PATH (a workdir or its checkpoints/, latest step)
  # or PATH/STEP. '' = from scratch. Ignored once the run has checkpoints.
  c.init_from = ''
  # Param groups init_from leaves fresh ('encoder', 'target_encoder',
  # 'predictor', 'temperature'), e.g. a fresh predictor on another's encoders.
  c.init_from_skip = ()

  for group in (_data_and_model, _vq, _loss_and_train, _devices_monitor_checkpoints):
    group(c)
  return c


def _data_and_model(c) -> None:
  """The data, model and masking groups."""
  c.data = ml_collections.ConfigDict()
  c.data.name = 'digits'
  c.data.val_fraction = 0.15      # fixed split: 1,527 train / 270 val digits
  c.data.split_seed = 0
  c.data.path = config_dict.placeholder(str)  # npz: the .npz file; folder, arrayrecord: the folder
  c.data.arc_version = 'arc-agi-1'            # arc: 'arc-agi-1', 'kaggle2019', 'arc-agi-2'
  c.data.canvas_size = 30                     # arc: grids padded to a 30x30 canvas
  c.data.image_size = (32, 32)                # folder, arrayrecord: resized to (rows, cols)
  c.data.channels = 1                         # folder, arrayrecord: 1 grayscale, 3 RGB
  # shapes (jepa_jax/data/shapes.py; image_size, channels, split_seed apply too):
  c.data.shapes_train_size = 50_000           # images per split
  c.data.shapes_val_size = 12_800            # 819,200 tokens at 64 a image: 100 a code at K = 8,192
  c.data.shapes_classes = 8                   # object classes (2..10)
  c.data.shapes_scale_range = (0.2, 0.32)     # main object's radius / image side
  c.data.shapes_max_rotation = 180.0          # angle uniform in +-this, degrees
  c.data.shapes_max_distractors = 4           # smaller objects, 0..this per image
  c.data.shapes_distractor_scale_range = (0.07, 0.11)  # their radius / image side
  c.data.shapes_backgrounds = ('flat', 'gradient', 'stripes', 'checker', 'noise')
  # The encoders' views (pixel data only; masking.context_view): the context
  # encoder's '' (the image, as I-JEPA), 'colour' (colours jittered per image),
  # 'crop' (a random resized crop, mirrored; pooled terms only; its share of
  # the area uniform in crop_area: SimCLR and LeJEPA's example take (0.08, 1))
  # or 'colour+crop'; the target encoder's '' or 'colour' (a draw of its own).
  c.data.context_augment = ''
  c.data.target_augment = ''
  c.data.crop_area = (0.3, 1.0)
  # Input pipeline: 'memory' (batches cut from in-memory arrays) or 'grain' (the
  # same batches through Grain; reader threads, worker processes decoding).
  c.data.pipeline = 'memory'
  c.data.read_threads = 4
  c.data.workers = 0
  # Batches placed on the devices ahead of their step (0: none); never changes results.
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


def _vq(c) -> None:
  """The quantizer group."""
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
  # own trainables (Option C, jepa_jax/train/step.py `_make_tx`); None: learning_rate.
  c.vq.codebook_learning_rate = config_dict.placeholder(float)
  c.vq.init = 'random'            # or 'kmeans': k-means++ on the encoder's tokens
  c.vq.kmeans_iters = 10          # Lloyd iterations after k-means++ seeding
  c.vq.kmeans_num_samples = 8192  # token embeddings of training images used
  # Anti-collapse options (jepa_jax/vq/quantizer.py, anticollapse.py); all off by
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
  # 'target' / 'context_whole': the EMA codebook learns from the target /
  # context encoder's whole-image tokens instead of the masked context.
  c.vq.update_source = 'context'
  c.vq.placement = 'bottleneck'   # 'beside': the predictor sees unquantized tokens
  # The encoder also gets the predictor's gradient unchanged, around the
  # projection and snap (out = decode(q) + z - sg(z)); projected or cosine layers.
  c.vq.identity_gradient = False
  c.vq.reanchor = False                 # CVQ online re-anchoring, every step
  c.vq.reanchor_strength = 1000.0       # alpha_k = exp(-strength K share_k - 1e-3); CVQ: 10/(1-0.99)
  c.vq.reanchor_threshold = 1.0         # codes at >= this x uniform share never move
  c.vq.reanchor_decay = 0.99            # running average of the usage shares
  c.vq.reanchor_steps = 0               # re-anchor during the first N train steps only; 0: every step



def _loss_and_train(c) -> None:
  """The loss and train groups."""
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
  # LeJEPA-style global terms (Balestriero & LeCun 2025): the MSE of the context
  # encoder's mean token (the masked view) to the target encoder's mean token of
  # the whole image (0: off); SIGReg on 'tokens' (every context token) or 'pooled'.
  c.loss.global_weight = 0.0
  # The same pair under InfoNCE over the batch (0: off; instance
  # discrimination, SimCLR / MoCo v3) at the learnable temperature.
  c.loss.global_infonce_weight = 0.0
  # The same pair under DINO's self-distillation (0: off; Caron et al. 2021;
  # DINOv2's Sinkhorn-Knopp centring, DINO's temperatures; docs/configs.md).
  c.loss.global_dino_weight = 0.0
  c.loss.dino_prototypes = 256
  c.loss.dino_student_temperature = 0.1
  c.loss.dino_teacher_temperature = 0.04
  # CAPI (0: off; Darcet et al. 2025): the predictions must give the online
  # clusters of the target tokens, CAPI's temperatures (docs/configs.md).
  c.loss.capi_weight = 0.0
  c.loss.capi_clusters = 256
  c.loss.capi_student_temperature = 0.12
  c.loss.capi_target_temperature = 0.06
  c.loss.capi_clustering_temperature = 0.12
  c.loss.pixel_weight = 0.0             # MAE's target (0: off; He et al. 2022): the pixels
  c.loss.sigreg_input = 'tokens'
  c.loss.target_layers = 1              # > 1: data2vec's mean of the top K blocks as targets
  # LeJEPA's own objective (0: off; objective/multiview.py): V views of each image
  # under data.context_augment, one encoder, a projector of these widths, and
  # (1 - lambda) x the views' spread + lambda x SIGReg; replaces the terms above.
  c.loss.views = 0
  c.loss.views_lambda = 0.02
  c.loss.views_projector = (256, 256, 16)
  c.loss.views_local = 0                # local views (0: none), regressed on the V views' mean:
  c.loss.views_local_size = 16          # their side in pixels, their crops' area shares
  c.loss.views_local_area = (0.05, 0.3)
  c.loss.entropy_weight = 0.0           # assignment-entropy regulariser (0: off)
  c.loss.entropy_temperature = 1.0      # T of its soft assignments softmax(-d / T)

  c.train = ml_collections.ConfigDict()
  c.train.num_epochs = 80
  c.train.batch_size = 64
  c.train.steps_per_epoch = config_dict.placeholder(int)  # None: full epochs
  c.train.learning_rate = 1e-3
  c.train.warmup_epochs = 2.0          # may be a fraction of an epoch (rounded to steps)
  c.train.min_learning_rate = 1e-5
  c.train.weight_decay = 0.05
  c.train.grad_clip_norm = 1.0
  c.train.ema_momentum_start = 0.996
  c.train.ema_momentum_end = 1.0
  # Embedding metrics (jepa_jax/eval/measure.py) over the whole val split, every N
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
  # Probe trajectory (jepa_jax/eval/trajectory.py): the linear probe of both
  # encoders on a fixed subset of labelled images (at most N train, M val,
  # drawn from the seed) at step 0, every N steps and at the last step; 0: off.
  c.train.probe_every_steps = 100
  c.train.probe_train_images = 2000
  c.train.probe_val_images = 1000
  c.train.early_stopping_patience = 10
  c.train.progress_bar = True
  c.train.compilation_cache_dir = '~/.cache/jepa_jax/xla'  # JAX's persistent cache; '': off



def _devices_monitor_checkpoints(c) -> None:
  """The parallel, monitor and checkpoint groups."""
  c.parallel = ml_collections.ConfigDict()
  c.parallel.mode = 'auto'        # 'auto' ('jit' on > 1 device), 'jit', 'pmap'
  c.parallel.num_devices = config_dict.placeholder(int)   # None: all devices
  c.parallel.multihost = False    # True: jax.distributed.initialize() first
  c.parallel.coordinator_address = config_dict.placeholder(str)  # 'host:port'
  c.parallel.num_processes = config_dict.placeholder(int)
  c.parallel.process_id = config_dict.placeholder(int)

  # Collapse monitor (jepa_jax/train/monitor.py): alert and red-flag thresholds from
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


def get_config(arg=None):
  return with_variant(build(), arg)


# Keys added after run folders were first written, in the order they came.
ADDED = (
    'init_from', 'train.frozen', 'model.attention',
    'checkpoint.every_steps', 'checkpoint.every_epochs', 'checkpoint.keep',
    'checkpoint.allow_config_change', 'checkpoint.restart',
    'vq.init', 'vq.kmeans_iters', 'vq.kmeans_num_samples',
    'vq.quantizer', 'vq.fsq_levels', 'vq.l2_normalize', 'vq.codebook_dim', 'vq.simvq',
    'vq.estimator', 'vq.reanchor', 'vq.reanchor_strength', 'vq.reanchor_threshold',
    'vq.reanchor_decay', 'vq.refresh_warmup_steps', 'vq.refresh_warmup_interval',
    'vq.refresh_sampling', 'vq.refresh_source', 'vq.loss_reduction',
    'monitor.usage_from_epoch', 'train.usage_window_steps',
    'loss.entropy_weight', 'loss.entropy_temperature',
    'data.pipeline', 'data.read_threads', 'data.workers',
    'vq.codebook_learning_rate', 'vq.ema_decay_schedule', 'train.compilation_cache_dir',
    'monitor.option_b', 'monitor.option_b_epoch', 'monitor.option_b_usage',
    'monitor.option_b_rank', 'vq.reanchor_steps', 'data.prefetch_to_device',
    'init_from_skip', 'vq.identity_gradient', 'loss.global_weight', 'loss.sigreg_input',
    'loss.global_infonce_weight', 'loss.global_dino_weight', 'loss.dino_prototypes',
    'loss.dino_student_temperature', 'loss.dino_teacher_temperature',
    'train.probe_every_steps', 'train.probe_train_images', 'train.probe_val_images',
    'model.dtype', 'train.usage_train_images',
    'data.shapes_train_size', 'data.shapes_val_size', 'data.shapes_classes',
    'data.shapes_scale_range', 'data.shapes_max_rotation', 'data.shapes_max_distractors',
    'data.shapes_distractor_scale_range', 'data.shapes_backgrounds',
    'data.context_augment', 'data.target_augment',
    'vq.ibq_temperature', 'vq.assignment', 'vq.sinkhorn_epsilon', 'vq.sinkhorn_iters',
    'vq.update_source', 'loss.capi_weight', 'loss.capi_clusters',
    'loss.capi_student_temperature', 'loss.capi_target_temperature',
    'loss.capi_clustering_temperature', 'loss.pixel_weight', 'vq.placement',
    'loss.target_layers', 'loss.views', 'loss.views_lambda', 'loss.views_projector',
    'data.crop_area', 'loss.views_local', 'loss.views_local_size', 'loss.views_local_area',
)
# Added keys whose value for older runs is not their base.py default.
OLD_VALUES = {'vq.loss_reduction': 'sum', 'monitor.usage_from_epoch': 0,
              'train.probe_every_steps': 0, 'train.usage_train_images': 0}
NEW_DEFAULTS = tuple(OLD_VALUES)


def base():
  """Every key at its default (a fresh copy; `jepa_jax.config.base.build`)."""
  return build()


def added_keys() -> Dict[str, Any]:
  """{key: the value a config written before `key` existed reads it as}."""
  defaults = base()
  return {key: OLD_VALUES[key] if key in OLD_VALUES else config_keys.get(defaults, key)
          for key in ADDED}


ADDED_KEYS = added_keys()


def fill_added_keys(cfg):
  """`cfg` (e.g. a run's config.json as a ConfigDict) with every key of
  ADDED_KEYS it lacks set to that value; keys it has are left alone."""
  import ml_collections  # noqa: PLC0415
  for key, value in ADDED_KEYS.items():
    if not config_keys.has(cfg, key):
      config_keys.put(cfg, key, value, make_group=ml_collections.ConfigDict)
  return cfg


def with_defaults(group: str, values) -> Dict[str, Any]:
  """The keys of base.py's `group` (e.g. 'monitor') as a dict, those
  `values` (a mapping, or None) has taken from it."""
  out = base()[group].to_dict()
  out.update({k: v for k, v in (values or {}).items() if k in out})
  return out


class _Missing:
  """The value a key the config lacks shows in its ConfigError."""

  def __repr__(self):
    return 'missing'


MISSING = _Missing()


def missing_keys(cfg):
  """The keys of jepa_jax/config/base.py that `cfg` lacks, in base.py's order (a run
  folder's config.json from before a key existed: `fill_added_keys` first)."""
  return [key for key in config_keys.leaf_keys(base()) if not config_keys.has(cfg, key)]
