"""`python -m experiments.benchmarks [--quick] [--out DIR]`.

Runs every benchmark side by side in this process tree on this machine and
writes RESULTS.md and results.json into --out (default: this folder for a full
run; a new temporary folder for --quick, so a smoke test never writes over the
published results):

1. train step: jepa_jax's jitted step vs the same JEPA in PyTorch (eager and
   torch.compile), sizes (dim, depth, heads, batch) on 16x16 images (64 tokens);
2. roofline: XLA's FLOPs per step, achieved FLOP/s, fraction of the measured
   dense-matmul peak;
3. VQ layer: quantize + EMA update vs vector-quantize-pytorch's VectorQuantize;
4. VQ scaling: nearest-code search time and peak memory up to 65,536 codes x
   65,536 tokens at dim 256, memory-bounded by tiling;
5. overheads: time outside the compiled step in a default run; compiles.

--quick runs tiny sizes and few repetitions (a smoke test, not a measurement).
On a GPU (JAX's default backend 'gpu' and torch.cuda available) both sides run
on it, the PyTorch side synchronised after each timed call, with TF32 allowed
for float32 matmuls on both sides (JAX's default precision; PyTorch's
`set_float32_matmul_precision('high')`), and the matmul peak at n=8192.
The PyTorch side runs only when torch and vector-quantize-pytorch are
installed (`pip install -e '.[bench]'`); otherwise it is reported as skipped.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

from experiments.benchmarks import common
from experiments.benchmarks import jax_bench

HERE = os.path.dirname(os.path.abspath(__file__))

FULL = dict(
    sizes=[(64, 2, 2, 256), (192, 6, 3, 128), (384, 6, 6, 64)],
    warmup=3, reps=5, rounds=4, matmul_n=2048,
    vq_layer=[(4096, 64, 512), (16384, 256, 8192)],
    vq_scaling=[(tokens, codes) for codes in (512, 4096, 16384, 65536)
                for tokens in (4096, 65536)],
    vq_max_elements=2 ** 24, overhead_config='configs/gentle.py')
QUICK = dict(
    sizes=[(32, 1, 2, 16)], warmup=1, reps=2, rounds=2, matmul_n=256,
    vq_layer=[(256, 16, 64)], vq_scaling=[(4096, 4096)], vq_max_elements=2 ** 16,
    overhead_config='configs/gentle.py:tiny')


def _on_gpu() -> bool:
  import jax
  return jax.default_backend() == 'gpu'


def _torch():
  try:
    import torch
    import vector_quantize_pytorch  # noqa: F401
    from experiments.benchmarks import torch_bench
    if _on_gpu():
      if not torch.cuda.is_available():
        print('PyTorch side skipped: JAX runs on a GPU but torch.cuda is not available',
              file=sys.stderr)
        return None
      torch.set_float32_matmul_precision('high')      # TF32, as JAX's default on GPU
      torch_bench.set_device('cuda')
    return torch_bench
  except ImportError as err:
    print(f'PyTorch side skipped: {err}', file=sys.stderr)
    return None


def _train_step_row(size, plan, tb, skip_torch_compile: bool):
  """One size: every side prepared (compiled, first call made), then timed
  in `plan['rounds']` alternating rounds of `plan['reps']` calls
  (`common.interleaved`)."""
  dim, depth, heads, batch = size
  row = {'size': list(size)}
  print(f'train step {row["size"]} ...', file=sys.stderr, flush=True)
  calls, infos = {}, {}
  calls['jax'], infos['jax'] = jax_bench.train_step_call(dim, depth, heads, batch)
  if tb:
    cfg = jax_bench.bench_config(dim, depth, heads, batch)
    calls['torch_eager'], infos['torch_eager'] = tb.train_step_call(
        cfg, jax_bench.IMAGE, batch)
    if not skip_torch_compile:
      try:
        calls['torch_compile'], infos['torch_compile'] = tb.train_step_call(
            cfg, jax_bench.IMAGE, batch, compile_model=True)
      except Exception as err:  # noqa: BLE001  (report, do not hide)
        row['torch_compile'] = {'error': f'{type(err).__name__}: {err}'[:300]}
  timed = common.interleaved(calls, plan['warmup'], plan['reps'], plan['rounds'])
  for side, stats in timed.items():
    if side == 'jax':
      row[side] = jax_bench.step_stats(stats, infos[side], batch)
    else:
      row[side] = dict(stats, **infos[side],
                       samples_per_s=batch / (stats['median_ms'] / 1e3))
  return row


def run(plan, quick: bool, skip_torch: bool = False, skip_overheads: bool = False,
        skip_torch_compile: bool = False):
  tb = None if skip_torch else _torch()
  if _on_gpu() and not quick:
    plan = dict(plan, matmul_n=8192, reps=20)
  res = {'machine': common.machine(), 'quick': quick,
         'command': 'python -m experiments.benchmarks' + (' --quick' if quick else '')
                    + (' --skip-overheads' if skip_overheads else '')
                    + (' --skip-torch' if skip_torch else '')
                    + (' --skip-torch-compile' if skip_torch_compile else ''),
         'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
         'torch_side': tb is not None, 'gpu': _on_gpu()}
  try:
    res['commit'] = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=HERE,
                                   capture_output=True, text=True).stdout.strip()
  except OSError:
    res['commit'] = None
  w, r = plan['warmup'], plan['reps']
  res.update(rounds=plan['rounds'], reps=r)

  res['matmul_peak'] = {'jax': jax_bench.matmul_peak(plan['matmul_n'], r)}
  if tb:
    res['matmul_peak']['torch'] = tb.matmul_peak(plan['matmul_n'], r)

  res['train_step'] = [_train_step_row(size, plan, tb, skip_torch_compile)
                       for size in plan['sizes']]

  res['vq_layer'] = []
  for tokens, dim, codes in plan['vq_layer']:
    print(f'vq layer {(tokens, dim, codes)} ...', file=sys.stderr, flush=True)
    row = {'tokens': tokens, 'dim': dim, 'codes': codes,
           'jax': jax_bench.vq_layer(tokens, dim, codes, 0.99, w, r)}
    if tb:
      row['torch'] = tb.vq_layer(tokens, dim, codes, 0.99, w, r)
    res['vq_layer'].append(row)

  res['vq_scaling'] = []
  for tokens, codes in plan['vq_scaling']:
    print(f'vq scaling {(tokens, codes)} ...', file=sys.stderr, flush=True)
    res['vq_scaling'].append({'tokens': tokens, 'codes': codes, 'dim': 256,
                              'max_elements': plan['vq_max_elements'],
                              **jax_bench.vq_scaling(tokens, codes, 256,
                                                     plan['vq_max_elements'],
                                                     max(1, r // 3))})

  if skip_overheads:
    res['overheads'] = None
    return res
  print('overheads ...', file=sys.stderr, flush=True)
  root = os.path.dirname(os.path.dirname(HERE))
  res['overheads'] = jax_bench.overheads(os.path.join(root, plan['overhead_config']),
                                         jax_bench.tmpdir())
  return res


def _ratio(a, b):
  return f'{a / b:.2f}x' if a and b else 'n/a'


def markdown(res) -> str:
  m = res['machine']
  lines = ['# jepa_jax benchmarks', '',
           f"Command: `{res['command']}` at commit `{res['commit']}`, {res['date']}.", '',
           f"Machine: {m.get('model_name', '?')}, {m['cpu_count']} cores "
           f"({m.get('flags', '')}); {m['platform']}; Python {m['python']}; "
           f"jax {m.get('jax')} on {m.get('jax_devices')}"
           + (f" ({m['jax_device_kind']})" if m.get('jax_device_kind') else '')
           + f"; torch {m.get('torch')}"
           + (f" ({m.get('torch_threads')} threads)" if m.get('torch') else '')
           + (f" on {m['torch_cuda_device']}" if m.get('torch_cuda_device') else '') + '.', '',
           'Times are min / median / max over the repetitions after warm-up. Train step: '
           f"the sides of a size alternate in {res.get('rounds', 1)} rounds of "
           f"{res.get('reps', '?')} calls each (A B C, C B A, ...); 'spread' is the range of "
           'the per-round medians over their median.', '']
  if res.get('gpu'):
    lines += ['On the GPU: both sides on the same card, PyTorch synchronised after each timed '
              "call; float32 matmuls may use TF32 on both sides (JAX's default precision, "
              "PyTorch's `set_float32_matmul_precision('high')`).", '']
  if res['quick']:
    lines += ['**Quick mode: tiny sizes, 2 repetitions — a smoke test, not a measurement.**', '']
  mp = res['matmul_peak']
  lines += ['## Dense matmul peak', '', '| side | GFLOP/s (best) |', '|---|---|']
  lines += [f"| {k} | {v['gflops']:.1f} |" for k, v in mp.items()]
  peak = max(v['gflops'] for v in mp.values())
  lines += ['', '## 1. Train step', '',
            '| size (dim, depth, heads, batch) | side | min / median / max ms | spread '
            '| samples/s | compile / first call s | speed-up of jepa_jax |',
            '|---|---|---|---|---|---|---|']
  for row in res['train_step']:
    jx = row['jax']
    for side in ('jax', 'torch_eager', 'torch_compile'):
      if side not in row:
        continue
      s = row[side]
      if 'error' in s:
        lines.append(f"| {tuple(row['size'])} | {side} | failed: {s['error']} | | | | |")
        continue
      first = s.get('compile_s', s.get('first_call_s'))
      spread = f"{s['round_spread']:.0%}" if 'round_spread' in s else '–'
      lines.append(f"| {tuple(row['size'])} | {side} | {s['min_ms']:.1f} / {s['median_ms']:.1f}"
                   f" / {s['max_ms']:.1f} | {spread} | {s['samples_per_s']:.0f} | {first:.1f} | "
                   f"{_ratio(s['median_ms'], jx['median_ms']) if side != 'jax' else '–'} |")
  lines += ['', '## 2. Roofline (jepa_jax step)', '',
            '| size | GFLOP / step (XLA cost analysis) | achieved GFLOP/s | fraction of matmul peak |',
            '|---|---|---|---|']
  for row in res['train_step']:
    jx = row['jax']
    lines.append(f"| {tuple(row['size'])} | {jx['flops_per_step'] / 1e9:.2f} | "
                 f"{jx['achieved_gflops']:.1f} | {jx['achieved_gflops'] / peak:.0%} |")
  lines += ['', '## 3. VQ layer (nearest codes + EMA update)', '',
            '| tokens, dim, codes | jepa_jax median ms | vector-quantize-pytorch median ms | speed-up |',
            '|---|---|---|---|']
  for row in res['vq_layer']:
    t = row.get('torch', {}).get('median_ms')
    lines.append(f"| {row['tokens']}, {row['dim']}, {row['codes']} | {row['jax']['median_ms']:.2f}"
                 f" | {f'{t:.2f}' if t else 'skipped'} | {_ratio(t, row['jax']['median_ms'])} |")
  lines += ['', f"## 4. VQ scaling (dim 256, distance blocks <= {res['vq_scaling'][0]['max_elements']:,} floats)", '',
            '| tokens | codes | median ms | planned peak memory (XLA) |', '|---|---|---|---|']
  for row in res['vq_scaling']:
    pk = row['peak_bytes']
    lines.append(f"| {row['tokens']:,} | {row['codes']:,} | {row['median_ms']:.1f} | "
                 f"{pk / 2 ** 20:.1f} MiB |" if pk is not None else
                 f"| {row['tokens']:,} | {row['codes']:,} | {row['median_ms']:.1f} | n/a |")
  o = res['overheads']
  if o is None:
    lines += ['', '## 5. Overheads of a real run', '', 'Not run (`--skip-overheads`).', '']
    return '\n'.join(lines)
  lines += ['', '## 5. Overheads of a real run', '',
            f"`{os.path.relpath(o['config'], os.path.dirname(os.path.dirname(HERE)))}`: "
            f"{o['steps']} steps, wall {o['run_wall_s']:.1f} s (compile {o['run_compile_s']:.1f} s); "
            f"compiled step alone {o['step_median_ms']:.2f} ms -> {o['time_in_step_s']:.1f} s in the step; "
            f"**{o['overhead_fraction']:.1%}** of the post-compile wall time outside the step "
            f"(data, validation, embedding metrics, logging). XLA compiles in the whole run: "
            f"{o['xla_compiles_in_run']} (the train step is compiled ahead of time once; "
            'the rest are initialisation, validation and metric functions).', '']
  return '\n'.join(lines)


def output_dir(out, quick: bool) -> str:
  """Where results go: `out` when given; else this folder (the published
  results) for a full run and a new temporary folder for --quick."""
  if out is None:
    out = tempfile.mkdtemp(prefix='jepa_jax_bench_quick_') if quick else HERE
  os.makedirs(out, exist_ok=True)
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--out', default=None,
                      help='folder for RESULTS.md and results.json (default: this folder; '
                           'a new temporary folder with --quick)')
  parser.add_argument('--skip-torch', action='store_true',
                      help='run only the jepa_jax side')
  parser.add_argument('--skip-overheads', action='store_true',
                      help='skip section 5 (the default training run)')
  parser.add_argument('--skip-torch-compile', action='store_true',
                      help='time PyTorch eager only (torch.compile takes minutes per size)')
  args = parser.parse_args(argv)
  res = run(QUICK if args.quick else FULL, args.quick, args.skip_torch, args.skip_overheads,
            args.skip_torch_compile)
  out = output_dir(args.out, args.quick)
  with open(os.path.join(out, 'results.json'), 'w') as f:
    json.dump(res, f, indent=2)
  with open(os.path.join(out, 'RESULTS.md'), 'w') as f:
    f.write(markdown(res))
  print(markdown(res))
  print(f'wrote {out}/RESULTS.md and results.json')
  return out


if __name__ == '__main__':
  main()
