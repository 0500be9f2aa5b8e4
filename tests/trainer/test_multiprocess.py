"""Several processes (jax.distributed on CPU, gloo collectives), started as subprocesses.

The data and the losses of a run do not depend on the process count: 1 process x 8
devices and 2 processes x 4 devices train on the same global batches, so their per-step
losses agree to float32 rounding; a checkpoint written by the 2-process run resumes in 1
process and continues with the same losses.

When a process dies, the others exit non-zero within the peer timeout ($JAXCLR_PEER_TIMEOUT_S).
A SIGTERM to one process (a preemption notice) stops both at the same step with one checkpoint.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from jaxclr import train
from tests.helpers import REPO_ROOT, logged_steps, read_metrics, tiny_run_config

pytestmark = pytest.mark.slow

STEPS = 10

DRIVER = textwrap.dedent("""
    from jaxclr import train
    from tests.trainer.test_multiprocess import topology_config
    train.train(topology_config({data_dir!r}), {workdir!r})
""")


def topology_config(data_dir):
    config = tiny_run_config(data_dir)
    config.train.update(total_steps=STEPS, log_every=1)
    config.checkpoint.update(every=5, keep=3)
    config.eval.every = 0
    return config


def losses(workdir):
    return {r["step"]: r["loss"] for r in read_metrics(workdir) if "loss" in r}


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_processes(code, n=2, **env):
    """n processes running `code`, each with 4 CPU devices, joined by jax.distributed (parallel.initialize)."""
    port = free_port()
    procs = []
    for i in range(n):
        environ = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
                       JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo", JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                       JAX_NUM_PROCESSES=str(n), JAX_PROCESS_ID=str(i), **env)
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env=environ,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def run_two_processes(data_dir, workdir):
    procs = start_processes(DRIVER.format(data_dir=data_dir, workdir=workdir))
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return outs[0]


def test_two_processes_match_one_and_their_checkpoint_resumes_in_one(data_dir, tmp_path):
    one = str(tmp_path / "one")
    train.train(topology_config(data_dir), one)            # this process: 1 x 8 devices
    two = str(tmp_path / "two")
    out = run_two_processes(data_dir, two)
    assert "8 devices (2 processes)" in out, out[-2000:]
    want, got = losses(one), losses(two)
    assert sorted(want) == sorted(got) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([got[s] for s in want], [want[s] for s in want], rtol=2e-5, atol=1e-6)
    assert np.ptp([want[s] for s in want]) > 1e-3   # steps differ far beyond the tolerance: other data would show

    # The 2-process checkpoint of step 5 resumes in this process and continues identically.
    moved = str(tmp_path / "moved")
    shutil.copytree(two, moved)
    shutil.rmtree(os.path.join(moved, "checkpoints", str(STEPS)))
    train.train(topology_config(data_dir), moved)
    resumed = losses(moved)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([resumed[s] for s in range(6, STEPS + 1)],
                               [want[s] for s in range(6, STEPS + 1)], rtol=2e-5, atol=1e-6)


PEER = textwrap.dedent("""
    import sys, time
    import jax
    from jax.experimental import multihost_utils
    from jaxclr import parallel
    parallel.initialize()
    for i in range(100_000):   # a collective every 0.2 s, as a train loop would
        multihost_utils.sync_global_devices(f"step {i}")
        if i == 2:
            print("running", flush=True)
        time.sleep(0.2)
""")


@pytest.mark.parametrize("victim", [1, 0])   # 0 also runs the coordination service
def test_when_a_process_dies_the_other_exits_nonzero_within_the_peer_timeout(victim):
    timeout = 10
    procs = start_processes(PEER, JAXCLR_PEER_TIMEOUT_S=str(timeout))
    try:
        for p in procs:   # wait until both are in the loop
            assert any(line.strip() == "running" for line in p.stdout), p.returncode
        killed = time.time()
        procs[victim].kill()
        out, _ = procs[1 - victim].communicate(timeout=timeout + 50)
        elapsed = time.time() - killed
    finally:
        for p in procs:
            p.kill()
    assert procs[1 - victim].returncode != 0
    assert elapsed < timeout + 20, elapsed
    assert "another task died" in out, out[-2000:]


PREEMPT_DRIVER = textwrap.dedent("""
    from jaxclr import train
    from tests.trainer.test_multiprocess import topology_config
    config = topology_config({data_dir!r})
    config.train.total_steps = 100_000   # far beyond the test: only the preemption ends it
    config.checkpoint.every = 50_000
    train.train(config, {workdir!r})
""")


def test_sigterm_to_one_process_stops_both_at_the_same_step_with_a_checkpoint(data_dir, tmp_path):
    """JAX's preemption sync point: a SIGTERM to process 1 alone (a preemption notice) makes both
    processes save one checkpoint of the same step and exit 0 within one step plus the save."""
    from jaxclr.trainer.checkpoint import Checkpointer
    workdir = str(tmp_path / "run")
    procs = start_processes(PREEMPT_DRIVER.format(data_dir=data_dir, workdir=workdir))
    try:
        deadline = time.time() + 300
        while len(logged_steps(workdir)) < 3 and time.time() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.5)
        assert all(p.poll() is None for p in procs), [p.communicate()[0][-2000:] for p in procs]
        procs[1].send_signal(signal.SIGTERM)
        sent = time.time()
        outs = [p.communicate(timeout=120)[0] for p in procs]
        elapsed = time.time() - sent
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    assert elapsed < 60, elapsed
    line = [x for x in outs[0].splitlines() if x.startswith("preempted:")]
    assert len(line) == 1 and "run the same command again to resume" in line[0], outs[0][-2000:]
    step = int(line[0].split("step ")[1].split()[0])
    print(f"SIGTERM to process 1: both stopped at step {step}, {elapsed:.1f} s after the signal")
    reader = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
    assert reader.all_steps() == [step] and step >= 3   # one checkpoint, of the step both stopped at
    reader.close()
    assert max(losses(workdir)) <= step   # nothing trained past it
