"""ArrayRecord shards of encoded images (`data.name='arrayrecord'`).

A packed dataset (`python -m jepa_jax.data.pack`) is a folder holding
  index.json             {"format": FORMAT, "num_records": N, "classes": [...],
                          "shards": ["data-00000-of-0000S.array_record", ...]}
  labels.npy             (N,) int32 class labels, record order
  data-KKKKK-of-SSSSS.array_record
                         record i (global order, shards concatenated) = the
                         label as 4 bytes little-endian int32, then the image
                         file's bytes exactly as they were on disk.
Records are in the order of the packed folder (`files.list_folder`: classes
sorted, files sorted), so a packed folder gives the same images, labels,
split and statistics as the `folder` source with the same `data.image_size`
and `data.channels`.

Images are decoded on demand (`lazy.LazyImages`); the train split is never
held in memory whole, whatever `data.pipeline`.
"""
from __future__ import annotations

import json
import os
import struct

import numpy as np

from jepa_jax.data import dataset
from jepa_jax.data import lazy

FORMAT = 'jepa_jax.image_records.v1'
INDEX = 'index.json'
LABELS = 'labels.npy'


def encode_record(label: int, image_bytes: bytes) -> bytes:
  return struct.pack('<i', int(label)) + image_bytes


def decode_record(record: bytes):
  """(label, image bytes) of one record."""
  return struct.unpack('<i', record[:4])[0], record[4:]


def read_index(folder: str) -> dict:
  """The index of a packed folder; DataError naming the file if unusable."""
  path = os.path.join(folder, INDEX)
  if not os.path.isfile(path):
    raise dataset.DataError(f'{folder}: no {INDEX} (pack an image folder with '
                         'python -m jepa_jax.data.pack)')
  try:
    with open(path) as f:
      index = json.load(f)
  except (OSError, ValueError) as err:
    raise dataset.DataError(f'cannot read {path}: {err}') from None
  if not isinstance(index, dict) or index.get('format') != FORMAT:
    raise dataset.DataError(f'{path}: not a {FORMAT} index')
  missing = [s for s in index['shards'] if not os.path.isfile(os.path.join(folder, s))]
  if missing:
    raise dataset.DataError(f'{folder}: shard {missing[0]} listed in {INDEX} is missing')
  return index


class RecordReader:
  """Reads image i of the packed folder's shards (global record order).
  The shards open on first use in each process, so the reader pickles to
  worker processes as a few strings."""

  def __init__(self, paths, size, mode: str):
    self.paths, self.size, self.mode = list(paths), tuple(size), mode
    self._source = None

  def __getstate__(self):
    return {**self.__dict__, '_source': None}

  def _open(self):
    if self._source is None:
      import grain  # noqa: PLC0415  (only ArrayRecord runs need grain)
      try:
        self._source = grain.sources.ArrayRecordDataSource(self.paths)
      except Exception as err:  # noqa: BLE001  (array_record raises bare RuntimeErrors)
        raise self._damaged(err) from None
    return self._source

  def _damaged(self, err: BaseException) -> dataset.DataError:
    """DataError naming the first shard that does not open or read whole
    (each opened alone, its first and last record read), else every shard."""
    import grain  # noqa: PLC0415
    why = (str(err).strip().splitlines() or [type(err).__name__])[0]
    for path in self.paths:
      try:
        source = grain.sources.ArrayRecordDataSource([path])
        if len(source):
          source[0], source[len(source) - 1]      # noqa: B018  (reads them)
      except Exception as shard_err:  # noqa: BLE001
        why = (str(shard_err).strip().splitlines()
               or ['cannot be read (truncated, or not an ArrayRecord file)'])[0]
        return dataset.DataError(f'damaged ArrayRecord shard {path}: {why}; '
                                 're-pack the folder (python -m jepa_jax.data.pack)')
    return dataset.DataError(f'ArrayRecord shards {os.path.dirname(self.paths[0])}: {why}')

  def __len__(self) -> int:
    return len(self._open())

  def __call__(self, i: int) -> np.ndarray:
    source = self._open()
    try:
      record = source[i]
    except Exception as err:  # noqa: BLE001  (a damaged block: name the shard)
      raise self._damaged(err) from None
    _, raw = decode_record(record)
    return lazy.decode(raw, self.size, self.mode, f'record {i} of {self.paths[0]}...')


@dataset.register('arrayrecord')
def load_arrayrecord(cfg) -> dataset.Dataset:
  """The packed folder at `data.path`, split and standardised as `folder`."""
  folder = os.path.expanduser(str(cfg.data.path or ''))
  if not folder:
    raise dataset.DataError("data.name='arrayrecord' needs config.data.path "
                         '(a folder written by python -m jepa_jax.data.pack)')
  if not os.path.isdir(folder):
    raise dataset.DataError(f'ArrayRecord folder not found: {folder}')
  index = read_index(folder)
  labels = np.load(os.path.join(folder, LABELS), allow_pickle=False).astype(np.int32)
  if labels.shape != (index['num_records'],):
    raise dataset.DataError(f'{folder}: {LABELS} holds {labels.shape} labels, '
                         f'{INDEX} says {index["num_records"]} records')
  mode = {1: 'L', 3: 'RGB'}[cfg.data.channels]
  reader = RecordReader([os.path.join(folder, s) for s in index['shards']],
                        cfg.data.image_size, mode)
  if len(reader) != index['num_records']:      # opens every shard: damage shows now
    raise dataset.DataError(f'{folder}: the shards hold {len(reader)} records, '
                            f'{INDEX} says {index["num_records"]}; re-pack the folder')
  return lazy.split_lazy(cfg, reader, index['num_records'], labels, 'arrayrecord')
