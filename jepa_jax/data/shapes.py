"""`shapes`: a procedural image set, generated from a seed (no download, any size).

Each image shows one *main object* of one of `data.shapes_classes` classes
(`shapes_render.SHAPES`: disc, ring, square, triangle, plus, ell, hexagram,
half disc, bar, frame) at a random position, radius, rotation and palette
colour, over a random background texture (`data.shapes_backgrounds`: flat,
gradient, stripes, checker, smoothed noise) with up to
`data.shapes_max_distractors` smaller objects of the same classes around it.
The primary label (`Dataset.train_labels`) is the main object's class; every
generating factor is labelled too (`Dataset.train_factors`, `FACTORS`).

Why this design (the aim is data where raw pixels and a random encoder probe
poorly on the class, but an encoder that learned about objects can do far
better; `experiments/results/representation/shapes_baselines.py` measures it, docs/data.md has the
numbers: pixels and a random encoder probe 18-22% on the class, the
same encoder trained on the labels 66%, the self-supervised recipes tried
so far at most 30%, so the second half is not shown yet):

* position, scale, rotation and colour vary independently, so no pixel and
  no fixed pixel template carries the class; the backgrounds differ in
  colour and texture from image to image, so the pixel statistics are
  dominated by things other than the object;
* the distractors are drawn from the same classes, smaller (their radius
  range lies below the main object's), so the class is that of the *largest*
  object: features that only summarise which local shapes occur are
  confused by them, while the main object stays recognisable by eye;
* objects never overlap (placement keeps a 2 pixel gap), so every object is
  visible and the count is what one sees;
* colours: saturated palette colours on backgrounds whose channels stay
  below 0.55, so objects stand out by eye at 32x32.

Determinism: image i of a split is a pure function of (data.split_seed,
split, i) and the dataset keys: its random draws come from
`numpy.random.default_rng([seed, split, i])` (train split 0, val 1), in the
fixed order of `draw_scene`; rendering is elementwise (`shapes_render`). So
images are drawn and rendered lazily, a batch at a time, when the trainer
reads them (`ShapesImages`, array-like as `lazy.LazyImages`): host memory
does not grow with `data.shapes_train_size`, and the Grain pipeline reads
them like any lazy source. The val split is rendered into memory (the
embedding metrics read it whole). Labels are drawn for every image at load
(scene parameters only, no pixels). Pixels are standardised per channel with
the train split's statistics over a fixed sample (`lazy.sample_stats`).

`FACTORS` (each an int per image):
  shape       the main object's class (the primary label)
  position    its centre's cell (row * 3 + col) in a 3x3 grid over the area
              its centre was drawn from (the image less its radius + 1 px)
  scale       its radius in thirds of the `shapes_scale_range`
  rotation    its angle in quarters of [-max_rotation, max_rotation]
  colour      its palette colour (`shapes_render.COLOUR_NAMES`)
  background  the background texture (index into `shapes_render.BACKGROUNDS`)
  count       objects in the image, main object included (compositional)
  relation    main object left (1) or right (0) of its nearest distractor
              (centre to centre), 2 with no distractor (compositional)
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Tuple

import numpy as np

from jepa_jax.data import dataset
from jepa_jax.data import lazy
from jepa_jax.data import shapes_render as render_lib

FACTORS = ('shape', 'position', 'scale', 'rotation', 'colour', 'background', 'count',
           'relation')
SPLITS = {'train': 0, 'val': 1}
GAP = 2.0              # pixels kept free between objects
PLACEMENT_TRIES = 20   # positions tried per distractor before it is left out
PERIOD_RANGE = (3.0, 8.0)   # stripe and checker periods, pixels
BRIGHTNESS_RANGE = (0.85, 1.0)


@dataclasses.dataclass(frozen=True)
class Params:
  """What an image depends on besides (seed, split, index): the config's
  `data.image_size` and `data.shapes_*` keys."""
  size: Tuple[int, int]
  classes: int
  scale_range: Tuple[float, float]        # main radius / min(rows, cols)
  max_rotation: float                     # degrees
  max_distractors: int
  distractor_scale_range: Tuple[float, float]
  backgrounds: Tuple[str, ...]

  @classmethod
  def from_config(cls, d) -> 'Params':
    return cls(size=tuple(int(s) for s in d.image_size), classes=int(d.shapes_classes),
               scale_range=tuple(float(s) for s in d.shapes_scale_range),
               max_rotation=float(d.shapes_max_rotation),
               max_distractors=int(d.shapes_max_distractors),
               distractor_scale_range=tuple(float(s) for s in d.shapes_distractor_scale_range),
               backgrounds=tuple(d.shapes_backgrounds))

  @property
  def slots(self) -> int:
    return 1 + self.max_distractors


def _object(rng, p: Params, scale_range, placed: List[tuple]):
  """One object from one block of uniform draws: class, radius, angle,
  colour, brightness, then up to PLACEMENT_TRIES centres, the first that
  keeps the gap to `placed` ((cx, cy, r) tuples); None when none does."""
  rows, cols = p.size
  u = rng.random(5 + 2 * PLACEMENT_TRIES)
  cls = min(int(u[0] * p.classes), p.classes - 1)
  lo, hi = scale_range
  r = (lo + (hi - lo) * float(u[1])) * min(rows, cols)
  angle = p.max_rotation * (2.0 * float(u[2]) - 1.0)
  colour = min(int(u[3] * len(render_lib.PALETTE)), len(render_lib.PALETTE) - 1)
  b0, b1 = BRIGHTNESS_RANGE
  rgb = render_lib.PALETTE[colour] * np.float32(b0 + (b1 - b0) * float(u[4]))
  for k in range(PLACEMENT_TRIES):
    cx = r + 1.0 + (cols - 2.0 * r - 2.0) * float(u[5 + 2 * k])
    cy = r + 1.0 + (rows - 2.0 * r - 2.0) * float(u[6 + 2 * k])
    if all(math.hypot(cx - x, cy - y) >= r + q + GAP for x, y, q in placed):
      t = math.radians(angle)
      return dict(cls=cls, cx=cx, cy=cy, r=r, angle=angle, cos=math.cos(t),
                  sin=math.sin(t), colour=colour, rgb=rgb)
  return None


def draw_scene(p: Params, seed: int, split: int, index: int) -> Dict:
  """Scene `index` of `split`: background draws, then the main object, then
  the distractors (`_object`), from `default_rng([seed, split, index])`.
  Returns the background's values and `objects`, a list of dicts (main
  object first)."""
  rng = np.random.default_rng([seed, split, index])
  u = rng.random(10)
  kind = render_lib.BACKGROUNDS.index(
      p.backgrounds[min(int(u[0] * len(p.backgrounds)), len(p.backgrounds) - 1)])
  c0 = render_lib.BACKGROUND_MAX * u[1:4]
  c1 = render_lib.BACKGROUND_MAX * u[4:7]
  t = 2.0 * math.pi * float(u[7])
  period = PERIOD_RANGE[0] + (PERIOD_RANGE[1] - PERIOD_RANGE[0]) * float(u[8])
  objects = [_object(rng, p, p.scale_range, [])]
  for _ in range(int(rng.integers(p.max_distractors + 1))):
    placed = [(o['cx'], o['cy'], o['r']) for o in objects]
    o = _object(rng, p, p.distractor_scale_range, placed)
    if o is not None:
      objects.append(o)
  noise = (rng.random(p.size, dtype=np.float32)
           if render_lib.BACKGROUNDS[kind] == 'noise' else None)
  return dict(bg_kind=kind, bg_c0=c0, bg_c1=c1, bg_cos=math.cos(t), bg_sin=math.sin(t),
              bg_period=period, bg_phase=float(u[9]), bg_noise=noise, objects=objects)


def _bin(value: float, lo: float, hi: float, bins: int) -> int:
  """Which of `bins` equal parts of [lo, hi] holds value (0 when hi == lo)."""
  if hi <= lo:
    return 0
  return min(int((value - lo) / (hi - lo) * bins), bins - 1)


def scene_factors(p: Params, scene: Dict) -> Dict[str, int]:
  """The labels of a scene (`FACTORS`, module docstring), from its draws."""
  rows, cols = p.size
  main, others = scene['objects'][0], scene['objects'][1:]
  relation = 2
  if others:
    near = min(others, key=lambda o: math.hypot(o['cx'] - main['cx'], o['cy'] - main['cy']))
    relation = int(main['cx'] < near['cx'])
  lo, hi = p.scale_range
  m, r = min(rows, cols), main['r']
  return dict(
      shape=main['cls'],
      position=(3 * _bin(main['cy'], r + 1.0, rows - r - 1.0, 3)
                + _bin(main['cx'], r + 1.0, cols - r - 1.0, 3)),
      scale=_bin(main['r'] / m, lo, hi, 3),
      rotation=_bin(main['angle'], -p.max_rotation, p.max_rotation, 4),
      colour=main['colour'], background=scene['bg_kind'],
      count=len(scene['objects']), relation=relation)


def stack_scenes(p: Params, scenes: List[Dict]) -> Dict[str, np.ndarray]:
  """The arrays `shapes_render.render` takes, for a list of scenes."""
  n, slots = len(scenes), p.slots
  out = {k: np.zeros((n, slots), np.float32) for k in ('cx', 'cy', 'r', 'cos', 'sin')}
  out.update(present=np.zeros((n, slots), bool), cls=np.zeros((n, slots), np.int32),
             rgb=np.zeros((n, slots, 3), np.float32))
  out['r'][:] = 1.0
  noise = np.zeros((n,) + p.size, np.float32)
  for i, s in enumerate(scenes):
    for j, o in enumerate(s['objects']):
      out['present'][i, j] = True
      for k in ('cls', 'cx', 'cy', 'r', 'cos', 'sin', 'rgb'):
        out[k][i, j] = o[k]
    if s['bg_noise'] is not None:
      noise[i] = s['bg_noise']
  for k in ('bg_kind', 'bg_c0', 'bg_c1', 'bg_cos', 'bg_sin', 'bg_period', 'bg_phase'):
    out[k] = np.asarray([s[k] for s in scenes],
                        np.int32 if k == 'bg_kind' else np.float32)
  out['bg_noise'] = noise
  return out


def render_indices(p: Params, seed: int, split: int, indices) -> Tuple[np.ndarray, np.ndarray]:
  """(images (n, rows, cols, 3) float32 in [0, 1], object ids (n, rows, cols))
  of the given image indices of a split."""
  scenes = [draw_scene(p, seed, split, int(i)) for i in indices]
  return render_lib.render(stack_scenes(p, scenes), p.size)


def split_factors(p: Params, seed: int, split: int, n: int) -> Dict[str, np.ndarray]:
  """{factor: (n,) int32} of images 0..n-1 of a split (draws, no pixels)."""
  rows = [scene_factors(p, draw_scene(p, seed, split, i)) for i in range(n)]
  return {f: np.asarray([r[f] for r in rows], np.int32) for f in FACTORS}


def check_config(cfg, check) -> None:
  """Checks this source's config keys before anything is drawn (called by
  `config_checks.validate`); `check(key, ok, why)` raises the ConfigError
  naming the key, `check.integer` / `check.number` / `check.positive_int`
  check a key's type and return its value."""
  d = cfg.data
  check('data.image_size', min(d.image_size) >= 16 and max(d.image_size) <= 512,
        'must be between 16 and 512 pixels a side for shapes (objects need >= 16)')
  check.positive_int('data.shapes_train_size')
  check.integer('data.shapes_val_size', 2, 'must be an integer >= 2 (validation needs 2)')
  n = len(render_lib.SHAPES)
  check.integer('data.shapes_classes', 2, f'must be an integer in [2, {n}]')
  check('data.shapes_classes', d.shapes_classes <= n, f'must be an integer in [2, {n}]')
  check.pair('data.shapes_scale_range', 0.0, 0.4)
  check.pair('data.shapes_distractor_scale_range', 0.0, 0.4)
  lo = d.shapes_scale_range[0]
  check('data.shapes_distractor_scale_range', d.shapes_distractor_scale_range[1] < lo,
        f'distractors must be smaller than the main object: hi must be < the '
        f'lower end of data.shapes_scale_range ({lo})')
  check('data.shapes_max_rotation', 0 <= check.number('data.shapes_max_rotation') <= 180,
        'must be in [0, 180] degrees')
  check.integer('data.shapes_max_distractors', 0, 'must be an integer in [0, 8]')
  check('data.shapes_max_distractors', d.shapes_max_distractors <= 8,
        'must be an integer in [0, 8]')
  bg = d.shapes_backgrounds
  check('data.shapes_backgrounds', isinstance(bg, (tuple, list)) and len(bg) >= 1
        and all(b in render_lib.BACKGROUNDS for b in bg) and len(set(bg)) == len(bg),
        f'must be a tuple of distinct names from {render_lib.BACKGROUNDS}')


