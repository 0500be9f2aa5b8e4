"""XLA:TPU compiles the real train step for a small TPU topology on this CPU (python -m jaxclr.plan).

Compiled: the tiny preset with GradCache (train.micro_batches=2) and its bidirectional, mean-pooled text
tower, and s16 with the other text-tower mode (causal, EOS-pooled; scanned, block remat, bf16); both
with the streamed loss (shard_map, ppermute ring, custom_vjp). Two compiles keep the file near 90 s.
libtpu is loaded in a subprocess of its own (it
stays loaded for the life of a process) and with `jaxclr.bench.tpu_env.environment`, which keeps it
from asking the network anything: where strace runs, the test checks that no socket outside this
machine is connected to. Without libtpu the compile tests skip, except in CI (CI=true), where they fail.
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from jaxclr.bench import tpu_env
from tests.helpers import REPO_ROOT

SETTINGS = {   # name: (config, per-device batch, overrides)
    "tiny, GradCache k=2, bidirectional text": ("configs/clip.py:tiny", 4, {"train.micro_batches": 2}),
    "s16": ("configs/clip.py:s16", 2, {}),
}
SCRIPT = """
import json, sys
from jaxclr import config as configlib
from jaxclr.bench import plan
topology = plan.Topology("v5e:2x2")
for name, (spec, batch, overrides) in json.loads(sys.argv[1]).items():
    config = configlib.load(spec)
    for key, value in overrides.items():
        *sections, leaf = key.split(".")
        node = config
        for section in sections:
            node = node[section]
        node[leaf] = value
    result = plan.compile_plan(plan.plan_config(config, topology, batch), topology)
    print("RESULT " + json.dumps({"name": name, **{k: v for k, v in result.items() if k != "mesh"}}), flush=True)
"""


def require_libtpu():
    if tpu_env.library_path() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must compile for TPU: " + tpu_env.missing_message())
        pytest.skip(tpu_env.missing_message())


def cpu_env(**extra):
    """The environment of a plain CPU user: no JAX_PLATFORMS, no TPU_* variables."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS" and not k.startswith("TPU_")}
    return {**env, **extra}


def connects_outside(trace: str) -> list[str]:
    """The connect() calls of an strace log to an IPv4/IPv6 address other than loopback."""
    calls = [line for line in trace.splitlines() if "connect(" in line and re.search(r"AF_INET6?\b", line)]
    return [c for c in calls if not re.search(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"', c)]


def strace_prefix(log_path) -> list[str]:
    """strace recording every connect() of the process tree, where strace exists and may trace."""
    strace = shutil.which("strace")
    if strace is None or subprocess.run([strace, "-f", "-o", os.devnull, "true"], capture_output=True).returncode:
        return []
    return [strace, "-f", "-qq", "-e", "trace=connect", "-o", str(log_path)]


def test_the_train_step_compiles_for_a_tpu_topology_and_asks_no_network(tmp_path):
    require_libtpu()
    log = tmp_path / "connect.log"
    prefix = strace_prefix(log)
    proc = subprocess.run([*prefix, sys.executable, "-c", SCRIPT, json.dumps(SETTINGS)], cwd=REPO_ROOT,
                          env=cpu_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["name"]: r for r in (json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines()
                                      if line.startswith("RESULT "))}
    assert set(results) == set(SETTINGS)
    for name, r in results.items():
        assert r["fits"] and 0 < r["total"] < r["hbm"], name
        assert r["temp"] > 0 and r["argument"] > 0 and r["flops"] > 0, name
        assert r["collectives"].get("all-reduce", 0) > 0, name                  # the data-parallel gradient sum
        assert r["collectives"].get("collective-permute", 0) > 0, name          # the streamed loss's ring
    # XLA counts each loop body once: GradCache's two micro-batch loops (and s16's scanned layers) hide FLOPs
    assert results["s16"]["flops"] > 5 * results["s16"]["xla_flops"]
    assert results["tiny, GradCache k=2, bidirectional text"]["flops"] > 1.5 * results[
        "tiny, GradCache k=2, bidirectional text"]["xla_flops"]
    assert "accelerator type" not in proc.stderr and "worker hostnames" not in proc.stderr, proc.stderr[-2000:]
    if prefix:
        assert connects_outside(log.read_text()) == []


def test_the_cpu_trainer_does_not_find_libtpu():
    """libtpu lives outside the import path: a jax process with no JAX_PLATFORMS runs on the CPU, silently."""
    require_libtpu()
    code = ("import jax; from jax._src import cloud_tpu_init as c; "
            "print(jax.default_backend(), c.get_tpu_library_path())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=cpu_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["cpu", "None"]
    assert "TPU" not in proc.stderr and "tpu" not in proc.stderr.lower(), proc.stderr


def test_without_libtpu_the_plan_says_in_one_line_how_to_install_it(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "jaxclr.plan", "--config=configs/clip.py:tiny", "--topology=v5e:2x2"],
                          cwd=REPO_ROOT, env=cpu_env(**{tpu_env.DIR_VAR: str(tmp_path)}), capture_output=True,
                          text=True, timeout=300)
    if importlib.util.find_spec("libtpu") is not None:
        pytest.skip("a libtpu package is importable here: the plan finds it")
    assert proc.returncode == 3 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install --no-deps --target" in lines[0] and str(tmp_path) in lines[0]
