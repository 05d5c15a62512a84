"""Monitor rules on synthetic metric sequences: each fires exactly when it should."""
import dataclasses
import json

import pytest

from jepa_jax.train import monitor

RULES = monitor.Rules.from_config({})      # jepa_jax/config/base.py's thresholds


def emb(step, usage=None, ctx=20.0, tgt=20.0, epoch=1):
  r = {'step': step, 'epoch': epoch, 'context_effective_rank': ctx,
       'target_effective_rank': tgt}
  if usage is not None:
    r['vq_usage_ratio'] = usage
  return r


def epochs(vals, steps_per_epoch=10):
  return [{'epoch': e, 'step': (e + 1) * steps_per_epoch, 'val_loss_mean': v}
          for e, v in enumerate(vals)]


def fired_at(events, rule, metric=None):
  """Steps at which `rule` (for `metric`) fired."""
  return [e['step'] for e in events
          if e['rule'] == rule and (metric is None or e['metric'] == metric)]


def run_emb(records, rules=RULES):
  state = monitor.initial_state()
  out = []
  for r in records:
    state, ev = monitor.observe_embedding(state, r, rules)
    out += ev
  return state, out


def test_usage_rules_start_after_the_first_epoch_by_default():
  records = [emb(50, 0.05, epoch=0), emb(100, 0.05, epoch=1)]
  _, ev = run_emb(records)
  assert fired_at(ev, 'usage_collapse') == [100]     # epoch 0 is not judged
  _, ev = run_emb(records, dataclasses.replace(RULES, usage_from_epoch=0))
  assert fired_at(ev, 'usage_collapse') == [50]      # the reference's "at any point"


def test_usage_low_fires_once_when_it_starts_and_rearms():
  usages = [0.30, 0.20, 0.14, 0.12, 0.13, 0.16, 0.149, 0.14]
  _, ev = run_emb([emb(50 * (i + 1), u) for i, u in enumerate(usages)])
  assert fired_at(ev, 'usage_low') == [150, 350]      # starts at 150; back >= 15% at 300
  e = next(e for e in ev if e['rule'] == 'usage_low')
  assert e['severity'] == 'alert' and e['value'] == 0.14 and e['threshold'] == 0.15


def test_usage_exactly_at_threshold_is_not_low():
  _, ev = run_emb([emb(50, 0.15), emb(100, 0.10)])
  assert fired_at(ev, 'usage_low') == [100]
  assert fired_at(ev, 'usage_collapse') == []         # 0.10 is not < 0.10


def test_usage_declining_needs_three_declines_in_a_row():
  # 0.5 > 0.4 > 0.3 (two declines) then flat, then three declines from 0.3.
  usages = [0.5, 0.4, 0.3, 0.3, 0.29, 0.28, 0.27, 0.26, 0.3, 0.2, 0.19, 0.18]
  _, ev = run_emb([emb(i, u) for i, u in enumerate(usages)])
  # declines: 0.3->.29 (step 4), ->.28 (5), ->.27 (6): fires at 6; holds at 7;
  # rise at 8 re-arms; .3->.2 (9), ->.19 (10), ->.18 (11): fires at 11.
  assert fired_at(ev, 'usage_declining') == [6, 11]


def test_usage_decline_length_is_configurable():
  rules = dataclasses.replace(RULES, usage_decline_checkpoints=1)
  _, ev = run_emb([emb(i, u) for i, u in enumerate([0.5, 0.4, 0.45, 0.44])], rules)
  assert fired_at(ev, 'usage_declining') == [1, 3]


def test_usage_collapse_is_a_red_flag_with_reason():
  state, ev = run_emb([emb(50, 0.2), emb(100, 0.11), emb(150, 0.099), emb(200, 0.05)])
  assert fired_at(ev, 'usage_collapse') == [150]
  assert [e['severity'] for e in ev if e['rule'] == 'usage_collapse'] == ['abort']
  assert state.abort_reason == 'VQ usage 9.9% < 10% at step 150'
  assert state.red_flags == (state.abort_reason,)
  assert monitor.stop_decision(state, RULES) is None          # abort off by default
  on = dataclasses.replace(RULES, abort=True)
  assert monitor.stop_decision(state, on) == ('aborted', state.abort_reason)


