"""Tests for jaxclr.logs.metrics: JSONL + TensorBoard writer, throttled progress line, Markdown table."""
import glob
import json
import math
import os

import jax.numpy as jnp
import numpy as np

from jaxclr.logs.metrics import MetricWriter
from jaxclr.logs.progress import Progress, format_duration
from jaxclr.logs.tables import format_table


class FakeClock:
    """A settable clock for Progress."""

    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_metric_writer_jsonl_and_events(tmp_path):
    workdir = str(tmp_path / "run")
    writer = MetricWriter(workdir, enabled=True)
    writer.write_scalars(1, {"loss": jnp.float32(2.5), "lr": np.float64(1e-3), "n": 3})
    # The line is on disk before flush/close, so `tail -f` sees it.
    assert read_jsonl(os.path.join(workdir, "metrics.jsonl")) == [{"step": 1, "loss": 2.5, "lr": 1e-3, "n": 3.0}]
    writer.write_scalars(np.int64(2), {"loss": jnp.array([0.25])})
    writer.write_text(2, "config", "model: tiny")
    writer.close()

    lines = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    assert lines[1:] == [{"step": 2, "loss": 0.25}, {"step": 2, "config": "model: tiny"}]
    assert all(type(v) is float for k, v in lines[0].items() if k != "step")
    events = glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
    assert len(events) == 1 and os.path.getsize(events[0]) > 0

    # A resumed run appends to the same file.
    with MetricWriter(workdir, enabled=True) as again:
        again.write_scalars(3, {"loss": float("nan")})
    lines = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    assert len(lines) == 4 and lines[3]["step"] == 3 and math.isnan(lines[3]["loss"])


def test_metric_writer_disabled_writes_nothing(tmp_path):
    writer = MetricWriter(str(tmp_path / "off"), enabled=False)
    writer.write_scalars(1, {"loss": 1.0})
    writer.write_text(1, "note", "x")
    writer.flush()
    writer.close()
    assert not os.path.exists(tmp_path / "off")


def test_metric_writer_default_enabled_on_process_zero(tmp_path):
    writer = MetricWriter(str(tmp_path / "p0"))
    assert writer.enabled  # single-process tests run as process 0
    writer.close()


def test_progress_throttles_and_reports_rate_and_eta():
    clock, printed = FakeClock(), []
    progress = Progress(total_steps=100, start_step=0, every_s=10.0, clock=clock, printer=printed.append)

    clock.t += 4.0  # step 1 took 4 s (compile): the first update always prints
    line = progress.update(1, {"loss": 3.21449}, examples=64)
    assert line == "step 1/100 | loss 3.214 | first 4s incl. compilation, ETA at the next line"
    assert printed == [line]

    # Steps 2..6 at 2 s each: nothing until 10 s have passed since the last line.
    for step in range(2, 6):
        clock.t += 2.0
        assert progress.update(step, {"loss": 3.0}, examples=64) is None
    clock.t += 2.0
    line = progress.update(6, {"loss": 2.5, "acc": jnp.float32(0.125)}, examples=64)
    # 5 steps * 64 examples over 10 s; 94 steps left at 2 s per step.
    assert line == "step 6/100 | loss 2.5 | acc 0.125 | 32 ex/s | ETA 3m08s"
    assert len(printed) == 2

    # The last step always prints, even right after another line.
    clock.t += 0.5
    line = progress.update(100, {"loss": 1.0}, examples=2000)
    assert line == "step 100/100 | loss 1 | 4,000 ex/s | ETA 0s"


def test_progress_resumed_run_counts_from_start_step():
    clock = FakeClock()
    progress = Progress(total_steps=1000, start_step=400, every_s=5.0, clock=clock, printer=None)
    clock.t += 30.0
    assert progress.update(401, {}, examples=10) == "step 401/1000 | first 30s incl. compilation, ETA at the next line"
    clock.t += 50.0
    line = progress.update(500, {}, examples=990)  # 99 steps in 50 s; 500 steps left
    assert line == "step 500/1000 | 20 ex/s | ETA 4m13s"


def test_format_duration():
    assert [format_duration(s) for s in (0, 44.6, 151, 3720, 90000, float("inf"))] == [
        "0s", "45s", "2m31s", "1h02m", "1d01h", "?"]


def test_format_table():
    table = format_table({"zeroshot/top1": 0.53125, "retrieval/i2t@1": jnp.float32(0.25), "n": 7})
    assert table == (
        "| name            |  value |\n"
        "|:----------------|-------:|\n"
        "| zeroshot/top1   | 0.5312 |\n"
        "| retrieval/i2t@1 | 0.2500 |\n"
        "| n               |      7 |"
    )
    assert format_table({}, header=("metric", "x")).splitlines() == ["| metric | x |", "|:-------|--:|"]
