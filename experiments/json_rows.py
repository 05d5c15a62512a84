"""The JSON rows the codebook studies' scripts print and save."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional


def show(row: Dict[str, Any]) -> None:
  """Prints one row as a JSON line, floats rounded to 4 digits."""
  print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
        flush=True)


def save(rows: List[Dict[str, Any]], path: Optional[str]) -> None:
  """Writes the rows, unrounded, as JSON lines to `path` (if given)."""
  if path:
    with open(path, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in rows)