class ShapesImages(lazy.LazyImages):
  """Images 0..n-1 of a split, drawn and rendered when read; `x[ids]`
  renders the whole selection in one vectorised call. Channels: 3 (RGB), or
  1 (the mean of the three)."""

  def __init__(self, p: Params, seed: int, split: int, n: int, channels: int,
               mean=None, std=None):
    super().__init__(None, np.arange(n), p.size + (channels,), mean, std)
    self.params, self.seed, self.split, self.channels = p, seed, split, channels

  def image(self, k: int) -> np.ndarray:
    return self[np.asarray([k])][0]

  def __getitem__(self, key):
    if isinstance(key, (int, np.integer)):
      return self.image(int(key) % len(self))
    ks = (np.arange(len(self))[key] if isinstance(key, slice)
          else np.asarray(key, np.int64).reshape(-1))
    if len(ks) == 0:
      return np.zeros((0,) + self.image_shape, np.float32)
    x, _ = render_indices(self.params, self.seed, self.split, self.indices[ks])
    if self.channels == 1:
      x = x.mean(axis=-1, keepdims=True)
    if self.mean is not None:
      x = ((x - self.mean) / self.std).astype(np.float32)
    return x

  def with_stats(self, mean, std) -> 'ShapesImages':
    return ShapesImages(self.params, self.seed, self.split, len(self), self.channels,
                        mean, std)


@dataset.register('shapes')
def load_shapes(cfg) -> dataset.Dataset:
  d = cfg.data
  p, seed = Params.from_config(d), int(d.split_seed)
  train = ShapesImages(p, seed, SPLITS['train'], d.shapes_train_size, d.channels)
  mean, std = lazy.sample_stats(train, seed)
  train = train.with_stats(mean, std)
  val = ShapesImages(p, seed, SPLITS['val'], d.shapes_val_size, d.channels, mean, std)
  val_images = np.concatenate([val[i:i + 1024] for i in range(0, len(val), 1024)])
  tr = split_factors(p, seed, SPLITS['train'], d.shapes_train_size)
  va = split_factors(p, seed, SPLITS['val'], d.shapes_val_size)
  return dataset.Dataset(train_images=train, val_images=val_images,
                         train_labels=tr['shape'], val_labels=va['shape'], name='shapes',
                         train_factors=tr, val_factors=va)