def test_rank_rules_per_metric():
  recs = [emb(1, ctx=5.0, tgt=5.0), emb(2, ctx=2.9, tgt=5.0), emb(3, ctx=2.0, tgt=2.5),
          emb(4, ctx=0.99, tgt=3.0), emb(5, ctx=0.5, tgt=3.1)]
  state, ev = run_emb(recs)
  assert fired_at(ev, 'rank_low', 'context_effective_rank') == [2]
  assert fired_at(ev, 'rank_low', 'target_effective_rank') == [3]
  assert fired_at(ev, 'rank_collapse', 'context_effective_rank') == [4]
  assert fired_at(ev, 'rank_collapse', 'target_effective_rank') == []
  assert state.num_alerts == 2 and len(state.red_flags) == 1


def test_no_vq_records_never_raise_usage_rules():
  _, ev = run_emb([emb(i) for i in range(10)])
  assert ev == []


def fold_epochs(vals, rules=RULES):
  state = monitor.initial_state()
  out = []
  for r in epochs(vals):
    state, ev = monitor.observe_epoch(state, r, rules)
    out += ev
  return state, out


def test_val_rising_two_epochs_in_a_row():
  vals = [5.0, 4.0, 4.1, 4.0, 4.1, 4.2, 4.3, 4.0, 4.1, 4.2]
  _, ev = fold_epochs(vals)
  assert [e['epoch'] for e in ev if e['rule'] == 'val_rising'] == [5, 9]


def test_val_spike_is_relative_to_the_best_before():
  vals = [4.0, 3.0, 4.4, 4.6, 2.0, 3.1]   # 4.5 = 1.5 x 3.0 ; 3.0 = 1.5 x 2.0
  state, ev = fold_epochs(vals)
  assert [e['epoch'] for e in ev if e['rule'] == 'val_spike'] == [3, 5]
  assert state.abort_reason.startswith('val loss 4.6 > 1.5 x best 3 (epoch 1)')
  assert (state.best_val, state.best_epoch) == (2.0, 4)


def test_early_stopping_patience_and_min_epochs():
  rules = dataclasses.replace(RULES, patience=3, min_epochs=6)
  # best at epoch 1; epochs 2, 3, 4 bring no new best -> stop after epoch 4 (5 epochs).
  vals = [5.0, 4.0, 4.0, 4.5, 4.2, 3.0]
  state = monitor.initial_state()
  stops = []
  for r in epochs(vals):
    state, ev = monitor.observe_epoch(state, r, rules)
    stops.append(state.early_stop)
  assert stops == [False, False, False, False, True, True]
  assert state.red_flags[0].startswith('early stopping after 5 epochs < min_epochs 6')
  assert monitor.stop_decision(state, rules) == ('early_stopped', None)
  aborting = dataclasses.replace(rules, abort=True)
  assert monitor.stop_decision(state, aborting)[0] == 'aborted'
  # With min_epochs reached the same early stop is not a red flag.
  late, _ = fold_epochs(vals, dataclasses.replace(rules, min_epochs=5))
  assert late.early_stop and late.red_flags == ()


def test_replay_equals_live_fold_and_resume_from_prefix():
  emb_recs = [emb(5 * (i + 1), u, ctx=c) for i, (u, c) in enumerate(
      [(0.3, 9), (0.2, 4), (0.14, 2.9), (0.12, 3.5), (0.11, 2.0), (0.09, 2.5),
       (0.2, 4.0), (0.1, 2.0)])]
  ep_recs = epochs([5.0, 5.1, 5.2, 4.0], steps_per_epoch=10)
  # Live order: embedding records at a step come before the epoch record of that step.
  live, live_ev = monitor.initial_state(), []
  for step in range(1, 41):
    for r in emb_recs:
      if r['step'] == step:
        live, ev = monitor.observe_embedding(live, r, RULES)
        live_ev += ev
    for r in ep_recs:
      if r['step'] == step:
        live, ev = monitor.observe_epoch(live, r, RULES)
        live_ev += ev
  state, ev = monitor.replay(emb_recs, ep_recs, RULES)
  assert state == live and ev == live_ev
  assert {e['rule'] for e in ev} >= {'usage_low', 'usage_declining', 'rank_low',
                                     'usage_collapse', 'val_rising'}
  # A resumed run rebuilds the state from the logs up to its checkpoint step,
  # through a JSON round trip, and continues to the same end state.
  mid = monitor.MonitorState.from_dict(json.loads(json.dumps(
      monitor.replay([r for r in emb_recs if r['step'] <= 20],
                     [r for r in ep_recs if r['step'] <= 20], RULES)[0].to_dict())))
  rest, rest_ev = monitor.replay([r for r in emb_recs if r['step'] > 20],
                                 [r for r in ep_recs if r['step'] > 20], RULES, mid)
  assert rest == state
  assert rest_ev == [e for e in ev if e['step'] > 20]


