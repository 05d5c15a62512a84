"""Periodic actions of a training loop, each registered with when it is due.

In the spirit of big_vision's `itstime`: after every train step the loop asks
`Periodic.after_step(step)`, which runs, in the order they were registered,
the actions whose `due(step)` is true, each charged to its section of the
run's timer (`jepa_jax.timing`; by default the section named as the action). An action returns True to stop the loop (it
has saved what it needs); the later ones are then skipped.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional


def itstime(step: int, every_n_steps: int, total_steps: int = 0, last: bool = False) -> bool:
  """Whether `step` (steps done, >= 1) is a multiple of `every_n_steps`
  (0 or None: never), or, with `last`, the run's last step `total_steps`."""
  return bool(every_n_steps and step % every_n_steps == 0) or (
      last and step == total_steps)


@dataclasses.dataclass(frozen=True)
class Action:
  name: str
  due: Callable[[int], bool]         # step -> run it now?
  run: Callable[[int], bool]         # step -> stop the loop?
  section: str                       # the timer section it is charged to


class Periodic:
  """The actions run after each train step (module docstring)."""

  def __init__(self, timer):
    self._timer = timer
    self._actions: List[Action] = []

  def register(self, name: str, due: Callable[[int], bool], run: Callable[[int], bool],
               section: Optional[str] = None) -> 'Periodic':
    self._actions.append(Action(name, due, run, section or name))
    return self

  @property
  def names(self) -> List[str]:
    return [a.name for a in self._actions]

  def after_step(self, step: int) -> bool:
    """Runs the actions due at `step`; True when one of them stops the loop."""
    for action in self._actions:
      if action.due(step):
        with self._timer(action.section):
          if action.run(step):
            return True
    return False
