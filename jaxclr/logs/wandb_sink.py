"""Optional Weights & Biases output beside TensorBoard and metrics.jsonl (`log.wandb = True`).

One W&B run per run directory: its id is kept in `<workdir>/wandb_id.txt`, so a restart of the
same workdir resumes the same W&B run (`resume='allow'`). The resolved config is the run's
config and the run's environment record (`run_info.json`, `jaxclr.trainer.run_info`) is added
under the key `run_info`. Only process
0 writes (the `MetricWriter` that owns this sink is disabled elsewhere).

Offline use (no network, e.g. on a compute node): `WANDB_MODE=offline`, then `wandb sync
<workdir>/wandb/offline-run-*` from a machine that has network. The local W&B files go to
`<workdir>/wandb` for a local workdir and to W&B's default directory for a `gs://` one.

W&B refuses a step lower than one it already holds: after a resume from step S, the steps
(S, last logged] that the previous attempt logged are not rewritten there (metrics.jsonl and
TensorBoard drop them, see `metrics.MetricWriter`).
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Mapping

from jaxclr import config as configlib
from jaxclr import paths

ID_FILE = "wandb_id.txt"
INSTALL_HINT = "log.wandb=True needs the wandb package: pip install -e '.[wandb]' (or set log.wandb=False)"


class WandbWriter:
    """A sink for `MetricWriter(sinks=...)`: `write_scalars(step, {name: float})` and `close()`."""

    def __init__(self, workdir, config, project: str, run_info: Mapping | None = None):
        try:
            import wandb
        except ImportError as e:
            raise ImportError(INSTALL_HINT) from e
        root = paths.resolve(workdir)
        id_path = root / ID_FILE
        if id_path.exists():
            run_id = id_path.read_text().strip()
        else:
            run_id = secrets.token_hex(4)   # W&B run ids: lower-case letters and digits
            root.mkdir(parents=True, exist_ok=True)
            id_path.write_text(run_id + "\n")
        local_dir = None if paths.is_url(os.fspath(root)) else os.fspath(root)
        self.run = wandb.init(project=project, id=run_id, resume="allow", dir=local_dir, name=root.name,
                              config={**configlib.to_json(config), "run_info": dict(run_info or {})})

    def write_scalars(self, step: int, values: Mapping[str, float]) -> None:
        self.run.log(dict(values), step=int(step))

    def close(self) -> None:
        self.run.finish()
