"""Workdir and data-dir paths: URLs (gs://) stay URLs, local paths become absolute.

The URL tests run against an in-memory file system standing in for GCS: epath's fsspec backend
is pointed at an fsspec MemoryFileSystem that answers for `gs://`, so the code under test takes
exactly the `gs://` code path of a pod run, without network or credentials. Real GCS is not
exercised here.
"""
import io
import json
import os
import pathlib
import re

import ml_collections
import pytest
from etils import epath
from etils.epath import backend as epath_backend
from etils.epath import gpath
from fsspec.implementations.memory import MemoryFileSystem
from tensorboardX import record_writer

from jaxclr import paths
from jaxclr.config import saved
from jaxclr.data import datasets
from jaxclr.logs.metrics import METRICS_FILE, MetricWriter
from jaxclr.research import aggregate
from jaxclr.trainer import checkpoint, run_info
from tests.helpers import REPO_ROOT

RUN = "gs://bucket/run"


class _InMemoryGcs(MemoryFileSystem):
    """A MemoryFileSystem that takes `gs://bucket/key` paths, stored as `bucket/key` (as gcsfs does)."""

    protocol = ("gs", "gcs")
    root_marker = ""
    cachable = False

    @classmethod
    def _strip_protocol(cls, path):
        path = os.fspath(path)
        for prefix in ("gs://", "gcs://"):
            if path.startswith(prefix):
                path = path[len(prefix):]
        return path.strip("/")


class _FakeGcsRecordWriter:
    """tensorboardX's GCS event-file writer, writing to the fake GCS instead."""

    def __init__(self, path):
        self.path, self.buffer = path, io.BytesIO()

    def write(self, data):
        self.buffer.write(data)

    def flush(self):
        epath.Path(self.path).write_bytes(self.buffer.getvalue())

    def close(self):
        self.flush()


class _FakeGcsRecordWriterFactory:
    def open(self, path):
        return _FakeGcsRecordWriter(path)

    def directory_check(self, path):
        pass


@pytest.fixture
def fake_gcs(monkeypatch):
    """Routes epath's `gs://` paths to a fresh in-memory file system; returns that file system."""
    fs_cls = type("FreshGcs", (_InMemoryGcs,), {"store": {}, "pseudo_dirs": [""]})
    fs = fs_cls()
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)   # use the fsspec backend for gs://
    monkeypatch.setattr(epath_backend.fsspec_backend, "fs", lambda path: fs)
    return fs


# ------------------------------------------------------------------------------------ resolve

def test_resolve_keeps_urls_and_makes_local_paths_absolute(tmp_path, monkeypatch):
    for url in ("gs://b/x", "gs://b/x/checkpoints", "s3://bucket/some/run"):
        assert os.fspath(paths.resolve(url)) == url
        assert paths.is_url(url)
    assert os.fspath(paths.resolve("gs://b/x/") / "checkpoints") == "gs://b/x/checkpoints"   # no `//`
    monkeypatch.chdir(tmp_path)
    local = paths.resolve("runs/x")
    assert isinstance(local, epath.Path) and os.fspath(local) == str(tmp_path / "runs" / "x")
    assert os.path.isabs(local) and not paths.is_url("runs/x")
    assert os.fspath(paths.resolve(pathlib.Path("runs/x"))) == str(tmp_path / "runs" / "x")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert os.fspath(paths.resolve("~/data")) == str(tmp_path / "home" / "data")


def test_resolve_unknown_scheme_is_a_clear_error():
    with pytest.raises(ValueError, match="unsupported URL scheme"):
        paths.resolve("nosuchscheme://bucket/run")


def test_no_abspath_outside_paths_module():
    """URLs must not go through os.path.abspath: only paths.resolve makes paths absolute.

    config/load.py is exempt: it loads config *Python files* with importlib, which are local by nature.
    """
    root = pathlib.Path(REPO_ROOT) / "jaxclr"
    allowed = {root / "paths.py", root / "config" / "load.py"}
    offenders = []
    for module in sorted(root.rglob("*.py")):
        if module in allowed:
            continue
        for n, line in enumerate(module.read_text().splitlines(), 1):
            if re.search(r"\babspath\s*\(", line.split("#")[0]):
                offenders.append(f"{module.relative_to(root.parent)}:{n}: {line.strip()}")
    assert not offenders, "use jaxclr.paths.resolve instead:\n" + "\n".join(offenders)


# ------------------------------------------------------------------------------ run directory

