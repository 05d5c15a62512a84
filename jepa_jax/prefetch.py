"""Host batches placed on the devices ahead of the train step that uses them.

    batches = prefetch_to_device(host_batches, parallel.batch_placement(plan), 2)

JAX dispatches both the train step and the transfers asynchronously, so a
batch whose transfer was started a step or two before it is needed reaches
the devices while earlier steps run, and the step finds its inputs there.
`size` batches are kept placed ahead of the one the consumer holds (memory:
`size` + 1 batches on the devices). The order and values are the host
iterator's; placement changes only where the arrays live.

Batches pulled ahead but never consumed (a run stopping mid-epoch) are
dropped with the generator: resume does not depend on them, since it
rebuilds the host iterator from the checkpoint's data position.
"""
from __future__ import annotations

import collections
from typing import Any, Callable, Iterable, Iterator


def prefetch_to_device(batches: Iterable[Any], place: Callable[[Any], Any],
                       size: int) -> Iterator[Any]:
  """Yields place(batch) for every batch of `batches`, in order.

  When batch k is yielded, batches k+1 .. k+size have already been pulled
  from `batches` and their transfers dispatched (fewer at the end of the
  iterator); size 0 places each batch only when it is asked for. Closing the
  generator closes `batches` when it can be closed.
  """
  if size < 0:
    raise ValueError(f'prefetch size must be >= 0, got {size}')
  it = iter(batches)
  queue = collections.deque()
  try:
    for batch in it:
      queue.append(place(batch))
      if len(queue) > size:
        yield queue.popleft()
    while queue:
      yield queue.popleft()
  finally:
    queue.clear()
    close = getattr(it, 'close', None)
    if close is not None:
      close()
