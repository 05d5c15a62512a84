"""Measurement points: when the embedding metrics are taken, and what they record.

At every measurement point the whole validation split is encoded, unmasked,
by the context and target encoders (one jitted call, compiled once), and the
context encoder's tokens are also encoded under the fixed validation masks,
as the train step sees them; with VQ the context encoder also encodes, unmasked,
a fixed subset of the train split (`train_subset`: at most
`train.usage_train_images` images drawn once from the seed), the population
the codes are for. One record of `embedding_metrics.jsonl` then holds:

  context_/target_effective_rank   RankMe of the per-image mean tokens (float64)
  context_/target_isotropy         lambda_min / lambda_max of their covariance
                                   (float64, from singular values): ~1e-16
                                   for LayerNorm-ed features by construction
  context_/target_isotropy_ln      the same without the smallest eigenvalue
                                   (the LayerNorm's null direction, see
                                   `metrics.isotropy_f64`)
  context_/target_spread           entropy effective rank of that covariance
                                   (`metrics.centred_effective_rank`): the
                                   well-conditioned spread measure
and with VQ (`codebook_health` for the definitions):
  vq_usage_ratio, vq_codes_used, vq_perplexity, vq_dead_codes, vq_codes_ge5
                                   codes of every whole-image val token
  vq_context_*                     the same for the masked-context tokens
  vq_train_*                       the same for the train subset's
                                   whole-image tokens, with
                                   vq_train_perplexity_ratio (perplexity / K)
                                   and vq_train_tokens
  vq_val_usage_ceiling             the val usage expected from the train
                                   shares at the val token count
                                   (`codebook_health.train_usage`)
  vq_churn                         share of whole-image val tokens whose code
                                   changed since the previous point
  vq_churn_epoch                   the same since the last point of an earlier
                                   epoch (step: vq_churn_epoch_since); at the
                                   run's end, the churn of its last epoch
  vq_window_usage_ratio            codes the train step assigned in its last
                                   `usage_window_steps` steps
  vq_restarts, vq_restarts_total, vq_restarted_share, vq_code_age_median,
  vq_young_share                   refresh restarts and code age (codebooks)
  vq_restarts_warmup               vq_restarts_total at the last point at or
                                   before the warm-up end (`warmup_end`)

Phase-free points (`Schedule`): the nominal points are every
`train.embedding_metrics_every_steps` steps, the run's last step, the
step at `GOAL_BOUNDARY` (10%) of the run and the warm-up end (`warmup_end`:
the later of that and the refresh warm-up), where restarts are split into
warm-up and after (`jepa_jax/eval/goals.py`). A point
whose preceding train step refreshed the codebook is taken just BEFORE that
step instead, i.e. on the state one step earlier (its record carries the step
count of the state measured), so a record never shows a codebook right after
a restart. With every step a point
(the dense audit mode, `embedding_metrics_every_steps=1`) every state is
measured and nothing is moved.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

import jax
import numpy as np

from jepa_jax.eval import metrics as metrics_lib
from jepa_jax.model import masking
from jepa_jax.model import vit as model_lib
from jepa_jax.train import step as step_lib
from jepa_jax.vq import anticollapse as ac
from jepa_jax.vq import health
from jepa_jax.vq import quantizer as quantizer_lib
from jepa_jax.vq import spec as quantizer_spec


# The share of a run after which restarts are judged: a measurement point is
# placed at floor(GOAL_BOUNDARY * total steps), and one at the warm-up end
# (both defined in `codebook_health`, read by the run reports without JAX).
GOAL_BOUNDARY = health.GOAL_BOUNDARY
warmup_end = health.warmup_end


def train_subset(num_train: int, max_images: int, seed: int) -> np.ndarray:
  """The train images whose whole-image codes are counted at every point:
  at most `max_images` of range(num_train), sorted, drawn without replacement
  once by numpy.random.default_rng([seed, 2]) (a stream of its own: not the
  probe subset's); all when there are fewer."""
  rng = np.random.default_rng([int(seed), 2])
  return np.sort(rng.permutation(num_train)[:max(int(max_images), 0)])


def point_images(dataset, max_train: int, seed: int, vq_enabled: bool):
  """(val images, train subset or None): the arguments after the state of
  `make_device_fn`'s function at every point (the train subset only with VQ)."""
  if not (vq_enabled and max_train):
    return dataset.val_images, None
  return dataset.val_images, dataset.train_images[
      train_subset(len(dataset.train_images), max_train, seed)]


@dataclasses.dataclass(frozen=True)
class Schedule:
  """When to measure (module docstring). refresh_* mirror the quantizer's
  refresh schedule (`quantizer_spec.Refresh`; interval 0: no refresh)."""
  every: int
  total_steps: int
  refresh_interval: int = 0
  refresh_warmup_steps: int = 0
  refresh_warmup_interval: int = 1
  boundary: int = 0          # an extra nominal point (0: none)
  warmup_end: int = 0        # another (`warmup_end`; 0: none)

  @classmethod
  def from_config(cls, cfg, total_steps: int) -> 'Schedule':
    """The schedule of a config: its metrics interval and its quantizer's
    refresh (`quantizer_spec.make_spec`; none without VQ or for FSQ)."""
    spec = quantizer_spec.make_spec(cfg)
    r = spec.refresh if spec is not None else None
    boundary = int(GOAL_BOUNDARY * total_steps)
    return cls(every=cfg.train.embedding_metrics_every_steps, total_steps=total_steps,
               refresh_interval=r.interval if r else 0,
               refresh_warmup_steps=r.warmup_steps if r else 0,
               refresh_warmup_interval=r.warmup_interval if r else 1,
               boundary=boundary, warmup_end=warmup_end(
                   total_steps, r.interval if r else 0, r.warmup_steps if r else 0))

  def refreshes(self, t: int) -> bool:
    """Whether train step t (0-based) refreshes (`anticollapse.refresh_due_host`)."""
    return bool(self.refresh_interval) and ac.refresh_due_host(
        t, self.refresh_interval, self.refresh_warmup_steps,
        self.refresh_warmup_interval)

  def nominal(self, s: int) -> bool:
    return (s % self.every == 0 or s == self.total_steps or s == self.boundary
            or s == self.warmup_end)

  def measures(self, s: int) -> bool:
    """Whether the state with s >= 1 steps taken is measured (right after
    train step s - 1, before anything is saved): a nominal point that no
    refresh just preceded, or the state just before the refreshing step that
    would have produced a nominal point."""
    if self.every == 1:
      return True
    after = self.nominal(s) and not self.refreshes(s - 1)
    before = s < self.total_steps and self.nominal(s + 1) and self.refreshes(s)
    return after or before


# Images encoded at once at a point: the split is cut into chunks of this
# many (one traced `lax.map`, still one compiled call), so the activations of
# one chunk are held, not those of the whole split (12,800 shapes images:
# ~7 GB at once). Never changes the result: every image is encoded alone.
CHUNK = 1024


def map_chunks(f, images, chunk: int = CHUNK):
  """f(images[i:i + chunk], ids) for each chunk inside one traced call
  (`lax.map`), outputs concatenated and cut back to len(images): ids are the
  images' global indices (int32); the last chunk is padded with zero images,
  whose outputs are dropped. f returns a pytree of arrays with a leading
  per-image axis (None leaves allowed)."""
  n = images.shape[0]
  if n <= chunk:
    return f(images, jax.numpy.arange(n, dtype=jax.numpy.int32))
  m = -(-n // chunk)
  pad = jax.numpy.zeros((m * chunk - n,) + images.shape[1:], images.dtype)
  x = jax.numpy.concatenate([images, pad]).reshape((m, chunk) + images.shape[1:])
  ids = jax.numpy.arange(m * chunk, dtype=jax.numpy.int32).reshape(m, chunk)
  out = jax.lax.map(lambda a: f(*a), (x, ids))
  return jax.tree.map(lambda y: y.reshape((m * chunk,) + y.shape[2:])[:n], out)


def make_device_fn(setup, seed: int, chunk: int = CHUNK):
  """fn(state, images, train_images=None) -> arrays of one measurement
  (jittable, no state change), the images encoded `chunk` at a time
  (`map_chunks`).

  'ctx_mean' / 'tgt_mean' (N, D) per-image mean tokens (valid tokens only on
  padded data, `model.pool_tokens`); with VQ 'codes' (N, T) whole-image codes,
  'valid' (N, T) or None, 'ctx_codes' (N, C) the codes of the masked-context
  tokens under the validation masks (`step.make_eval_step`'s key),
  'ctx_valid' or None, and with `train_images` 'train_codes' / 'train_valid'
  their whole-image codes (context encoder, unmasked). Padded data: codes of
  invalid tokens (padding, empty slots) are -1. Reads only the `step.Setup`;
  one function per setup signature (`step.built`).
  """
  return step_lib.built(setup, ('measure', seed, chunk), lambda: _device_fn(setup, seed, chunk))


def _device_fn(setup, seed: int, chunk: int):
  enc = setup.encoder
  validity = lambda x: (model_lib.token_validity(x, enc.patch_size)  # noqa: E731
                        if setup.padded else None)
  no_code = lambda c, w: c if w is None else jax.numpy.where(w, c, -1)  # noqa: E731

  def fn(state, images, train_images=None):
    assign = lambda z: quantizer_lib.assign(  # noqa: E731
        setup.quantizer, state.get('vq'), state.get('vq_params'), z)

    def val_chunk(x, ids):
      valid = validity(x)
      ctx = enc.apply(state['params']['encoder'], x, None, valid)
      tgt = enc.apply(state['target_params'], x, None, valid)
      out = {'ctx_mean': model_lib.pool_tokens(ctx, valid, 1),
             'tgt_mean': model_lib.pool_tokens(tgt, valid, 1)}
      if setup.vq_enabled:       # traced, so no eager op compiles on its own
        mask_key = jax.random.split(jax.random.PRNGKey(seed + 1_000_003), 3)[0]
        if setup.padded:
          ctx_idx, _, ctx_valid, _ = masking.sample_masks_valid(
              mask_key, ids, setup.grid, setup.masking, valid)
        else:
          ctx_idx, _ = masking.sample_masks(mask_key, ids, setup.grid, setup.masking)
          ctx_valid = None
        z_ctx = enc.apply(state['params']['encoder'], x, ctx_idx, ctx_valid)
        out.update(codes=no_code(assign(ctx), valid), valid=valid,
                   ctx_codes=no_code(assign(z_ctx), ctx_valid), ctx_valid=ctx_valid)
      return out

    def train_chunk(x, _):
      t_valid = validity(x)
      z_train = enc.apply(state['params']['encoder'], x, None, t_valid)
      return {'train_codes': no_code(assign(z_train), t_valid), 'train_valid': t_valid}

    out = map_chunks(val_chunk, images, chunk)
    if setup.vq_enabled and train_images is not None:
      out.update(map_chunks(train_chunk, train_images, chunk))
    return out

  return fn


class Tracker:
  """What a point needs from the previous ones (churn and restarts since, the
  restarts up to `warmup_end`, the codes of the previous epoch's last point),
  JSON-able for the checkpoints so a resumed run logs the same records. A
  checkpoint written before the warm-up count existed, past the warm-up end,
  resumes with it unknown (None)."""

  def __init__(self, saved: Optional[Dict[str, Any]] = None, warmup_end: int = 0):
    saved = saved or {}
    self.step = saved.get('step', 0)
    self.restarts_total = saved.get('restarts_total', 0)
    self.codes_packed = saved.get('codes')
    self.warmup_end = warmup_end
    self.restarts_warmup = saved.get(
        'restarts_warmup', self.restarts_total if self.step <= warmup_end else None)
    self.epoch = saved.get('epoch')                  # of the last point
    self.epoch_step = saved.get('epoch_step')        # the previous epoch's last point
    self.epoch_codes = saved.get('epoch_codes')      # and its codes (packed)

  def to_json(self) -> Dict[str, Any]:
    return {'step': self.step, 'restarts_total': self.restarts_total,
            'codes': self.codes_packed, 'restarts_warmup': self.restarts_warmup,
            'epoch': self.epoch, 'epoch_step': self.epoch_step,
            'epoch_codes': self.epoch_codes}

  def epoch_churn(self, codes, valid, epoch: int) -> Dict[str, Any]:
    """vq_churn_epoch: churn of `codes` since the last point of an earlier
    epoch (the previous point when `epoch` starts a new epoch), and
    vq_churn_epoch_since, that point's step; None before there is one."""
    if self.epoch is not None and epoch != self.epoch:
      self.epoch_step, self.epoch_codes = self.step, self.codes_packed
    self.epoch = epoch
    ref = health.unpack_codes(self.epoch_codes, np.shape(codes))
    return {'vq_churn_epoch': None if ref is None else health.churn(ref, codes, valid),
            'vq_churn_epoch_since': self.epoch_step}


def _spectra(out) -> Dict[str, float]:
  rec = {}
  for name, key in (('context', 'ctx_mean'), ('target', 'tgt_mean')):
    x = out[key]
    rec[f'{name}_effective_rank'] = metrics_lib.effective_rank_f64(x)
    rec[f'{name}_isotropy'] = metrics_lib.isotropy_f64(x)
    rec[f'{name}_isotropy_ln'] = metrics_lib.isotropy_f64(x, skip=1)
    rec[f'{name}_spread'] = metrics_lib.centred_effective_rank(x)
  return rec


def record(out, vq_state, tracker: Tracker, *, step: int, epoch: int,
           num_codes: int, steps_per_epoch: int, window: int) -> Dict[str, Any]:
  """One embedding-metrics record from the host copies of `make_device_fn`'s
  output and the codebook's bookkeeping (`vq_state`: a VQState of NumPy
  arrays, or None for FSQ); updates `tracker`."""
  rec: Dict[str, Any] = {'step': step, 'epoch': epoch, **_spectra(out)}
  if 'codes' not in out:
    return rec
  codes, valid = np.asarray(out['codes']), out.get('valid')
  val_counts = health.code_counts(codes, num_codes, valid)
  rec.update(health.usage_summary(val_counts, 'vq'))
  if out.get('train_codes') is not None:
    rec.update(health.train_usage(health.code_counts(
        out['train_codes'], num_codes, out.get('train_valid')), int(val_counts.sum())))
  rec.update(health.usage_summary(health.code_counts(
      out['ctx_codes'], num_codes, out.get('ctx_valid')), 'vq_context'))
  previous = health.unpack_codes(tracker.codes_packed, codes.shape)
  rec['vq_churn'] = None if previous is None else health.churn(previous, codes, valid)
  rec.update(tracker.epoch_churn(codes, valid, epoch))
  if vq_state is not None and vq_state.last_used is not None:
    rec['vq_window_usage_ratio'] = health.window_usage(vq_state.last_used, step, window)
    rec.update(health.restarts_since(vq_state.restarts, vq_state.born,
                                     tracker.restarts_total, tracker.step))
    rec.update(health.age_summary(vq_state.born, step, steps_per_epoch))
    tracker.restarts_total = rec['vq_restarts_total']
    if step <= tracker.warmup_end:
      tracker.restarts_warmup = tracker.restarts_total
    rec['vq_restarts_warmup'] = tracker.restarts_warmup
  tracker.step, tracker.codes_packed = step, health.pack_codes(codes)
  return rec
