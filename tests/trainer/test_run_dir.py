"""The run directory: provenance files, the config check on a restart, metrics after a resume,
evaluation from the saved config, one compilation of the eval embedders, output on process 0 only."""
import contextlib
import glob
import io
import json
import os
import shutil
import struct
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl import flags
from jax.experimental import multihost_utils

from jaxclr import config as configlib
from jaxclr import evaluate, parallel, train
from jaxclr.data import datasets
from jaxclr.logs.metrics import MetricWriter
from jaxclr.models import TwoTower
from jaxclr.trainer import run_info
from jaxclr.trainer import state as state_lib
from jaxclr.trainer.checkpoint import Checkpointer
from tests.helpers import REPO_ROOT, read_metrics, tiny_run_config


def snapshot(workdir):
    """{file name: bytes} of the files directly in workdir."""
    return {name: open(os.path.join(workdir, name), "rb").read() for name in sorted(os.listdir(workdir))
            if os.path.isfile(os.path.join(workdir, name))}


def read_json(path):
    with open(path) as f:
        return json.load(f)


# ------------------------------------------------------------------ provenance and the config check

def test_first_start_records_config_and_run_info(tmp_path):
    config = configlib.load("configs/clip.py:tiny")
    run_info.check_and_record(config, str(tmp_path / "run"))
    saved = read_json(tmp_path / "run" / "config.json")
    assert saved == configlib.to_json(config) and saved["model"]["image"]["stem"] == [16, 32, 64, 128]
    info = read_json(tmp_path / "run" / "run_info.json")
    head = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    if head.returncode == 0:   # the tests run from a git checkout of the package
        assert info["git"]["commit"] == head.stdout.strip() and isinstance(info["git"]["dirty"], bool)
    assert info["packages"]["jax"] == jax.__version__ and info["packages"]["orbax-checkpoint"]
    assert info["devices"] == {"kind": jax.devices()[0].device_kind, "count": 8, "local_count": 8, "process_count": 1}
    assert "xla_force_host_platform_device_count=8" in info["env"]["XLA_FLAGS"]
    assert info["hostname"] and info["start_time_utc"].endswith("+00:00")


def test_changed_config_is_refused_before_anything_is_written(tmp_path):
    workdir = str(tmp_path)
    run_info.check_and_record(configlib.load("configs/clip.py:tiny"), workdir)
    before = snapshot(workdir)
    changed = configlib.load("configs/clip.py:tiny")
    changed.optim.lr = 0.002
    changed.train.total_steps = 5000
    changed.train.stop_at = 100        # allowed on its own: not named in the message
    with pytest.raises(run_info.ConfigChanged) as err:
        run_info.check_and_record(changed, workdir, resume_step=8)
    assert str(err.value) == (
        f"the config differs from the one this run started with ({workdir}/config.json): "
        "optim.lr 0.001 -> 0.002, train.total_steps 4000 -> 5000; resume with the same config, "
        "or pass --config.train.allow_config_change=True")
    assert snapshot(workdir) == before


def test_resumable_keys_may_change(tmp_path):
    workdir = str(tmp_path)
    config = configlib.load("configs/clip.py:tiny")
    run_info.check_and_record(config, workdir)
    original = read_json(tmp_path / "config.json")
    config.train.update(stop_at=9, micro_batches=2, log_every=7)
    config.data.update(data_dir="/elsewhere", worker_count=4)
    config.mesh.update(data=2, fsdp=4)
    config.loss.update(impl="gather", block_size=64)
    config.eval.update(every=3, evaluators=("retrieval",))
    config.checkpoint.update(every=5, keep=1)
    run_info.check_and_record(config, workdir, resume_step=8)
    assert read_json(tmp_path / "config.json") == original       # never rewritten
    assert read_json(tmp_path / "config.resume-8.json") == configlib.to_json(config)
    assert os.path.exists(tmp_path / "run_info.resume-8.json")
    assert run_info.is_resumable("mesh.model") and not run_info.is_resumable("model.embed_dim")


def test_allowed_config_change_keeps_both_configs(tmp_path):
    workdir = str(tmp_path)
    run_info.check_and_record(configlib.load("configs/clip.py:tiny"), workdir)
    changed = configlib.load("configs/clip.py:tiny")
    changed.optim.lr = 0.002
    changed.train.allow_config_change = True
    run_info.check_and_record(changed, workdir, resume_step=8)
    assert read_json(tmp_path / "config.json")["optim"]["lr"] == 0.001
    assert read_json(tmp_path / "config.resume-8.json")["optim"]["lr"] == 0.002
    assert read_json(tmp_path / "run_info.resume-8.json")["packages"]["jax"] == jax.__version__
    assert run_info.load_saved_config(workdir).optim.lr == 0.002            # the newest
    assert run_info.load_saved_config(workdir, step=4).optim.lr == 0.001    # in effect at step 4
    # Later restarts compare with the config the run resumed with, not with the first one.
    changed.train.allow_config_change = False   # an allowed change; recorded in config.resume-16.json
    run_info.check_and_record(changed, workdir, resume_step=16)
    assert read_json(tmp_path / "config.resume-16.json")["optim"]["lr"] == 0.002
    refused = r"resumed with \(.*config.resume-16.json\): optim.lr 0.002 -> 0.001"
    with pytest.raises(run_info.ConfigChanged, match=refused):
        run_info.check_and_record(configlib.load("configs/clip.py:tiny"), workdir, resume_step=16)


