"""Per-image embeddings and per-token codes of a trained run -> one .npz file.

    python -m jepa_jax.export --workdir RUN_DIR --out FILE.npz [--encoder context] [--tokens]

Loads the run (`jepa_jax.load_run`: config.json and final_state.msgpack),
encodes every image of its train and val splits whole (`TrainedRun.encode`)
and writes, for SPLIT in train, val:

  SPLIT_embeddings  (N, D) float32: per image, the mean of the encoder's tokens
                    (over valid tokens on padded ARC grids)
  SPLIT_codes       (N, T) int32: the code of every context-encoder token
                    (`TrainedRun.codes`; -1 at padding tokens), runs with VQ only
  SPLIT_labels      (N,) the class labels, when the data has them
  SPLIT_tokens      (N, T, D) float32 per-token embeddings, with --tokens only
  SPLIT_valid       (N, T) bool token validity, padded data only

and `encoder` (the encoder's name), `codebook` (K, d; runs with a learned
codebook). Numpy reads it back: `np.load(FILE.npz)['val_embeddings']`. A
folder that is not a finished run is refused with one line naming it before
anything is written (docs/errors.md).
"""
from __future__ import annotations

import sys
from typing import Dict

import numpy as np

from jepa_jax import errors
from jepa_jax.run import files as records
from jepa_jax.run import trained


def arrays(run: trained.TrainedRun, encoder: str = 'context',
           tokens: bool = False) -> Dict[str, np.ndarray]:
  """{name: array} of the module docstring for a loaded run."""
  out = {'encoder': np.asarray(encoder)}
  ds = run.dataset
  for split, images, labels in (('train', ds.train_images, ds.train_labels),
                                ('val', ds.val_images, ds.val_labels)):
    emb = run.encode(images, encoder, tokens=tokens)
    out[f'{split}_embeddings'] = emb.pooled.astype(np.float32)
    if tokens:
      out[f'{split}_tokens'] = emb.tokens.astype(np.float32)
    if emb.valid is not None:
      out[f'{split}_valid'] = emb.valid
    if run.quantizer is not None:
      out[f'{split}_codes'] = run.codes(images)
    if labels is not None:
      out[f'{split}_labels'] = np.asarray(labels)
  if run.codebook is not None:
    out['codebook'] = run.codebook
  return out


def export(workdir: str, out_path: str, encoder: str = 'context',
           tokens: bool = False) -> Dict[str, np.ndarray]:
  """Writes `arrays(load_run(workdir), ...)` to `out_path` (atomically);
  returns them."""
  errors.check_out_file(out_path, '.npz')
  found = arrays(trained.load_run(workdir), encoder, tokens)
  records.write_atomically(out_path, lambda f: np.savez(f, **found), 'wb')
  return found


def main(argv=None) -> int:
  ap = errors.ArgumentParser(prog='python -m jepa_jax.export',
                             description='Per-image embeddings, per-token codes and '
                             'labels of a trained run -> a .npz file')
  ap.add_argument('--workdir', required=True, help='a finished run folder')
  ap.add_argument('--out', required=True, help='the .npz file to write')
  ap.add_argument('--encoder', choices=trained.ENCODERS, default='context',
                  help='the encoder whose tokens are pooled (default %(default)s; '
                  'the codes are always the context encoder\'s)')
  ap.add_argument('--tokens', action='store_true',
                  help='also write the per-token embeddings (N, T, D)')
  args = ap.parse_args(argv)
  try:
    found = export(args.workdir, args.out, args.encoder, args.tokens)
  except Exception as err:  # pylint: disable=broad-except
    status = errors.refused(err, also=(ValueError, OSError))
    if status is None:
      raise
    return status
  shapes = ', '.join(f'{k} {v.shape}' for k, v in found.items() if v.ndim)
  print(f'{shapes} -> {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