def test_rules_from_config_dict_and_defaults(config_of):
  assert RULES == monitor.Rules(
      abort=False, usage_alert=0.15, usage_decline_checkpoints=3, rank_alert=3.0,
      val_increase_epochs=2, usage_abort=0.10, val_spike_factor=1.5, rank_abort=1.0,
      min_epochs=60, usage_from_epoch=1, option_b=False, option_b_epoch=15,
      option_b_usage=0.12, option_b_rank=4.0, patience=10)
  assert monitor.Rules.from_config(config_of('gentle')) == RULES
  r = monitor.Rules.from_config({'monitor': {'abort': True, 'usage_alert': 0.2},
                                 'train': {'early_stopping_patience': 4}})
  assert (r.abort, r.usage_alert, r.patience, r.usage_abort) == (True, 0.2, 4, 0.10)


def test_monitor_config_is_validated(config_of):
  from jepa_jax.config import load as config_lib
  cfg = config_of('gentle')
  cfg.monitor.usage_abort = 1.5
  with pytest.raises(config_lib.ConfigError, match=r'monitor\.usage_abort=1\.5'):
    config_lib.validate(cfg)


# ---------------------------------------------------------------- in the trainer

def _tb_scalars(workdir):
  """{tag: [(step, value)]} from the TensorBoard event files (TFRecord framing:
  u64 length, u32 crc, payload, u32 crc)."""
  import struct
  from tensorboardX.proto import event_pb2
  out = {}
  for f in sorted(workdir.glob('events.out.tfevents.*')):
    data = f.read_bytes()
    i = 0
    while i < len(data):
      (n,) = struct.unpack('<Q', data[i:i + 8])
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
      i += 12 + n + 4
      for v in event.summary.value:
        out.setdefault(v.tag, []).append((event.step, v.simple_value))
  return out


def test_abort_on_red_flag_ends_run_with_status_and_reason(tmp_path, capsys, config_of):
  from jepa_jax.run import files as records
  from jepa_jax.train import loop as train
  cfg = config_of('gentle', 'tiny')
  cfg.monitor.abort = True
  cfg.monitor.rank_abort = 1000.0       # forced: every effective rank is below it
  cfg.vq.refresh_enabled = False        # points at the nominal steps (no move before a refresh)
  summary = train.train_and_evaluate(cfg, str(tmp_path))
  assert summary['status'] == 'aborted'
  assert summary['steps'] == cfg.train.embedding_metrics_every_steps == 2
  assert summary['epochs_completed'] == 0
  assert summary['reason'].startswith('context effective rank ')
  assert summary['reason'].endswith('< 1000.0 at step 2')
  stored = json.loads((tmp_path / 'summary.json').read_text())
  assert stored['status'] == 'aborted' and stored['reason'] == summary['reason']
  alerts = records.read_jsonl(tmp_path / 'alerts.jsonl')
  assert [(a['rule'], a['metric'], a['step']) for a in alerts if a['severity'] == 'abort'] \
      == [('rank_collapse', 'context_effective_rank', 2),
          ('rank_collapse', 'target_effective_rank', 2)]
  assert '[monitor RED FLAG] rank_collapse: context effective rank' in capsys.readouterr().err
  # The final weights load into the run's config, and a different config is
  # refused with the file and every mismatched shape named.
  from jepa_jax import data as data_lib
  from jepa_jax.run import trained as final_state
  from jepa_jax.train import step as step_lib
  import jax

  def shapes(c):
    ds = data_lib.load_dataset(c)
    setup = step_lib.make_setup(c, ds)
    return jax.eval_shape(lambda: step_lib.init_state(setup, ds.image_shape, 0))
  restored = final_state.load(str(tmp_path), shapes(cfg))
  assert restored['params']['encoder'] is not None and 'vq' in restored
  cfg.model.embed_dim = 32
  with pytest.raises(ValueError, match=r'final_state\.msgpack does not match the run '
                     r'config: .*codebook.*\(32, 16\) in the file, \(32, 32\) in the config'):
    final_state.load(str(tmp_path), shapes(cfg))
  # Every logged scalar is in the TensorBoard events, at its step.
  tb = _tb_scalars(tmp_path)
  emb = records.read_jsonl(tmp_path / 'embedding_metrics.jsonl')
  assert len(emb) == 1
  for key in ('context_effective_rank', 'vq_usage_ratio', 'vq_perplexity'):
    assert tb[f'embedding/{key}'] == [(2, pytest.approx(emb[0][key]))]
  assert [s for s, _ in tb['train/loss']] == [2]



