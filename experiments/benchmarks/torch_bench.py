"""The PyTorch side: the same JEPA step built from torch.nn layers, and
vector-quantize-pytorch's VectorQuantize.

The model mirrors jepa_jax's (jepa_jax/model/vit.py): patch-embedding conv, fixed
2-D sin-cos positions, pre-norm blocks (LayerNorm, multi-head attention, GELU
MLP of ratio 4), final LayerNorm; a narrow predictor with a learned mask token;
an EMA target encoder; the same losses (InfoNCE with a learnable clamped
temperature, SIGReg, invariance, relational) and AdamW with gradient clipping.
The VQ bottleneck is vector-quantize-pytorch's `VectorQuantize` with EMA
updates (same codebook size, decay and commitment weight). Only imported when
torch is installed (`pip install -e '.[bench]'`).
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from experiments.benchmarks import common
from jepa_jax.model.vit import sincos_pos_embed_2d

DEVICE = torch.device('cpu')


def set_device(name: str) -> None:
  """Run the PyTorch side on `name` ('cpu' or 'cuda'); timings synchronize it."""
  global DEVICE
  DEVICE = torch.device(name)


def _sync() -> None:
  if DEVICE.type == 'cuda':
    torch.cuda.synchronize()


class Block(nn.Module):

  def __init__(self, dim, heads, mlp_ratio=4.0):
    super().__init__()
    self.heads = heads
    self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
    self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
    self.fc1, self.fc2 = nn.Linear(dim, int(mlp_ratio * dim)), nn.Linear(int(mlp_ratio * dim), dim)

  def forward(self, x):
    b, n, d = x.shape
    q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(
        2, 0, 3, 1, 4)
    a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
    x = x + self.proj(a)
    return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def _gather(x, idx):
  return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))


class Encoder(nn.Module):

  def __init__(self, image, patch, dim, depth, heads):
    super().__init__()
    self.patch_embed = nn.Conv2d(1, dim, patch, stride=patch)
    g = image // patch
    self.register_buffer('pos', torch.from_numpy(sincos_pos_embed_2d(dim, g, g))[None])
    self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
    self.norm = nn.LayerNorm(dim)

  def forward(self, images, idx=None):
    x = self.patch_embed(images).flatten(2).transpose(1, 2) + self.pos
    if idx is not None:
      x = _gather(x, idx)
    for blk in self.blocks:
      x = blk(x)
    return self.norm(x)


class Predictor(nn.Module):

  def __init__(self, grid, dim, pred_dim, depth, heads):
    super().__init__()
    self.embed, self.proj = nn.Linear(dim, pred_dim), nn.Linear(pred_dim, dim)
    self.mask_token = nn.Parameter(torch.zeros(pred_dim).normal_(std=0.02))
    self.register_buffer('pos', torch.from_numpy(sincos_pos_embed_2d(pred_dim, grid, grid)))
    self.blocks = nn.ModuleList([Block(pred_dim, heads) for _ in range(depth)])
    self.norm = nn.LayerNorm(pred_dim)

  def forward(self, ctx, ctx_idx, tgt_idx):
    b, k, _ = ctx.shape
    _, m, t = tgt_idx.shape
    x = self.embed(ctx) + self.pos[ctx_idx]
    q = self.mask_token + self.pos[tgt_idx]
    x = torch.cat([x[:, None].expand(b, m, k, -1), q], 2).reshape(b * m, k + t, -1)
    for blk in self.blocks:
      x = blk(x)
    return self.proj(self.norm(x)[:, k:]).reshape(b, m, t, -1)


def infonce(p, t, tau):
  logits = F.normalize(p, dim=-1) @ F.normalize(t, dim=-1).T / tau
  return F.cross_entropy(logits, torch.arange(len(p), device=p.device))


def sigreg(x, num_slices=256, num_points=17, t_max=3.0):
  a = F.normalize(torch.randn(x.shape[1], num_slices, device=x.device), dim=0)
  y = x @ a                                                      # (N, S)
  t = torch.linspace(0, t_max, num_points, device=x.device)
  w = torch.full((num_points,), 2 * t_max / (num_points - 1), device=x.device)
  w[0] = w[-1] = t_max / (num_points - 1)
  phi = torch.exp(-t ** 2 / 2)
  yt = y[..., None] * t                                          # (N, S, P)
  err = (yt.cos().mean(0) - phi) ** 2 + yt.sin().mean(0) ** 2      # (S, P)
  return (err * phi * w).sum(-1).mean() * x.shape[0]


def relational(a, b):
  sa, sb = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
  d = (sa @ sa.T - sb @ sb.T) ** 2
  n = len(a)
  return (d.sum() - d.diagonal().sum()) / (n * (n - 1))


def masks(batch, grid, m, th, tw, k):
  """Random target blocks and a K-token context without targets (torch ops)."""
  n = grid * grid
  d = DEVICE
  r = torch.randint(0, grid - th + 1, (batch, m), device=d)
  c = torch.randint(0, grid - tw + 1, (batch, m), device=d)
  rows = r[..., None, None] + torch.arange(th, device=d)[:, None]
  cols = c[..., None, None] + torch.arange(tw, device=d)[None, :]
  tgt = (rows * grid + cols).reshape(batch, m, th * tw)
  is_tgt = torch.zeros(batch, n, dtype=torch.bool, device=d).scatter_(
      1, tgt.reshape(batch, -1), True)
  prio = torch.rand(batch, n, device=d).masked_fill(is_tgt, -math.inf)
  return prio.topk(k, dim=1).indices.sort(1).values, tgt


class JepaStep:
  """One full training step of the PyTorch JEPA (eager or torch.compile'd)."""

  def __init__(self, cfg, image, compile_model=False):
    from vector_quantize_pytorch import VectorQuantize
    mc = cfg.model
    self.cfg = cfg
    self.grid = image // mc.patch_size
    self.encoder = Encoder(image, mc.patch_size, mc.embed_dim, mc.depth, mc.num_heads)
    self.target = Encoder(image, mc.patch_size, mc.embed_dim, mc.depth, mc.num_heads)
    self.target.load_state_dict(self.encoder.state_dict())
    self.target.requires_grad_(False)
    self.predictor = Predictor(self.grid, mc.embed_dim, mc.predictor_dim,
                               mc.predictor_depth, mc.predictor_num_heads)
    self.vq = VectorQuantize(dim=mc.embed_dim, codebook_size=cfg.vq.codebook_size,
                             decay=cfg.vq.ema_decay,
                             commitment_weight=cfg.vq.commitment_cost)
    for module in (self.encoder, self.target, self.predictor, self.vq):
      module.to(DEVICE)
    self.tau = nn.Parameter(torch.tensor(cfg.loss.temperature_init, device=DEVICE))
    params = list(self.encoder.parameters()) + list(self.predictor.parameters()) + [self.tau]
    self.params = params
    self.opt = torch.optim.AdamW(params, lr=cfg.train.learning_rate,
                                 weight_decay=cfg.train.weight_decay)
    self.forward = torch.compile(self._forward) if compile_model else self._forward

  def _forward(self, images, ctx_idx, tgt_idx):
    lc = self.cfg.loss
    z = self.encoder(images, ctx_idx)
    with torch.no_grad():
      t_full = self.target(images)
    b, m, t = tgt_idx.shape
    tgt = _gather(t_full, tgt_idx.reshape(b, m * t)).reshape(b, m, t, -1)
    q, _, commit = self.vq(z)
    pred = self.predictor(q, ctx_idx, tgt_idx)
    d = z.shape[-1]
    p_flat, t_flat = pred.reshape(-1, d), tgt.reshape(-1, d)
    return (lc.infonce_weight * infonce(p_flat, t_flat, self.tau)
            + lc.sigreg_weight * sigreg(z.reshape(-1, d), lc.sigreg_num_slices,
                                        lc.sigreg_num_points)
            + lc.invariance_weight * F.mse_loss(p_flat, t_flat)
            + lc.relational_loss.weight * relational(pred.mean((1, 2)), tgt.mean((1, 2)))
            + lc.relational_loss.context_self_weight * relational(z.mean(1), t_full.mean(1))
            + commit.sum())

  def __call__(self, images):
    mc = self.cfg.masking
    ctx_idx, tgt_idx = masks(images.shape[0], self.grid, mc.num_target_blocks,
                             *mc.target_block_size, mc.num_context_tokens)
    loss = self.forward(images, ctx_idx, tgt_idx)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.params, self.cfg.train.grad_clip_norm)
    self.opt.step()
    with torch.no_grad():
      self.tau.clamp_(self.cfg.loss.temperature_min, self.cfg.loss.temperature_max)
      m = self.cfg.train.ema_momentum_start
      tp, op = list(self.target.parameters()), list(self.encoder.parameters())
      torch._foreach_mul_(tp, m)
      torch._foreach_add_(tp, op, alpha=1 - m)
    return loss.item()


