"""Timing and machine description shared by the benchmark sides."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from typing import Callable, Dict, List


def time_calls(fn: Callable[[], object], warmup: int, reps: int) -> List[float]:
  """Seconds per call of `fn` (which must block until its result is ready)."""
  for _ in range(warmup):
    fn()
  out = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t0)
  return out


def interleaved(calls: Dict[str, Callable[[], object]], warmup: int, reps: int,
                rounds: int) -> Dict[str, Dict[str, object]]:
  """Times several sides in alternating rounds (A B C, C B A, A B C, ...).

  Every side is warmed up first; then each round times `reps` calls of
  every side in turn, the order reversed every other round, so a drift of
  the machine (another process, thermal or frequency changes) falls on all
  sides alike instead of on whichever ran last. Per side: `summarize` over
  all timed calls, plus each round's median ('round_medians_ms') and their
  spread, (max - min) / median of the round medians.
  """
  names = list(calls)
  for name in names:
    for _ in range(warmup):
      calls[name]()
  times: Dict[str, List[float]] = {n: [] for n in names}
  per_round: Dict[str, List[float]] = {n: [] for n in names}
  for r in range(rounds):
    for name in (names if r % 2 == 0 else names[::-1]):
      t = time_calls(calls[name], 0, reps)
      times[name] += t
      per_round[name].append(statistics.median(t) * 1e3)
  out = {}
  for name in names:
    stats = summarize(times[name])
    meds = per_round[name]
    stats.update(rounds=rounds, round_medians_ms=meds,
                 round_spread=(max(meds) - min(meds)) / statistics.median(meds))
    out[name] = stats
  return out


def summarize(times: List[float]) -> Dict[str, float]:
  """min / median / max in milliseconds."""
  ms = [t * 1e3 for t in times]
  return {'min_ms': min(ms), 'median_ms': statistics.median(ms), 'max_ms': max(ms),
          'reps': len(ms)}


def machine() -> Dict[str, object]:
  info = {'platform': platform.platform(), 'python': platform.python_version(),
          'cpu_count': os.cpu_count()}
  try:
    lscpu = subprocess.run(['lscpu'], capture_output=True, text=True, timeout=10).stdout
    for line in lscpu.splitlines():
      key, _, value = line.partition(':')
      if key.strip() in ('Model name', 'Flags'):
        value = value.strip()
        if key.strip() == 'Flags':
          value = ' '.join(f for f in value.split() if f.startswith(('avx', 'fma')))
        info[key.strip().lower().replace(' ', '_')] = value
  except (OSError, subprocess.SubprocessError):
    pass
  try:
    import jax
    info['jax'] = jax.__version__
    info['jax_devices'] = [str(d) for d in jax.devices()]
    info['jax_device_kind'] = jax.devices()[0].device_kind
  except ImportError:
    pass
  try:
    import torch
    info['torch'] = torch.__version__
    info['torch_threads'] = torch.get_num_threads()
    if torch.cuda.is_available():
      info['torch_cuda_device'] = torch.cuda.get_device_name(0)
  except ImportError:
    info['torch'] = None
  return info
