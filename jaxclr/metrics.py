"""Metric output: TensorBoard + JSONL writers, a one-line progress reporter, a Markdown table.

`MetricWriter` is what the train loop and the evaluators write scalars to; `Progress` turns
per-step metrics into a throttled status line with throughput and ETA; `format_table` renders
the final eval table.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Self

import numpy as np

METRICS_FILE = "metrics.jsonl"


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
    """

    def __init__(self, workdir: str | os.PathLike, enabled: bool | None = None, resume_step: int | None = None):
        if enabled is None:
            import jax  # only needed to find the process index

            enabled = jax.process_index() == 0
        self.workdir = os.fspath(workdir)
        self.enabled = bool(enabled)
        self.resume_step = None if resume_step is None else int(resume_step)
        self._logged_at_resume: set[str] = set()   # names already in the file at resume_step
        self._tb = None
        self._jsonl = None
        if self.enabled:
            from tensorboardX import SummaryWriter

            os.makedirs(self.workdir, exist_ok=True)
            path = os.path.join(self.workdir, METRICS_FILE)
            purge_step = None
            if self.resume_step is not None:
                self._logged_at_resume = drop_lines_after(path, self.resume_step)
                purge_step = self.resume_step + 1
            self._tb = SummaryWriter(logdir=self.workdir, purge_step=purge_step)
            self._jsonl = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the writer's life

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
            self._tb.add_scalar(name, value, global_step=step)
        self._write_json({"step": step, **values})

    def write_text(self, step: int, name: str, text: str) -> None:
        """Writes a text entry (TensorBoard text plugin + a JSONL line `{"step": s, name: text}`)."""
        if not self.enabled:
            return
        step = int(step)
        if not self._new(step, [name]):
            return
        self._tb.add_text(name, str(text), global_step=step)
        self._write_json({"step": step, name: str(text)})

    def flush(self) -> None:
        """Forces pending TensorBoard events to disk (the JSONL file is flushed on every write)."""
        if self.enabled:
            self._tb.flush()
            self._jsonl.flush()

    def close(self) -> None:
        """Flushes and closes both outputs; later writes are an error."""
        if self.enabled and self._jsonl is not None:
            self._tb.close()
            self._jsonl.close()
            self._jsonl = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def drop_lines_after(path: str, step: int) -> set[str]:
    """Removes the lines with step > `step` (and unreadable ones) from a metrics file; returns the
    names logged at `step`. The file is rewritten through a temporary file and a rename."""
    if not os.path.exists(path):
        return set()
    kept, at_step, changed = [], set(), False
    with open(path, encoding="utf-8") as f:
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
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(kept)
        os.replace(tmp, path)
    return at_step


def format_duration(seconds: float) -> str:
    """Compact duration: `45s`, `2m31s`, `1h02m`, `3d04h` (`?` when unknown)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


class Progress:
    """Throttled one-line training status: `step 120/500 | loss 3.214 | 1,234 ex/s | ETA 2m31s`.

    `update(step, metrics, examples)` is called once per step with that step's metrics and the
    number of examples it processed. A line is produced on the first update, then whenever at
    least `every_s` seconds have passed since the previous line, and always at `total_steps`.
    Examples/s and the ETA use only the steps since the previous line, so compile time and
    earlier slow phases drop out after one interval. The line is returned (None when nothing
    is due) and passed to `printer` (default: `print(..., flush=True)`; None to stay silent).
    """

    def __init__(self, total_steps: int, start_step: int = 0, every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic,
                 printer: Callable[[str], Any] | None = lambda line: print(line, flush=True)):
        self.total_steps = int(total_steps)
        self.every_s = float(every_s)
        self._clock = clock
        self._printer = printer
        self._last_time = clock()
        self._last_step = int(start_step)
        self._examples = 0.0
        self._printed = False

    def update(self, step: int, metrics: Mapping[str, Any], examples: float = 0) -> str | None:
        """Accounts one step; returns (and prints) the status line when one is due."""
        step = int(step)
        self._examples += float(examples)
        now = self._clock()
        elapsed = now - self._last_time
        due = not self._printed or elapsed >= self.every_s or step >= self.total_steps
        if not due:
            return None
        steps = step - self._last_step
        parts = [f"step {step}/{self.total_steps}"]
        parts += [f"{name} {to_float(value):.4g}" for name, value in metrics.items()]
        if elapsed > 0:
            parts.append(f"{self._examples / elapsed:,.0f} ex/s")
            if steps > 0:
                remaining = max(self.total_steps - step, 0) * elapsed / steps
                parts.append(f"ETA {format_duration(remaining)}")
        line = " | ".join(parts)
        self._last_time, self._last_step, self._examples = now, step, 0.0
        self._printed = True
        if self._printer is not None:
            self._printer(line)
        return line


def format_table(rows: Mapping[str, Any], precision: int = 4, header: tuple[str, str] = ("name", "value")) -> str:
    """A Markdown table `| name | value |`, columns padded to line up; floats to `precision` places."""

    def cell(value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, (bool, int, np.integer)):
            return str(int(value))
        return f"{to_float(value):.{precision}f}"

    body = [(str(name), cell(value)) for name, value in rows.items()]
    w0 = max([len(header[0])] + [len(n) for n, _ in body])
    w1 = max([len(header[1])] + [len(v) for _, v in body])
    lines = [f"| {header[0]:<{w0}} | {header[1]:>{w1}} |", f"|:{'-' * (w0 + 1)}|{'-' * (w1 + 1)}:|"]
    lines += [f"| {n:<{w0}} | {v:>{w1}} |" for n, v in body]
    return "\n".join(lines)