def train_step_call(cfg, image, batch, compile_model=False):
  """(run, info): `run()` takes one train step (synchronised); info: the
  first call's seconds (torch.compile's compile included)."""
  import time  # noqa: PLC0415
  torch.manual_seed(0)
  step = JepaStep(cfg, image, compile_model)
  images = torch.from_numpy(
      np.random.default_rng(0).standard_normal((batch, 1, image, image)).astype(np.float32)
  ).to(DEVICE)
  t0 = time.perf_counter()
  step(images)                      # first call: includes torch.compile's compile
  return (lambda: step(images)), {'first_call_s': time.perf_counter() - t0}


def vq_layer(tokens, dim, codes, decay, warmup, reps) -> Dict[str, float]:
  """VectorQuantize forward in training mode (nearest codes + EMA update)."""
  from vector_quantize_pytorch import VectorQuantize
  torch.manual_seed(0)
  layer = VectorQuantize(dim=dim, codebook_size=codes, decay=decay, commitment_weight=0.0)
  layer.to(DEVICE).train()
  z = torch.randn(1, tokens, dim, device=DEVICE)

  def run():
    with torch.no_grad():
      layer(z)
    _sync()

  return common.summarize(common.time_calls(run, warmup, reps))


def matmul_peak(n: int, reps: int) -> Dict[str, float]:
  a, b = torch.randn(n, n, device=DEVICE), torch.randn(n, n, device=DEVICE)

  def run():
    a @ b
    _sync()

  stats = common.summarize(common.time_calls(run, 2, reps))
  stats['gflops'] = 2 * n ** 3 / (stats['min_ms'] / 1e3) / 1e9
  return stats
