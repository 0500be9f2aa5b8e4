"""What researchers log with: the W&B sink (offline run file read back) and the profiler window."""
import glob
import json
import os
import struct

import pytest

from jaxclr import train
from jaxclr.logs.metrics import MetricWriter
from tests.helpers import read_metrics, tiny_run_config


class ListSink:
    def __init__(self):
        self.rows, self.closed = [], False

    def write_scalars(self, step, values):
        self.rows.append((step, dict(values)))

    def close(self):
        self.closed = True


def test_sinks_get_what_metrics_jsonl_gets_after_resume_dedup(tmp_path):
    with MetricWriter(tmp_path, enabled=True) as writer:
        writer.write_scalars(1, {"loss": 2.0})
        writer.write_scalars(2, {"loss": 1.5, "lr": 0.1})
        writer.write_scalars(3, {"loss": 1.0})
    sink = ListSink()
    with MetricWriter(tmp_path, enabled=True, resume_step=2, sinks=[sink]) as writer:
        writer.write_scalars(2, {"loss": 1.5, "zeroshot/x": 0.5})   # loss at 2 already logged
        writer.write_scalars(3, {"loss": 0.9})
    assert sink.rows == [(2, {"zeroshot/x": 0.5}), (3, {"loss": 0.9})] and sink.closed
    assert [r for r in read_metrics(tmp_path) if r["step"] >= 2] == [
        {"step": 2, "loss": 1.5, "lr": 0.1}, {"step": 2, "zeroshot/x": 0.5}, {"step": 3, "loss": 0.9}]


def test_disabled_writer_never_calls_its_sinks(tmp_path):
    sink = ListSink()
    with MetricWriter(tmp_path, enabled=False, sinks=[sink]) as writer:
        writer.write_scalars(1, {"loss": 2.0})
    assert sink.rows == [] and not sink.closed


def wandb_records(path):
    """The protobuf Records of a W&B run file (`run-<id>.wandb`): a 7-byte header (':W&B', magic,
    version), then LevelDB-log framing: 32 KiB blocks of [crc32 u32, length u16, type u8] + data,
    type 1 = a whole record, 2/3/4 = its first/middle/last piece."""
    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:   # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        piece = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            continue
        pending = piece if kind in (1, 2) else pending + piece
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


@pytest.mark.slow
def test_wandb_offline_run_holds_the_logged_scalars_and_a_profile_is_written(data_dir, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = tiny_run_config(data_dir)
    config.train.update(stop_at=4, log_every=1, profile_steps=(2, 3))   # same compiled step as test_train's runs
    config.log.wandb = True
    workdir = str(tmp_path / "run")
    train.train(config, workdir)

    logged = {r["step"]: r for r in read_metrics(workdir) if "loss" in r}
    assert sorted(logged) == [1, 2, 3, 4]
    run_id = open(os.path.join(workdir, "wandb_id.txt")).read().strip()
    [run_file] = glob.glob(os.path.join(workdir, "wandb", f"offline-run-*-{run_id}", f"run-{run_id}.wandb"))
    history, config_keys = {}, set()
    for record in wandb_records(run_file):
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                     for item in record.history.item}
            history[items["_step"]] = items
        elif record.WhichOneof("record_type") in ("run", "config"):
            update = record.run.config.update if record.HasField("run") else record.config.update
            config_keys |= {item.key for item in update}
    for step, row in logged.items():
        for name in ("loss", "lr", "grad_norm", "scale"):
            assert history[step][name] == pytest.approx(row[name], rel=1e-6), (step, name)
    assert {"train", "model", "loss", "run_info"} <= config_keys   # the resolved config and the run info

    traces = glob.glob(os.path.join(workdir, "profile", "plugins", "profile", "*", "*.xplane.pb"))
    assert traces and all(os.path.getsize(t) > 0 for t in traces)
    assert any(b"train_step" in open(t, "rb").read() for t in traces)   # the window holds the train step