@pytest.mark.parametrize("process", [0, 1])
def test_every_process_takes_process_zeros_decision(tmp_path, monkeypatch, process):
    workdir = str(tmp_path)
    run_info.check_and_record(configlib.load("configs/clip.py:tiny"), workdir)
    changed = configlib.load("configs/clip.py:tiny")
    changed.seed = 1
    sent = []

    def broadcast(value):      # process 0's value reaches everyone; process 1 gets the code 1 (refused)
        sent.append(int(value))
        return value if process == 0 else np.int32(1)

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: process)
    monkeypatch.setattr(multihost_utils, "broadcast_one_to_all", broadcast)
    with pytest.raises(run_info.ConfigChanged, match="seed 0 -> 1" if process == 0 else "see process 0"):
        run_info.check_and_record(changed, workdir, resume_step=8)
    assert sent == [1 if process == 0 else 0]


def test_cli_errors_are_one_line(tmp_path):
    workdir = str(tmp_path / "run")
    run_info.check_and_record(configlib.load("configs/clip.py:tiny"), workdir)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO_ROOT)

    def run(*args):
        proc = subprocess.run([sys.executable, "-m", *args], env=env, cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=300, check=False)
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        return proc.returncode, proc.stderr.strip().splitlines()[-1]

    code, line = run("jaxclr.train", "--config=configs/clip.py:tiny", f"--workdir={workdir}",
                     "--config.optim.lr=0.002")
    assert code == 1 and line.startswith("error: the config differs from the one this run started with")
    assert "optim.lr 0.001 -> 0.002;" in line and not os.path.exists(os.path.join(workdir, "config.resume-0.json"))
    empty = tmp_path / "empty"
    code, line = run("jaxclr.evaluate", f"--workdir={empty}")
    assert code == 2 and line == f"error: --workdir={empty}: no saved config in {empty} (config.json); pass " \
                                 "--config=FILE[:preset]"


def test_evaluate_config_flag_defaults_to_none_and_takes_overrides():
    for argv, lr in ((["prog", "--workdir=w"], None),
                     (["prog", "--workdir=w", "--config=configs/clip.py:tiny", "--config.optim.lr=0.5"], 0.5)):
        values = flags.FlagValues()
        evaluate.define_flags(values, argv)
        values(argv)
        assert (values.config is None) if lr is None else values.config.optim.lr == lr


# ------------------------------------------------------------------ metrics after a resume

def tensorboard_events(workdir):
    """Every Event record of the TensorBoard files in workdir (TFRecord framing, tensorboardX protos)."""
    from tensorboardX.proto import event_pb2

    for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
        data = open(path, "rb").read()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            yield event


def test_metric_writer_resume_drops_later_lines(tmp_path):
    workdir = str(tmp_path)
    with MetricWriter(workdir, enabled=True) as writer:
        for step in range(1, 6):
            writer.write_scalars(step, {"loss": step})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')       # a line cut short by a kill
    with MetricWriter(workdir, enabled=True, resume_step=3) as writer:
        assert [r["step"] for r in read_metrics(workdir)] == [1, 2, 3]
        writer.write_scalars(3, {"loss": 30.0, "eval": 0.5})   # loss at 3 is already there
        writer.write_scalars(4, {"loss": 40.0})
    assert read_metrics(workdir)[2:] == [{"step": 3, "loss": 3.0}, {"step": 3, "eval": 0.5}, {"step": 4, "loss": 40.0}]
    starts = [e.step for e in tensorboard_events(workdir) if e.HasField("session_log") and e.session_log.status == 1]
    assert starts == [4]    # TensorBoard's purge marker: events at steps >= 4 from before are hidden


@pytest.fixture(scope="module")
def resumed_run(data_dir, tmp_path_factory):
    """A tiny run stopped at 13 on "process 1", its checkpoint 13 lost (as in a kill after step 13),
    then resumed from 8 with evals every 4 steps. Returns what the tests below look at."""
    workdir = str(tmp_path_factory.mktemp("resumed"))
    config = tiny_run_config(data_dir)
    config.train.stop_at = 13

    class Process1:   # train.py's view of jax: not process 0 (orbax and the writers see the real one)
        def __getattr__(self, name):
            return getattr(jax, name)

        @staticmethod
        def process_index():
            return 1

    datasets.ensure_prepared(config.data)   # as process 0 does before the others start (tfds prints)
    out = {"config": config, "workdir": workdir}
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(io.StringIO()) as stdout:
        mp.setattr(train, "jax", Process1())
        assert train.train(config, workdir) == {}
    out["stopped_stdout"] = stdout.getvalue()
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
    out["stopped_at"] = ckpt.latest_step()
    ckpt.close()
    out["logged_before"] = read_metrics(workdir)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "13"))

    resume = tiny_run_config(data_dir)
    resume.eval.every = 4
    built, real_embed_fns = [], state_lib.embed_fns

    def counting_embed_fns(*args):
        built.append(real_embed_fns(*args))
        return built[-1]

    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(io.StringIO()) as stdout:
        mp.setattr(state_lib, "embed_fns", counting_embed_fns)
        out["results"] = train.train(resume, workdir)
    out["resumed_stdout"], out["embed_fns"] = stdout.getvalue(), built
    return out


