"""jepa_jax: a functional JAX/Flax JEPA with a vector-quantized bottleneck.

The public surface, imported on first use (so `import jepa_jax` stays light
and a small command does not load the trainer):

  load_run(workdir)          a finished run: config, weights, `encode`,
                             `codes`, the quantizer (docs/use_a_run.md)
  load_config(spec)          'configs/gentle.py[:variants]' or a YAML file
                             -> ConfigDict, as `--config=` builds it
  train_and_evaluate(cfg, workdir)
                             train (or resume) one run into `workdir`
  evaluate_run(workdir)      probes and code metrics of a run -> eval.json

Commands: `python -m jepa_jax.main` (train), `jepa_jax.evaluate`,
`jepa_jax.diagnose`, `jepa_jax.export`.
"""
import importlib

_PUBLIC = {
    'load_run': 'jepa_jax.run.trained',
    'TrainedRun': 'jepa_jax.run.trained',
    'load_config': 'jepa_jax.config.load',
    'train_and_evaluate': 'jepa_jax.train.loop',
    'evaluate_run': 'jepa_jax.evaluate',
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
  if name in _PUBLIC:
    return getattr(importlib.import_module(_PUBLIC[name]), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(list(globals()) + list(_PUBLIC))
