"""Launchers, accelerator installs and the multi-process environment (no cluster needed).

The launch scripts are checked with `bash -n` and run against stub `gcloud`/`make`/`srun`
commands; `make -n` shows what an install would do; `distributed_args` is a pure function of the
environment.
"""
import os
import re
import runpy
import subprocess
from pathlib import Path

import pytest
import setuptools

from jaxclr import parallel
from tests.helpers import REPO_ROOT

ROOT = Path(REPO_ROOT)
LAUNCH = ROOT / "experiments" / "launch"
SCRIPTS = sorted(p for p in LAUNCH.iterdir() if p.suffix in (".sh", ".sbatch"))


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)


def stub_path(tmp_path, *names):
    """A PATH whose first entry holds commands that print their name and arguments, one per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in names:
        (bin_dir / name).write_text(f'#!/usr/bin/env bash\necho {name}; printf "%s\\n" "$@"\n')
        (bin_dir / name).chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


# ------------------------------------------------------------------ launch scripts
def test_the_three_launchers_exist():
    assert {p.name for p in SCRIPTS} >= {"tpu_pod.sh", "slurm.sbatch", "single_node.sh"}
    assert (LAUNCH / "README.md").is_file()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_launcher_parses_and_is_strict(script):
    assert run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    usage = text.split("\n#SBATCH", 1)[0].split("\nset ", 1)[0]  # the comment block at the top
    assert text.startswith("#!/usr/bin/env bash\n# ") and f"experiments/launch/{script.name}" in usage
    assert "\nset -euo pipefail\n" in text
    assert os.access(script, os.X_OK)


def test_tpu_pod_runs_install_and_train_on_every_worker(tmp_path):
    env = dict(os.environ, PATH=stub_path(tmp_path, "gcloud"), TPU="pod", ZONE="us-central2-b",
               REPO="https://example.com/jaxclr.git", WORKDIR="gs://bucket/runs/b16")
    out = run([str(LAUNCH / "tpu_pod.sh"), "--config=configs/clip.py:b16", "--config.note=a b's"], env=env)
    assert out.returncode == 0, out.stderr
    argv = out.stdout.split("\n", 1)[1]
    assert "--worker=all" in argv and "--zone=us-central2-b" in argv
    remote = argv.split("--command=", 1)[1]
    assert run(["bash", "-n", "-c", remote]).returncode == 0
    assert "make ACCEL=tpu" in remote and "JAXCLR_DISTRIBUTED=1" in remote
    train = remote.strip().splitlines()[-1]
    assert "-m jaxclr.train --workdir=gs://bucket/runs/b16 --config=configs/clip.py:b16" in train
    # The worker's shell splits the quoted overrides back into the original arguments.
    words = run(["bash", "-c", f'printf "%s\\n" {train.split("jaxclr.train", 1)[1]}']).stdout.splitlines()
    assert words[-1] == "--config.note=a b's"


def test_tpu_pod_names_a_missing_variable(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TPU", "ZONE", "REPO")}
    out = run([str(LAUNCH / "tpu_pod.sh")], env=dict(env, PATH=stub_path(tmp_path, "gcloud")))
    assert out.returncode != 0 and "TPU" in out.stderr


def test_slurm_installs_cuda_and_sruns_train(tmp_path):
    env = dict(os.environ, PATH=stub_path(tmp_path, "make", "srun"), SLURM_SUBMIT_DIR=str(tmp_path))
    out = run(["bash", str(LAUNCH / "slurm.sbatch"), "--config=configs/clip.py:b16", "--workdir=/shared/b16"], env=env)
    assert out.returncode == 0, out.stderr
    make, srun = out.stdout.split("srun\n")
    assert make.split() == ["make", "ACCEL=cuda12", "install"]
    assert ".venv/bin/python\n-m\njaxclr.train\n--config=configs/clip.py:b16\n--workdir=/shared/b16" in srun
    assert "--gpus-per-task" not in (LAUNCH / "slurm.sbatch").read_text().split("#SBATCH", 1)[1]


# ------------------------------------------------------------------ distributed_args
SLURM = dict(SLURM_NTASKS="16", SLURM_JOB_ID="123", SLURM_STEP_NODELIST="gpu[001-002]", SLURM_PROCID="3",
             SLURM_LOCALID="3")
EXPLICIT = dict(JAX_COORDINATOR_ADDRESS="10.0.0.1:1234", JAX_NUM_PROCESSES="4", JAX_PROCESS_ID="2")


@pytest.mark.parametrize("environ, expected", [
    ({}, None),
    ({"HOME": "/root", "SLURM_NTASKS": "1", "SLURM_JOB_ID": "5"}, None),  # a one-task SLURM job
    ({"TPU_WORKER_HOSTNAMES": "t1v-0"}, None),                            # a single-host TPU VM
    (SLURM, {}),
    ({"TPU_WORKER_HOSTNAMES": "t1v-0,t1v-1,t1v-2,t1v-3", "TPU_WORKER_ID": "1"}, {}),
    ({"JAXCLR_DISTRIBUTED": "1"}, {}),                                    # GCE TPU pod: jax asks the metadata server
    (dict(SLURM, JAXCLR_DISTRIBUTED="0"), None),
    (EXPLICIT, dict(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=2)),
    (dict(EXPLICIT, JAX_LOCAL_DEVICE_IDS="2,3"),
     dict(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=2, local_device_ids=[2, 3])),
    (dict(SLURM, **EXPLICIT), dict(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=2)),
])
def test_distributed_args(environ, expected):
    assert parallel.distributed_args(environ) == expected


@pytest.mark.parametrize("environ, names", [
    ({"JAX_COORDINATOR_ADDRESS": "host:1234", "JAX_PROCESS_ID": "0"}, "JAX_NUM_PROCESSES"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "JAX_COORDINATOR_ADDRESS"),
    (dict(EXPLICIT, JAX_COORDINATOR_ADDRESS="host"), "JAX_COORDINATOR_ADDRESS"),
    (dict(EXPLICIT, JAX_COORDINATOR_ADDRESS="host:http"), "JAX_COORDINATOR_ADDRESS"),
    (dict(EXPLICIT, JAX_NUM_PROCESSES="four"), "JAX_NUM_PROCESSES"),
    (dict(EXPLICIT, JAX_NUM_PROCESSES="0"), "JAX_NUM_PROCESSES"),
    (dict(EXPLICIT, JAX_PROCESS_ID="4"), "JAX_PROCESS_ID"),
    (dict(EXPLICIT, JAX_PROCESS_ID="-1"), "JAX_PROCESS_ID"),
    (dict(EXPLICIT, JAX_LOCAL_DEVICE_IDS="0;1"), "JAX_LOCAL_DEVICE_IDS"),
    ({"SLURM_NTASKS": "8x"}, "SLURM_NTASKS"),
    ({k: v for k, v in SLURM.items() if k != "SLURM_STEP_NODELIST"}, "SLURM_STEP_NODELIST"),  # not under srun
    ({"JAXCLR_DISTRIBUTED": "yes"}, "JAXCLR_DISTRIBUTED"),
])
def test_broken_environment_is_one_line_naming_the_variable(environ, names):
    with pytest.raises(ValueError) as err:
        parallel.distributed_args(environ)
    message = str(err.value)
    assert message.startswith(names) and "\n" not in message


def test_initialize_passes_the_args_to_jax(monkeypatch):
    calls = []
    monkeypatch.setattr(parallel.jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(parallel.jax.distributed, "initialize", lambda **kw: calls.append(kw))
    for name in ("SLURM_NTASKS", "TPU_WORKER_HOSTNAMES", "JAXCLR_DISTRIBUTED", "JAX_LOCAL_DEVICE_IDS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in EXPLICIT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(parallel.jax, "process_index", lambda: 2)  # the log line after initialize
    monkeypatch.delenv(parallel.PEER_TIMEOUT_VAR, raising=False)
    parallel.initialize()
    assert calls == [dict(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=2,
                          heartbeat_timeout_seconds=parallel.DEFAULT_PEER_TIMEOUT_S)]
    monkeypatch.setenv(parallel.PEER_TIMEOUT_VAR, "12")
    parallel.initialize()
    assert calls[-1]["heartbeat_timeout_seconds"] == 12
    monkeypatch.setenv("JAXCLR_DISTRIBUTED", "0")
    parallel.initialize()
    assert len(calls) == 2 and not parallel.multi_process_env()


@pytest.mark.parametrize("raw, message", [("soon", "not an integer"), ("2", "must be >= 5")])
def test_bad_peer_timeout_is_one_line(raw, message):
    with pytest.raises(ValueError, match=message) as err:
        parallel.peer_timeout_s({parallel.PEER_TIMEOUT_VAR: raw})
    assert str(err.value).startswith(parallel.PEER_TIMEOUT_VAR) and "\n" not in str(err.value)
    assert parallel.peer_timeout_s({}) == parallel.DEFAULT_PEER_TIMEOUT_S <= 60


# ------------------------------------------------------------------ install: Makefile and setup.py
def make_dry_run(*args):
    out = run(["make", "-n", "-C", str(ROOT), *args])
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("accel", ["", "tpu", "cuda12"])
def test_make_train_installs_the_package_and_accelerator_extra_only(accel):
    out = make_dry_run("-B", f"ACCEL={accel}", "train")  # -B: show the install even when .venv is current
    installs = re.findall(r"pip install --quiet -e '(\.[^']*)'", out)
    assert installs == ([f".[{accel}]"] if accel else ["."])   # no test dependency
    assert f".installed-{accel or 'cpu'}" in out and "jaxclr.train" in out


@pytest.mark.parametrize("accel, extras", [("", "test,beam,interop"), ("tpu", "test,beam,interop,tpu"),
                                           ("cuda12", "test,beam,interop,cuda12")])
def test_make_test_adds_the_test_and_beam_extras_and_libtpu_out_of_sight(accel, extras):
    out = make_dry_run("-B", f"ACCEL={accel}", "test")
    installs = re.findall(r"pip install --quiet -e '(\.[^']*)'", out)
    assert installs == [f".[{accel}]" if accel else ".", f".[{extras}]"]
    assert f".installed-test-{accel or 'cpu'}" in out and "pytest" in out
    assert "--no-deps --upgrade --target .venv/libtpu" in out   # for jaxclr.plan, not on jax's path
    assert "--target" not in make_dry_run("-B", f"ACCEL={accel}", "train")


def test_switching_accel_reinstalls(tmp_path):
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "bin").mkdir()
    (venv / ".installed-cpu").write_text("cpu\n")  # newer than setup.py: CPU is current
    assert "pip install" not in make_dry_run(f"VENV={venv}", "install")
    tpu = make_dry_run(f"VENV={venv}", "ACCEL=tpu", "install")
    assert "'.[tpu]'" in tpu and "uninstall --quiet --quiet --yes jax-cuda12-plugin jax-cuda12-pjrt" in tpu
    assert "uninstall --quiet --quiet --yes libtpu" in make_dry_run("-B", f"VENV={venv}", "install")


def test_make_rejects_an_unknown_accel():
    out = run(["make", "-n", "-C", str(ROOT), "ACCEL=rocm", "train"])
    assert out.returncode != 0 and "ACCEL=rocm" in out.stderr


def test_setup_extras_use_the_jax_pin(monkeypatch):
    seen = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: seen.update(kw))
    monkeypatch.chdir(ROOT)
    runpy.run_path(str(ROOT / "setup.py"))
    (jax_pin,) = [r for r in seen["install_requires"] if re.match(r"jax\W", r)]
    bounds = jax_pin[len("jax"):]
    extras = seen["extras_require"]
    assert extras["tpu"] == [f"jax[tpu]{bounds}"] and extras["cuda12"] == [f"jax[cuda12]{bounds}"]
    assert any(r.startswith("gcsfs") for r in extras["gcs"]) and "test" in extras