@pytest.mark.slow
def test_stop_at_saves_its_step_and_prints_nothing_off_process_zero(resumed_run):
    assert resumed_run["stopped_at"] == 13
    assert resumed_run["stopped_stdout"] == ""
    resumed = resumed_run["resumed_stdout"]
    assert "resumed from step 8" in resumed and "step 24/24 | loss" in resumed


@pytest.mark.slow
def test_no_duplicate_steps_after_resume(resumed_run):
    before = resumed_run["logged_before"]
    assert any(r["step"] == 12 and "loss" in r for r in before)        # logged after 8 by the lost attempt
    assert any(r["step"] == 12 and "zeroshot/color_top1" in r for r in before)
    seen, steps_of = set(), {}
    for record in read_metrics(resumed_run["workdir"]):
        for key in record.keys() - {"step"}:
            assert (record["step"], key) not in seen, (record["step"], key)
            seen.add((record["step"], key))
            steps_of.setdefault(key, []).append(record["step"])
    for key, steps in steps_of.items():
        assert steps == sorted(steps), key
    assert steps_of["loss"] == [4, 8, 12, 16, 20, 24]
    assert steps_of["zeroshot/color_top1"] == [12, 16, 20, 24]


@pytest.mark.slow
def test_eval_embedders_are_built_and_compiled_once(resumed_run):
    (fns,) = resumed_run["embed_fns"]        # one build for the 4 evals of the resumed run
    assert fns.image._cache_size() == 1      # eval images are always [32, 32, 32, 3]: one compilation


@pytest.mark.slow
def test_resume_records_its_config(resumed_run):
    workdir = resumed_run["workdir"]
    assert read_json(os.path.join(workdir, "config.json"))["train"]["stop_at"] == 13
    resumed = read_json(os.path.join(workdir, "config.resume-8.json"))
    assert resumed["train"]["stop_at"] == 0 and resumed["eval"]["every"] == 4
    assert os.path.exists(os.path.join(workdir, "run_info.resume-8.json"))


@pytest.mark.slow
def test_evaluate_uses_saved_config_and_train_names(resumed_run):
    workdir, results = resumed_run["workdir"], resumed_run["results"]
    lines = len(read_metrics(workdir))
    step, again = evaluate.evaluate(None, workdir)
    assert step == 24 and again.keys() == results.keys()
    for name, value in results.items():
        np.testing.assert_allclose(again[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    logged = read_metrics(workdir)
    assert len(logged) == lines + 1       # appended, nothing truncated
    assert logged[-1] == {"step": 24, **again}
    assert not any(key.startswith("eval/") for record in logged for key in record)


@pytest.mark.slow
def test_restart_with_other_config_stops_before_writing(resumed_run):
    workdir = resumed_run["workdir"]
    before = snapshot(workdir)
    changed = tiny_run_config(resumed_run["config"].data.data_dir)
    changed.optim.lr = 0.01
    with pytest.raises(run_info.ConfigChanged, match=r"config.resume-8.json\): optim.lr 0.003 -> 0.01;"):
        train.train(changed, workdir)
    assert snapshot(workdir) == before


def test_load_saved_config_needs_a_config(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no saved config .*; pass --config=FILE\[:preset\]"):
        evaluate.evaluate(None, str(tmp_path))


# ------------------------------------------------------------------ eval embedders

def test_embed_fns_trace_once_for_new_params(data_dir, monkeypatch):
    config = tiny_run_config(data_dir)
    mesh = parallel.make_mesh(config.mesh)
    traces = []
    real = TwoTower.embed_image
    monkeypatch.setattr(TwoTower, "embed_image", lambda self, x: traces.append(x.shape) or real(self, x))
    with jax.set_mesh(mesh):
        spec, state = state_lib.create(config, mesh)
    first = state["params"]
    second = jax.device_put(jax.tree.map(lambda x: 0.5 * x, first), spec.shardings["params"])  # as after a step
    embed = state_lib.embed_fns(spec.graphdef, mesh)
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    a = embed.bind(first)[0](images)
    b = embed.bind(second)[0](images)
    assert a.shape == (8, 32) and not np.allclose(a, b)     # the params really changed
    assert traces == [(8, 32, 32, 3)] and embed.image._cache_size() == 1
