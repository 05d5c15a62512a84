"""Screening of recipes on digits: train one config with a checkpoint at
every EVERY-th epoch end, then probe each checkpoint and the initial state
with evaluate's 5-fold linear probe (target and context encoder, pooled
tokens of whole images).

    python experiments/results/representation/screen_traj.py CONFIG WORKDIR 69 \
        --config.seed=0 --config.checkpoint.every_epochs=3 [--config.KEY=VALUE ...]

Prints one line: `step:target/context` accuracies (percent) at each point,
then the best and the last target value; writes WORKDIR/traj.json as
[[step, target, context], ...] (fractions). Run from anywhere: the
repository root is found from this file's place.
"""
import json, os, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, ROOT)

def train(config, workdir, overrides, every):
  cmd = [sys.executable, '-m', 'jepa_jax.main', f'--config={config}', f'--workdir={workdir}',
         f'--config.checkpoint.every_steps={every}', '--config.checkpoint.keep=100',
         '--config.train.progress_bar=False'] + overrides
  t = time.time()
  r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
  last = (r.stdout + r.stderr).strip().splitlines()[-1:]
  print('trained', workdir, f'{time.time()-t:.0f}s', last, flush=True)

def probe(workdir):
  from jepa_jax.eval import probes
  from jepa_jax.train import step as step_lib
  from jepa_jax.run import trained
  from jepa_jax.run.checkpoint import RunCheckpoints
  cfg, ds, setup, target = trained.run_setup(workdir)
  enc = trained.encoder_fn(setup)
  def score(params):
    tr = trained.in_batches(enc, params, ds.train_images).mean(1)
    va = trained.in_batches(enc, params, ds.val_images).mean(1)
    return probes.probe_scores(tr, ds.train_labels, va, ds.val_labels, 20)['linear_probe_acc']
  rows = []
  init = step_lib.init_state(setup, ds.image_shape, cfg.seed)
  rows.append((0, score(init['target_params']), score(init['params']['encoder'])))
  ck = RunCheckpoints(os.path.join(workdir, 'checkpoints'), read_only=True)
  for s in ck.steps():
    st = ck.restore(s, target).state
    rows.append((s, score(st['target_params']), score(st['params']['encoder'])))
  ck.close()
  return rows

if __name__ == '__main__':
  config, workdir, every = sys.argv[1], sys.argv[2], int(sys.argv[3])
  overrides = sys.argv[4:]
  if not os.path.exists(os.path.join(workdir, 'summary.json')):
    train(config, workdir, overrides, every)
  rows = probe(workdir)
  best = max(r[1] for r in rows)
  print(workdir, ' '.join(f'{s}:{t*100:.1f}/{c*100:.1f}' for s, t, c in rows), f'best_t {best*100:.1f} end_t {rows[-1][1]*100:.1f}', flush=True)
  json.dump(rows, open(os.path.join(workdir, 'traj.json'), 'w'))