def test_metric_writer_on_a_url(fake_gcs, monkeypatch):
    monkeypatch.setitem(record_writer.REGISTERED_FACTORIES, "gs", _FakeGcsRecordWriterFactory())
    writer = MetricWriter(RUN, enabled=True, upload_every_s=3600)
    assert writer.workdir == RUN
    for step in (1, 2, 3):
        writer.write_scalars(step, {"loss": 1.0 / step})
    writer.write_text(3, "note", "hi")
    writer.close()
    text = epath.Path(RUN, METRICS_FILE).read_text()
    assert [json.loads(line) for line in text.splitlines()] == [
        {"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}, {"step": 3, "loss": 1 / 3}, {"step": 3, "note": "hi"}]
    assert any(p.name.startswith("events.out.tfevents") for p in epath.Path(RUN).iterdir())
    assert not any(k.startswith(("gs:", "/")) for k in fake_gcs.store)   # nothing went to a mangled path
    assert not os.path.exists("gs:")                                     # nor to a local dir named gs:

    # A resumed run drops what the previous attempt logged after the resume step.
    with MetricWriter(RUN, enabled=True, resume_step=2) as writer:
        writer.write_scalars(2, {"loss": 9.0, "lr": 0.1})   # loss is already logged at 2
        writer.write_scalars(3, {"loss": 0.25})
    records = [json.loads(line) for line in epath.Path(RUN, METRICS_FILE).read_text().splitlines()]
    assert records == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}, {"step": 2, "lr": 0.1},
                       {"step": 3, "loss": 0.25}]
    assert aggregate.final_metrics(RUN) == {"loss": 0.25, "lr": 0.1}


def test_metric_writer_on_a_url_without_tensorboard_support(fake_gcs, monkeypatch, caplog):
    """gs:// without google-cloud-storage: a warning, no TensorBoard events, metrics.jsonl still written."""
    monkeypatch.setattr(record_writer, "GCS_ENABLED", False)
    with MetricWriter(RUN, enabled=True) as writer:
        writer.write_scalars(1, {"loss": 2.0})
        assert epath.Path(RUN, METRICS_FILE).read_text() == '{"step": 1, "loss": 2.0}\n'   # first line at once
    assert "no TensorBoard events" in caplog.text
    assert [p.name for p in epath.Path(RUN).iterdir()] == [METRICS_FILE]


def test_aggregate_final_metrics_on_a_url(fake_gcs):
    epath.Path(RUN).mkdir(parents=True)
    epath.Path(RUN, METRICS_FILE).write_text('{"step": 1, "m": 0.5}\n{"step": 2, "m": 0.75}\n')
    assert aggregate.final_metrics(RUN) == {"m": 0.75}
    with pytest.raises(FileNotFoundError, match="run directory"):
        aggregate.final_metrics("gs://bucket/nope")


def test_runinfo_on_a_url(fake_gcs):
    config = ml_collections.ConfigDict({"model": {"width": 8}, "train": {"allow_config_change": False}})
    run_info.check_and_record(config, RUN)
    run = epath.Path(RUN)
    assert {p.name for p in run.iterdir()} == {run_info.CONFIG_FILE, run_info.RUN_INFO_FILE}
    expected = ml_collections.ConfigDict(config.to_dict())
    saved.fill_missing(expected)   # what load_saved_config adds to a config written before those keys
    assert run_info.load_saved_config(RUN).to_dict() == expected.to_dict()
    run_info.check_and_record(config, RUN, resume_step=5)   # an unchanged restart records its run info
    assert (run / "run_info.resume-5.json").exists() and not list(run.glob("*.tmp"))
    changed = ml_collections.ConfigDict(config.to_dict())
    changed.model.width = 16
    with pytest.raises(run_info.ConfigChanged, match="model.width"):
        run_info.check_and_record(changed, RUN, resume_step=6)
    with pytest.raises(FileNotFoundError):
        run_info.load_saved_config("gs://bucket/empty")


def test_checkpointer_keeps_a_url_as_a_url(monkeypatch, tmp_path):
    """The URL reaches orbax unchanged (orbax itself is stubbed: it cannot write to a fake GCS)."""
    seen = []

    class RecordingManager:
        def __init__(self, directory, options=None):
            seen.append(directory)

    monkeypatch.setattr(checkpoint.ocp, "CheckpointManager", RecordingManager)
    ckpt = checkpoint.Checkpointer(paths.resolve(RUN) / "checkpoints", read_only=True)
    assert ckpt.directory == seen[-1] == f"{RUN}/checkpoints"
    monkeypatch.chdir(tmp_path)
    ckpt = checkpoint.Checkpointer("runs/x/checkpoints", read_only=True)
    assert ckpt.directory == seen[-1] == str(tmp_path / "runs" / "x" / "checkpoints")


# ---------------------------------------------------------------------------------- data dir

def test_data_dir_url_passes_through_to_tfds(monkeypatch, tmp_path):
    def cfg(data_dir, name="jaxclr_shapes"):
        return ml_collections.ConfigDict({"name": name, "data_dir": data_dir})

    monkeypatch.delenv(datasets.DATA_DIR_ENV, raising=False)
    assert datasets.resolve_data_dir(cfg("gs://bucket/tfds")) == "gs://bucket/tfds"
    monkeypatch.setenv(datasets.DATA_DIR_ENV, "gs://bucket/env_tfds")
    assert datasets.resolve_data_dir(cfg(None)) == "gs://bucket/env_tfds"
    monkeypatch.chdir(tmp_path)
    assert datasets.resolve_data_dir(cfg("data/tfds")) == str(tmp_path / "data" / "tfds")

    seen = {}

    def fake_builder(name, data_dir=None):
        seen[name] = data_dir
        return "builder"

    monkeypatch.setattr(datasets.tfds, "builder", fake_builder)
    assert datasets.get_builder(cfg("gs://bucket/tfds", name="imagenet2012")) == "builder"
    assert seen == {"imagenet2012": "gs://bucket/tfds"}
