"""Checksums of a checkpoint's state: computed when it is saved, checked when
it is restored, so damaged bytes are never trained on.

Orbax reads back whatever bytes its data files hold: 512 garbled bytes in the
latest checkpoint restored without a word (only the codebook differed), and
the run went non-finite two steps later. Now each save also writes the item

  integrity  JSON: {'state': {LEAF: DIGEST}}, the BLAKE2b-128 digest of each
             array of the state (its dtype, shape and bytes), computed on the
             host from the very arrays handed to Orbax

and restoring recomputes the digests of what it read: a leaf that differs
makes the checkpoint damaged (`jepa_jax.checkpoint` moves it aside and falls
back to the previous one). A checkpoint written before this item existed is
restored unchecked. A partial restore (init_from) checks the leaves it reads.
Before any of that, `damaged_files` finds files missing or unreadable.
"""
from __future__ import annotations

import hashlib
import os
from typing import Dict, List

import jax
import numpy as np

ITEM = 'integrity'


class DamagedCheckpoint(ValueError):
  """A checkpoint whose files are missing or unreadable, or whose arrays read
  back differ from their checksums (not a config mismatch)."""


# Files a complete checkpoint step folder holds whatever its tree: the tree
# metadata of the state and the meta item. Without them Orbax reads an empty
# tree, which would look like a checkpoint of another model.
REQUIRED_FILES = ('state/_METADATA', 'meta/metadata')


def damaged_files(step_dir: str) -> List[str]:
  """'NAME: why' for each required file missing and each file that cannot be
  opened and read, in the step folder `step_dir`; [] when it looks whole."""
  out = [f'{name}: missing' for name in REQUIRED_FILES
         if not os.path.isfile(os.path.join(step_dir, name))]

  def unreadable(err):
    out.append(f'{os.path.relpath(err.filename, step_dir)}: {err.strerror}')

  for root, _, files in os.walk(step_dir, onerror=unreadable):
    for name in files:
      path = os.path.join(root, name)
      try:
        with open(path, 'rb') as f:
          f.read(1)
      except OSError as err:
        out.append(f'{os.path.relpath(path, step_dir)}: {err.strerror}')
  return out


def _host_array(leaf) -> np.ndarray:
  if hasattr(leaf, 'dtype') and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  return np.ascontiguousarray(np.asarray(leaf))


def digests(tree) -> Dict[str, str]:
  """{'params/encoder/...': hex digest} of every array leaf of `tree`."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  host = jax.device_get([leaf for _, leaf in leaves])
  out = {}
  for (path, _), leaf in zip(leaves, host):
    arr = _host_array(leaf)
    h = hashlib.blake2b(digest_size=16)
    h.update(f'{arr.dtype.str}{arr.shape}'.encode())
    h.update(arr.reshape(-1).view(np.uint8))
    out[jax.tree_util.keystr(path, simple=True, separator='/')] = h.hexdigest()
  return out


def mismatches(saved: Dict[str, str], tree) -> List[str]:
  """The leaves of `tree` whose bytes differ from the digests `saved` when
  the checkpoint was written (or that it has no digest of), sorted."""
  return sorted(name for name, digest in digests(tree).items()
                if saved.get(name) != digest)
