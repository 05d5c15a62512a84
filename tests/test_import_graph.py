"""The import graph of jepa_jax/: layered, acyclic, nothing imported from above.

Parses every module (imports inside functions included, so a lazy import
that hides a cycle counts) and checks that each import of a jepa_jax module
goes to a module of the same or a lower layer of `LAYERS`, that the graph has
no cycle, and that no module imports from experiments/, tests/ or configs/.
`from pkg import name` counts as an import of the module pkg.name when that
is a module, else of pkg.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, 'jepa_jax')

# Bottom up. A module may import from its own layer (acyclically) and below.
LAYERS = (
    ('foundation: no jepa_jax imports but run_files', {
        'jepa_jax', 'errors', 'config_keys', 'records', 'timing', 'interrupts',
        'run_files', 'orbax_noise', 'periodic', 'workdir_lock', 'final_state',
        'restart', 'cli', 'prefetch', 'probe_cache'}),
    ('maths: pure functions of arrays, models, the optimizer', {
        'distances', 'vq', 'anticollapse', 'losses', 'metrics', 'masking',
        'codebook_health', 'model', 'optimizer', 'probes', 'code_metrics', 'seed_stats',
        'probe_set'}),
    ('data sources', {
        'data.dataset', 'data.batches', 'data.lazy', 'data.arc', 'data.digits',
        'data.files', 'data.arrayrecord', 'data.grain_pipeline', 'data.grid_properties',
        'data.shapes_render', 'data.shapes', 'data', 'data.pack'}),
    ('configs: files, defaults, checks', {
        'config', 'config.variants', 'config.base', 'config_files', 'config_defaults', 'config_checks', 'yaml_config', 'config_lib'}),
    ('the quantizer layer and the monitor', {'quantizer_spec', 'quantizer', 'monitor'}),
    ('composition: config + data -> step functions', {
        'objective', 'step', 'measure', 'parallel', 'probe_trajectory'}),
    ('the trainer and its tools', {
        'checkpoint_integrity', 'checkpoint', 'init_from', 'workdir_config', 'start_state', 'loop_state',
        'run_open', 'run_reader', 'run_summary', 'epoch_end', 'compile_cache',
        'train', 'trained', 'evaluate', 'goals', 'diagnose', 'stages', 'learning'}),
    ('commands', {'main', 'usage', 'flag_parsing', 'config_export', 'export'}),
)


def _modules():
  """{dotted name relative to jepa_jax ('' -> 'jepa_jax'): file path}."""
  mods = {}
  for folder, _, files in os.walk(PACKAGE):
    for f in files:
      if f.endswith('.py'):
        path = os.path.join(folder, f)
        name = os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, '.')
        name = name[:-len('__init__')].rstrip('.') if name.endswith('__init__') else name
        mods[name or 'jepa_jax'] = path
  return mods


def _short(dotted):
  return 'jepa_jax' if dotted == 'jepa_jax' else dotted[len('jepa_jax.'):]


def _imports(path, mods):
  """(jepa_jax modules imported, top-level names of other packages) of a file."""
  ours, other = set(), set()

  def resolve(dotted):
    name = _short(dotted)
    while name not in mods:
      name = name.rsplit('.', 1)[0] if '.' in name else 'jepa_jax'
    return name

  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.split('.')[0] == 'jepa_jax':
          ours.add(resolve(alias.name))
        else:
          other.add(alias.name.split('.')[0])
    elif isinstance(node, ast.ImportFrom):
      assert node.level == 0, f'{path}: relative import'
      if node.module.split('.')[0] != 'jepa_jax':
        other.add(node.module.split('.')[0])
        continue
      for alias in node.names:
        full = f'{node.module}.{alias.name}'
        ours.add(resolve(full) if _short(full) in mods else resolve(node.module))
  return ours, other


def _graph():
  mods = _modules()
  graph, other = {}, {}
  for name, path in mods.items():
    ours, other[name] = _imports(path, mods)
    graph[name] = ours - {name}
  return graph, other


def test_every_module_has_a_layer():
  graph, _ = _graph()
  placed = [m for _, layer in LAYERS for m in layer]
  assert len(placed) == len(set(placed)), 'a module in two layers'
  assert sorted(set(graph) - set(placed)) == [], 'modules without a layer'
  assert sorted(set(placed) - set(graph)) == [], 'layers name missing modules'


def test_no_module_imports_from_a_higher_layer():
  graph, _ = _graph()
  level = {m: i for i, (_, layer) in enumerate(LAYERS) for m in layer}
  upward = [f'{m} ({LAYERS[level[m]][0]}) imports {d} ({LAYERS[level[d]][0]})'
            for m, deps in sorted(graph.items()) for d in sorted(deps)
            if level[d] > level[m]]
  assert upward == []


def test_import_graph_has_no_cycle():
  graph, _ = _graph()
  state, cycles = {}, []

  def visit(m, path):
    state[m] = 'open'
    for d in sorted(graph[m]):
      if state.get(d) == 'open':
        cycles.append(' -> '.join(path[path.index(d):] + [d]))
      elif d not in state:
        visit(d, path + [d])
    state[m] = 'done'

  for m in sorted(graph):
    if m not in state:
      visit(m, [m])
  assert cycles == []


def test_the_package_imports_nothing_outside_it_of_this_repository():
  _, other = _graph()
  bad = {m: sorted(names & {'experiments', 'tests', 'configs', 'conftest'})
         for m, names in other.items()}
  assert {m: n for m, n in bad.items() if n} == {}


def test_the_checks_see_cycles_lazy_imports_and_upward_imports(tmp_path):
  """The parser on a made-up package: a cycle through an import inside a
  function is found, and `from jepa_jax.x import name` counts as x."""
  (tmp_path / 'a.py').write_text('from jepa_jax import b\n')
  (tmp_path / 'b.py').write_text('def f():\n  from jepa_jax.a import thing  # noqa\n')
  mods = {'a': str(tmp_path / 'a.py'), 'b': str(tmp_path / 'b.py'), 'jepa_jax': ''}
  assert _imports(mods['a'], mods)[0] == {'b'}
  assert _imports(mods['b'], mods)[0] == {'a'}
