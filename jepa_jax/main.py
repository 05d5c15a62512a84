"""Command line: `python -m jepa_jax.main --config=configs/gentle.py --workdir=runs/gentle`.

Override any key: `--config.vq.commitment_cost=0.2`; variant strings after
the file name: `--config=configs/gentle.py:tiny`.
"""
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from jepa_jax import config_lib
from jepa_jax import data
from jepa_jax import train

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py[:variant]).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for the run outputs.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  try:
    summary = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except config_lib.ConfigError as err:
    print(f'config error: {err}', file=sys.stderr)
    sys.exit(2)
  except data.DataError as err:
    print(f'data error: {err}', file=sys.stderr)
    sys.exit(2)
  except train.TrainingError as err:
    print(f'error: {err}', file=sys.stderr)
    sys.exit(1)
  if summary.get('parallel', {}).get('process_index', 0) != 0:
    return                        # only process 0 reports
  print(f"{summary['status']}: {summary['epochs_completed']} epochs, "
        f"{summary['steps']} steps, best val loss {summary['best_val_loss']:.4f} "
        f"(epoch {summary['best_epoch']}), wall {summary['wall_time_s']:.1f} s, "
        f"compile {summary['compile_time_s']:.1f} s -> {_WORKDIR.value}")


if __name__ == '__main__':
  app.run(main)