# ------------------------------------------------------------- Option-B rule

OPTION_B = dataclasses.replace(RULES, option_b=True)


def test_option_b_rule_is_off_by_default():
  _, ev = run_emb([emb(10, usage=0.11, ctx=3.0, epoch=2)])
  assert not fired_at(ev, 'option_b_abort')


def test_option_b_rule_fires_on_usage_or_context_rank_within_the_first_15_epochs():
  recs = [emb(0, usage=0.05, ctx=20.0, epoch=0),     # epoch 0: usage not judged
          emb(10, usage=0.13, ctx=4.5, epoch=1),
          emb(20, usage=0.119, ctx=4.5, epoch=3),    # usage fires
          emb(30, usage=0.125, ctx=3.9, epoch=14),   # rank fires (epoch 15, 1-based)
          emb(40, usage=0.01, ctx=1.5, epoch=15)]    # after epoch 15: not read
  state, ev = run_emb(recs, OPTION_B)
  b = [e for e in ev if e['rule'] == 'option_b_abort']
  assert [(e['step'], e['metric'], e['severity']) for e in b] == [
      (20, 'vq_usage_ratio', 'abort'), (30, 'context_effective_rank', 'abort')]
  assert b[0]['message'] == ('Option B rule: VQ usage 11.9% < 12% by epoch 15 '
                             '(epoch 4, step 20)')
  assert b[1]['threshold'] == 4.0 and 'context effective rank 3.90 < 4.0' in b[1]['message']
  assert state.abort_reason == b[0]['message']
  # the target rank is not read; the epoch bound is configurable
  _, ev = run_emb([emb(5, usage=0.5, ctx=5.0, tgt=1.5, epoch=1),
                   emb(6, usage=0.11, ctx=5.0, epoch=5)],
                  dataclasses.replace(OPTION_B, option_b_epoch=5))
  assert not fired_at(ev, 'option_b_abort')


def test_option_b_with_abort_stops_the_run():
  rules = dataclasses.replace(OPTION_B, abort=True, usage_abort=0.0, rank_abort=0.0)
  state, _ = run_emb([emb(10, usage=0.11, epoch=1)], rules)
  assert monitor.stop_decision(state, rules) == (
      'aborted', 'Option B rule: VQ usage 11.0% < 12% by epoch 15 (epoch 2, step 10)')


def test_option_b_keys_are_read_and_validated(config_of):
  from jepa_jax.config import load as config_lib
  r = monitor.Rules.from_config({'monitor': {'option_b': True, 'option_b_epoch': 5}})
  assert (r.option_b, r.option_b_epoch, r.option_b_usage, r.option_b_rank) == (
      True, 5, 0.12, 4.0)
  cfg = config_of('gentle')
  assert cfg.monitor.option_b is False
  cfg.monitor.option_b = True
  config_lib.validate(cfg)
  cfg.monitor.option_b_usage = 12.0
  with pytest.raises(config_lib.ConfigError, match=r'monitor\.option_b_usage=12\.0'):
    config_lib.validate(cfg)
