"""Run provenance: what a run directory was started with, and the config check on a restart.

On the first start of a run directory (no `config.json` in it yet) `check_and_record` writes

    config.json     the resolved config, JSON-normalised (tuples become lists)
    run_info.json   git commit (and whether the tree was dirty), package versions, devices,
                    XLA_FLAGS / JAX_PLATFORMS, hostname, UTC start time

On a restart it first compares the new config with the one in effect: the newest
`config.resume-<k>.json` with k <= the step being resumed from, else `config.json`. A
difference in a key outside `RESUMABLE_KEYS` raises `ConfigChanged` (one line naming every
differing key) before anything is written, unless `train.allow_config_change` is True. An
accepted restart writes `run_info.resume-<step>.json` and, when the config differs at all,
`config.resume-<step>.json`, where <step> is the checkpoint step being resumed from (0 when
there is none yet). `config.json` and `run_info.json` are never rewritten. Resuming from the
same step twice overwrites that step's resume files: the earlier attempt left nothing behind
(its checkpoints and metrics after <step> are gone), so the newer files describe the history.

Only process 0 reads and writes these files; the other processes learn its decision through
`broadcast_one_to_all`, so every process raises or none does. Paths are `etils.epath.Path`s,
so a workdir may be a `gs://` URL.
"""
from __future__ import annotations

import datetime
import fnmatch
import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from jaxclr import config as configlib
from jaxclr import paths
from jaxclr.config import saved

CONFIG_FILE = "config.json"
RUN_INFO_FILE = "run_info.json"

# Config keys (fnmatch patterns) that may differ on a restart without train.allow_config_change:
# they change how a run is executed, logged, evaluated or checkpointed, not what it computes.
RESUMABLE_KEYS = (
    "train.stop_at", "train.micro_batches", "train.micro_unroll", "train.allow_config_change", "train.log_every",
    "train.profile_steps", "train.malloc_mmap_threshold_kib", "log.*",
    "data.data_dir", "data.worker_count", "data.prefetch", "mesh.*", "loss.impl", "loss.block_size", "eval.*",
    "checkpoint.*",
)

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "tensorflow-datasets",
            "ml-collections", "numpy")


class ConfigChanged(ValueError):
    """A restart's config differs from the run's saved one in keys outside RESUMABLE_KEYS."""


def config_diff(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every dotted key whose value differs; absent is `...`."""
    a, b = configlib.flatten(old), configlib.flatten(new)
    return [(key, a.get(key, ...), b.get(key, ...)) for key in sorted(a.keys() | b.keys())
            if a.get(key, ...) != b.get(key, ...)]


def is_resumable(key: str) -> bool:
    """Whether `key` (dotted) may change on a restart without train.allow_config_change."""
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in RESUMABLE_KEYS)


def _show(value: Any) -> str:
    return "(absent)" if value is ... else json.dumps(value)


def _resume_files(workdir: epath.Path, kind: str) -> dict[int, epath.Path]:
    """{step: path} of the `<kind>.resume-<step>.json` files in workdir."""
    found = {}
    for path in workdir.glob(f"{kind}.resume-*.json"):
        match = re.fullmatch(rf"{kind}\.resume-(\d+)\.json", path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def saved_config_path(workdir, step: int | None = None) -> epath.Path:
    """The saved config in effect at `step` (None: the newest): the newest resume file with k <= step,
    else config.json (which may not exist)."""
    workdir = paths.resolve(workdir)
    resumes = {k: p for k, p in _resume_files(workdir, "config").items() if step is None or k <= step}
    return resumes[max(resumes)] if resumes else workdir / CONFIG_FILE


def load_saved_config(workdir, step: int | None = None) -> ml_collections.ConfigDict:
    """The run's saved config (see `saved_config_path`) as a ConfigDict, lists kept as lists, with the keys
    added since it was written filled in as the code then behaved (`jaxclr.config.saved`)."""
    path = saved_config_path(workdir, step)
    if not path.exists():
        raise FileNotFoundError(f"no saved config in {workdir} ({CONFIG_FILE}); pass --config=FILE[:preset]")
    try:
        config = ml_collections.ConfigDict(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore it from a copy, or pass --config=FILE[:preset]") \
            from None
    saved.fill_missing(config)
    return config


def _git_state() -> dict:
    """Commit and dirtiness of the git checkout this package lives in (None when it is not in one)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))   # the repository

    def git(*args):
        try:
            out = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=30,
                                 check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or os.path.realpath(top) != root:   # not a checkout, or the package sits inside another repo
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect_run_info() -> dict:
    """Where and with what this process runs: code version, packages, devices, environment, time."""
    return {
        "git": _git_state(),
        "python": sys.version.split()[0],
        "packages": {name: _version(name) for name in PACKAGES},
        "devices": {"kind": jax.devices()[0].device_kind, "count": jax.device_count(),
                    "local_count": jax.local_device_count(), "process_count": jax.process_count()},
        "env": {name: os.environ.get(name) for name in ("XLA_FLAGS", "JAX_PLATFORMS")},
        "hostname": socket.gethostname(),
        "start_time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _write_json(path: epath.Path, data: Any) -> None:
    """Writes via a temporary file and a rename, so a kill never leaves half a file."""
    tmp = path.parent / (path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _record(config, workdir: epath.Path, step: int) -> None:
    """Process 0's part of `check_and_record`."""
    new = configlib.to_json(config)
    first = workdir / CONFIG_FILE
    if not first.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        _write_json(first, new)
        _write_json(workdir / RUN_INFO_FILE, collect_run_info())
        return
    reference = saved_config_path(workdir, step)
    diff = config_diff(json.loads(reference.read_text()), new)
    blocking = [d for d in diff if not is_resumable(d[0])]
    if blocking and not config.train.allow_config_change:
        changes = ", ".join(f"{key} {_show(a)} -> {_show(b)}" for key, a, b in blocking)
        started = "started" if reference == first else "resumed"
        raise ConfigChanged(f"the config differs from the one this run {started} with ({reference}): {changes}; "
                            "resume with the same config, or pass --config.train.allow_config_change=True")
    if diff:
        _write_json(workdir / f"config.resume-{step}.json", new)
    _write_json(workdir / f"run_info.resume-{step}.json", collect_run_info())


def check_and_record(config, workdir, resume_step: int = 0) -> None:
    """Writes the provenance files on a first start; on a restart checks the config, then records it.

    `resume_step` is the checkpoint step the run resumes from (0: none). Raises `ConfigChanged`
    (on every process) when the config differs in keys outside RESUMABLE_KEYS and
    `train.allow_config_change` is not set; nothing is written then.
    """
    error = None
    if jax.process_index() == 0:
        try:
            _record(config, paths.resolve(workdir), int(resume_step))
        except Exception as e:  # shared with the other processes below, then re-raised
            error = e
    if jax.process_count() > 1:
        code = 0 if error is None else 1 if isinstance(error, ConfigChanged) else 2
        code = int(multihost_utils.broadcast_one_to_all(np.int32(code)))
        if error is None and code == 1:
            raise ConfigChanged("the config differs from the one this run started with (see process 0's error)")
        if error is None and code == 2:
            raise RuntimeError("process 0 failed to check or record the run directory (see its error)")
    if error is not None:
        raise error


def read_run_info(workdir) -> dict:
    """The environment record of a run directory (`run_info.json`), {} when there is none."""
    path = paths.resolve(workdir) / RUN_INFO_FILE
    return json.loads(path.read_text()) if path.exists() else {}
