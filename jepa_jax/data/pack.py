"""Packs an image folder into ArrayRecord shards for `data.name='arrayrecord'`.

  python -m jepa_jax.data.pack --folder F --out D --shards N

F has one subfolder per class (as the `folder` source reads it). Every image
is checked to decode with Pillow before it is written; the first file that
does not is refused with one line naming it (exit status 2) and the shards
written so far are removed, so D never holds a partial dataset. D must not
already hold a packed dataset. Records keep each file's bytes as they are
(no re-encoding); see `jepa_jax.data.arrayrecord` for the layout.
"""
from __future__ import annotations

import io
import json
import os
import sys

import numpy as np

from jepa_jax import data
from jepa_jax import errors
from jepa_jax.data import arrayrecord
from jepa_jax.data import files


def _checked_bytes(path: str) -> bytes:
  """The file's bytes, once Pillow has decoded them fully; DataError naming
  the file otherwise."""
  from PIL import Image  # noqa: PLC0415
  try:
    with open(path, 'rb') as f:
      raw = f.read()
    with Image.open(io.BytesIO(raw)) as img:
      img.load()
  except Exception as err:  # noqa: BLE001  (any unreadable image: one line)
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    raise data.DataError(f'cannot read image {path}: {msg}') from None
  return raw


def shard_names(num_shards: int):
  return [f'data-{k:05d}-of-{num_shards:05d}.array_record' for k in range(num_shards)]


def pack(folder: str, out: str, num_shards: int) -> dict:
  """Writes `out` (index.json, labels.npy, the shards); returns the index.
  Record order = `files.list_folder` order; shard k holds records
  [k*N//S, (k+1)*N//S). Raises DataError (one line) on a bad input."""
  from array_record.python.array_record_module import ArrayRecordWriter  # noqa: PLC0415
  if os.path.exists(out) and not os.path.isdir(out):
    raise data.DataError(f'--out={out}: exists and is not a folder')
  paths, labels = files.list_folder(folder)
  if num_shards < 1 or num_shards > len(paths):
    raise data.DataError(f'--shards={num_shards}: need 1..{len(paths)} '
                         f'(the folder holds {len(paths)} images)')
  if os.path.exists(os.path.join(out, arrayrecord.INDEX)):
    raise data.DataError(f'{out} already holds a packed dataset ({arrayrecord.INDEX})')
  os.makedirs(out, exist_ok=True)
  names, n = shard_names(num_shards), len(paths)
  written = []
  try:
    for k, name in enumerate(names):
      target = os.path.join(out, name)
      written.append(target)
      writer = ArrayRecordWriter(target, 'group_size:1')
      try:
        for i in range(k * n // num_shards, (k + 1) * n // num_shards):
          writer.write(arrayrecord.encode_record(labels[i], _checked_bytes(paths[i])))
      finally:
        writer.close()
  except BaseException:
    for path in written:
      if os.path.exists(path):
        os.remove(path)
    raise
  classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
  index = {'format': arrayrecord.FORMAT, 'num_records': n, 'classes': classes,
           'shards': names}
  np.save(os.path.join(out, arrayrecord.LABELS), labels)
  with open(os.path.join(out, arrayrecord.INDEX), 'w') as f:
    json.dump(index, f, indent=1)
  return index


def main(argv=None) -> int:
  parser = errors.ArgumentParser(prog='python -m jepa_jax.data.pack',
                                 description=__doc__.splitlines()[0])
  parser.add_argument('--folder', required=True, help='image folder, one subfolder per class')
  parser.add_argument('--out', required=True, help='output folder for the shards')
  parser.add_argument('--shards', type=int, default=1, help='number of shards')
  args = parser.parse_args(argv)
  try:
    index = pack(os.path.expanduser(args.folder), os.path.expanduser(args.out), args.shards)
  except Exception as err:  # pylint: disable=broad-except
    status = errors.refused(err)
    if status is None:
      raise
    return status
  print(f'packed {index["num_records"]} images of {len(index["classes"])} classes '
        f'into {len(index["shards"])} shards in {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
