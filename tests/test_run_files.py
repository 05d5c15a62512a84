"""One module owns every run-folder name (jepa_jax/run/files.py): no other
module of the package spells one out."""
import ast
import glob
import os

from jepa_jax.run import files as run_files
from conftest import ROOT


def _names():
  """The file and folder names (the stage folders' names are also the config
  key `stage2` and the summary's stage names: not checked)."""
  values = [v for k, v in vars(run_files).items() if k.isupper() and isinstance(v, str)]
  return set(values) | {v.format('0') for v in values if '{}' in v}


def _string_constants(path):
  """Every string literal of a module except docstrings."""
  tree = ast.parse(open(path).read())
  docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
                and node.body and isinstance(node.body[0], ast.Expr)
                and isinstance(node.body[0].value, ast.Constant)}
  return [(node.lineno, node.value) for node in ast.walk(tree)
          if isinstance(node, ast.Constant) and isinstance(node.value, str)
          and id(node) not in docstrings]


def test_no_module_but_run_files_spells_a_run_folder_name():
  names = _names()
  assert {'summary.json', 'config.json', 'checkpoints', 'eval.stale-0.json'} <= names
  found = []
  for path in sorted(glob.glob(os.path.join(ROOT, 'jepa_jax', '**', '*.py'), recursive=True)):
    if os.path.relpath(path, ROOT) == os.path.join('jepa_jax', 'run', 'files.py'):
      continue
    found += [f'{os.path.relpath(path, ROOT)}:{line}: {value!r}'
              for line, value in _string_constants(path) if value in names]
  assert not found, found


def test_stage_folders_of_a_two_stage_run_folder(tmp_path):
  (tmp_path / 'stage1').mkdir()
  (tmp_path / 'stage1' / 'config.json').write_text('{}')
  assert run_files.stage_folders(str(tmp_path)) == [str(tmp_path / 'stage1')]
  (tmp_path / 'stage2').mkdir()
  (tmp_path / 'stage2' / 'config.json').write_text('{}')
  assert len(run_files.stage_folders(str(tmp_path))) == 2
  (tmp_path / 'config.json').write_text('{}')            # a plain run folder
  assert run_files.stage_folders(str(tmp_path)) == []
