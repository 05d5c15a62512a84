"""Host memory while streaming a generated JPEG folder through data.pipeline='grain'.

  python -m experiments.results.grain_stream.grain_stream_rss --images 100000 --root /tmp/jpegs \
      [--source folder|arrayrecord] [--steps 200] [--batch 64] [--workers 0]

Writes `--images` small random JPEGs (--size px, 10 classes) under --root if
they are not there yet (not committed anywhere), optionally packs them into
ArrayRecord shards (--source arrayrecord), loads the dataset as a run would
(`data.load_dataset`: lazy train split, val split decoded in memory) and
reads --steps batches of the first epochs through `data.train_batches`. It
prints one JSON line: peak host RSS (this process plus any Grain workers,
from /proc) after loading and while streaming, images/s, and the sizes.
The val split is the one part held in memory: its size grows with
`--val_fraction` x images, so compare runs at the same val size
(--val_images fixes it by setting val_fraction).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def rss_mib(include_children: bool = True) -> float:
  """Resident memory of this process (and its child processes), MiB."""
  import psutil  # noqa: PLC0415
  me = psutil.Process()
  procs = [me] + (me.children(recursive=True) if include_children else [])
  total = 0
  for p in procs:
    try:
      total += p.memory_info().rss
    except psutil.Error:
      pass
  return total / 2**20


def make_jpegs(root: str, count: int, size: int, classes: int = 10) -> None:
  """`count` random JPEGs of size x size px in `classes` subfolders (skipped
  when root already holds that many)."""
  from PIL import Image  # noqa: PLC0415
  marker = os.path.join(root, f'.made-{count}-{size}')
  if os.path.exists(marker):
    return
  rng = np.random.default_rng(0)
  for c in range(classes):
    os.makedirs(os.path.join(root, f'c{c:02d}'), exist_ok=True)
  for i in range(count):
    base = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((size, size), Image.Resampling.BILINEAR)
    img.save(os.path.join(root, f'c{i % classes:02d}', f'{i:07d}.jpg'), quality=85)
  open(marker, 'w').close()


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--images', type=int, default=100_000)
  ap.add_argument('--root', required=True)
  ap.add_argument('--size', type=int, default=32)
  ap.add_argument('--source', choices=('folder', 'arrayrecord'), default='folder')
  ap.add_argument('--steps', type=int, default=200)
  ap.add_argument('--batch', type=int, default=64)
  ap.add_argument('--workers', type=int, default=0)
  ap.add_argument('--threads', type=int, default=4)
  ap.add_argument('--val_images', type=int, default=256)
  args = ap.parse_args()

  from jepa_jax import data  # noqa: PLC0415
  from jepa_jax.config import load as config_lib  # noqa: PLC0415
  from jepa_jax.data import pack  # noqa: PLC0415
  t0 = time.perf_counter()
  make_jpegs(args.root, args.images, args.size)
  path = args.root
  if args.source == 'arrayrecord':
    path = args.root.rstrip('/') + '.ar'
    if not os.path.exists(os.path.join(path, 'index.json')):
      pack.pack(args.root, path, max(1, args.images // 10_000))
  make_s = time.perf_counter() - t0
  base = config_lib.load_module(os.path.join(
      os.path.dirname(__file__), '..', '..', '..', 'configs', 'base.py'))
  cfg = base.get_config()
  cfg.data.name, cfg.data.path, cfg.data.pipeline = args.source, path, 'grain'
  cfg.data.image_size, cfg.data.channels = (args.size, args.size), 3
  cfg.data.val_fraction = args.val_images / args.images
  cfg.data.read_threads, cfg.data.workers = args.threads, args.workers
  cfg.train.batch_size = args.batch
  config_lib.validate(cfg)
  rss_start = rss_mib()
  ds = data.load_dataset(cfg)
  rss_loaded = rss_mib()
  spe = len(ds.train_images) // args.batch
  peak, seen, epoch, t1 = rss_loaded, 0, 0, time.perf_counter()
  while seen < args.steps:
    for images, _ in data.train_batches(cfg, ds.train_images, epoch,
                                        min(spe, args.steps - seen)):
      seen += 1
      if seen % 10 == 0:
        peak = max(peak, rss_mib())
    epoch += 1
  stream_s = time.perf_counter() - t1
  peak = max(peak, rss_mib())
  print(json.dumps({
      'images': args.images, 'source': args.source, 'size': args.size,
      'batch': args.batch, 'steps': seen, 'workers': args.workers,
      'threads': args.threads, 'val_images': len(ds.val_images),
      'rss_before_load_mib': round(rss_start, 1), 'rss_loaded_mib': round(rss_loaded, 1),
      'rss_peak_streaming_mib': round(peak, 1),
      'images_per_s': round(seen * args.batch / stream_s, 1),
      'make_s': round(make_s, 1), 'cpus': os.cpu_count()}))


if __name__ == '__main__':
  main()
