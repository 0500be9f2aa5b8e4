"""The marker of a finished run: `workdir/final.json`, written when training reached total_steps.

`jaxclr.train` writes it (process 0) after the final evaluation of a run that got to
`train.total_steps`; a run that stopped early (`train.stop_at`, preemption, an error) has none.
It holds `{"step": <total_steps>, "metrics": {name: final eval value}}` and is written through a
temporary file and a rename, so a reader sees either no file or the whole file. `jaxclr.sweep`
skips the runs that have one. Importing this module does not import JAX.
"""
from __future__ import annotations

import json
import os

from jaxclr import paths

FINAL_FILE = "final.json"


def write(workdir: str | os.PathLike, step: int, metrics: dict[str, float]) -> None:
    """Writes workdir/final.json (atomically: a temporary file, then a rename)."""
    root = paths.resolve(workdir)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / (FINAL_FILE + ".tmp")
    tmp.write_text(json.dumps({"step": int(step), "metrics": {k: float(v) for k, v in metrics.items()}},
                              indent=1, sort_keys=True))
    tmp.replace(root / FINAL_FILE)


def read(workdir: str | os.PathLike) -> dict | None:
    """The marker's content, or None when the run has not finished (no final.json)."""
    path = paths.resolve(workdir) / FINAL_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())
