"""The JSON rows the codebook studies' scripts print and save."""
from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List, Optional


def parser(module: str, doc: str) -> argparse.ArgumentParser:
  """The command line the studies' scripts share: `python -m MODULE`, the
  docstring's first paragraph as description, --workdir (a run folder) and
  --out (the rows are saved there too); each script adds its own flags."""
  ap = argparse.ArgumentParser(prog=f'python -m {module}', description=doc.split('\n\n')[0])
  ap.add_argument('--workdir', required=True, help='the run folder')
  ap.add_argument('--out', help='the JSON lines are written here too')
  return ap


def show(row: Dict[str, Any]) -> None:
  """Prints one row as a JSON line, floats rounded to 4 digits."""
  print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
        flush=True)


def save(rows: List[Dict[str, Any]], path: Optional[str]) -> None:
  """Writes the rows, unrounded, as JSON lines to `path` (if given)."""
  if path:
    with open(path, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in rows)
