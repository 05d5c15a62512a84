"""The benchmark entry point runs end to end in --quick mode (no timing assertions)."""
import json
import os

from experiments.benchmarks import __main__ as bench


def test_quick_benchmark_writes_every_section(tmp_path):
  bench.main(['--quick', '--skip-torch', '--out', str(tmp_path)])
  res = json.load(open(tmp_path / 'results.json'))
  assert res['quick'] and not res['torch_side']
  assert {'matmul_peak', 'train_step', 'vq_layer', 'vq_scaling', 'overheads'} <= set(res)
  step = res['train_step'][0]['jax']
  assert step['flops_per_step'] > 0 and step['min_ms'] <= step['median_ms'] <= step['max_ms']
  scaling = res['vq_scaling'][0]
  # The tiled search never plans a (tokens x codes) distance matrix: its
  # planned peak stays below the full matrix's size.
  assert scaling['peak_bytes'] < scaling['tokens'] * scaling['codes'] * 4
  assert res['overheads']['steps'] == 6 and 0 <= res['overheads']['overhead_fraction'] <= 1
  md = (tmp_path / 'RESULTS.md').read_text()
  for heading in ('Dense matmul peak', '1. Train step', '2. Roofline', '3. VQ layer',
                  '4. VQ scaling', '5. Overheads'):
    assert heading in md


def test_quick_never_writes_over_the_published_results(tmp_path):
  quick = bench.output_dir(None, quick=True)
  assert os.path.isdir(quick) and os.path.realpath(quick) != os.path.realpath(bench.HERE)
  assert bench.output_dir(None, quick=False) == bench.HERE
  assert bench.output_dir(str(tmp_path / 'x'), quick=True) == str(tmp_path / 'x')
  assert (tmp_path / 'x').is_dir()
