"""Metric output: TensorBoard + JSONL writers.

`MetricWriter` is what the train loop and the evaluators write scalars to (the progress line
is `jaxclr.logs.progress`, tables `jaxclr.logs.tables`).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Self

import numpy as np
from etils import epath

from jaxclr import paths

METRICS_FILE = "metrics.jsonl"
# URL schemes tensorboardX can write event files to itself (gs: needs google-cloud-storage, s3: boto3).
TENSORBOARD_URL_SCHEMES = ("gs", "s3")

log = logging.getLogger(__name__)


def to_float(value: Any) -> float:
    """A Python float from a Python/numpy/jax scalar (or a size-1 array)."""
    return float(np.asarray(value).reshape(()))


class MetricWriter:
    """Writes scalars and text to TensorBoard event files and `workdir/metrics.jsonl`.

    Each write appends one JSON object per line, `{"step": s, "name": value, ...}`, and flushes,
    so `tail -f metrics.jsonl` follows a run; a resumed run appends to the same file. Non-finite
    values are written as Python's json writes them (`NaN`, `Infinity`). `enabled=None` means
    "only on process 0", so every process can call the writer unconditionally.

    `resume_step=S` is for a run that resumes from step S (the train loop passes it, 0 on a fresh
    start; standalone evaluation does not): lines with step > S, written by the attempt that got
    past S before it stopped, are dropped from metrics.jsonl (rewritten atomically), TensorBoard
    hides the old events with step > S (`purge_step=S + 1`), and a write at step S leaves out
    the names already logged at S. So each (step, name) appears once in metrics.jsonl.

    `sinks`: more outputs (e.g. `wandb_writer.WandbWriter`), each with `write_scalars(step,
    {name: float})` and `close()`; they get what metrics.jsonl gets, after the resume dedup.

    `workdir` may be a URL (`gs://bucket/run`); files are then written through etils.epath.
    An object store has no append, so there metrics.jsonl is kept in memory and uploaded whole,
    at most every `upload_every_s` seconds while writing and always on `flush`/`close` (so
    `tail -f` is not a thing there). TensorBoard events go to the URL when tensorboardX can
    write there (gs:// with google-cloud-storage installed, s3:// with boto3); otherwise a
    warning is logged and only metrics.jsonl is written.
    """

    def __init__(self, workdir: str | os.PathLike, enabled: bool | None = None, resume_step: int | None = None,
                 upload_every_s: float = 30.0, sinks=()):
        if enabled is None:
            import jax  # only needed to find the process index

            enabled = jax.process_index() == 0
        root = paths.resolve(workdir)
        self.workdir = os.fspath(root)   # absolute when local, the URL as given otherwise
        self.enabled = bool(enabled)
        self.resume_step = None if resume_step is None else int(resume_step)
        self._logged_at_resume: set[str] = set()   # names already in the file at resume_step
        self._tb = None
        self._jsonl = None
        self._sinks = list(sinks) if self.enabled else []
        if self.enabled:
            root.mkdir(parents=True, exist_ok=True)
            path = root / METRICS_FILE
            purge_step = None
            if self.resume_step is not None:
                self._logged_at_resume = drop_lines_after(path, self.resume_step)
                purge_step = self.resume_step + 1
            self._tb = _summary_writer(self.workdir, purge_step)
            if paths.is_url(self.workdir):
                self._jsonl = _UploadedLines(path, upload_every_s)
            else:
                self._jsonl = path.open("a", encoding="utf-8")  # noqa: SIM115 - open for the writer's life

    def _write_json(self, record: dict) -> None:
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def _new(self, step: int, names) -> list:
        """The names not yet logged at `step` (all of them, except at the resume step)."""
        return [n for n in names if step != self.resume_step or n not in self._logged_at_resume]

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Writes every `name: value` of `scalars` at `step` (values converted to float)."""
        if not self.enabled:
            return
        step = int(step)
        values = {name: to_float(scalars[name]) for name in self._new(step, scalars)}
        if not values:
            return
        for name, value in values.items():
            if self._tb is not None:
                self._tb.add_scalar(name, value, global_step=step)
        self._write_json({"step": step, **values})
        for sink in self._sinks:
            sink.write_scalars(step, values)

    def write_text(self, step: int, name: str, text: str) -> None:
        """Writes a text entry (TensorBoard text plugin + a JSONL line `{"step": s, name: text}`)."""
        if not self.enabled:
            return
        step = int(step)
        if not self._new(step, [name]):
            return
        if self._tb is not None:
            self._tb.add_text(name, str(text), global_step=step)
        self._write_json({"step": step, name: str(text)})

    def flush(self) -> None:
        """Forces pending TensorBoard events to disk (the JSONL file is flushed on every write)."""
        if self.enabled:
            if self._tb is not None:
                self._tb.flush()
            if isinstance(self._jsonl, _UploadedLines):
                self._jsonl.upload()
            else:
                self._jsonl.flush()

    def close(self) -> None:
        """Flushes and closes both outputs; later writes are an error."""
        if self.enabled and self._jsonl is not None:
            if self._tb is not None:
                self._tb.close()
            self._jsonl.close()
            self._jsonl = None
            for sink in self._sinks:
                sink.close()
            self._sinks = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _summary_writer(logdir: str, purge_step: int | None):
    """A tensorboardX SummaryWriter for `logdir` (a local path or a URL), or None (with a warning)
    where tensorboardX cannot write: a URL scheme it does not know (it would create a local
    directory named after the URL) or one whose client library is missing."""
    from tensorboardX import SummaryWriter, record_writer

    scheme = logdir.split("://", 1)[0] if paths.is_url(logdir) else None
    if scheme is not None and scheme not in TENSORBOARD_URL_SCHEMES:
        log.warning("no TensorBoard events for %s: tensorboardX writes only to local paths and %s URLs; "
                    "metrics.jsonl is still written", logdir, ", ".join(f"{s}://" for s in TENSORBOARD_URL_SCHEMES))
        return None
    # tensorboardX's own gs/s3 writers fail in their constructor without the client library
    # (and then again in __del__), so check before creating one.
    stock = {"gs": ("GCSRecordWriterFactory", "GCS_ENABLED", "google-cloud-storage"),
             "s3": ("S3RecordWriterFactory", "S3_ENABLED", "boto3")}.get(scheme)
    if stock is not None:
        factory_cls = getattr(record_writer, stock[0], None)
        if (factory_cls is not None and isinstance(record_writer.REGISTERED_FACTORIES.get(scheme), factory_cls)
                and not getattr(record_writer, stock[1], True)):
            log.warning("no TensorBoard events for %s: tensorboardX needs `pip install %s` for %s:// URLs; "
                        "metrics.jsonl is still written", logdir, stock[2], scheme)
            return None
    try:
        return SummaryWriter(logdir=logdir, purge_step=purge_step)
    except ImportError as e:   # gs:// without google-cloud-storage, s3:// without boto3
        log.warning("no TensorBoard events for %s (%s); metrics.jsonl is still written", logdir, e)
        return None


class _UploadedLines:
    """Append-only text file on an object store (no append there): the whole text is kept and
    written anew by `upload`, which `write` calls at most every `every_s` seconds."""

    def __init__(self, path: epath.Path, every_s: float, clock: Callable[[], float] = time.monotonic):
        self._path, self._every_s, self._clock = path, float(every_s), clock
        self._lines = [path.read_text()] if path.exists() else []
        self._dirty = False
        self._last = -math.inf

    def write(self, text: str) -> None:
        self._lines.append(text)
        self._dirty = True

    def flush(self) -> None:   # called after every line: uploads when `every_s` has passed
        if self._dirty and self._clock() - self._last >= self._every_s:
            self.upload()

    def upload(self) -> None:
        if self._dirty:
            self._path.write_text("".join(self._lines))
            self._dirty = False
            self._last = self._clock()

    def close(self) -> None:
        self.upload()


def drop_lines_after(path: str | os.PathLike, step: int) -> set[str]:
    """Removes the lines with step > `step` (and unreadable ones) from a metrics file; returns the
    names logged at `step`. The file is rewritten through a temporary file and a rename (on an
    object store the rename is a copy; the object is replaced whole either way)."""
    path = paths.resolve(path)
    if not path.exists():
        return set()
    kept, at_step, changed = [], set(), False
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
                record_step = int(record["step"])
            except (ValueError, TypeError, KeyError):   # e.g. a line cut short by a kill
                changed = True
                continue
            if record_step > step:
                changed = True
                continue
            if not line.endswith("\n"):
                line, changed = line + "\n", True
            kept.append(line)
            if record_step == step:
                at_step.update(k for k in record if k != "step")
    if changed:
        tmp = path.parent / (path.name + ".tmp")
        tmp.write_text("".join(kept))
        tmp.replace(path)
    return at_step
