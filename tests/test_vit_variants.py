"""Variant strings vit_s16 / vit_b16: valid configs of ViT-S/16 and ViT-B/16
size at 224 px (parameter counts from shapes only) and a forward pass of the
full-size encoders on a few tiny images. Nothing here trains them."""
import types

import jax
import numpy as np
import pytest

from jepa_jax.config import load as config_lib
from jepa_jax.model import vit as model_lib
from jepa_jax.train import step as step_lib
from conftest import load

# Whole runs or subprocesses: left out of the fast subset (pytest -m 'not slow').
pytestmark = pytest.mark.slow

# Encoder parameters of ViT-S/16 (22.0 M with its class token and head,
# which a JEPA encoder has neither of) and ViT-B/16 (86.6 M, likewise).
EXPECTED = {'vit_s16': (384, 21.6e6), 'vit_b16': (768, 85.6e6)}


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize('variant', sorted(EXPECTED))
def test_vit_variant_is_valid_at_224_px_with_vit_sizes(variant):
  cfg = load('gentle', variant)
  assert cfg.data.name == 'folder' and cfg.data.pipeline == 'grain'
  with pytest.raises(config_lib.ConfigError, match='data.path'):
    config_lib.validate(cfg)                     # the folder must be named
  cfg.data.path = '/data/imagenet/train'
  config_lib.validate(cfg)
  assert config_lib.check_against_data(cfg, (224, 224, 3)) == (14, 14)
  ds = types.SimpleNamespace(image_shape=(224, 224, 3), num_colours=None,
                             train_images=np.zeros((1024, 1)), val_images=np.zeros((64, 1)))
  setup = step_lib.make_setup(cfg, ds)
  state = jax.eval_shape(lambda: step_lib.init_state(setup, ds.image_shape, 0))
  width, params = EXPECTED[variant]
  enc = state['params']['encoder']
  assert enc['params']['patch_embed']['kernel'].shape == (16, 16, 3, width)
  assert abs(_count(enc) - params) / params < 0.01, _count(enc)
  assert 5e6 < _count(state['params']['predictor']) < 15e6


# vit_s16 only: vit_b16 runs the same code at twice the width (its shapes are
# checked above without allocating them); its 86M-parameter forward cost the
# suite ~15 s.
@pytest.mark.parametrize('variant', ['vit_s16'])
def test_full_size_encoder_runs_forward_on_tiny_images(variant):
  cfg = load('gentle', variant)
  encoder = model_lib.make_encoder(cfg.model)
  images = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
  params = jax.jit(encoder.init)(jax.random.PRNGKey(0), images)
  out = np.asarray(jax.jit(encoder.apply)(params, images))
  assert out.shape == (2, 4, EXPECTED[variant][0]) and np.all(np.isfinite(out))


def test_vit_then_tiny_gives_a_tiny_model_on_224_px():
  cfg = load('gentle', 'vit_s16,tiny')
  cfg.data.path = 'x'
  config_lib.validate(cfg)
  assert cfg.model.embed_dim == 16 and cfg.data.image_size == (224, 224)
  assert config_lib.check_against_data(cfg, (224, 224, 3)) == (14, 14)
