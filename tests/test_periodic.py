"""The loop's periodic actions (jepa_jax/train/loop_state.py): when each is due, order, stops."""
from jepa_jax.train import loop_state as periodic


def test_itstime_every_n_steps_and_the_last_step():
  assert [s for s in range(1, 13) if periodic.itstime(s, 5)] == [5, 10]
  assert [s for s in range(1, 13) if periodic.itstime(s, 5, 12, last=True)] == [5, 10, 12]
  assert [s for s in range(1, 13) if periodic.itstime(s, 50, 12, last=True)] == [12]
  assert not any(periodic.itstime(s, None) or periodic.itstime(s, 0) for s in range(1, 13))


def test_due_actions_run_in_registration_order_each_in_its_section_until_one_stops():
  ran = []
  timer = periodic.Sections().start()
  actions = (periodic.Periodic(timer)
             .register('a', lambda s: s % 2 == 0, lambda s: ran.append(('a', s)) or False)
             .register('b', lambda s: s % 3 == 0, lambda s: ran.append(('b', s)) or s == 6)
             .register('c', lambda s: True, lambda s: ran.append(('c', s)) or False,
                       section='other_c'))
  stops = [s for s in range(1, 8) if actions.after_step(s)]
  timer.stop()
  assert stops == [6]
  assert ran == [('c', 1), ('a', 2), ('c', 2), ('b', 3), ('c', 3), ('a', 4), ('c', 4),
                 ('c', 5), ('a', 6), ('b', 6), ('c', 7)]          # c skipped at 6
  assert actions.names == ['a', 'b', 'c']
  assert timer.report()['calls'] == {'a': 3, 'b': 2, 'other_c': 6}
