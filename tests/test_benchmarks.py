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
  assert step['rounds'] == 2 and step['reps'] == 4 and len(step['round_medians_ms']) == 2
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


def test_interleaved_rounds_alternate_the_sides_and_keep_every_time():
  from experiments.benchmarks import common  # noqa: PLC0415
  order = []
  calls = {'a': lambda: order.append('a'), 'b': lambda: order.append('b')}
  out = common.interleaved(calls, warmup=1, reps=2, rounds=3)
  # Warm-up once each, then rounds a a b b | b b a a | a a b b.
  assert ''.join(order) == 'ab' + 'aabb' + 'bbaa' + 'aabb'
  for side in 'ab':
    assert out[side]['reps'] == 6 and out[side]['rounds'] == 3
    assert len(out[side]['round_medians_ms']) == 3
    assert out[side]['min_ms'] <= out[side]['median_ms'] <= out[side]['max_ms']
    assert out[side]['round_spread'] >= 0
