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
    ('foundation: no jepa_jax imports but errors', {
        'config.keys', 'errors', 'eval', 'jepa_jax', 'model', 'objective',
        'run', 'run.files', 'train', 'train.interrupts', 'vq'}),
    ('maths: pure functions of arrays, models, the optimizer', {
        'eval.metrics', 'eval.probes', 'model.masking', 'model.vit',
        'objective.losses', 'objective.multiview', 'objective.prototypes', 'vq.anticollapse',
        'vq.codebook',
        'vq.health', 'vq.assignment'}),
    ('data sources', {
        'data', 'data.arc', 'data.arrayrecord', 'data.batches', 'data.dataset',
        'data.digits', 'data.files', 'data.grain_pipeline', 'data.grid_properties',
        'data.lazy', 'data.pack', 'data.shapes', 'data.shapes_render'}),
    ('configs: files, defaults, checks', {
        'config', 'config.base', 'config.checks', 'config.load', 'config.variants',
        'config.yaml_io', 'vq.spec'}),
    ('the quantizer layer and the monitor', {
        'train.monitor', 'vq.quantizer'}),
    ('composition: config + data -> step functions', {
        'eval.measure', 'eval.trajectory', 'objective.terms', 'train.devices',
        'train.step'}),
    ('the trainer and its tools', {
        'diagnose', 'eval.goals', 'evaluate', 'run.checkpoint', 'run.integrity',
        'run.opening', 'run.reader', 'run.summary', 'run.trained',
        'train.loop', 'train.loop_state', 'train.stages',
        'train.start'}),
    ('commands', {
        'config.flags', 'config_export', 'export', 'main', 'plot'}),
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


def _cycles(graph):
  state, cycles = {}, []

  def visit(m, path):
    state[m] = 'open'
    for d in sorted(graph.get(m, ())):
      if state.get(d) == 'open':
        cycles.append(' -> '.join(path[path.index(d):] + [d]))
      elif d not in state:
        visit(d, path + [d])
    state[m] = 'done'

  for m in sorted(graph):
    if m not in state:
      visit(m, [m])
  return cycles


def test_import_graph_has_no_cycle():
  graph, _ = _graph()
  assert _cycles(graph) == []


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


def test_experiments_have_no_import_cycle():
  """experiments/ (the assessment, its reports, the studies): no module
  imports one that imports it back, through lazy imports too."""
  folder = os.path.join(ROOT, 'experiments')
  mods = {}
  for where, _, files in os.walk(folder):
    for f in files:
      if f.endswith('.py'):
        rel = os.path.relpath(os.path.join(where, f), ROOT)[:-3].replace(os.sep, '.')
        mods[rel[:-len('.__init__')] if rel.endswith('.__init__') else rel] = os.path.join(where, f)
  graph = {}
  for name, path in mods.items():
    deps = set()
    for node in ast.walk(ast.parse(open(path).read())):
      targets = []
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module:
        targets = [f'{node.module}.{a.name}' for a in node.names] + [node.module]
      deps |= {t for t in targets if t in mods and t != name and t != 'experiments'}
    graph[name] = deps
  assert 'experiments.report_goals' in graph['experiments.report']
  assert _cycles(graph) == []


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80


def _oversized(path):
  """'path: N lines' for a module over MAX_MODULE_LINES and 'path: f() N
  lines' for each function (docstring and nested functions included) over
  MAX_FUNCTION_LINES."""
  with open(path) as f:
    source = f.read()
  rel = os.path.relpath(path, ROOT)
  out = []
  if len(source.splitlines()) > MAX_MODULE_LINES:
    out.append(f'{rel}: {len(source.splitlines())} lines')
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      n = node.end_lineno - node.lineno + 1
      if n > MAX_FUNCTION_LINES:
        out.append(f'{rel}: {node.name}() {n} lines')
  return out


def test_no_module_over_400_lines_and_no_function_over_80():
  """The house's size rules, over the package, experiments/ and configs/."""
  found = []
  for top in ('jepa_jax', 'experiments', 'configs'):
    for where, _, files in os.walk(os.path.join(ROOT, top)):
      found += [x for f in sorted(files) if f.endswith('.py')
                for x in _oversized(os.path.join(where, f))]
  assert found == []


def test_the_size_check_sees_a_long_module_and_a_long_function(tmp_path):
  body = '\n'.join(f'  x{i} = {i}' for i in range(MAX_FUNCTION_LINES))
  path = tmp_path / 'long.py'
  path.write_text('def f():\n' + body + '\n' + '\n' * MAX_MODULE_LINES)
  assert [s.split(': ', 1)[1] for s in _oversized(str(path))] == [
      f'{MAX_MODULE_LINES + MAX_FUNCTION_LINES + 1} lines',
      f'f() {MAX_FUNCTION_LINES + 1} lines']
