"""Measurement points: when the embedding metrics are taken, and what they record.

At every measurement point the whole validation split is encoded, unmasked,
by the context and target encoders (one jitted call, compiled once), and the
context encoder's tokens are also encoded under the fixed validation masks,
as the train step sees them. One record of `embedding_metrics.jsonl` then holds:

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
  vq_churn                         share of whole-image val tokens whose code
                                   changed since the previous point
  vq_window_usage_ratio            codes the train step assigned in its last
                                   `usage_window_steps` steps
  vq_restarts, vq_restarts_total, vq_restarted_share, vq_code_age_median,
  vq_young_share                   refresh restarts and code age (codebooks)

Phase-free points (`Schedule`): the nominal points are every
`train.embedding_metrics_every_steps` steps, the run's last step, and the
step at `GOAL_BOUNDARY` (10%) of the run, after which restarts are judged
(`experiments/report_goals.py`): with a point there, the restarts counted
after it are exactly those after the first 10%. A point
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

from jepa_jax import anticollapse as ac
from jepa_jax import codebook_health as health
from jepa_jax import masking
from jepa_jax import metrics as metrics_lib
from jepa_jax import model as model_lib
from jepa_jax import quantizer as quantizer_lib
from jepa_jax import quantizer_spec


# The share of a run after which restarts are judged: a measurement point is
# placed at floor(GOAL_BOUNDARY * total steps).
GOAL_BOUNDARY = 0.1


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

  @classmethod
  def from_config(cls, cfg, total_steps: int) -> 'Schedule':
    """The schedule of a config: its metrics interval and its quantizer's
    refresh (`quantizer_spec.make_spec`; none without VQ or for FSQ)."""
    spec = quantizer_spec.make_spec(cfg)
    r = spec.refresh if spec is not None else None
    return cls(every=cfg.train.embedding_metrics_every_steps, total_steps=total_steps,
               refresh_interval=r.interval if r else 0,
               refresh_warmup_steps=r.warmup_steps if r else 0,
               refresh_warmup_interval=r.warmup_interval if r else 1,
               boundary=int(GOAL_BOUNDARY * total_steps))

  def refreshes(self, t: int) -> bool:
    """Whether train step t (0-based) refreshes (`anticollapse.refresh_due_host`)."""
    return bool(self.refresh_interval) and ac.refresh_due_host(
        t, self.refresh_interval, self.refresh_warmup_steps,
        self.refresh_warmup_interval)

  def nominal(self, s: int) -> bool:
    return s % self.every == 0 or s == self.total_steps or s == self.boundary

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


def make_device_fn(setup, seed: int):
  """fn(state, images) -> arrays of one measurement (jittable, no state change).

  'ctx_mean' / 'tgt_mean' (N, D) per-image mean tokens (valid tokens only on
  padded data, `model.pool_tokens`); with VQ 'codes' (N, T) whole-image codes,
  'valid' (N, T) or None, 'ctx_codes' (N, C) the codes of the masked-context
  tokens under the validation masks (`step.make_eval_step`'s key),
  'ctx_valid' or None. Padded data: codes of invalid tokens (padding, empty
  slots) are -1. Reads only the `step.Setup`.
  """
  enc = setup.encoder

  def fn(state, images):
    valid = (model_lib.token_validity(images, enc.patch_size)
             if setup.padded else None)
    ctx = enc.apply(state['params']['encoder'], images, None, valid)
    tgt = enc.apply(state['target_params'], images, None, valid)
    out = {'ctx_mean': model_lib.pool_tokens(ctx, valid, 1),
           'tgt_mean': model_lib.pool_tokens(tgt, valid, 1)}
    if setup.vq_enabled:         # traced, so no eager op compiles on its own
      mask_key = jax.random.split(jax.random.PRNGKey(seed + 1_000_003), 3)[0]
      ids = jax.numpy.arange(images.shape[0], dtype=jax.numpy.int32)
      if setup.padded:
        ctx_idx, _, ctx_valid, _ = masking.sample_masks_valid(
            mask_key, ids, setup.grid, setup.masking, valid)
      else:
        ctx_idx, _ = masking.sample_masks(mask_key, ids, setup.grid, setup.masking)
        ctx_valid = None
      z_ctx = enc.apply(state['params']['encoder'], images, ctx_idx, ctx_valid)
      assign = lambda z: quantizer_lib.assign(  # noqa: E731
          setup.quantizer, state.get('vq'), state.get('vq_params'), z)
      no_code = lambda c, w: c if w is None else jax.numpy.where(w, c, -1)  # noqa: E731
      out.update(codes=no_code(assign(ctx), valid), valid=valid,
                 ctx_codes=no_code(assign(z_ctx), ctx_valid), ctx_valid=ctx_valid)
    return out

  return fn


class Tracker:
  """What a point needs from the previous one (churn and restarts since),
  JSON-able for the checkpoints so a resumed run logs the same records."""

  def __init__(self, saved: Optional[Dict[str, Any]] = None):
    saved = saved or {}
    self.step = saved.get('step', 0)
    self.restarts_total = saved.get('restarts_total', 0)
    self.codes_packed = saved.get('codes')

  def to_json(self) -> Dict[str, Any]:
    return {'step': self.step, 'restarts_total': self.restarts_total,
            'codes': self.codes_packed}


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
  rec.update(health.usage_summary(health.code_counts(codes, num_codes, valid), 'vq'))
  rec.update(health.usage_summary(health.code_counts(
      out['ctx_codes'], num_codes, out.get('ctx_valid')), 'vq_context'))
  previous = health.unpack_codes(tracker.codes_packed, codes.shape)
  rec['vq_churn'] = None if previous is None else health.churn(previous, codes, valid)
  if vq_state is not None and vq_state.last_used is not None:
    rec['vq_window_usage_ratio'] = health.window_usage(vq_state.last_used, step, window)
    rec.update(health.restarts_since(vq_state.restarts, vq_state.born,
                                     tracker.restarts_total, tracker.step))
    rec.update(health.age_summary(vq_state.born, step, steps_per_epoch))
    tracker.restarts_total = rec['vq_restarts_total']
  tracker.step, tracker.codes_packed = step, health.pack_codes(codes)
  return rec
